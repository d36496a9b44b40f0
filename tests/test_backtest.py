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
    monthly_excess_bps,
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
    r3 = -(np.log(102 / 120) - np.log(101 / 100))  # short spread, b = 1, gross notional 2: -(dlog y - dlog x)
    r4 = -(np.log(103 / 102) - np.log(100 / 101))
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
    # stopped at row 2; row 3 (z=2.2) not re-entered
    assert paths.target[:, 0].tolist() == [0, -1, 0, 0, 0, 0, 0]


def test_window_end_closes_positions_and_ended_stock_closes_on_its_first_day_without_a_price():
    y = np.array([100.0, 125.0, 124.0, 123.0, 122.0, 121.0])[:, None]  # stays above entry until the end
    x = np.array([100.0, 100.0, 100.0, 100.0, 101.0, 102.0])[:, None]
    paths = simulate_pairs(y, x, np.zeros(1), np.ones(1), np.full(1, 0.1), RULES)
    assert paths.held[-1, 0] == 0 and paths.held[-2, 0] == -1
    y2 = y.copy()
    y2[4:] = np.nan  # the stock's prices end at row 3
    ended = simulate_pairs(y2, x, np.zeros(1), np.ones(1), np.full(1, 0.1), RULES)
    assert ended.held[:, 0].tolist() == [0, 0, -1, -1, 0, 0]  # closed at row 4, the first row without a price
    assert ended.traded[3, 0] == 0 and ended.traded[4, 0] == 2
    # row 4: y at its last price (return 0), the x leg closes at the row-4 close
    assert ended.gross[4, 0] == pytest.approx(-(0.0 - np.log(101 / 100)))
    assert (ended.gross[5:, 0] == 0).all()
    # a delisting return is that leg's return on the closing row
    hit = simulate_pairs(y2, x, np.zeros(1), np.ones(1), np.full(1, 0.1), RULES, delisting_return=-0.3)
    assert hit.gross[4, 0] == pytest.approx(-(np.log(0.7) - np.log(101 / 100)))


def test_a_stock_that_stops_trading_changes_nothing_before_its_last_price_day():
    rng = np.random.default_rng(4)
    n, k = 40, 6
    x = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, k)), axis=0))
    y = x * np.exp(rng.normal(0, 0.05, (n, k)))
    a, b, s = np.zeros(k), np.ones(k), np.full(k, 0.05)
    last = 25  # the y stocks' last price row
    full = simulate_pairs(y, x, a, b, s, RULES)
    assert (full.held[last] != 0).any()  # some pair is open when its y stock stops
    stopped_y = y.copy()
    stopped_y[last + 1:] = np.nan
    stopped = simulate_pairs(stopped_y, x, a, b, s, RULES)
    for name in ("target", "held", "gross", "traded", "short_held", "active"):
        np.testing.assert_array_equal(getattr(stopped, name)[: last + 1], getattr(full, name)[: last + 1],
                                      err_msg=name)
    for cost in (0, 10):
        np.testing.assert_array_equal(stopped.net(cost, RULES)[: last + 1], full.net(cost, RULES)[: last + 1])
    assert (stopped.held[last + 1:] == 0).all()


def test_open_position_pnl_is_notional_times_the_change_of_the_tested_spread():
    rng = np.random.default_rng(5)
    n = 30
    b = np.array([0.4, 1.0, 2.5])
    lx = np.log(60) + np.cumsum(rng.normal(0, 0.02, (n, 3)), axis=0)
    ly = 0.3 + b * lx + 0.08 * np.sin(np.arange(n) / 3)[:, None] + rng.normal(0, 0.01, (n, 3))
    a, s = np.full(3, 0.3), np.full(3, 0.03)
    for g in (1.0, 2.0):
        paths = simulate_pairs(np.exp(ly), np.exp(lx), a, b, s, RULES, gross_notional=g)
        assert (paths.held != 0).any()
        spread = ly - b * lx
        d_spread = np.vstack([np.zeros((1, 3)), np.diff(spread, axis=0)])
        prev = np.vstack([np.zeros((1, 3)), paths.held[:-1]])
        np.testing.assert_allclose(paths.gross, prev * g / (1 + b) * d_spread, atol=1e-14)
        # traded notional: g per unit change of the position; short notional: the short leg's weight
        np.testing.assert_allclose(paths.traded, g * np.abs(paths.held - prev))
        w_short = np.where(prev > 0, g * b / (1 + b), g / (1 + b))
        np.testing.assert_allclose(paths.short_held, np.abs(prev) * w_short)
    with pytest.raises(DataError, match="hedge ratio <= 0"):
        simulate_pairs(np.exp(ly), np.exp(lx), a, np.array([0.4, -1.0, 2.5]), s, RULES)


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
        # positions executed by row t0+1
        np.testing.assert_array_equal(alt.held[: t0 + 2], base.held[: t0 + 2])
        np.testing.assert_array_equal(alt.gross[: t0 + 1], base.gross[: t0 + 1])


def test_distance_method_ssd_spread_and_exit_at_the_crossing():
    from finsae.backtest.engine import distance_ssd, fit_distance
    from finsae.backtest.pairs import select_distance

    rng = np.random.default_rng(2)
    p = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, (50, 5)), axis=0))
    norm = p / p[0]
    i, j = np.triu_indices(5, k=1)
    brute = np.array([((norm[:, a] - norm[:, b]) ** 2).sum() for a, b in zip(i, j, strict=True)])
    np.testing.assert_allclose(distance_ssd(norm, i, j), brute, rtol=1e-10, atol=1e-12)
    # the smallest SSDs first, at most one pair per stock
    order = np.argsort(brute)
    picked = select_distance(brute, np.ones(len(i), dtype=bool), i, j, max_pairs=3, max_per_stock=1)
    assert picked[0] == order[0]
    stocks = np.concatenate([i[picked], j[picked]])
    assert len(stocks) == len(set(stocks))
    a, b, s = fit_distance(np.log(p[:, [0]]), np.log(p[:, [1]]))
    assert b[0] == 1.0 and a[0] == pytest.approx(np.log(p[-1, 0] / p[-1, 1]))
    spread = np.log(p[:, 0] / p[:, 1])
    assert s[0] == pytest.approx(np.std(spread - spread[0], ddof=1))
    # GGR rules: open at 2 sd, close when the normalised paths cross (z back to 0), no stop
    rules = TradingRules(entry_z=2.0, exit_z=0.0, stop_z=np.inf)
    y = np.array([100.0, 100.0, 123.0, 150.0, 110.0, 99.0, 100.0])[:, None]
    x = np.full_like(y, 100.0)
    paths = simulate_pairs(y, x, np.zeros(1), np.ones(1), np.full(1, 0.1), rules)
    assert paths.target[:, 0].tolist() == [0, 0, -1, -1, -1, 0, 0]  # z 4.05 keeps the position: no stop


def test_fast_selection_equals_the_library_and_a_full_sort():
    from statsmodels.stats.multitest import multipletests

    from finsae.backtest.pairs import benjamini_hochberg, cap_per_stock, select_distance

    rng = np.random.default_rng(8)
    for _trial in range(30):
        n = int(rng.integers(1, 400))
        p = np.where(rng.random(n) < 0.3, rng.random(n) * 1e-3, rng.random(n))
        p[rng.random(n) < 0.05] = p[0]  # ties
        want = np.flatnonzero(multipletests(p, alpha=0.05, method="fdr_bh")[0])
        got = benjamini_hochberg(p, 0.05)
        assert sorted(got.tolist()) == want.tolist()
        assert (np.diff(p[got]) >= 0).all()
        # only the small p-values given, the family size passed: the same rejections
        small = np.flatnonzero(p <= 0.05)
        np.testing.assert_array_equal(small[benjamini_hochberg(p[small], 0.05, n_tests=n)], got)
        # distance selection: partition then sort equals a full stable sort, with the cap
        ssd = np.round(rng.random(n) * 50, 1)  # many ties
        i = rng.integers(0, 30, n)
        j = i + 1 + rng.integers(0, 5, n)
        full = cap_per_stock(np.argsort(ssd, kind="stable"), i, j, 2, 20)
        np.testing.assert_array_equal(select_distance(ssd, np.ones(n, dtype=bool), i, j, max_pairs=20,
                                                      max_per_stock=2), full)


def test_chooser_inside_a_subset_equals_the_selection_on_gathered_arrays():
    """``PairChooser.choose`` (precomputed family and BH-eligible masks; the distance cap reads legs through
    ``at``) selects what the selection functions select on the candidates' arrays gathered up front."""
    from finsae.backtest.pairs import PairChooser, ResolvedTests, select_distance, select_pairs
    from finsae.backtest.results import PairSelectionSettings

    rng = np.random.default_rng(11)
    n_stocks = 40
    i, j = np.triu_indices(n_stocks, k=1)
    n = len(i)
    p = np.where(rng.random(n) < 0.2, rng.random(n) * 1e-3, rng.random(n))
    p[rng.random(n) < 0.05] = np.nan
    p[rng.random(n) < 0.05] = p[0]  # ties
    hl = rng.uniform(0.5, 200, n)
    usable = rng.random(n) < 0.8
    ssd = np.round(rng.random(n) * 20, 1)
    ssd[rng.random(n) < 0.02] = np.nan
    tests = ResolvedTests(p, hl, np.ones(n), np.zeros(n, dtype=bool), usable)
    for cap in (None, 1, 2):
        sel = PairSelectionSettings(fdr=0.05, min_half_life=1.0, max_half_life=126.0, max_pairs=15,
                                    maxlag=None, autolag=None, orderings="first", i1_screen=False,
                                    i1_alpha=0.1, i1_lags=1, max_pairs_per_stock=cap)
        chooser = PairChooser(tests, usable, ssd, i, j, sel, distance_max_pairs=10)
        for _draw in range(20):
            pos = rng.permutation(n)[: int(rng.integers(1, n))]
            q = np.where(usable[pos], p[pos], np.nan)
            small = pos[q <= sel.fdr]
            want = small[select_pairs(p[small], hl[small], np.ones(len(small), dtype=bool), fdr=sel.fdr,
                                      min_half_life=1.0, max_half_life=126.0, max_pairs=15, i=i[small],
                                      j=j[small], max_per_stock=cap, n_tests=len(q) - int(np.isnan(q).sum()))]
            np.testing.assert_array_equal(chooser.choose("coint", pos), want)
            want = pos[select_distance(ssd[pos], np.ones(len(pos), dtype=bool), i[pos], j[pos], max_pairs=10,
                                       max_per_stock=cap)]
            np.testing.assert_array_equal(chooser.choose("distance", pos), want)


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
    assert ws[0].trading_start >= pd.Timestamp("2015-06-01")
    assert ws[-1].trading_end <= pd.Timestamp("2016-03-31")
    with pytest.raises(DataError, match="overlaps its trading window"):
        check_windows([Window(slice(0, 100), slice(90, 140), dates)])
    with pytest.raises(DataError, match="trading windows .* overlap"):
        check_windows([Window(slice(0, 100), slice(100, 150), dates),
                       Window(slice(40, 140), slice(140, 190), dates),
                       Window(slice(20, 120), slice(130, 160), dates)])
    with pytest.raises(DataError, match="no trading window fits"):
        walk_forward_windows(dates, 100, 50, start="2030-01-01")


def test_portfolio_splits_capital_over_active_pairs():
    r = np.array([[0.01, 0.03, 0.0], [0.02, 0.0, 0.05]])
    active = np.array([[True, True, False], [True, False, True]])
    out = portfolio_returns(r, active, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(out, [[0.02, 0.0], [0.02, 0.05]])
    # a day without an open pair earns the risk-free rate on employed capital too (no excess return)
    out = portfolio_returns(r, active, np.array([0, 0, 1]), 2, rf=0.001)
    np.testing.assert_allclose(out, [[0.02, 0.001], [0.02, 0.05]])


def test_committed_capital_gives_every_selected_pair_its_share_and_idle_capital_the_risk_free_rate():
    r = np.array([[0.01, 0.03, 0.0], [0.02, 0.0, 0.05]])
    active = np.array([[True, True, False], [True, False, True]])
    out = portfolio_returns(r, active, np.array([0, 0, 1]), 3, basis="committed", rf=0.001)
    # book 0: two pairs of 1/2 each; book 1: one pair; book 2: no pair, all capital at the risk-free rate
    np.testing.assert_allclose(out, [[0.02, 0.001, 0.001], [(0.02 + 0.001) / 2, 0.05, 0.001]])
    # n_selected counts pairs that are not among the columns (e.g. a pair that never had prices)
    out4 = portfolio_returns(r, active, np.array([0, 0, 1]), 2, basis="committed",
                             n_selected=np.array([4, 1]))
    np.testing.assert_allclose(out4[:, 0], [0.04 / 4, 0.02 / 4])
    with pytest.raises(DataError, match="basis"):
        portfolio_returns(r, active, np.array([0, 0, 1]), 2, basis="invested")


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


def test_monthly_excess_return_in_basis_points():
    dates = pd.to_datetime(["2019-01-30", "2019-01-31", "2019-02-01", "2019-02-04", "2019-03-01"])
    r = np.array([0.01, -0.005, 0.002, 0.003, -0.01])
    jan, feb, mar = 1.01 * 0.995 - 1, 1.002 * 1.003 - 1, -0.01
    assert monthly_excess_bps(r, dates) == pytest.approx((jan + feb + mar) / 3 * 1e4)
    rf = 0.0001
    want = ((jan - (1.0001**2 - 1)) + (feb - (1.0001**2 - 1)) + (mar - rf)) / 3 * 1e4
    assert monthly_excess_bps(r, dates, rf) == pytest.approx(want)
    with pytest.raises(DataError, match="5 returns but 4 dates"):
        monthly_excess_bps(r, dates[:4])


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
