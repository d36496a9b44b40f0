"""Pair tests on a panel of log prices and pair selection with Benjamini-Hochberg FDR control.

``pair_tests`` runs :func:`finsae.backtest.coint.engle_granger` for a list of pairs of columns, chunked so
memory stays bounded for all 1.19 million pairs of 1,542 stocks. ``select_pairs`` keeps, among candidate pairs
(e.g. the pairs inside peer groups), those whose Engle-Granger p-values survive Benjamini-Hochberg control of
the false discovery rate (``statsmodels.stats.multitest.multipletests(method="fdr_bh")``) *within that
candidate set*, are not collinear, and whose spread half-life lies in a range; then the ``max_pairs`` smallest
p-values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from finsae.backtest.coint import Autolag, engle_granger
from finsae.backtest.results import PairSelectionSettings
from finsae.errors import DataError

logger = logging.getLogger(__name__)


def all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i, j)``, ``i < j``, of all pairs of ``n`` items (row-major upper triangle)."""
    i, j = np.triu_indices(n, k=1)
    return i.astype(np.int32), j.astype(np.int32)


def pair_position(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Position of pair ``(i, j)`` (``i < j``) in :func:`all_pairs` order."""
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    return i * n - i * (i + 1) // 2 + (j - i - 1)


@dataclass(frozen=True)
class PairTests:
    """Engle-Granger results for pairs ``(i[k], j[k])`` of the columns of one price panel.

    ``pvalue`` is the p-value of the test of ``y = col i`` on ``x = col j``; with ``both_orderings`` it is the
    larger of that and the reverse ordering's p-value (``pvalue_ij``, ``pvalue_ji`` keep both, and
    ``half_life_ji``, ``hedge_ratio_ji`` the reverse ordering's spread).
    """

    i: np.ndarray
    j: np.ndarray
    pvalue: np.ndarray
    stat: np.ndarray
    half_life: np.ndarray
    hedge_ratio: np.ndarray
    lags: np.ndarray
    collinear: np.ndarray
    valid: np.ndarray
    pvalue_ij: np.ndarray
    pvalue_ji: np.ndarray | None
    half_life_ji: np.ndarray | None = None
    hedge_ratio_ji: np.ndarray | None = None

    def to_frame(self, tickers: pd.Index | None = None) -> pd.DataFrame:
        frame = pd.DataFrame({
            "i": self.i, "j": self.j, "stat": self.stat, "pvalue": self.pvalue, "pvalue_ij": self.pvalue_ij,
            "half_life": self.half_life, "hedge_ratio": self.hedge_ratio, "lags": self.lags,
            "collinear": self.collinear, "valid": self.valid,
        })
        if self.pvalue_ji is not None:
            frame["pvalue_ji"] = self.pvalue_ji
            frame["half_life_ji"] = self.half_life_ji
            frame["hedge_ratio_ji"] = self.hedge_ratio_ji
        if tickers is not None:
            frame.insert(0, "y", np.asarray(tickers)[self.i])
            frame.insert(1, "x", np.asarray(tickers)[self.j])
        return frame


def _test_chunk(bounds: tuple[int, int], *, cols: np.ndarray, i: np.ndarray, j: np.ndarray,
                maxlag: int | None, autolag: Autolag, both_orderings: bool) -> dict[str, np.ndarray]:
    """Engle-Granger results of pairs ``bounds[0]:bounds[1]`` (one task of :func:`pair_tests`)."""
    sl = slice(*bounds)
    res = engle_granger(cols[i[sl]], cols[j[sl]], maxlag=maxlag, autolag=autolag)
    out = {"pvalue_ij": res.pvalue, "stat": res.stat, "half_life": res.half_life,
           "hedge_ratio": res.hedge_ratio, "lags": res.lags, "collinear": res.collinear, "valid": res.valid}
    if both_orderings:
        rev = engle_granger(cols[j[sl]], cols[i[sl]], maxlag=maxlag, autolag=autolag)
        out["pvalue_ji"] = rev.pvalue
        out["half_life_ji"] = rev.half_life
        out["hedge_ratio_ji"] = rev.hedge_ratio
        out["collinear"] = out["collinear"] | rev.collinear
        out["valid"] = out["valid"] & rev.valid
    return out


def pair_tests(log_prices: np.ndarray, i: np.ndarray, j: np.ndarray, *, maxlag: int | None = 1,
               autolag: Autolag = None, both_orderings: bool = False, chunk_pairs: int = 50_000,
               progress: bool = False, backend: Any = None,
               method: Literal["pairwise", "matrix"] = "pairwise") -> PairTests:
    """Engle-Granger tests of columns ``i[k]`` on ``j[k]`` of ``log_prices`` (T x N).

    ``method="pairwise"``: :func:`finsae.backtest.coint.engle_granger` in chunks of pairs; ``backend``
    (:mod:`finsae.parallel`; default local) runs the chunks, e.g. as Ray tasks; every chunk is the same
    computation either way, so the results are identical. ``method="matrix"``: all pairs from matrix products
    of the panel (:class:`finsae.backtest.coint_matrix.EngleGrangerPanel`; about 40x faster for all pairs of a
    panel, equal to the pairwise path to about 1e-13; pairs with gaps or ill-conditioned pairs take the
    pairwise path), in this process."""
    x = np.asarray(log_prices, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"log_prices must be a (T, N) array, got shape {x.shape}")
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    n = len(i)
    if method == "matrix":
        from finsae.backtest.coint_matrix import EngleGrangerPanel

        panel = EngleGrangerPanel(x, maxlag=maxlag, autolag=autolag)
        fwd, rev = panel.test_both(i, j) if both_orderings else (panel.test(i, j), None)
        return PairTests(i.astype(np.int32), j.astype(np.int32),
                         fwd.pvalue if rev is None else np.fmax(fwd.pvalue, rev.pvalue), fwd.stat,
                         fwd.half_life, fwd.hedge_ratio, fwd.lags.astype(np.int64),
                         fwd.collinear if rev is None else fwd.collinear | rev.collinear,
                         fwd.valid if rev is None else fwd.valid & rev.valid, fwd.pvalue,
                         None if rev is None else rev.pvalue, None if rev is None else rev.half_life,
                         None if rev is None else rev.hedge_ratio)
    if method != "pairwise":
        raise DataError(f"method must be 'pairwise' or 'matrix', not {method!r}")
    cols = x.T.copy()  # (N, T): one contiguous row per stock
    bounds = [(start, min(start + chunk_pairs, n)) for start in range(0, n, chunk_pairs)]
    shared: dict[str, Any] = {"cols": cols, "i": i, "j": j, "maxlag": maxlag, "autolag": autolag,
              "both_orderings": both_orderings}
    if backend is None or backend.name == "local":
        parts = [_test_chunk(b, **shared) for b in tqdm(bounds, desc="pair tests", unit="chunk",
                                                        disable=None if progress else True)]
    else:
        parts = backend.map(_test_chunk, bounds, shared=shared)
    if parts:
        f = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    else:
        f = {k: np.empty(0) for k in ("pvalue_ij", "stat", "half_life", "hedge_ratio")}
        f.update(lags=np.empty(0, np.int64), collinear=np.empty(0, bool), valid=np.empty(0, bool))
        if both_orderings:
            f.update(pvalue_ji=np.empty(0), half_life_ji=np.empty(0), hedge_ratio_ji=np.empty(0))
    pvalue_ji = f.get("pvalue_ji") if both_orderings else None
    pvalue = f["pvalue_ij"] if pvalue_ji is None else np.fmax(f["pvalue_ij"], pvalue_ji)
    return PairTests(i.astype(np.int32), j.astype(np.int32), pvalue, f["stat"], f["half_life"],
                     f["hedge_ratio"], f["lags"].astype(np.int64), f["collinear"].astype(bool),
                     f["valid"].astype(bool), f["pvalue_ij"], pvalue_ji, f.get("half_life_ji"),
                     f.get("hedge_ratio_ji"))


def cap_per_stock(order: np.ndarray, i: np.ndarray, j: np.ndarray, cap: int | None,
                  limit: int | None = None, *, at: np.ndarray | None = None) -> np.ndarray:
    """Walk the candidate positions ``order`` (best first) and keep each pair unless one of its stocks
    ``i[k]``, ``j[k]`` is already in ``cap`` kept pairs; stop after ``limit`` pairs. Returns the kept
    positions in order. ``at``: the stocks of candidate ``k`` are ``i[at[k]]``, ``j[at[k]]`` (candidates that
    are a subset of longer arrays, read only where the walk needs them)."""
    order = np.asarray(order, dtype=np.int64)
    if cap is None:
        return order[:limit] if limit else order
    if cap < 1:
        raise DataError(f"max_pairs_per_stock must be >= 1, not {cap}")
    used: dict[int, int] = {}
    kept: list[int] = []
    for pos in order:
        q = pos if at is None else at[pos]
        a, b = int(i[q]), int(j[q])
        if used.get(a, 0) >= cap or used.get(b, 0) >= cap:
            continue
        used[a] = used.get(a, 0) + 1
        used[b] = used.get(b, 0) + 1
        kept.append(int(pos))
        if limit and len(kept) >= limit:
            break
    return np.asarray(kept, dtype=np.int64)


def benjamini_hochberg(pvalue: np.ndarray, alpha: float, n_tests: int | None = None) -> np.ndarray:
    """Positions of the p-values rejected by Benjamini-Hochberg at level ``alpha``, smallest p-value first
    (ties in position order).

    Equals ``statsmodels.stats.multitest.multipletests(pvalue, alpha, method="fdr_bh")[0]`` (tested) when
    ``n_tests`` is ``len(pvalue)``; ``n_tests`` larger than the array counts tests whose p-values are not
    given because they exceed ``alpha`` (they cannot be rejected: ``p_(k) <= k alpha / m <= alpha``), so only
    the p-values at or below ``alpha`` need sorting. NaN p-values are not tests."""
    p = np.asarray(pvalue, dtype=np.float64)
    m = int(np.sum(~np.isnan(p))) if n_tests is None else int(n_tests)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    small = np.flatnonzero(p <= alpha)
    order = small[np.argsort(p[small], kind="stable")]
    passed = p[order] <= np.arange(1, len(order) + 1) / float(m) * alpha
    k = int(np.flatnonzero(passed)[-1]) + 1 if passed.any() else 0
    return order[:k]


def select_pairs(pvalue: np.ndarray, half_life: np.ndarray, usable: np.ndarray, *, fdr: float = 0.05,
                 min_half_life: float = 1.0, max_half_life: float = 126.0, max_pairs: int | None = None,
                 i: np.ndarray | None = None, j: np.ndarray | None = None,
                 max_per_stock: int | None = None, n_tests: int | None = None) -> np.ndarray:
    """Positions (into the candidate arrays) of the pairs selected, best p-value first.

    Benjamini-Hochberg at level ``fdr`` over the ``usable`` candidates (valid, not collinear, tradable; the
    family has ``n_tests`` tests, by default the usable candidates with a p-value: pass a larger number when
    candidates whose p-value exceeds ``fdr`` were left out of the arrays), then the half-life range, then the
    smallest p-values, at most ``max_per_stock`` pairs per stock (needs the pairs' stocks ``i``, ``j``; see
    :func:`cap_per_stock`) and ``max_pairs`` in all.
    """
    if not 0 < fdr <= 1:
        raise DataError(f"fdr must be in (0, 1], not {fdr}")
    p = np.where(np.asarray(usable, dtype=bool), np.asarray(pvalue, dtype=np.float64), np.nan)
    keep = benjamini_hochberg(p, fdr, n_tests)
    hl = half_life[keep]
    keep = keep[(hl >= min_half_life) & (hl <= max_half_life)]  # still in p-value order
    if max_per_stock is not None:
        if i is None or j is None:
            raise DataError("max_per_stock needs the candidates' stocks i and j")
        return cap_per_stock(keep, i, j, max_per_stock, max_pairs)
    return keep[:max_pairs] if max_pairs else keep


def select_distance(ssd: np.ndarray, usable: np.ndarray, i: np.ndarray, j: np.ndarray, *, max_pairs: int,
                    max_per_stock: int | None = None, at: np.ndarray | None = None) -> np.ndarray:
    """Positions of the distance-method pairs: the usable candidates with the smallest sum of squared
    deviations (ties in position order), at most ``max_per_stock`` per stock and ``max_pairs`` in all (Gatev
    et al. 2006 take the top 20). Only the smallest SSDs are sorted (a partition first, widened until the cap
    is satisfied). ``at``: candidate ``k``'s stocks are ``i[at[k]]``, ``j[at[k]]`` (:func:`cap_per_stock`)."""
    candidates = np.flatnonzero(np.asarray(usable, dtype=bool) & np.isfinite(ssd))
    values = np.asarray(ssd, dtype=np.float64)[candidates]
    take = 4 * max_pairs
    while True:
        if take >= len(candidates):
            order = candidates[np.argsort(values, kind="stable")]
            return cap_per_stock(order, i, j, max_per_stock, max_pairs, at=at)
        cut = np.partition(values, take - 1)[take - 1]
        head = np.flatnonzero(values <= cut)  # every tie of the cut value: the order is that of a full sort
        order = candidates[head[np.argsort(values[head], kind="stable")]]
        kept = cap_per_stock(order, i, j, max_per_stock, max_pairs, at=at)
        if len(kept) >= max_pairs:
            return kept
        take *= 4


@dataclass(frozen=True)
class ResolvedTests:
    """Pair tests in the ordering each pair would be traded in (``flip``: y is the second stock of the
    pair)."""

    pvalue: np.ndarray
    half_life: np.ndarray
    hedge: np.ndarray
    flip: np.ndarray
    usable: np.ndarray


def resolve_orderings(tests: pd.DataFrame, rule: str) -> ResolvedTests:
    """Apply the ``selection.orderings`` rule (see :class:`finsae.config.PairSelectionConfig`) to a pair-test
    table: the p-value that decides (``first``: ``p_ij``; ``both``: ``max(p_ij, p_ji)``; ``best``:
    ``min(p_ij, p_ji)``), the traded ordering (the smaller p-value's) and its half-life and hedge ratio. A
    pair whose traded hedge ratio is not positive is not usable."""
    p_ij = tests["pvalue_ij"].to_numpy()
    hl_ij = tests["half_life_ij"].to_numpy().astype(np.float64)
    b_ij = tests["hedge_ij"].to_numpy()
    usable = tests["usable"].to_numpy().copy()
    if rule == "first":
        p, flip, hl, b = p_ij, np.zeros(len(p_ij), dtype=bool), hl_ij, b_ij
    else:
        if "pvalue_ji" not in tests:
            raise DataError(f"orderings {rule!r} needs pair tests of both orderings")
        p_ji = tests["pvalue_ji"].to_numpy()
        flip = np.nan_to_num(p_ji, nan=np.inf) < np.nan_to_num(p_ij, nan=np.inf)  # trade the smaller p-value
        p = np.fmax(p_ij, p_ji) if rule == "both" else np.fmin(p_ij, p_ji)
        hl = np.where(flip, tests["half_life_ji"].to_numpy().astype(np.float64), hl_ij)
        b = np.where(flip, tests["hedge_ji"].to_numpy(), b_ij)
    usable &= np.isfinite(b) & (b > 0)
    return ResolvedTests(p, hl, b, flip, usable)


@dataclass(frozen=True)
class PairChooser:
    """The selection rules of both strategies over the pairs of one window's stocks (all-pairs order,
    ``i < j``).

    ``coint``: Benjamini-Hochberg within the candidates whose test is usable (:func:`select_pairs`; the family
    is every usable candidate), then the half-life range, the smallest p-values and the cap per stock.
    ``distance``: the smallest sums of squared deviations ``ssd`` (:func:`select_distance`)."""

    tests: ResolvedTests
    coint_usable: np.ndarray  # usable test and, with the I(1) screen, both legs I(1)
    ssd: np.ndarray | None
    i: np.ndarray
    j: np.ndarray
    selection: PairSelectionSettings
    distance_max_pairs: int

    @cached_property
    def _coint_tests(self) -> tuple[np.ndarray, np.ndarray]:
        """Per pair: a test of the family (usable, with a p-value), and one that can pass BH (p <= fdr)."""
        valid = self.coint_usable & ~np.isnan(self.tests.pvalue)
        with np.errstate(invalid="ignore"):
            return valid, valid & (self.tests.pvalue <= self.selection.fdr)

    def usable(self, strategy: str) -> np.ndarray:
        """Positions of the pairs a placebo may draw: usable co-integration tests, or every pair."""
        return np.flatnonzero(self.coint_usable) if strategy == "coint" else np.arange(len(self.i))

    def choose(self, strategy: str, pos: np.ndarray) -> np.ndarray:
        """The selected pairs (positions) among the candidates ``pos``."""
        sel = self.selection
        if strategy == "coint":
            valid, significant = self._coint_tests  # boolean gathers (placebos call this thousands of times)
            small = pos[significant[pos]]  # only these can pass BH; the family is every usable candidate
            keep = select_pairs(self.tests.pvalue[small], self.tests.half_life[small],
                                np.ones(len(small), dtype=bool), fdr=sel.fdr, min_half_life=sel.min_half_life,
                                max_half_life=sel.max_half_life, max_pairs=sel.max_pairs, i=self.i[small],
                                j=self.j[small], max_per_stock=sel.max_pairs_per_stock,
                                n_tests=int(np.count_nonzero(valid[pos])))
            return small[keep]
        assert self.ssd is not None, "the distance strategy needs the SSD of every pair"
        keep = select_distance(self.ssd[pos], np.ones(len(pos), dtype=bool), self.i, self.j, at=pos,
                               max_pairs=self.distance_max_pairs, max_per_stock=sel.max_pairs_per_stock)
        return pos[keep]
