"""Speed of the co-movement metrics on the bundled data (1,542 companies).

Measures, for monthly 2010-2019 and daily June 2017 - January 2020 returns: the correlation matrix, all
metrics of one grouping without the null, and the null draws; and checks the correlation against pandas on the
same panel.

    python benchmarks/comovement_speed.py [--draws 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from finsae.data import load_prices, load_universe, log_returns
from finsae.evaluate import comovement, correlation_matrix
from finsae.group import taxonomy_labels


def best_of(repeat: int, fn):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--draws", type=int, default=200, help="null draws (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the best time is reported")
    args = parser.parse_args()

    universe, prices = load_universe(), load_prices()
    windows = [("monthly", "2010-01-01", "2019-12-31"), ("daily", "2017-06-01", "2020-01-31")]
    print(f"{'window':<36} {'step':<40} {'seconds':>8}")
    for freq, start, end in windows:
        panel = log_returns(prices, start, end, freq, tickers=universe.tickers)
        label = f"{freq} {start[:7]}..{end[:7]} ({panel.returns.shape[0]}x{panel.returns.shape[1]})"
        t, corr = best_of(args.repeat, lambda p=panel: correlation_matrix(p))
        print(f"{label:<36} {'correlation matrix':<40} {t:8.3f}")
        t_pd, ref = best_of(1, lambda p=panel: p.returns.corr(min_periods=max(3, p.n_periods // 2)))
        diff = float(np.nanmax(np.abs(corr.values - ref.to_numpy())))
        print(f"{label:<36} {'  (pandas DataFrame.corr, for reference)':<40} {t_pd:8.3f}   max |diff| "
              f"{diff:.1e}")
        for name in ("gics_sector", "gics_sub_industry", "sic4"):
            labels = taxonomy_labels(universe, name)
            t0, _ = best_of(
                args.repeat, lambda lab=labels, c=corr: comovement(c, lab, null_draws=0, bootstrap_draws=2000)
            )
            t1, _ = best_of(
                args.repeat,
                lambda lab=labels, c=corr: comovement(c, lab, null_draws=args.draws, bootstrap_draws=2000),
            )
            print(f"{label:<36} {name + ': metrics + 2000 bootstrap':<40} {t0:8.3f}")
            print(f"{label:<36} {name + f': ... + {args.draws} null draws':<40} {t1:8.3f}")


if __name__ == "__main__":
    main()
