"""All-pairs Engle-Granger from matrix products against statsmodels ``coint`` and the per-pair path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from statsmodels.tsa.stattools import coint

import finsae.backtest.coint_matrix as cm
from finsae.backtest import engle_granger
from finsae.backtest.coint_matrix import (
    ROUTE_GAP,
    ROUTE_ILL,
    ROUTE_MATRIX,
    EngleGrangerPanel,
    engle_granger_matrix,
)
from finsae.backtest.pairs import all_pairs
from finsae.errors import DataError

FIELDS = ("stat", "pvalue", "hedge_ratio", "intercept", "half_life", "lags", "collinear", "valid")


def reference(panel: np.ndarray, i: np.ndarray, j: np.ndarray, **kw) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([coint(panel[:, a], panel[:, b], **kw)[:2] for a, b in zip(i, j, strict=True)])


def assert_equals_statsmodels(res, ref) -> None:
    np.testing.assert_allclose(res.stat, ref[:, 0], rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.pvalue, ref[:, 1], rtol=0, atol=1e-8)


def assert_equals_per_pair(res, panel, i, j, *, maxlag, autolag, exact: bool = False) -> None:
    ref = engle_granger(panel.T[i], panel.T[j], maxlag=maxlag, autolag=autolag)
    for field in FIELDS:
        a, b = getattr(res, field), getattr(ref, field)
        if exact or a.dtype.kind in "bi":
            assert np.array_equal(a, b, equal_nan=True), field
        else:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10, err_msg=field)
    np.testing.assert_array_equal(res.crit, ref.crit)
    assert res.nobs == ref.nobs


def random_panel(n_cols: int, t: int, seed: int) -> np.ndarray:
    """Log-price-like columns: random walks, and every other column co-integrated with its neighbour."""
    rng = np.random.default_rng(seed)
    x = 4.0 + np.cumsum(rng.normal(0, 0.015, (t, n_cols)), axis=0)
    x[:, 1::2] = 1.0 + 0.8 * x[:, ::2] + rng.normal(0, 0.01, (t, n_cols // 2))
    return x


@pytest.mark.parametrize("t", [40, 150])
@pytest.mark.parametrize(("maxlag", "autolag"), [(0, None), (1, None), (5, None), (None, None), (None, "aic"),
                                                 (None, "bic"), (4, "aic")])
def test_equals_statsmodels_on_random_walks_and_cointegrated_pairs(t, maxlag, autolag):
    panel = random_panel(8, t, seed=t)
    i, j = all_pairs(8)
    fwd, rev = EngleGrangerPanel(panel, maxlag=maxlag, autolag=autolag).test_both(i, j)
    assert_equals_statsmodels(fwd, reference(panel, i, j, maxlag=maxlag, autolag=autolag))
    assert_equals_statsmodels(rev, reference(panel, j, i, maxlag=maxlag, autolag=autolag))
    assert_equals_per_pair(fwd, panel, i, j, maxlag=maxlag, autolag=autolag)
    assert_equals_per_pair(rev, panel, j, i, maxlag=maxlag, autolag=autolag)
    assert fwd.valid.all() and rev.valid.all()
    if t == 150 and maxlag in (0, 1):  # pairs (0, 1) and (2, 3) are co-integrated
        assert (fwd.pvalue[[0, 13]] < 0.05).all() and (rev.pvalue[[0, 13]] < 0.05).all()


@pytest.fixture(scope="module")
def real_window(prices):
    close = prices.close.loc[:"2019-12-31"].iloc[-504:]
    return np.log(close.ffill(limit=5).dropna(axis=1).to_numpy())


def test_equals_statsmodels_on_real_price_pairs(real_window):
    n = real_window.shape[1]
    i, j = all_pairs(n)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(i), 300, replace=False)
    panel = EngleGrangerPanel(real_window, maxlag=1, autolag=None)
    res, route = panel.test_with_route(i[pick], j[pick])
    assert (route == ROUTE_MATRIX).all()
    assert_equals_statsmodels(res, reference(real_window, i[pick], j[pick], maxlag=1, autolag=None))
    assert_equals_per_pair(res, real_window, i[pick], j[pick], maxlag=1, autolag=None)
    # a lag choice (AIC and BIC up to 4 lags) on fewer pairs, statsmodels fits every lag order
    few = pick[:40]
    for autolag in ("aic", "bic"):
        res = EngleGrangerPanel(real_window, maxlag=4, autolag=autolag).test(j[few], i[few])
        assert_equals_statsmodels(res, reference(real_window, j[few], i[few], maxlag=4, autolag=autolag))
    # Schwert's default maxlag (18 at T=504): statsmodels takes a quarter of a second per pair
    res = EngleGrangerPanel(real_window, autolag="aic").test(i[few[:3]], j[few[:3]])
    assert_equals_statsmodels(res, reference(real_window, i[few[:3]], j[few[:3]], autolag="aic"))


def test_all_pairs_of_real_stocks_equal_the_per_pair_path(real_window):
    panel = real_window[:, :120]
    i, j = all_pairs(120)
    res, route = EngleGrangerPanel(panel, maxlag=1, autolag=None, block=32).test_with_route(i, j)
    assert (route == ROUTE_MATRIX).all()
    assert_equals_per_pair(res, panel, i, j, maxlag=1, autolag=None)


def test_gap_pairs_take_the_per_pair_path(monkeypatch):
    panel = random_panel(6, 120, seed=7)
    panel[30, 2] = np.nan  # a gap
    panel[:, 4] = 4.2  # constant in the window
    i, j = all_pairs(6)
    calls = []

    def spy(y, x, **kw):
        calls.append(len(y))
        return engle_granger(y, x, **kw)

    monkeypatch.setattr(cm, "engle_granger", spy)
    res, route = EngleGrangerPanel(panel, maxlag=1, autolag=None).test_with_route(i, j)
    bad = np.isin(i, [2, 4]) | np.isin(j, [2, 4])
    assert np.array_equal(route == ROUTE_GAP, bad) and (route[~bad] == ROUTE_MATRIX).all()
    assert calls == [int(bad.sum())]  # one per-pair call, for exactly the gap pairs
    assert not res.valid[bad].any() and np.isnan(res.stat[bad]).all() and np.isnan(res.pvalue[bad]).all()
    assert res.valid[~bad].all()
    ref = engle_granger(panel.T[i], panel.T[j], maxlag=1, autolag=None)
    for field in FIELDS:  # the fallback pairs are the per-pair path's results, bit for bit
        assert np.array_equal(getattr(res, field)[bad], getattr(ref, field)[bad], equal_nan=True), field
    assert_equals_per_pair(res, panel, i, j, maxlag=1, autolag=None)
    ok = ~bad
    assert_equals_statsmodels(_subset(res, ok), reference(panel, i[ok], j[ok], maxlag=1, autolag=None))


def test_collinear_and_nearly_collinear_pairs_take_the_per_pair_path():
    rng = np.random.default_rng(3)
    t = 300
    x = 4.0 + np.cumsum(rng.normal(0, 0.015, t))
    cols = [x, 3.0 * x + 1.0]  # exactly collinear
    for scale in (0.3, 0.1, 0.03):  # 1 - R^2 about 1e-3 .. 1e-5: cancellation in the products
        cols.append(0.5 + 1.2 * x + scale * rng.normal(0, 0.015, t))
    panel = np.column_stack(cols)
    i = np.array([1, 0, 2, 3, 4, 0, 2])
    j = np.array([0, 1, 0, 0, 0, 0, 3])  # the last but one pairs a column with itself
    res, route = EngleGrangerPanel(panel, maxlag=1, autolag=None).test_with_route(i, j)
    assert (route[:2] == ROUTE_ILL).all() and res.collinear[:2].all() and (res.stat[:2] == -np.inf).all()
    assert route[2] == ROUTE_MATRIX and (route[3:6] == ROUTE_ILL).all()  # R^2 = 1 - 1e-3 is still fine
    assert res.collinear[5] and not res.collinear[2:5].any()
    assert_equals_statsmodels(res, reference(panel, i, j, maxlag=1, autolag=None))
    assert_equals_per_pair(res, panel, i, j, maxlag=1, autolag=None)
    fb = route != ROUTE_MATRIX
    assert_equals_per_pair(_subset(res, fb), panel, i[fb], j[fb], maxlag=1, autolag=None, exact=True)
    # with the check off the products lose digits on these pairs: the fallback is what keeps 1e-8
    loose = EngleGrangerPanel(panel, maxlag=1, autolag=None, tol=np.inf).test(i[2:5], j[2:5])
    exact = engle_granger(panel.T[i[2:5]], panel.T[j[2:5]], maxlag=1, autolag=None)
    assert np.abs(loose.stat - exact.stat)[-1] > 1e-10


def test_saturated_regressions_are_untestable_as_on_the_per_pair_path():
    panel = random_panel(4, 12, seed=2)
    i, j = all_pairs(4)
    res = EngleGrangerPanel(panel, maxlag=5, autolag=None).test(i, j)
    assert not res.valid.any() and np.isnan(res.stat).all()
    assert_equals_per_pair(res, panel, i, j, maxlag=5, autolag=None)


def test_orderings_subsets_blocks_and_threads_agree():
    panel = random_panel(30, 200, seed=5)
    i, j = all_pairs(30)
    panel_eg = EngleGrangerPanel(panel, maxlag=2, autolag="aic")
    fwd, rev = panel_eg.test_both(i, j)
    a, b = panel_eg.test(i, j), panel_eg.test(j, i)
    for field in FIELDS:
        assert np.array_equal(getattr(fwd, field), getattr(a, field), equal_nan=True), field
        assert np.array_equal(getattr(rev, field), getattr(b, field), equal_nan=True), field
    other = EngleGrangerPanel(panel, maxlag=2, autolag="aic", block=7, n_jobs=3, chunk_bytes=1).test(i, j)
    for field in FIELDS:
        np.testing.assert_allclose(getattr(other, field), getattr(a, field), rtol=1e-12, atol=1e-13,
                                   err_msg=field)
    # a few pairs, in any order, of a few columns: only those columns enter the products
    sub_i, sub_j = np.array([29, 3, 17, 3]), np.array([3, 29, 2, 17])
    res = engle_granger_matrix(panel, sub_i, sub_j, maxlag=2, autolag="aic")
    assert_equals_per_pair(res, panel, sub_i, sub_j, maxlag=2, autolag="aic")
    empty = engle_granger_matrix(panel, np.array([], int), np.array([], int), maxlag=2)
    assert len(empty.stat) == 0


def test_bad_arguments():
    panel = random_panel(4, 20, seed=1)
    with pytest.raises(DataError, match="too short"):
        EngleGrangerPanel(panel[:5])
    with pytest.raises(DataError, match="maxlag must be between 0 and"):
        EngleGrangerPanel(panel, maxlag=15)
    with pytest.raises(DataError, match="autolag"):
        EngleGrangerPanel(panel, autolag="hqic")
    with pytest.raises(DataError, match=r"\(T, N\)"):
        EngleGrangerPanel(panel[:, 0])
    with pytest.raises(DataError, match="same length"):
        EngleGrangerPanel(panel).test(np.array([0, 1]), np.array([1]))
    with pytest.raises(DataError, match="indices"):
        EngleGrangerPanel(panel).test(np.array([0]), np.array([4]))


def _subset(res, mask):
    from finsae.backtest.coint import EngleGranger

    return EngleGranger(res.stat[mask], res.pvalue[mask], res.crit, res.hedge_ratio[mask],
                        res.intercept[mask], res.half_life[mask], res.lags[mask], res.nobs,
                        res.collinear[mask], res.valid[mask])


def test_pair_tests_matrix_method_equals_the_pairwise_path_in_both_orderings():
    from finsae.backtest.pairs import all_pairs, pair_tests

    rng = np.random.default_rng(11)
    logp = np.cumsum(rng.normal(0, 0.01, (150, 12)), axis=0)
    logp[:, 1] = 0.5 * logp[:, 0] + rng.normal(0, 0.004, 150)
    i, j = all_pairs(12)
    a = pair_tests(logp, i, j, maxlag=1, both_orderings=True)
    b = pair_tests(logp, i, j, maxlag=1, both_orderings=True, method="matrix")
    for name in ("pvalue", "stat", "half_life", "hedge_ratio", "pvalue_ij", "pvalue_ji", "half_life_ji",
                 "hedge_ratio_ji"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-9, atol=1e-10, err_msg=name)
    for name in ("lags", "collinear", "valid"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
