"""Time and peak memory of every step of ``make run``, cold (empty finsae cache) or warm (issue #18).

The steps are read from the Makefile's ``run`` recipe, so this measures what ``make run`` does. They run in a
scratch folder (a copy of ``backtests/``, results and exports written there; the repository's ``results/`` and
``exports/`` are not touched), with ``$FINSAE_CACHE_DIR`` pointing at a fresh empty folder unless ``--warm``
(then the user's cache is used as it is). Each step's peak resident set size is the ``ru_maxrss`` of its
process (``os.wait4``). Setup (``make setup``) is not part of the figure: run it first.

    python benchmarks/make_run_time.py                 # cold: every model, feature and test cache rebuilt
    python benchmarks/make_run_time.py --warm          # the user's caches
    python benchmarks/make_run_time.py --out benchmarks/results/make_run_time.json
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import emit, machine

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 15 * 60
TARGET_GB = 4.0


def run_steps(makefile: Path) -> list[str]:
    """The shell lines of the ``run:`` recipe (continuation lines joined, ``$(BIN)`` resolved)."""
    lines = makefile.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^run\s*:", line))
    steps: list[str] = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        text = line.strip()
        if steps and steps[-1].endswith("\\"):
            steps[-1] = steps[-1][:-1].rstrip() + " " + text
        else:
            steps.append(text)
    bin_dir = str(ROOT / ".venv" / "bin")
    return [s.replace("$(BIN)", bin_dir) for s in steps]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm", action="store_true", help="use the user's finsae cache instead of an empty one")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (printed)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON figures here")
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="finsae-make-run-"))
    shutil.copytree(ROOT / "backtests", scratch / "backtests")
    (scratch / "finsae").symlink_to(ROOT / "finsae")  # configs name the shipped SAEs as ../finsae/sae/...
    env = dict(os.environ)
    if not args.warm:
        env["FINSAE_CACHE_DIR"] = str(scratch / "cache")
    env.setdefault("FINSAE_DATA_DIR", str(ROOT / "data"))
    rows = []
    load_start = os.getloadavg()
    t_all = time.perf_counter()
    for step in run_steps(ROOT / "Makefile"):
        t0 = time.perf_counter()
        proc = subprocess.Popen(shlex.split(step), cwd=scratch, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read() if proc.stderr else ""
        seconds = time.perf_counter() - t0
        name = " ".join(shlex.split(step)[1:])[:100]
        rows.append(
            {
                "step": name,
                "seconds": round(seconds, 1),
                "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
                "rc": proc.returncode,
            }
        )
        print(
            f"{seconds:7.1f} s  {usage.ru_maxrss / 2**20:5.2f} GB  rc {proc.returncode}  {name}", flush=True
        )
        if proc.returncode != 0:
            print(err[-3000:])
            break
    total = time.perf_counter() - t_all
    peak = max(r["peak_rss_gb"] for r in rows)
    result = {
        "machine": machine(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "cache": "warm" if args.warm else "cold",
        "total_seconds": round(total, 1),
        "total_minutes": round(total / 60, 1),
        "peak_rss_gb": peak,
        "target_minutes": TARGET_SECONDS / 60,
        "target_gb": TARGET_GB,
        "time_target_met": total <= TARGET_SECONDS,
        "memory_target_met": peak <= TARGET_GB,
        "all_steps_ok": all(r["rc"] == 0 for r in rows),
        "steps": rows,
    }
    emit(result, args.out)
    if args.keep:
        print(f"scratch folder kept: {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
