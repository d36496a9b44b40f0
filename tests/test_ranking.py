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


def _last_bits(s: np.ndarray, seed: int) -> np.ndarray:
    """``s`` with every entry moved by a few units in the last place, as another CPU's BLAS kernel (another
    summation order) would leave it."""
    rng = np.random.default_rng(seed)
    return s + rng.integers(-4, 5, size=s.shape) * np.spacing(np.abs(s))


def test_topk_neighbours_take_equal_similarities_in_column_order():
    """Binary features give many exactly equal cosines; the neighbours among equal ones are the first by
    column, whatever order the CPU's partition kernel leaves them in (numpy's AVX-512 and AVX2 kernels
    differ), so a top-k mean is the same number on every CPU."""
    from finsae.group.similarity import settle_ties

    n = 120
    panel = synthetic_panel(n_periods=60, n_tickers=n, seed=5)
    corr = correlation_matrix(panel)
    x = (np.random.default_rng(6).random((n, 6)) < 0.4).astype(float)  # 6 binary features: ties galore
    sim = _last_bits(cosine_similarity_matrix(x, "binary"), 7)
    got = topk_neighbour_correlation(sim, pd.Index(panel.tickers), corr, (1, 5, 10))
    s = settle_ties(sim)
    c = panel.returns.corr(min_periods=25).to_numpy()
    for k in (1, 5, 10):
        best = [sorted((j for j in range(n) if j != i), key=lambda j, i=i: (-s[i, j], j))[:k]
                for i in range(n)]
        want = np.mean([np.mean([c[i, j] for j in b]) for i, b in enumerate(best)])
        assert got[k] == pytest.approx(want, abs=1e-12)


def test_settle_ties_makes_rounding_level_ties_exact_and_keeps_real_order():
    from finsae.group.similarity import settle_ties

    rng = np.random.default_rng(0)
    x = rng.random((200, 60)) < 0.2  # binary features: the cosine |A & B| / sqrt(|A||B|) repeats across pairs
    z = x / np.sqrt(np.maximum(x.sum(1, keepdims=True), 1))
    exact = z @ z.T
    a, b = settle_ties(_last_bits(exact, 1)), settle_ties(_last_bits(exact, 2))
    assert (a != b).mean() < 1e-3  # equal except where a grid boundary falls between the two (rare)
    assert np.abs(a - exact).max() <= 1e-11  # one grid step at most
    v = np.array([0.5, 0.5 + 1e-9, -np.inf, np.nan, 0.1])
    out = settle_ties(v)
    assert np.argsort(-out[[0, 1, 4]]).tolist() == [1, 0, 2]  # a difference above the grid stays
    assert out[2] == -np.inf and np.isnan(out[3])
    assert settle_ties(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    assert settle_ties(v) is not v and v[1] == 0.5 + 1e-9  # a copy: the input is untouched
    w = v.copy()
    assert settle_ties(w, copy=False) is w and np.array_equal(w, out, equal_nan=True)  # in place


def test_ties_break_the_same_way_whatever_the_last_bits():
    """Top-k neighbours, Spearman and average-linkage groups of binary-feature cosines (many exact ties) do
    not depend on last-bit noise of the similarity (what another CPU's matrix product changes)."""
    from finsae.evaluate.ranking import similarity_spearman
    from finsae.group.cluster import linkage_merges

    rng = np.random.default_rng(3)
    n = 120
    x = rng.random((n, 40)) < 0.15
    z = x / np.sqrt(np.maximum(x.sum(1, keepdims=True), 1))
    exact = z @ z.T
    panel = synthetic_panel(n_periods=80, n_tickers=n, seed=4)
    tickers, corr = pd.Index(panel.tickers), correlation_matrix(panel)
    runs = []
    for seed in (11, 12, 13):
        s = _last_bits(exact, seed)
        s = (s + s.T) / 2
        seq = linkage_merges(np.clip(1 - s, 0, 2))
        runs.append((topk_neighbour_correlation(s, tickers, corr, (1, 5, 10)),
                     similarity_spearman(s, tickers, corr), seq.a.tolist(), seq.b.tolist()))
    assert runs[0] == runs[1] == runs[2]


def test_average_ranks_equal_scipy_rankdata_bit_for_bit():
    from scipy.stats import rankdata

    from finsae.evaluate.ranking import average_ranks

    rng = np.random.default_rng(3)
    cases = [
        rng.normal(size=10_001),  # no ties
        rng.integers(0, 7, size=5_000).astype(float),  # heavy ties
        np.round(rng.normal(size=20_000), 2),  # a binary-cosine-like mix of tie groups
        np.array([0.0, -0.0, 1.0, np.inf, -np.inf, 0.0, np.inf]),  # signed zeros tie, infinities rank
        np.array([2.0]),
        np.array([]),
        (rng.random(9_999) < 0.03).astype(float),  # a taxonomy's 0/1 similarity: the no-sort path
        np.array([1.0, 1.0, 0.0, -0.0]),  # two values, signed zeros tie
        np.full(5, 0.25),  # one value
        np.array([0.0, 1.0, 0.0, 2.0]),  # three values: the sort again
    ]
    for x in cases:
        want = rankdata(x)
        for kind in ("quicksort", "stable", None):  # either sort this CPU may use; None: the default
            got = average_ranks(x, kind=kind)
            assert got.dtype == np.float64 and np.array_equal(got, want)
    assert np.isnan(average_ranks(np.array([1.0, np.nan, 0.0]))).all()  # scipy: nan_policy="propagate"
    assert np.isnan(rankdata(np.array([1.0, np.nan, 0.0]))).all()
    with pytest.raises(DataError, match="1-D"):
        average_ranks(np.zeros((2, 2)))
