"""Inference that accounts for time: paired differences of pair-weighted correlation under a two-way
bootstrap.

The company bootstrap of :func:`finsae.evaluate.comovement.paired_difference` treats the window's correlation
matrix as fixed; but monthly correlations over 32 months are themselves noisy, and the same months move every
pair. A draw here resamples both:

* **months**: a circular block bootstrap of the ``T`` periods (blocks of ``block`` consecutive periods with
  uniformly random starts, wrapping at the end, concatenated and cut to ``T``), which keeps short-range
  dependence; the correlation matrix ``C*`` is recomputed on the resampled periods (pairwise complete);
* **companies**: multinomial weights ``w_i`` (company ``i`` drawn ``w_i`` times), each pair weighted ``w_i
  w_j``.

The resampled pair-weighted mean of grouping ``g`` is ``sum_{i<j in P_g} w_i w_j C*_ij / sum w_i w_j`` over
its within-group pairs with a valid ``C*_ij``; the difference of two groupings uses the same draw for both
(paired). 95% CI: percentiles 2.5 and 97.5 of the draws.

**Top-k neighbours** (:func:`two_way_topk_differences`): the statistic is the top-k neighbour correlation
``sum_i sum_{j in N_k(i)} C_ij / #{valid (i, j)}`` of
:func:`finsae.evaluate.ranking.topk_neighbour_correlation` with each company's neighbour list ``N_k(i)``
fixed (it comes from text or past returns, not from the window).
A draw resamples the months as above and the *focal* companies with multinomial weights ``w_i``:
``sum_i w_i sum_{j in N_k(i)} C*_ij / sum_i w_i #{valid j}``; both methods read the same draw (paired).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finsae.errors import DataError
from finsae.evaluate.comovement import (
    CorrelationMatrix,
    PairedDifference,
    encode_labels,
    pairwise_correlation_at,
    within_pairs,
)


@dataclass(frozen=True)
class TwoWayDifference(PairedDifference):
    """``PW(a) - PW(b)`` with a two-way (companies x blocks of periods) bootstrap 95% CI; also each side's
    pair-weighted correlation and the block length in periods."""

    pair_weighted_a: float
    pair_weighted_b: float
    block: int


def block_indices(n_periods: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """Period indices of one circular block bootstrap sample of length ``n_periods``."""
    if block < 1:
        raise DataError(f"block length must be >= 1, got {block}")
    n_blocks = -(-n_periods // block)
    starts = rng.integers(0, n_periods, size=n_blocks)
    return ((starts[:, None] + np.arange(block)[None, :]) % n_periods).ravel()[:n_periods]


def _bootstrap(
    x: np.ndarray,
    union: np.ndarray,
    n_weights: int,
    statistic: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    names: list[str],
    *,
    draws: int,
    block: int,
    seed: int,
    min_periods: int,
) -> dict[str, np.ndarray]:
    """The two-way draws shared by both differences: per draw, a circular block sample of the periods of
    ``x`` (periods x companies), the correlations at the flat positions ``union`` on it, and multinomial
    weights over ``n_weights`` units (companies or focal companies), drawn in that order from one seeded
    generator; ``statistic(correlations, weights)`` gives each name's figure."""
    t = x.shape[0]
    rng = np.random.default_rng(seed)
    boot = {nm: np.empty(draws) for nm in names}
    for d in range(draws):
        rows = block_indices(t, block, rng)
        c = pairwise_correlation_at(x[rows], union, min_periods=min_periods)
        w = rng.multinomial(n_weights, np.full(n_weights, 1.0 / n_weights)).astype(np.float64)
        got = statistic(c, w)
        for nm in names:
            boot[nm][d] = got[nm]
    return boot


def _percentile_ci(diff: np.ndarray, draws: int) -> tuple[float, float]:
    """Percentiles 2.5 and 97.5 of the draws' differences (NaN without draws)."""
    if not draws:
        return np.nan, np.nan
    lo, hi = np.nanpercentile(diff, [2.5, 97.5])
    return float(lo), float(hi)


def two_way_differences(
    returns: pd.DataFrame,
    corr: CorrelationMatrix,
    groupings: dict[str, pd.Series],
    comparisons: list[tuple[str, str]],
    *,
    draws: int = 500,
    block: int = 6,
    seed: int = 0,
    min_periods: int | None = None,
) -> list[TwoWayDifference]:
    """Paired differences for ``comparisons`` (pairs of names of ``groupings``) on the returns panel
    ``returns`` (periods x tickers, the panel ``corr`` was computed from; module docstring)."""
    missing = sorted({n for ab in comparisons for n in ab} - set(groupings))
    if missing:
        raise DataError(f"comparisons name groupings that were not given: {missing}")
    x = returns.reindex(columns=corr.tickers).to_numpy(dtype=np.float64)
    t, n = x.shape
    if min_periods is None:
        min_periods = max(3, t // 2)
    names = sorted({nm for ab in comparisons for nm in ab})
    flats: dict[str, np.ndarray] = {}  # per grouping kept: its pairs' flat positions in the N x N matrix
    same: dict[str, str] = {}  # a grouping with the same within-group pairs as an earlier one: read its draws
    first: dict[bytes, str] = {}
    for nm in names:
        codes, _, _ = encode_labels(corr, groupings[nm])
        wi, wj, _ = within_pairs(codes)
        flat = wi.astype(np.int64) * n + wj
        key = flat.tobytes()
        if key in first:
            same[nm] = first[key]
            continue
        first[key] = nm
        flats[nm] = flat
    # every draw's correlations only at the union of the groupings' pairs (pairwise_correlation_at: the same
    # values as the whole matrix's, without its elementwise passes); each grouping then reads its pairs from
    # that vector, in the same order as from the matrix
    union = np.unique(np.concatenate(list(flats.values()))) if flats else np.zeros(0, np.int64)
    at = {nm: np.searchsorted(union, f) for nm, f in flats.items()}

    ui, uj = np.divmod(union, n)

    def pw(gathered: np.ndarray, w: np.ndarray) -> dict[str, float]:
        # the pair weights w_i w_j and their products with the correlations, once per union pair; a grouping
        # reads its pairs' (the same products of the same numbers, summed in the same order as per grouping)
        ww_u = np.take(w, ui) * np.take(w, uj)
        finite = np.isfinite(gathered)
        all_finite = bool(finite.all())
        wv_u = ww_u * gathered
        out = {}
        for nm, pos in at.items():
            ok = None if all_finite else np.take(finite, pos)
            if ok is None or ok.all():
                ww, wv = np.take(ww_u, pos), np.take(wv_u, pos)
            else:
                ww = np.take(ww_u, pos)[ok]
                wv = ww * np.take(gathered, pos)[ok]
            den = ww.sum()
            out[nm] = float(wv.sum() / den) if den > 0 else np.nan
        return out

    point = pw(np.take(corr.values.ravel(), union), np.ones(n))
    boot = _bootstrap(x, union, n, pw, list(flats), draws=draws, block=block, seed=seed,
                      min_periods=min_periods)
    for nm, rep in same.items():
        point[nm], boot[nm] = point[rep], boot[rep]
    out = []
    for a, b in comparisons:
        lo, hi = _percentile_ci(boot[a] - boot[b], draws)
        out.append(TwoWayDifference(a, b, point[a] - point[b], lo, hi, draws,
                                    pair_weighted_a=point[a], pair_weighted_b=point[b], block=block))
    return out


@dataclass(frozen=True)
class TwoWayTopkDifference(PairedDifference):
    """``topk(a) - topk(b)``, the difference of two methods' top-``k`` neighbour correlations, with a two-way
    (focal companies x blocks of periods) bootstrap 95% CI; also each side's figure and the block length."""

    k: int
    top_a: float
    top_b: float
    block: int


def two_way_topk_differences(
    returns: pd.DataFrame,
    corr: CorrelationMatrix,
    focal: np.ndarray,
    neighbours: dict[str, np.ndarray],
    comparisons: list[tuple[str, str]],
    *,
    k: int,
    draws: int = 500,
    block: int = 6,
    seed: int = 0,
    min_periods: int | None = None,
) -> list[TwoWayTopkDifference]:
    """Paired differences of top-``k`` neighbour correlation for ``comparisons`` (pairs of names of
    ``neighbours``; module docstring). ``focal``: positions in ``corr.tickers`` of the companies scored;
    ``neighbours[name]``: their neighbours' positions, most similar first, one row per focal company
    (:func:`finsae.evaluate.ranking.topk_neighbours`); the first ``k`` columns are read. ``returns``: the
    panel ``corr`` was computed from. The point figures equal
    :func:`~finsae.evaluate.ranking.topk_neighbour_correlation`'s."""
    missing = sorted({n for ab in comparisons for n in ab} - set(neighbours))
    if missing:
        raise DataError(f"comparisons name neighbour lists that were not given: {missing}")
    focal = np.asarray(focal, dtype=np.int64)
    x = returns.reindex(columns=corr.tickers).to_numpy(dtype=np.float64)
    t, n = x.shape
    if min_periods is None:
        min_periods = max(3, t // 2)
    names = sorted({nm for ab in comparisons for nm in ab})
    flats = {}
    for nm in names:
        top = np.asarray(neighbours[nm], dtype=np.int64)
        if top.ndim != 2 or top.shape[0] != len(focal) or top.shape[1] < k:
            raise DataError(f"neighbours of {nm!r} have shape {top.shape}, expected ({len(focal)}, >= {k})")
        flats[nm] = (focal[:, None] * n + top[:, :k]).ravel()
    union = np.unique(np.concatenate(list(flats.values()))) if flats else np.zeros(0, np.int64)
    at = {nm: np.searchsorted(union, f) for nm, f in flats.items()}
    rows_k = (len(focal), k)

    def figure(gathered: np.ndarray, w: np.ndarray) -> dict[str, float]:
        out = {}
        for nm in names:
            v = np.take(gathered, at[nm]).reshape(rows_k)
            ok = np.isfinite(v)
            num = np.where(ok, v, 0.0).sum(axis=1)
            den = float(w @ ok.sum(axis=1))
            out[nm] = float(w @ num / den) if den > 0 else np.nan
        return out

    point = {}
    for nm in names:  # exactly topk_neighbour_correlation's mean (numpy's nanmean over the same entries)
        vals = np.take(corr.values.ravel(), flats[nm])
        point[nm] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
    boot = _bootstrap(x, union, len(focal), figure, names, draws=draws, block=block, seed=seed,
                      min_periods=min_periods)
    out = []
    for a, b in comparisons:
        lo, hi = _percentile_ci(boot[a] - boot[b], draws)
        out.append(TwoWayTopkDifference(a, b, point[a] - point[b], lo, hi, draws, k=k,
                                        top_a=point[a], top_b=point[b], block=block))
    return out
