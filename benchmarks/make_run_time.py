"""Time and peak memory of every step of ``make run``, cold (empty finsae cache) or warm (issue #18).

The steps are read from the Makefile's ``run`` recipe, so this measures what ``make run`` does. They run in a
scratch folder (a copy of ``backtests/``, results and exports written there; the repository's ``results/`` and
``exports/`` are not touched), with ``$FINSAE_CACHE_DIR`` pointing at a fresh empty folder unless ``--warm``
(then the user's cache is used as it is). Each step's peak resident set size is the ``ru_maxrss`` of its
process (``os.wait4``). Setup (``make setup``) is not part of the figure: run it first.

    python benchmarks/make_run_time.py                 # cold: every model, feature and test cache rebuilt
    python benchmarks/make_run_time.py --warm          # the user's caches
    python benchmarks/make_run_time.py --out benchmarks/results/make_run_time.json
    python benchmarks/make_run_time.py --steps 1 --timeline   # the first step only, with a memory timeline

``--timeline`` runs each step with ``-v`` and samples the resident size of its whole process tree (summed over
/proc) every half second beside the latest log line, so a step's peak can be placed: the JSON gets, per step,
the sampled peak, the log line it came after and the highest sample after each log line (the top ten), and the
fifteen longest phases (the time from a log line to the next one).
``--steps N`` runs the recipe's first N steps only (the figures then say ``partial``).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
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


def tree_rss_bytes(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc; a process that ends meanwhile: 0)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
    return total


class Timeline:
    """Samples a process tree's resident size every ``interval`` seconds beside the latest line of its stderr
    (read here), until the process ends."""

    def __init__(self, proc: subprocess.Popen, interval: float = 0.5) -> None:
        self.proc, self.interval = proc, interval
        self.last_line = "(start)"
        self.lines: list[str] = []
        self.phases: list[tuple[float, str]] = []  # (seconds, line) of every log line that is not a bar
        self.samples: list[tuple[float, int, str]] = []
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._reader.start()
        self._sampler.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip()
            if line:
                self.lines.append(line)
                if not line.lstrip().startswith(("extract", "Loading weights")) and "it/s]" not in line:
                    self.last_line = line[:200]  # progress bars are not phases
                    self.phases.append((time.perf_counter() - self.t0, self.last_line))

    def _sample(self) -> None:
        # not proc.poll(): that could reap the child before the caller's os.wait4 does
        while not self._stop.wait(self.interval):
            rss = tree_rss_bytes(self.proc.pid)
            self.samples.append((time.perf_counter() - self.t0, rss, self.last_line))

    def stop(self) -> None:
        """Call once the process has been waited for."""
        self._stop.set()
        self._sampler.join()

    def summary(self) -> dict:
        self._reader.join(timeout=5)
        if not self.samples:
            return {"samples": 0}
        by_line: dict[str, tuple[int, float]] = {}
        for t, rss, line in self.samples:
            if rss > by_line.get(line, (-1, 0.0))[0]:
                by_line[line] = (rss, t)
        t, rss, line = max(self.samples, key=lambda x: x[1])
        top = sorted(by_line.items(), key=lambda kv: -kv[1][0])[:10]
        end = self.samples[-1][0]
        spans = [(line, t, (self.phases[n + 1][0] if n + 1 < len(self.phases) else end) - t)
                 for n, (t, line) in enumerate(self.phases)]
        longest = sorted(spans, key=lambda x: -x[2])[:15]
        return {
            "samples": len(self.samples),
            "sampled_peak_gb": round(rss / 2**30, 2),
            "peak_at_seconds": round(t, 1),
            "peak_after_line": line,
            "peaks_after_lines": [{"line": k, "gb": round(v[0] / 2**30, 2), "at_seconds": round(v[1], 1)}
                                  for k, v in top],
            "longest_phases": [{"line": line, "at_seconds": round(t, 1), "seconds": round(d, 1)}
                               for line, t, d in longest],
        }

    def stderr(self) -> str:
        self._reader.join(timeout=5)
        return "\n".join(self.lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm", action="store_true", help="use the user's finsae cache instead of an empty one")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (printed)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON figures here")
    ap.add_argument("--steps", type=int, default=None, help="run only the recipe's first N steps")
    ap.add_argument("--timeline", action="store_true",
                    help="run steps with -v and record where in each step the resident size peaks")
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
    steps = run_steps(ROOT / "Makefile")
    partial = args.steps is not None and args.steps < len(steps)
    for step in steps[: args.steps]:
        t0 = time.perf_counter()
        argv = shlex.split(step)
        if args.timeline:
            argv = [argv[0], "-v", *argv[1:]]
        proc = subprocess.Popen(argv, cwd=scratch, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        timeline = Timeline(proc) if args.timeline else None
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if timeline is not None:
            timeline.stop()
            err = timeline.stderr()
        else:
            err = proc.stderr.read() if proc.stderr else ""
        seconds = time.perf_counter() - t0
        name = " ".join(argv[1:] if timeline is None else argv[2:])[:100]
        row = {
            "step": name,
            "seconds": round(seconds, 1),
            "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
            "rc": proc.returncode,
        }
        if timeline is not None:
            row["timeline"] = timeline.summary()
        rows.append(row)
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
        "partial": partial,
        "total_seconds": round(total, 1),
        "total_minutes": round(total / 60, 1),
        "peak_rss_gb": peak,
        "target_minutes": TARGET_SECONDS / 60,
        "target_gb": TARGET_GB,
        "time_target_met": None if partial else total <= TARGET_SECONDS,
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
