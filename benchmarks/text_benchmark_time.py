"""Wall time of the whole text benchmark (backtests/forward_2017.yaml) with features already cached.

Runs the config once to fill the feature caches if needed (SAE extraction of both text vintages and MiniLM
embeddings take minutes on a CPU the first time), then times complete runs in this process's successors: each
timed run is a fresh ``finsae benchmark`` process, so imports and cache reads are included.

    python benchmarks/text_benchmark_time.py [--config backtests/forward_2017.yaml] [--runs 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(config: str, out: Path) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "finsae.cli", "benchmark", "--config", config, "--output", str(out)]
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"benchmark failed:\n{proc.stderr[-3000:]}")
    peak_kib = int(proc.stderr.strip().splitlines()[-1])
    print(f"  {seconds:.1f} s, peak RSS {peak_kib / 1024:,.0f} MiB")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="backtests/forward_2017.yaml")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("warm-up (fills the feature caches if they are empty):")
        run(args.config, Path(tmp) / "warm")
        times = []
        for k in range(args.runs):
            print(f"timed run {k + 1} (features cached):")
            times.append(run(args.config, Path(tmp) / f"run{k}"))
    print(f"whole benchmark with cached features: best {min(times):.1f} s, median "
          f"{sorted(times)[len(times) // 2]:.1f} s")


if __name__ == "__main__":
    main()
