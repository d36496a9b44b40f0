"""Pair tests on a panel of log prices and pair selection with Benjamini-Hochberg FDR control.

``pair_tests`` runs :func:`finsae.backtest.coint.engle_granger` for a list of pairs of columns, chunked so memory
stays bounded for all 1.19 million pairs of 1,542 stocks. ``select_pairs`` keeps, among candidate pairs (e.g. the
pairs inside peer groups), those whose Engle-Granger p-values survive Benjamini-Hochberg control of the false
discovery rate (``statsmodels.stats.multitest.multipletests(method="fdr_bh")``) *within that candidate set*, are
not collinear, and whose spread half-life lies in a range; then the ``max_pairs`` smallest p-values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests
from tqdm.auto import tqdm

from finsae.backtest.coint import Autolag, engle_granger
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
    larger of that and the reverse ordering's p-value (``pvalue_ij``, ``pvalue_ji`` keep both).
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

    def to_frame(self, tickers: pd.Index | None = None) -> pd.DataFrame:
        frame = pd.DataFrame({
            "i": self.i, "j": self.j, "stat": self.stat, "pvalue": self.pvalue, "pvalue_ij": self.pvalue_ij,
            "half_life": self.half_life, "hedge_ratio": self.hedge_ratio, "lags": self.lags,
            "collinear": self.collinear, "valid": self.valid,
        })
        if self.pvalue_ji is not None:
            frame["pvalue_ji"] = self.pvalue_ji
        if tickers is not None:
            frame.insert(0, "y", np.asarray(tickers)[self.i])
            frame.insert(1, "x", np.asarray(tickers)[self.j])
        return frame


def pair_tests(log_prices: np.ndarray, i: np.ndarray, j: np.ndarray, *, maxlag: int | None = 1,
               autolag: Autolag = None, both_orderings: bool = False, chunk_pairs: int = 50_000,
               progress: bool = False) -> PairTests:
    """Engle-Granger tests of columns ``i[k]`` on ``j[k]`` of ``log_prices`` (T x N), in chunks of pairs."""
    x = np.asarray(log_prices, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"log_prices must be a (T, N) array, got shape {x.shape}")
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    n = len(i)
    cols = x.T.copy()  # (N, T): one contiguous row per stock
    fields = {k: np.empty(n) for k in ("pvalue_ij", "stat", "half_life", "hedge_ratio")}
    lags = np.empty(n, dtype=np.int64)
    collinear = np.empty(n, dtype=bool)
    valid = np.empty(n, dtype=bool)
    pvalue_ji = np.empty(n) if both_orderings else None
    for start in tqdm(range(0, n, chunk_pairs), desc="pair tests", unit="chunk", disable=None if progress else True):
        sl = slice(start, start + chunk_pairs)
        res = engle_granger(cols[i[sl]], cols[j[sl]], maxlag=maxlag, autolag=autolag)
        fields["pvalue_ij"][sl] = res.pvalue
        fields["stat"][sl] = res.stat
        fields["half_life"][sl] = res.half_life
        fields["hedge_ratio"][sl] = res.hedge_ratio
        lags[sl] = res.lags
        collinear[sl] = res.collinear
        valid[sl] = res.valid
        if pvalue_ji is not None:
            rev = engle_granger(cols[j[sl]], cols[i[sl]], maxlag=maxlag, autolag=autolag)
            pvalue_ji[sl] = rev.pvalue
            collinear[sl] |= rev.collinear
            valid[sl] &= rev.valid
    pvalue = fields["pvalue_ij"] if pvalue_ji is None else np.fmax(fields["pvalue_ij"], pvalue_ji)
    return PairTests(i.astype(np.int32), j.astype(np.int32), pvalue, fields["stat"], fields["half_life"],
                     fields["hedge_ratio"], lags, collinear, valid, fields["pvalue_ij"], pvalue_ji)


def select_pairs(pvalue: np.ndarray, half_life: np.ndarray, usable: np.ndarray, *, fdr: float = 0.05,
                 min_half_life: float = 1.0, max_half_life: float = 126.0, max_pairs: int | None = None) -> np.ndarray:
    """Positions (into the candidate arrays) of the pairs selected, best p-value first.

    Benjamini-Hochberg at level ``fdr`` over the ``usable`` candidates (valid, not collinear), then the
    half-life range, then the ``max_pairs`` smallest p-values.
    """
    if not 0 < fdr <= 1:
        raise DataError(f"fdr must be in (0, 1], not {fdr}")
    candidates = np.flatnonzero(usable & ~np.isnan(pvalue))
    if len(candidates) == 0:
        return candidates
    reject, _, _, _ = multipletests(pvalue[candidates], alpha=fdr, method="fdr_bh")
    keep = candidates[reject]
    hl = half_life[keep]
    keep = keep[(hl >= min_half_life) & (hl <= max_half_life)]
    keep = keep[np.argsort(pvalue[keep], kind="stable")]
    return keep[:max_pairs] if max_pairs else keep
