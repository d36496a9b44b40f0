"""Ranking metrics: do a method's most similar companies co-move? (No clustering needed.)

For companies ``i`` with similarity ``S_ij`` (e.g. cosine of feature vectors) and return correlation ``C_ij``:
the top-k neighbour correlation is ``mean_i mean_{j in N_k(i)} C_ij``, where ``N_k(i)`` are the ``k``
companies most similar to ``i`` (``i`` itself excluded; ties broken by position, after
:func:`~finsae.group.similarity.settle_ties`, so that the same ties break the same way on every CPU).
Companies without returns are left out.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from finsae.errors import DataError
from finsae.evaluate.comovement import CorrelationMatrix
from finsae.group.peers import label_codes
from finsae.group.similarity import FeatureTransform, cosine_similarity, largest_first, settle_ties


def cosine_similarity_matrix(features: np.ndarray | sp.spmatrix, transform: str = "log1p") -> np.ndarray:
    """Cosine similarity of rows after ``transform`` (:class:`finsae.group.similarity.FeatureTransform`); zero
    rows have similarity 0."""
    return cosine_similarity(FeatureTransform(transform).fit_transform(features))


def _positions(
    similarity: np.ndarray, tickers: pd.Index, corr: CorrelationMatrix
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``similarity`` (by ``tickers``) of the companies ``corr`` has, in ``corr``'s order, and their
    positions in ``corr.tickers``."""
    tickers = pd.Index(tickers)
    if similarity.shape != (len(tickers), len(tickers)):
        raise DataError(f"similarity is {similarity.shape}, expected {(len(tickers), len(tickers))}")
    present = tickers.get_indexer(corr.tickers)
    rows = present[present >= 0]
    return rows, corr.tickers.get_indexer(tickers[rows])


def _aligned(
    similarity: np.ndarray, tickers: pd.Index, corr: CorrelationMatrix
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity and correlation restricted to the companies in both, in the same order."""
    rows, pos_in_corr = _positions(similarity, tickers, corr)
    return (similarity[np.ix_(rows, rows)].astype(np.float64),
            corr.values[np.ix_(pos_in_corr, pos_in_corr)])


def _two_values(x: np.ndarray) -> tuple[float, float, np.ndarray] | None:
    """``(lo, hi, x == lo)`` when the non-empty 1-d ``x`` has at most two distinct values (a taxonomy's 0/1
    similarity; ``lo == hi`` for one), else None: what lets a rank or a gap skip a sort."""
    if len(x) == 0:
        return None
    lo, hi = x.min(), x.max()
    low = x == lo
    return (lo, hi, low) if lo == hi or (low | (x == hi)).all() else None


def _min_gap(values: np.ndarray) -> float:
    """The smallest difference between two distinct entries of ``values`` (1-d, finite); 4.0 (so that a
    quarter of it is 1) if there are fewer than two distinct ones. One or two distinct values (a taxonomy's
    0/1 similarity) without the sort of ``np.unique``."""
    if len(values) == 0:
        return 4.0
    few = _two_values(values)
    if few is not None:
        lo, hi, _ = few
        return 4.0 if lo == hi else float(hi - lo)
    return float(np.diff(np.unique(values)).min())


def topk_neighbours(
    similarity: np.ndarray,
    tickers: pd.Index,
    corr: CorrelationMatrix,
    k: int,
    *,
    tie_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each company's ``k`` most similar companies, as positions in ``corr.tickers``: ``(focal, top)`` with
    ``focal`` the positions of the companies of ``tickers`` that ``corr`` has (in ``corr``'s order) and
    ``top[r]`` the neighbours of ``focal[r]``, most similar first (``min(k, n - 1)`` columns).

    Equal similarities (after :func:`~finsae.group.similarity.settle_ties`) are taken in column order, or at
    random with ``tie_seed`` (needed for a 0/1 same-group similarity, where
    an arbitrary rule would pick neighbours by ticker order)."""
    rows, focal = _positions(similarity, tickers, corr)
    n = len(rows)
    if n < 2:
        return focal, np.zeros((n, 0), dtype=np.int64)
    # ties only rounding separates are ties everywhere
    s = settle_ties(similarity[np.ix_(rows, rows)].astype(np.float64), copy=False)
    np.fill_diagonal(s, -np.inf)  # never one's own neighbour
    if tie_seed is not None:  # random order among equal similarities: a random key below any real difference
        rng = np.random.default_rng(tie_seed)
        scale = _min_gap(s[np.isfinite(s)]) / 4
        s = s + scale * rng.random(s.shape)
    top = largest_first(s, min(k, n - 1), settle=False)  # the k most similar in order, equal ones by column
    return focal, focal[top]


def topk_neighbour_correlation(
    similarity: np.ndarray,
    tickers: pd.Index,
    corr: CorrelationMatrix,
    ks: tuple[int, ...] = (1, 5, 10),
    *,
    tie_seed: int | None = None,
) -> dict[int, float]:
    """Mean return correlation of each company's ``k`` most similar companies, for each ``k`` in ``ks``
    (neighbours by :func:`topk_neighbours`, ``tie_seed`` as there)."""
    focal, top = topk_neighbours(similarity, tickers, corr, max(ks), tie_seed=tie_seed)
    return neighbour_correlation(corr, focal, top, ks)


def neighbour_correlation(corr: CorrelationMatrix, focal: np.ndarray, top: np.ndarray,
                          ks: tuple[int, ...]) -> dict[int, float]:
    """:func:`topk_neighbour_correlation` from neighbours already taken by :func:`topk_neighbours` (at least
    ``max(ks)`` of them)."""
    if len(focal) < 2:
        return {k: float("nan") for k in ks}
    return {k: float(np.nanmean(corr.values[focal[:, None], top[:, :k]])) for k in ks}


def _vectorised_argsort() -> bool:
    """Whether numpy's unstable float64 argsort is its AVX-512 kernel (x86-simd-sort) on this CPU."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # numpy's own dispatch table
    except ImportError:  # another numpy layout: keep the stable sort
        return False
    return bool(__cpu_features__.get("AVX512_SKX", False))


#: The sort :func:`average_ranks` uses: numpy's vectorised quicksort where the CPU has it (4x faster than the
#: stable merge sort on the million pairs of a similarity matrix on an AVX-512 host), else the stable sort
#: (the unstable one was measured slower than scipy's stable sort on an AVX2 host). Ranks do not depend on it.
RANK_SORT: Literal["quicksort", "stable"] = "quicksort" if _vectorised_argsort() else "stable"


def average_ranks(values: np.ndarray, *, kind: Literal["quicksort", "stable"] | None = None) -> np.ndarray:
    """Ranks ``1..n`` of a 1-D array, ties given the mean of their ranks: ``scipy.stats.rankdata(values)``
    exactly, whatever the sort (``kind``, default :data:`RANK_SORT`): the ranks are half-integers computed
    from the sorted values only, so neither rounding nor the order a sort leaves ties in changes them. NaN
    anywhere: all NaN (scipy's default ``nan_policy="propagate"``). One or two distinct values (a taxonomy's
    0/1 similarity): the two runs' ranks without a sort (50x faster here; the same values)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise DataError(f"average_ranks takes a 1-D array, got shape {x.shape}")
    if np.isnan(x).any():
        return np.full(len(x), np.nan)
    few = _two_values(x)
    if few is not None:  # one or two distinct values (a taxonomy's 0/1): no sort
        low = few[2]
        # the same half-integers as below, from the same expression on the two runs' starts and counts
        n_low = int(low.sum())
        starts = np.array([0, n_low]) if n_low < len(x) else np.array([0])
        counts = np.diff(np.r_[starts, len(x)])
        mid = (starts + 1) + (counts - 1) / 2
        return np.where(low, mid[0], mid[-1])
    order = np.argsort(x, kind=kind or RANK_SORT)
    y = x[order]
    starts = np.flatnonzero(np.r_[True, y[1:] != y[:-1]])
    counts = np.diff(np.r_[starts, len(y)])
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + 1) + (counts - 1) / 2, counts)
    return ranks


class SpearmanReference:
    """Ranks of the pairwise return correlations of ``tickers`` (pairs ``i < j`` with a valid correlation),
    computed once and reused for every similarity matrix on the same companies."""

    def __init__(self, tickers: pd.Index, corr: CorrelationMatrix) -> None:
        self.tickers = pd.Index(tickers)
        _, c = _aligned(np.zeros((len(self.tickers), len(self.tickers))), self.tickers, corr)
        self.rows = self.tickers.get_indexer(corr.tickers)
        self.rows = self.rows[self.rows >= 0]
        iu, ju = np.triu_indices(len(c), k=1)
        y = c[iu, ju]
        ok = ~np.isnan(y)
        self.iu, self.ju = iu[ok], ju[ok]
        self.ry = average_ranks(y[ok])

    def spearman(self, similarity: np.ndarray) -> float:
        if len(self.ry) < 3:
            return float("nan")
        s = similarity[np.ix_(self.rows, self.rows)]
        return float(np.corrcoef(average_ranks(settle_ties(s[self.iu, self.ju], copy=False)), self.ry)[0, 1])


def similarity_spearman(similarity: np.ndarray, tickers: pd.Index, corr: CorrelationMatrix) -> float:
    """Spearman rank correlation between pairwise similarity and pairwise return correlation over all pairs
    ``i < j`` with a valid correlation (ties get average ranks, as in ``scipy.stats.spearmanr``)."""
    if similarity.shape != (len(tickers), len(tickers)):
        raise DataError(f"similarity is {similarity.shape}, expected {(len(tickers), len(tickers))}")
    return SpearmanReference(tickers, corr).spearman(similarity)


def same_group_similarity(labels: pd.Series, tickers: pd.Index) -> np.ndarray:
    """1 where two companies share a (non-missing) label, else 0: a taxonomy as a similarity."""
    codes = label_codes(labels, tickers)
    same = (codes[:, None] == codes[None, :]) & (codes[:, None] >= 0)
    return same.astype(np.float64)
