"""Wall time of the full pairs backtest (backtests/pairs.yaml: 9 methods, 2011-2019, 100 placebo draws of each
kind) with an empty pair-test cache and again with the cache filled.

    python benchmarks/backtest_time.py [--config backtests/pairs.yaml]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from finsae.config import load_pairs_config
from finsae.pipeline.backtest import run_pairs_backtest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="backtests/pairs.yaml")
    args = parser.parse_args()
    cfg = load_pairs_config(args.config)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["FINSAE_CACHE_DIR"] = cache
        for label in ("empty cache", "warm cache"):
            t0 = time.perf_counter()
            res = run_pairs_backtest(cfg, write=False)
            seconds = time.perf_counter() - t0
            n_windows = res.windows["window"].nunique()
            print(f"{label}: {seconds:.1f} s for {len(cfg.methods)} methods, {n_windows} windows, "
                  f"{cfg.placebo.draws} placebo draws of each kind")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
