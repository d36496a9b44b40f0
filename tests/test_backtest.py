"""Pairs backtest: a hand-checked toy, no look-ahead, windows, metrics against direct formulas, bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finsae.backtest.engine import (
    TradingRules,
    Window,
    check_windows,
    fit_spreads,
    portfolio_returns,
    simulate_pairs,
    trade_list,
    walk_forward_windows,
)
from finsae.backtest.metrics import (
    annual_return,
    annual_volatility,
    max_drawdown,
    sharpe_ci,
    sharpe_ratio,
    stationary_bootstrap_indices,
)
from finsae.errors import DataError

RULES = TradingRules(entry_z=2.0, exit_z=0.5, stop_z=4.0, borrow_bps=50.0, periods_per_year=252)


def toy():
    """One pair, a=0, b=1, sd=0.1. z: row1 2.23 (short signal), row2 1.82, row3 0.10 (exit signal)."""
    y = np.array([100.0, 125.0, 120.0, 102.0, 103.0, 104.0])[:, None]
    x = np.array([100.0, 100.0, 100.0, 101.0, 100.0, 100.0])[:, None]
    return y, x, np.zeros(1), np.ones(1), np.full(1, 0.1)


def test_toy_backtest_matches_hand_computation():
    y, x, a, b, s = toy()
    paths = simulate_pairs(y, x, a, b, s, RULES)
    np.testing.assert_allclose(paths.z[:, 0], np.log(y[:, 0] / x[:, 0]) / 0.1)
    assert paths.target[:, 0].tolist() == [0, -1, -1, 0, 0, 0]
    assert paths.held[:, 0].tolist() == [0, 0, -1, -1, 0, 0]  # the row-1 signal executes at the row-2 close
    r3 = -((102 / 120 - 1) - (101 / 100 - 1))  # short spread: -(r_y - r_x)
    r4 = -((103 / 102 - 1) - (100 / 101 - 1))
    np.testing.assert_allclose(paths.gross[:, 0], [0, 0, 0, r3, r4, 0], atol=1e-15)
    assert paths.traded[:, 0].tolist() == [0, 0, 2, 0, 2, 0]
    borrow = 0.005 / 252
    net = paths.net(10, RULES)[:, 0]
    np.testing.assert_allclose(net, [0, 0, -0.002, r3 - borrow, r4 - 0.002 - borrow, 0], atol=1e-15)
    port = portfolio_returns(net[1:, None], paths.active[1:], np.zeros(1, dtype=int), 1)[:, 0]
    np.testing.assert_allclose(port, net[1:], atol=1e-15)
    nav = np.cumprod(1 + port)
    assert nav[-1] == pytest.approx((1 - 0.002) * (1 + r3 - borrow) * (1 + r4 - 0.002 - borrow))
    trades = trade_list(paths, paths.net(10, RULES))
    assert len(trades) == 1
    t = trades.iloc[0]
    assert (t.entry_row, t.exit_row, t.direction) == (2, 4, -1)
    assert t.gross == pytest.approx(r3 + r4) and t.net == pytest.approx(r3 + r4 - 0.004 - 2 * borrow)


def test_stop_loss_and_no_reentry_after_stop():
    y = np.array([100.0, 125.0, 160.0, 125.0, 100.0, 100.0, 100.0])[:, None]  # z: 0, 2.2, 4.7, 2.2, 0, 0, 0
    x = np.full_like(y, 100.0)
    paths = simulate_pairs(y, x, np.zeros(1), np.ones(1), np.full(1, 0.1), RULES)
    assert paths.target[:, 0].tolist() == [0, -1, 0, 0, 0, 0, 0]  # stopped at row 2; row 3 (z=2.2) not re-entered


def test_window_end_closes_positions_and_ended_stock_closes_at_last_price():
    y = np.array([100.0, 125.0, 124.0, 123.0, 122.0, 121.0])[:, None]  # stays above entry until the end
    x = np.full_like(y, 100.0)
    paths = simulate_pairs(y, x, np.zeros(1), np.ones(1), np.full(1, 0.1), RULES)
    assert paths.held[-1, 0] == 0 and paths.held[-2, 0] == -1
    y2 = y.copy()
    y2[4:] = np.nan  # the stock's prices end at row 3
    ended = simulate_pairs(y2, x, np.zeros(1), np.ones(1), np.full(1, 0.1), RULES)
    assert ended.held[:, 0].tolist() == [0, 0, -1, 0, 0, 0]
    assert ended.traded[3, 0] == 2  # exit at the row-3 close, its last price
    assert (ended.gross[4:, 0] == 0).all()


def test_no_look_ahead_in_signals_positions_and_hedge():
    rng = np.random.default_rng(0)
    n_form, n_trade, k = 120, 60, 8
    x = np.exp(np.cumsum(rng.normal(0, 0.01, (n_form + n_trade, k)), axis=0)) * 50
    y = x * np.exp(rng.normal(0, 0.02, (n_form + n_trade, k)))
    a, b, s = fit_spreads(np.log(y[:n_form]), np.log(x[:n_form]))
    rows = slice(n_form - 1, None)
    base = simulate_pairs(y[rows], x[rows], a, b, s, RULES)
    for t0 in (5, 20, 40):
        y2, x2 = y.copy(), x.copy()
        y2[n_form - 1 + t0 + 1:] *= np.exp(rng.normal(0, 0.3, y2[n_form - 1 + t0 + 1:].shape))  # after row t0
        x2[n_form - 1 + t0 + 1:] *= 3.0
        a2, b2, s2 = fit_spreads(np.log(y2[:n_form]), np.log(x2[:n_form]))
        np.testing.assert_array_equal(b2, b)  # the hedge ratio only sees the formation window
        alt = simulate_pairs(y2[rows], x2[rows], a2, b2, s2, RULES)
        np.testing.assert_array_equal(alt.target[: t0 + 1], base.target[: t0 + 1])  # signals up to row t0
        np.testing.assert_array_equal(alt.held[: t0 + 2], base.held[: t0 + 2])  # positions executed by row t0+1
        np.testing.assert_array_equal(alt.gross[: t0 + 1], base.gross[: t0 + 1])


def test_rules_validation():
    with pytest.raises(DataError, match="entry_z .* must be greater than exit_z"):
        TradingRules(entry_z=1.0, exit_z=1.0)
    with pytest.raises(DataError, match="stop_z"):
        TradingRules(entry_z=2.0, exit_z=0.5, stop_z=2.0)
    with pytest.raises(DataError, match="borrow_bps"):
        TradingRules(borrow_bps=-1)
    y, x, a, b, s = toy()
    paths = simulate_pairs(y, x, a, b, s, RULES)
    with pytest.raises(DataError, match="cost_bps must be >= 0"):
        paths.net(-5, RULES)


def test_missing_price_keeps_target_and_constant_or_empty_pairs_never_trade():
    y, x, a, b, s = toy()
    y = y.copy()
    y[3] = np.nan  # the exit signal row is missing: the position is kept one more row
    paths = simulate_pairs(y, x, a, b, s, RULES)
    assert paths.target[3, 0] == -1
    flat = np.full((6, 1), 100.0)
    a2, b2, s2 = fit_spreads(np.log(flat), np.log(flat))  # constant series: no spread model
    assert np.isnan(s2).all()
    assert (simulate_pairs(flat, flat, a2, b2, s2, RULES).held == 0).all()
    with pytest.raises(DataError, match="both prices on the last formation day"):
        simulate_pairs(np.full((4, 1), np.nan), flat[:4], a, b, s, RULES)


def test_walk_forward_windows_and_overlap_check():
    dates = pd.bdate_range("2015-01-01", periods=400)
    ws = walk_forward_windows(dates, 100, 50, start="2015-06-01", end="2016-03-31")
    assert all(w.formation.stop == w.trading.start for w in ws)
    assert all(a.trading.stop == b.trading.start for a, b in zip(ws, ws[1:], strict=False))
    assert ws[0].trading_start >= pd.Timestamp("2015-06-01") and ws[-1].trading_end <= pd.Timestamp("2016-03-31")
    with pytest.raises(DataError, match="overlaps its trading window"):
        check_windows([Window(slice(0, 100), slice(90, 140), dates)])
    with pytest.raises(DataError, match="trading windows .* overlap"):
        check_windows([Window(slice(0, 100), slice(100, 150), dates), Window(slice(40, 140), slice(140, 190), dates),
                       Window(slice(20, 120), slice(130, 160), dates)])
    with pytest.raises(DataError, match="no trading window fits"):
        walk_forward_windows(dates, 100, 50, start="2030-01-01")


def test_portfolio_splits_capital_over_active_pairs():
    r = np.array([[0.01, 0.03, 0.0], [0.02, 0.0, 0.05]])
    active = np.array([[True, True, False], [True, False, True]])
    out = portfolio_returns(r, active, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(out, [[0.02, 0.0], [0.02, 0.05]])


# ---------------------------------------------------------------- metrics against direct formulas


def test_metrics_equal_direct_formulas():
    r = np.random.default_rng(1).normal(0.0005, 0.01, 500)
    rf = 0.0001
    assert sharpe_ratio(r, 252, rf) == pytest.approx(np.sqrt(252) * np.mean(r - rf) / np.std(r - rf, ddof=1))
    assert annual_volatility(r, 252) == pytest.approx(np.sqrt(252) * np.std(r, ddof=1))
    assert annual_return(r, 252) == pytest.approx(np.prod(1 + r) ** (252 / 500) - 1)
    nav, peak, worst = 1.0, 1.0, 0.0
    for x in r:
        nav *= 1 + x
        peak = max(peak, nav)
        worst = min(worst, nav / peak - 1)
    assert max_drawdown(r) == pytest.approx(worst)
    assert max_drawdown(np.array([-0.1, 0.05])) == pytest.approx(-0.1)  # a first-day loss counts
    assert np.isnan(sharpe_ratio(np.zeros(10)))
    with pytest.raises(DataError, match="missing"):
        sharpe_ratio(np.array([0.1, np.nan]))


def test_stationary_bootstrap_blocks_and_ci():
    rng = np.random.default_rng(2)
    idx = stationary_bootstrap_indices(100, 10.0, 300, rng)
    steps = np.diff(idx, axis=1)
    continues = (steps == 1) | (steps == -99)  # within a block the index advances by one (wrapping)
    assert 0.85 < continues.mean() < 0.95  # mean block length 10: a new block starts with probability 0.1
    r = rng.normal(0.001, 0.01, 1000)
    lo, hi = sharpe_ci(r, 252, draws=500, seed=3)
    assert lo < sharpe_ratio(r, 252) < hi
    # a loop over the same resamples gives the same interval
    idx = stationary_bootstrap_indices(len(r), len(r) ** (1 / 3), 500, np.random.default_rng(3))
    stats = [sharpe_ratio(r[i], 252) for i in idx]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(stats, [2.5, 97.5])))
