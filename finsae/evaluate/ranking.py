"""Ranking metrics: do a method's most similar companies co-move? (No clustering needed.)

For companies ``i`` with similarity ``S_ij`` (e.g. cosine of feature vectors) and return correlation ``C_ij``:
the top-k neighbour correlation is ``mean_i mean_{j in N_k(i)} C_ij``, where ``N_k(i)`` are the ``k`` companies
most similar to ``i`` (``i`` itself excluded; ties broken by position). Companies without returns are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from finsae.errors import DataError
from finsae.evaluate.comovement import CorrelationMatrix


def cosine_similarity_matrix(features: np.ndarray | sp.spmatrix, transform: str = "log1p") -> np.ndarray:
    """Cosine similarity of rows after ``transform`` ("raw", "log1p" or "binary"); zero rows have similarity 0."""
    x = sp.csr_matrix(features, dtype=np.float64)
    if transform == "log1p":
        x = x.log1p()
    elif transform == "binary":
        x = (x > 0).astype(np.float64)
    elif transform != "raw":
        raise DataError(f"unknown transform {transform!r}; choose raw, log1p or binary")
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ x
    return np.asarray((x @ x.T).todense())


def topk_neighbour_correlation(similarity: np.ndarray, tickers: pd.Index, corr: CorrelationMatrix,
                               ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """Mean return correlation of each company's ``k`` most similar companies, for each ``k`` in ``ks``."""
    tickers = pd.Index(tickers)
    if similarity.shape != (len(tickers), len(tickers)):
        raise DataError(f"similarity is {similarity.shape}, expected {(len(tickers), len(tickers))}")
    present = tickers.get_indexer(corr.tickers)
    rows = present[present >= 0]
    pos_in_corr = corr.tickers.get_indexer(tickers[rows])
    s = similarity[np.ix_(rows, rows)].astype(np.float64).copy()
    np.fill_diagonal(s, -np.inf)
    c = corr.values[np.ix_(pos_in_corr, pos_in_corr)]
    order = np.argsort(-s, axis=1, kind="stable")
    out = {}
    for k in ks:
        nb = order[:, :k]
        vals = np.take_along_axis(c, nb, axis=1)
        out[k] = float(np.nanmean(vals))
    return out
