"""Speed of the batched Engle-Granger test against statsmodels ``coint``, and all pairs of the bundled stocks.

1. Per pair at T=1260 (random walks, half co-integrated): statsmodels ``coint`` with its default autolag="aic"
   and with a fixed lag, timed on a sample of pairs, against finsae's batched test on many pairs; the
   statistics are compared on the timed sample.
2. All pairs of the 1,542 bundled stocks on the 504 trading days ending 2019-12-31 (fixed lag 1, as the pairs
   backtest uses), chunked; peak memory reported.

    python benchmarks/coint_speed.py [--sample 40] [--batch 4000] [--skip-all-pairs]
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import numpy as np
from statsmodels.tsa.stattools import coint

from finsae.backtest import engle_granger
from finsae.backtest.pairs import all_pairs, pair_tests
from finsae.data import load_prices


def per_pair_statsmodels(y: np.ndarray, x: np.ndarray, **kw) -> tuple[float, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = np.array([coint(y[k], x[k], **kw)[:2] for k in range(len(y))])
        return (time.perf_counter() - t0) / len(y), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sample", type=int, default=40, help="pairs timed with statsmodels")
    parser.add_argument("--batch", type=int, default=4000, help="pairs timed with finsae")
    parser.add_argument("--skip-all-pairs", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    t_len = 1260
    x = np.cumsum(rng.normal(size=(args.batch, t_len)), axis=1)
    y = (
        0.7 * x
        + rng.normal(size=x.shape)
        + np.cumsum(rng.normal(size=x.shape) * (np.arange(args.batch) % 2)[:, None], axis=1)
    )
    print(f"Engle-Granger per pair, T={t_len}")
    print(f"{'setting':<26} {'statsmodels':>12} {'finsae':>10} {'speed-up':>9} {'max |d stat|':>13} "
          f"{'max |d p|':>10}")
    for label, kw in (
        ("autolag='aic' (default)", {"autolag": "aic"}),
        ("fixed lag 1", {"maxlag": 1, "autolag": None}),
    ):
        sm_time, ref = per_pair_statsmodels(y[: args.sample], x[: args.sample], **kw)
        engle_granger(y[:50], x[:50], **kw)  # warm up
        t0 = time.perf_counter()
        res = engle_granger(y, x, **kw)
        ours = (time.perf_counter() - t0) / args.batch
        d_stat = np.max(np.abs(res.stat[: args.sample] - ref[:, 0]))
        d_p = np.max(np.abs(res.pvalue[: args.sample] - ref[:, 1]))
        print(f"{label:<26} {sm_time * 1e3:9.2f} ms {ours * 1e6:7.1f} us {sm_time / ours:8.0f}x "
              f"{d_stat:13.1e} {d_p:10.1e}")

    if args.skip_all_pairs:
        return
    close = load_prices().close.loc[:"2019-12-31"].iloc[-504:]
    logp = np.log(close.ffill(limit=5).dropna(axis=1).to_numpy())
    n = logp.shape[1]
    i, j = all_pairs(n)
    t0 = time.perf_counter()
    res = pair_tests(logp, i, j, maxlag=1, autolag=None)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nAll {len(i):,} pairs of {n} bundled stocks, T={logp.shape[0]}, fixed lag 1: {seconds:.1f} s "
          f"({seconds / len(i) * 1e6:.1f} us/pair), {int(np.sum(res.pvalue < 0.05)):,} with p < 0.05; "
          f"peak RSS of this process {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
