"""Batched Engle-Granger against statsmodels ``coint``, BH-FDR against statsmodels, and edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.tsa.adfvalues import mackinnoncrit, mackinnonp
from statsmodels.tsa.stattools import coint

from finsae.backtest import engle_granger, mackinnon_pvalue
from finsae.backtest.pairs import all_pairs, pair_position, pair_tests, select_pairs
from finsae.errors import DataError


def reference(y, x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([coint(y[k], x[k], **kw)[:2] for k in range(len(y))])


def random_pairs(n_pairs: int, t: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Half co-integrated (stationary spread), half independent random walks."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=(n_pairs, t)), axis=1)
    noise_scale = np.where(np.arange(n_pairs) < n_pairs // 2, 0.0, 1.0)[:, None]
    y = (0.7 * x + rng.normal(size=(n_pairs, t))
         + np.cumsum(rng.normal(size=(n_pairs, t)) * noise_scale, axis=1))
    return y, x


@pytest.mark.parametrize("t", [30, 252, 1260])
@pytest.mark.parametrize(("maxlag", "autolag"), [(0, None), (1, None), (5, None), (None, None), (None, "aic"),
                                                 (None, "bic"), (4, "aic")])
def test_equals_statsmodels_on_random_walks(t, maxlag, autolag):
    y, x = random_pairs(12, t, seed=t)
    res = engle_granger(y, x, maxlag=maxlag, autolag=autolag)
    ref = reference(y, x, maxlag=maxlag, autolag=autolag)
    np.testing.assert_allclose(res.stat, ref[:, 0], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(res.pvalue, ref[:, 1], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(res.crit, mackinnoncrit(N=2, regression="c", nobs=t - 1))
    assert res.valid.all()


def test_equals_statsmodels_on_real_price_pairs(prices):
    pairs = [("KO", "PEP"), ("XOM", "CVX"), ("JPM", "BAC"), ("HD", "LOW"), ("AAPL", "MSFT"), ("V", "MA")]
    window = np.log(prices.close.loc["2016-01-01":"2017-12-31", sorted({t for p in pairs for t in p})])
    y = np.array([window[a].to_numpy() for a, _ in pairs])
    x = np.array([window[b].to_numpy() for _, b in pairs])
    assert np.isfinite(y).all() and np.isfinite(x).all()
    for maxlag, autolag in ((1, None), (None, "aic")):
        res = engle_granger(y, x, maxlag=maxlag, autolag=autolag)
        ref = reference(y, x, maxlag=maxlag, autolag=autolag)
        np.testing.assert_allclose(res.stat, ref[:, 0], rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(res.pvalue, ref[:, 1], rtol=1e-8, atol=1e-8)


def test_chunking_and_threads_do_not_change_results():
    y, x = random_pairs(40, 200, seed=1)
    a = engle_granger(y, x, autolag="aic")
    b = engle_granger(y, x, autolag="aic", chunk_bytes=1, n_jobs=3)
    for field in ("stat", "pvalue", "hedge_ratio", "half_life", "lags"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_mackinnon_pvalues_equal_statsmodels_over_the_whole_range():
    stats = np.r_[np.linspace(-30, 5, 2001), -np.inf, np.inf]
    expected = [mackinnonp(s, regression="c", N=2) for s in stats]
    np.testing.assert_allclose(mackinnon_pvalue(stats), expected, rtol=1e-12, atol=1e-15)
    assert np.isnan(mackinnon_pvalue(np.array([np.nan])))[0]


def test_hedge_ratio_and_half_life():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(size=2000))
    spread = np.zeros(2000)
    for t in range(1, 2000):  # AR(1) with phi = 0.9: half-life ln(0.5)/ln(0.9) = 6.58 periods
        spread[t] = 0.9 * spread[t - 1] + rng.normal(scale=0.5)
    y = 2.0 + 1.5 * x + spread
    res = engle_granger(y[None], x[None], maxlag=1, autolag=None)
    assert res.hedge_ratio[0] == pytest.approx(1.5, abs=0.02)
    assert res.intercept[0] == pytest.approx(2.0, abs=0.5)
    assert res.half_life[0] == pytest.approx(np.log(0.5) / np.log(0.9), rel=0.2)
    assert res.pvalue[0] < 1e-6


def test_collinear_pair_matches_statsmodels_but_is_flagged():
    x = np.cumsum(np.random.default_rng(0).normal(size=300))
    y = 3.0 * x + 1.0
    res = engle_granger(y[None], x[None], maxlag=1, autolag=None)
    ref = reference(y[None], x[None], maxlag=1, autolag=None)
    assert res.stat[0] == ref[0, 0] == -np.inf and res.pvalue[0] == ref[0, 1] == 0.0
    assert res.collinear[0]
    usable = res.valid & ~res.collinear
    assert len(select_pairs(res.pvalue, res.half_life, usable)) == 0  # never selected for trading


def test_constant_nan_and_saturated_series_are_untestable():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(size=(4, 60)), axis=1)
    y = x + rng.normal(size=(4, 60))
    y[0] = 5.0  # constant: statsmodels raises ("x is constant") on the residuals or gives garbage
    x[1, 10] = np.nan  # missing value
    res = engle_granger(y, x, maxlag=1, autolag=None)
    assert list(res.valid) == [False, False, True, True]
    assert np.isnan(res.stat[:2]).all() and np.isnan(res.pvalue[:2]).all()
    # 12 observations with maxlag 5: the ADF regression has 6 rows and 6 regressors, no degree of freedom
    short = engle_granger(y[2:, :12], x[2:, :12], maxlag=5, autolag=None)
    assert not short.valid.any() and np.isnan(short.stat).all()


def test_short_series_and_bad_arguments():
    y, x = random_pairs(3, 20, seed=2)
    res = engle_granger(y, x, maxlag=2, autolag=None)
    np.testing.assert_allclose(res.stat, reference(y, x, maxlag=2, autolag=None)[:, 0], atol=1e-8)
    with pytest.raises(DataError, match="too short"):
        engle_granger(y[:, :5], x[:, :5])
    with pytest.raises(DataError, match="maxlag must be between 0 and"):
        engle_granger(y, x, maxlag=15)
    with pytest.raises(DataError, match="same shape"):
        engle_granger(y, x[:, :10])
    with pytest.raises(DataError, match="autolag"):
        engle_granger(y, x, autolag="hqic")


def test_pair_tests_both_orderings_keep_the_larger_pvalue():
    y, x = random_pairs(6, 150, seed=4)
    panel = np.vstack([y, x]).T  # columns 0..5 are y's, 6..11 the x's
    i, j = np.arange(6), np.arange(6, 12)
    one = pair_tests(panel, i, j, maxlag=1)
    both = pair_tests(panel, i, j, maxlag=1, both_orderings=True)
    rev = reference(x, y, maxlag=1, autolag=None)[:, 1]
    np.testing.assert_allclose(both.pvalue_ji, rev, atol=1e-8)
    np.testing.assert_allclose(both.pvalue, np.maximum(one.pvalue, rev), atol=1e-8)


def test_pair_positions_follow_all_pairs_order():
    i, j = all_pairs(7)
    np.testing.assert_array_equal(pair_position(i, j, 7), np.arange(21))


def test_select_pairs_uses_benjamini_hochberg_within_candidates():
    rng = np.random.default_rng(5)
    p = np.r_[rng.uniform(0, 0.002, 10), rng.uniform(0, 1, 190)]
    hl = np.full(200, 5.0)
    hl[3] = 500.0  # too slow to revert: dropped after the FDR step
    usable = np.ones(200, dtype=bool)
    usable[4] = False  # collinear or untestable: not a candidate
    chosen = select_pairs(p, hl, usable, fdr=0.05, max_half_life=63)
    reject = multipletests(p[usable], alpha=0.05, method="fdr_bh")[0]
    expected = np.flatnonzero(usable)[reject]
    expected = expected[hl[expected] <= 63]
    assert set(chosen) == set(expected) and 3 not in chosen and 4 not in chosen
    assert list(p[chosen]) == sorted(p[chosen])
    assert len(select_pairs(p, hl, usable, max_pairs=3)) == 3
