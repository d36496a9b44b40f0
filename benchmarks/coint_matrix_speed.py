"""All-pairs Engle-Granger from matrix products against the per-pair path and statsmodels ``coint``.

On the 504 trading days ending 2019-12-31 of the bundled stocks (log closes, gaps of up to 5 days
forward-filled, stocks with a longer gap dropped: 1,540 stocks, 1,185,030 pairs), fixed lag 1 as the pairs
backtest uses:

1. all pairs by :class:`finsae.backtest.coint_matrix.EngleGrangerPanel` (``--repeat`` runs, best and median),
   one ordering and both orderings;
2. all pairs by the per-pair path (:func:`finsae.backtest.pairs.pair_tests`, chunked ``engle_granger``), once
   (``--pairwise-sample`` extrapolates from that many pairs instead);
3. statsmodels ``coint`` on ``--sample`` pairs, extrapolated; its statistics and p-values against the matrix
   path;
4. the cross-over: (a) ``P`` random pairs of all 1,540 stocks, (b) all pairs of the first ``n`` stocks, matrix
   against per-pair;
5. with ``--autolag``: AIC lag choice up to Schwert's maxlag (18) on all pairs of the first 300 stocks.

Timings are wall-clock on whatever the machine is doing; on a shared machine take the best of several runs.

    python benchmarks/coint_matrix_speed.py [--repeat 5] [--sample 200] [--pairwise-sample 0] [--autolag]
                                            [--threads 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _common import emit, machine
from statsmodels.tsa.stattools import coint

from finsae.backtest import engle_granger
from finsae.backtest.coint_matrix import ROUTE_MATRIX, EngleGrangerPanel, engle_granger_matrix
from finsae.backtest.pairs import all_pairs, pair_tests
from finsae.data import load_prices


def timed(fn, repeat: int = 1) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def crossover(sizes: list[int], matrix: list[float], pairwise: list[float]) -> float | None:
    """Smallest size at which the matrix path is faster (log-linear interpolation), None if never."""
    ratio = np.log(np.asarray(pairwise) / np.asarray(matrix))
    for k, r in enumerate(ratio):
        if r > 0:
            if k == 0:
                return float(sizes[0])
            f = -ratio[k - 1] / (r - ratio[k - 1])
            return float(np.exp(np.log(sizes[k - 1]) + f * (np.log(sizes[k]) - np.log(sizes[k - 1]))))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs of the all-pairs matrix test")
    parser.add_argument("--sample", type=int, default=200, help="pairs timed with statsmodels")
    parser.add_argument("--pairwise-sample", type=int, default=0,
                        help="time the per-pair path on this many pairs and extrapolate (0: all pairs)")
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for both paths (default: all cores)"
    )
    parser.add_argument("--autolag", action="store_true", help="also time AIC lag choice (slow per pair)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    close = load_prices().close.loc[:"2019-12-31"].iloc[-504:]
    logp = np.log(close.ffill(limit=5).dropna(axis=1).to_numpy())
    t_len, n = logp.shape
    i, j = all_pairs(n)
    kw = {"maxlag": 1, "autolag": None}
    result: dict = {"machine": machine(), "T": t_len, "stocks": n, "pairs": len(i), "lag": "fixed 1"}
    print(f"{machine()}; T={t_len}, {n} stocks, {len(i):,} pairs, fixed lag 1")

    panel = EngleGrangerPanel(logp, n_jobs=args.threads, **kw)
    panel.test(i[:1000], j[:1000])  # warm up
    times, (res, route) = timed(lambda: panel.test_with_route(i, j), args.repeat)
    result["matrix_s"] = {"best": min(times), "median": float(np.median(times)), "runs": times}
    result["matrix_fallback_pairs"] = int(np.sum(route != ROUTE_MATRIX))
    print(f"matrix, all pairs:            best {min(times):6.2f} s, median {np.median(times):6.2f} s of "
          f"{args.repeat} ({min(times) / len(i) * 1e6:.2f} us/pair; {result['matrix_fallback_pairs']} pairs "
          "took the fallback)")
    both_times, _ = timed(lambda: panel.test_both(i, j), max(1, args.repeat // 2))
    result["matrix_both_orderings_s"] = {"best": min(both_times), "median": float(np.median(both_times))}
    print(f"matrix, both orderings:       best {min(both_times):6.2f} s, median {np.median(both_times):6.2f} "
          "s")

    if args.pairwise_sample:
        sub = np.random.default_rng(1).choice(len(i), args.pairwise_sample, replace=False)
        (pw,), ref = timed(lambda: engle_granger(logp.T[i[sub]], logp.T[j[sub]], n_jobs=args.threads, **kw))
        pw_all = pw / len(sub) * len(i)
        d_pw = np.nanmax(np.abs(res.stat[sub] - ref.stat))
        print(f"per-pair path (extrapolated): {pw_all:6.2f} s ({pw / len(sub) * 1e6:.2f} us/pair)")
    else:
        (pw_all,), ref = timed(lambda: pair_tests(logp, i, j, **kw))
        d_pw = np.nanmax(np.abs(res.stat - ref.stat))
        print(f"per-pair path, all pairs:     {pw_all:6.2f} s ({pw_all / len(i) * 1e6:.2f} us/pair)")
    result["pairwise_s"] = pw_all
    result["speedup_vs_pairwise"] = pw_all / min(times)
    result["max_abs_stat_diff_vs_pairwise"] = float(d_pw)

    sub = np.random.default_rng(2).choice(len(i), args.sample, replace=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (sm,), ref_sm = timed(lambda: np.array([coint(logp[:, i[k]], logp[:, j[k]], **kw)[:2] for k in sub]))
    sm_all = sm / len(sub) * len(i)
    d_stat = float(np.max(np.abs(res.stat[sub] - ref_sm[:, 0])))
    d_p = float(np.max(np.abs(res.pvalue[sub] - ref_sm[:, 1])))
    result.update(statsmodels_s_extrapolated=sm_all, statsmodels_us_per_pair=sm / len(sub) * 1e6,
                  max_abs_stat_diff_vs_statsmodels=d_stat, max_abs_pvalue_diff_vs_statsmodels=d_p)
    print(f"statsmodels (extrapolated):   {sm_all:6.0f} s ({sm / len(sub) * 1e3:.2f} ms/pair, from "
          f"{len(sub)} pairs)")
    print(f"speed-up: {pw_all / min(times):.0f}x over the per-pair path, {sm_all / min(times):.0f}x over "
          f"statsmodels; max |d stat| {d_pw:.1e} vs per-pair, {d_stat:.1e} vs statsmodels, max |d p| "
          f"{d_p:.1e}")

    print("\ncross-over (a): P random pairs of all stocks (matrix takes only the columns used)")
    rng = np.random.default_rng(3)
    sizes = [300, 1000, 3000, 10_000, 30_000, 100_000]

    def race(matrix, a: np.ndarray, b: np.ndarray, label: str) -> tuple[float, float]:
        """Best of 3 for the matrix path (``matrix()``) and the per-pair path on pairs (a, b)."""
        mt, _ = timed(matrix, 3)
        pt, _ = timed(lambda: engle_granger(logp.T[a], logp.T[b], n_jobs=args.threads, **kw), 3)
        print(f"  {label}: matrix {min(mt) * 1e3:8.2f} ms, per-pair {min(pt) * 1e3:8.2f} ms")
        return min(mt), min(pt)

    mat_t, pw_t = [], []
    for size in sizes:
        pick = rng.choice(len(i), size, replace=False)
        a, b = i[pick], j[pick]
        mt, pt = race(lambda a=a, b=b: engle_granger_matrix(logp, a, b, n_jobs=args.threads, **kw), a, b,
                      f"P={size:>7,}")
        mat_t.append(mt)
        pw_t.append(pt)
    result["crossover_random_pairs"] = {"sizes": sizes, "matrix_s": mat_t, "pairwise_s": pw_t,
                                        "crossover_pairs": crossover(sizes, mat_t, pw_t)}
    cross = result["crossover_random_pairs"]["crossover_pairs"]
    print(
        f"  matrix faster from about {cross:,.0f} pairs ({cross / n:.1f} per stock)" if cross else "  never"
    )

    print("cross-over (b): all pairs of the first n stocks")
    ns = [5, 10, 20, 50, 100, 200, 400]
    mat_t, pw_t = [], []
    for m in ns:
        a, b = all_pairs(m)
        mt, pt = race(
            lambda a=a, b=b, m=m: EngleGrangerPanel(logp[:, :m], n_jobs=args.threads, **kw).test(a, b),
            a,
            b,
            f"n={m:>4} ({len(a):>6,} pairs)",
        )
        mat_t.append(mt)
        pw_t.append(pt)
    result["crossover_all_pairs_of_n"] = {"n": ns, "matrix_s": mat_t, "pairwise_s": pw_t,
                                          "crossover_n": crossover(ns, mat_t, pw_t)}
    cross = result["crossover_all_pairs_of_n"]["crossover_n"]
    print(f"  matrix faster from about n = {cross:.0f} stocks" if cross else "  never")

    if args.autolag:
        m = 300
        a, b = all_pairs(m)
        (mt,), r = timed(
            lambda: EngleGrangerPanel(logp[:, :m], autolag="aic", n_jobs=args.threads).test(a, b)
        )
        (pt,), p = timed(lambda: engle_granger(logp.T[a], logp.T[b], autolag="aic", n_jobs=args.threads))
        result["autolag_aic_first_300"] = {"pairs": len(a), "matrix_s": mt, "pairwise_s": pt,
                                           "max_abs_stat_diff": float(np.nanmax(np.abs(r.stat - p.stat))),
                                           "same_lags": bool(np.array_equal(r.lags, p.lags))}
        print(f"\nautolag='aic' (maxlag 18), all {len(a):,} pairs of 300 stocks: matrix {mt:.2f} s "
              f"({mt / len(a) * 1e6:.1f} us/pair), per-pair {pt:.2f} s ({pt / len(a) * 1e6:.1f} us/pair)")
    if args.out:
        emit(result, args.out)


if __name__ == "__main__":
    main()
