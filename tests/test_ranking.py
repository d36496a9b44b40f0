"""Ranking metrics against loop-based computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from finsae.errors import DataError
from finsae.evaluate import correlation_matrix
from finsae.evaluate.ranking import cosine_similarity_matrix, topk_neighbour_correlation

from .conftest import synthetic_panel


def test_cosine_similarity_equals_direct_formula():
    x = np.abs(np.random.default_rng(0).normal(size=(6, 20))) * (
        np.random.default_rng(1).random((6, 20)) > 0.6
    )
    x[5] = 0
    for transform, f in (
        ("raw", lambda v: v),
        ("log1p", np.log1p),
        ("binary", lambda v: (v > 0).astype(float)),
    ):
        s = cosine_similarity_matrix(sp.csr_matrix(x), transform)
        for i in range(6):
            for j in range(6):
                a, b = f(x[i]), f(x[j])
                denom = np.linalg.norm(a) * np.linalg.norm(b)
                assert s[i, j] == pytest.approx(a @ b / denom if denom else 0.0, abs=1e-12)
    with pytest.raises(DataError, match="unknown transform"):
        cosine_similarity_matrix(x, "idf2")


def test_topk_neighbour_correlation_equals_loop():
    panel = synthetic_panel(n_periods=50, n_tickers=10, seed=3)
    corr = correlation_matrix(panel)
    tickers = pd.Index([*panel.tickers, "NORET"])  # a company without returns is left out
    sim = np.random.default_rng(4).random((11, 11))
    got = topk_neighbour_correlation(sim, tickers, corr, (1, 3))
    c = panel.returns.corr(min_periods=25)
    for k in (1, 3):
        per_company = []
        for i in range(10):
            scores = [(sim[i, j], j) for j in range(10) if j != i]
            best = [j for _, j in sorted(scores, key=lambda t: (-t[0], t[1]))[:k]]
            per_company.append(np.mean([c.iloc[i, j] for j in best]))
        assert got[k] == pytest.approx(np.mean(per_company), abs=1e-12)
