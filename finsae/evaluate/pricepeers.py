"""Peers from past returns alone, and blends of a text similarity with them: the first bar a quant checks.

* **Price similarity**: ``P_ij = corr(r_i, r_j)`` over a window that ends before formation (pairwise-complete
  Pearson correlation of log returns, :func:`finsae.evaluate.comovement.correlation_matrix`). Companies
  without usable returns in that window (too short a history) have no price similarity: for ranking and
  grouping their entries are ``-1`` (the least similar possible), so price peers cannot place them - the
  cold-start case.
* **Blend**: ``B = (1 - beta) std(T) + beta std(P)``, each similarity standardised over its off-diagonal
  entries (``std(X) = (X - mean) / sd``); a missing price correlation counts as ``std(P) = 0`` (average), so a
  company without history is placed by its text alone. ``beta = 0`` is the text, ``beta = 1`` price peers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from finsae.errors import DataError
from finsae.evaluate.comovement import CorrelationMatrix


def aligned_correlation(corr: CorrelationMatrix, tickers: pd.Index) -> np.ndarray:
    """``corr``'s values on ``tickers`` (N x N, NaN where a ticker has no returns in the window or the pair no
    valid correlation; diagonal NaN)."""
    pos = corr.tickers.get_indexer(pd.Index(tickers))
    out = np.full((len(pos), len(pos)), np.nan)
    ok = np.flatnonzero(pos >= 0)
    out[np.ix_(ok, ok)] = corr.values[np.ix_(pos[ok], pos[ok])]
    np.fill_diagonal(out, np.nan)
    return out


def price_similarity(corr: CorrelationMatrix, tickers: pd.Index, *, missing: float = -1.0) -> np.ndarray:
    """Pre-formation return correlation as a similarity on ``tickers``; unknown pairs get ``missing``
    (diagonal 1)."""
    if not len(pd.Index(tickers).intersection(corr.tickers)):
        raise DataError("no ticker has returns in the price-peer window "
                        f"{corr.start.date()}..{corr.end.date()}")
    s = np.nan_to_num(aligned_correlation(corr, tickers), nan=missing)
    np.fill_diagonal(s, 1.0)
    return s


def standardise(similarity: np.ndarray) -> np.ndarray:
    """``(S - mean) / sd`` over the finite off-diagonal entries; NaN entries become 0, diagonal 0."""
    s = np.asarray(similarity, dtype=np.float64)
    off = ~np.eye(len(s), dtype=bool) & np.isfinite(s)
    if not off.any():
        raise DataError("similarity has no finite off-diagonal entry")
    mu, sd = float(s[off].mean()), float(s[off].std())
    out = np.where(off, (s - mu) / (sd if sd > 0 else 1.0), 0.0)
    return out


def blend_similarity(text: np.ndarray, price_corr: np.ndarray, beta: float) -> np.ndarray:
    """``(1 - beta) std(text) + beta std(price_corr)`` (module docstring); ``price_corr`` may hold NaN."""
    if not 0.0 <= beta <= 1.0:
        raise DataError(f"blend weight beta must be in [0, 1], got {beta}")
    if text.shape != price_corr.shape:
        raise DataError(f"text similarity is {text.shape}, price correlation {price_corr.shape}")
    return (1.0 - beta) * standardise(text) + beta * standardise(price_corr)
