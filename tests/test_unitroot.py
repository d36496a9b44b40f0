"""Batched ADF tests against statsmodels' adfuller; the I(1) screen of pairs-trading legs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from statsmodels.tsa.adfvalues import mackinnonp
from statsmodels.tsa.stattools import adfuller

from finsae.backtest.unitroot import adf_test, integrated_of_order_one, mackinnon_pvalue_n
from finsae.errors import DataError


def _panel(seed: int = 0, t_len: int = 252) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walks = 4 + np.cumsum(rng.normal(0, 0.015, (t_len, 6)), axis=0)
    ar = np.zeros((t_len, 4))
    for t in range(1, t_len):
        ar[t] = 0.7 * ar[t - 1] + rng.normal(0, 0.01, 4)
    trend = np.arange(t_len)[:, None] * 0.002 + rng.normal(0, 0.01, (t_len, 2))
    return np.hstack([walks, ar + 3.0, trend])


@pytest.mark.parametrize("lags", [0, 1, 4])
def test_adf_equals_statsmodels_adfuller(lags):
    x = _panel(lags)
    stat, p = adf_test(x, lags)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = np.array([adfuller(x[:, k], maxlag=lags, regression="c", autolag=None)[:2]
                        for k in range(x.shape[1])])
    np.testing.assert_allclose(stat, ref[:, 0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(p, ref[:, 1], rtol=1e-9, atol=1e-12)


def test_mackinnon_pvalues_equal_statsmodels_for_one_and_two_series():
    stats = np.array([-6.0, -4.1, -3.3, -2.5, -1.0, 0.5, 3.0])
    for n in (1, 2):
        np.testing.assert_allclose(mackinnon_pvalue_n(stats, n),
                                   [mackinnonp(s, regression="c", N=n) for s in stats], rtol=1e-12)


def test_i1_screen_keeps_random_walks_and_drops_stationary_series():
    mask = integrated_of_order_one(_panel(1))
    assert mask[:6].mean() >= 5 / 6  # random walks pass (a 5% test rejects one now and then)
    assert not mask[6:10].any()  # AR(0.7) series are stationary: dropped


def test_bad_inputs_name_the_problem():
    with pytest.raises(DataError, match="missing values"):
        adf_test(np.array([[1.0], [np.nan], [2.0]] * 5), 1)
    with pytest.raises(DataError, match="too few"):
        adf_test(np.ones((4, 2)), 1)
    stat, p = adf_test(np.ones((30, 1)), 1)  # a constant series has no test
    assert np.isnan(stat).all() and np.isnan(p).all()
