"""A pairs backtest on a synthetic universe: outputs, no look-ahead in selection, CLI, config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from finsae.cli import cli
from finsae.config import load_pairs_config
from finsae.errors import ConfigError, DataError
from finsae.pipeline.backtest import run_pairs_backtest

CONFIG = """\
name: toy_pairs
data: {companies: companies.csv, prices: prices.parquet}
start: 2015-07-01
end: 2016-06-30
methods: [all_pairs, sic2, gics_sector]
formation_days: 60
trading_days: 40
selection: {fdr: 0.2, max_half_life: 30, max_pairs: 4}
trading: {entry_z: 1.5, exit_z: 0.3, stop_z: 4.0, borrow_bps: 50}
costs_bps: [0, 10]
headline_cost_bps: 10
placebo: {draws: 3, seed: 1}
bootstrap_draws: 100
"""


def synthetic_market(seed: int = 0, n_groups: int = 3, per_group: int = 4, n_days: int = 400) -> pd.DataFrame:
    """Stocks of a group share a random-walk trend plus their own AR(1) deviation: co-integrated within
    groups."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2015-01-01", periods=n_days, name="date")
    cols = {}
    for g in range(n_groups):
        trend = np.cumsum(rng.normal(0, 0.01, n_days))
        for k in range(per_group):
            dev = np.zeros(n_days)
            for t in range(1, n_days):
                dev[t] = 0.85 * dev[t - 1] + rng.normal(0, 0.01)
            cols[f"G{g}S{k}"] = 40 * np.exp(trend + dev)
    return pd.DataFrame(cols, index=dates)


@pytest.fixture()
def toy(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path / "cache"))
    prices = synthetic_market()
    prices.reset_index().to_parquet(tmp_path / "prices.parquet")
    sic = {0: "2834", 1: "6021", 2: "7372"}
    gics = {0: "35202010", 1: "40101015", 2: "45103010"}
    pd.DataFrame({"ticker": prices.columns, "description": "x",
                  "sic": [sic[int(c[1])] for c in prices.columns],
                  "gics": [gics[int(c[1])] for c in prices.columns]}).to_csv(tmp_path / "companies.csv",
                                                                            index=False)
    (tmp_path / "pairs.yaml").write_text(CONFIG)
    return tmp_path


def _row(res, method: str, strategy: str = "coint", basis: str = "committed") -> pd.Series:
    s = res.summary
    rows = s[(s["method"] == method) & (s["strategy"] == strategy) & (s["basis"] == basis)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_backtest_runs_and_writes_every_table(toy):
    cfg = load_pairs_config(toy / "pairs.yaml")
    res = run_pairs_backtest(cfg, toy / "out")
    keys = list(res.summary[["method", "strategy", "basis"]].itertuples(index=False, name=None))
    assert keys == [(m, st, b) for st in ("coint", "distance") for m in ("all_pairs", "sic2", "gics_sector")
                    for b in ("committed", "employed")]
    for name in ("summary", "daily", "windows", "placebo", "trades", "selections"):
        assert (toy / "out" / f"{name}.parquet").is_file()
    text = (toy / "out" / "table.md").read_text()
    assert text.startswith("## Pairs backtest `toy_pairs`")
    assert "committed capital (headline basis)" in text and "distance (Gatev et al. 2006)" in text
    # within-group pairs of co-integrated groups are selected, and they trade
    sel = res.selections[res.selections["method"] == "sic2"]
    assert len(sel) > 0 and (sel["y"].str[:2] == sel["x"].str[:2]).all()
    assert _row(res, "sic2")["trades"] > 0 and _row(res, "sic2", "distance")["trades"] > 0
    for col in ("bp_month_net", "bp_month_gross", "distinct_stocks", "top_stock_pnl_share",
                "ex_top_sharpe_net"):
        assert np.isfinite(float(_row(res, "sic2")[col])), col
    # net returns are gross minus costs: never higher
    d = res.daily
    assert (d["net_10bp"] <= d["gross"] + 1e-15).all() and (d["net_0bp"] <= d["gross"] + 1e-15).all()
    # placebo books: 3 draws each per strategy and basis; all_pairs has no random-group placebo (one group)
    counts = res.placebo.groupby(["method", "strategy", "kind", "basis"]).size().to_dict()
    assert counts[("sic2", "coint", "random_groups", "committed")] == 3
    assert counts[("sic2", "distance", "random_pairs", "employed")] == 3
    assert not any(k[0] == "all_pairs" and k[2] == "random_groups" for k in counts)
    # a second run uses the cached pair tests and gives identical results
    again = run_pairs_backtest(cfg, toy / "out2")
    pd.testing.assert_frame_equal(again.summary, res.summary)


def test_selection_trades_the_tested_spread_with_both_orderings_the_i1_screen_and_the_cap(toy):
    cfg = load_pairs_config(toy / "pairs.yaml")
    sel = cfg.selection
    assert sel.orderings == "both" and sel.i1_screen and sel.max_pairs_per_stock == 2
    res = run_pairs_backtest(cfg, write=False)
    sel = res.selections
    coint = sel[sel["strategy"] == "coint"]
    assert len(coint) > 0
    assert (coint["hedge_ratio"] > 0).all()  # no traded pair has b <= 0
    assert (res.trades.loc[res.trades["strategy"] == "coint", "hedge_ratio"] > 0).all()
    # with the I(1) screen on, no traded leg is stationary on its own in its formation window
    alpha = cfg.selection.i1_alpha
    assert (coint["y_adf_pvalue"] >= alpha).all() and (coint["x_adf_pvalue"] >= alpha).all()
    # the cap: no stock in more than 2 of a method's pairs in a window
    for _, g in sel.groupby(["method", "strategy", "window"]):
        assert pd.concat([g["y"], g["x"]]).value_counts().max() <= 2
    # the traded ordering is the one with the smaller p-value, and both orderings were tested
    from finsae.backtest.pairs import pair_tests

    close = pd.read_parquet(toy / "prices.parquet").set_index("date")
    w = res.windows.iloc[0]
    form = np.log(close.loc[w.formation_start:w.formation_end])
    for r in coint[coint["window"] == w.window].head(5).itertuples():
        cols = form[[r.y, r.x]].to_numpy()
        t = pair_tests(cols, np.array([0]), np.array([1]), maxlag=1, both_orderings=True)
        assert t.pvalue_ij[0] <= t.pvalue_ji[0] + 1e-15  # y on x is the better ordering
        assert r.pvalue == pytest.approx(max(t.pvalue_ij[0], t.pvalue_ji[0]), rel=1e-9)  # both must pass
        assert r.hedge_ratio == pytest.approx(t.hedge_ratio[0], rel=1e-9)
    # without the screen and the cap, with one ordering, the toy market does select stationary legs / stacks
    loose = CONFIG.replace("selection: {fdr: 0.2, max_half_life: 30, max_pairs: 4}",
                           "selection: {fdr: 0.2, max_half_life: 30, max_pairs: 4, orderings: first, "
                           "i1_screen: false, max_pairs_per_stock: null}")
    (toy / "pairs.yaml").write_text(loose)
    res2 = run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), write=False)
    assert len(res2.selections) != len(sel) or not res2.selections.equals(sel)


def test_a_methods_placebos_do_not_depend_on_the_other_methods_of_the_config(toy):
    base = run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), write=False)
    (toy / "pairs.yaml").write_text(CONFIG.replace("methods: [all_pairs, sic2, gics_sector]",
                                                   "methods: [gics_sector, sic2]"))
    fewer = run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), write=False)
    for frame in ("placebo", "summary"):
        a = getattr(base, frame)
        a = a[a["method"] == "sic2"].reset_index(drop=True)
        b = getattr(fewer, frame)
        b = b[b["method"] == "sic2"].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, obj=frame)


def test_concentration_figures_recompute_the_book_without_its_top_stock(toy):
    from finsae.backtest.metrics import sharpe_ratio

    cfg = load_pairs_config(toy / "pairs.yaml")
    res = run_pairs_backtest(cfg, write=False)
    row = _row(res, "all_pairs")
    top = row["top_stock"]
    assert isinstance(top, str) and top
    traded = res.trades[(res.trades["method"] == "all_pairs") & (res.trades["strategy"] == "coint")]
    assert row["distinct_stocks"] == len(set(traded["y"]) | set(traded["x"]))
    assert np.isfinite(row["ex_top_sharpe_net"]) and np.isfinite(row["top_stock_pnl_share"])
    d = res.daily[(res.daily["method"] == "all_pairs") & (res.daily["strategy"] == "coint")
                  & (res.daily["basis"] == "committed")]
    assert row["sharpe_net_10bp"] == pytest.approx(sharpe_ratio(d["net_10bp"].to_numpy()))


def test_prices_inside_a_trading_window_do_not_change_its_selection(toy):
    cfg = load_pairs_config(toy / "pairs.yaml")
    base = run_pairs_backtest(cfg, write=False)
    windows = base.windows[base.windows["method"] == "sic2"].reset_index(drop=True)
    target = windows.iloc[1]  # shock the prices inside the second trading window
    prices = pd.read_parquet(toy / "prices.parquet").set_index("date")
    inside = (prices.index >= target.trading_start) & (prices.index <= target.trading_end)
    prices.loc[inside] *= np.exp(np.random.default_rng(9).normal(0, 0.2, prices.loc[inside].shape))
    prices.reset_index().to_parquet(toy / "prices.parquet")
    shocked = run_pairs_backtest(cfg, write=False)
    key = ["method", "window", "y", "x"]
    for label in (windows.iloc[0].window, target.window):  # earlier window and the shocked window itself
        a = base.selections[base.selections["window"] == label].sort_values(key).reset_index(drop=True)
        b = shocked.selections[shocked.selections["window"] == label].sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)
    before = base.daily["date"] < target.trading_start
    pd.testing.assert_frame_equal(base.daily[before], shocked.daily[before])


def test_backtest_cli_and_config_errors(toy):
    result = CliRunner().invoke(cli, ["backtest", "--config", str(toy / "pairs.yaml"),
                                      "--output", str(toy / "o")])
    assert result.exit_code == 0, result.output
    assert "| SIC 2-digit |" in result.output
    for edit, pattern in [
        (("entry_z: 1.5, exit_z: 0.3", "entry_z: 0.3, exit_z: 0.3"),
         r"trading: Value error, entry_z \(0.3\) must be greater than exit_z \(0.3\)"),
        (("costs_bps: [0, 10]", "costs_bps: [-5, 10]"), r"costs_bps: Value error, costs must be >= 0"),
        (("headline_cost_bps: 10", "headline_cost_bps: 7"),
         r"headline_cost_bps 7.0 must be one of costs_bps"),
        (("max_pairs: 4", "max_pairz: 4"), r"selection\.max_pairz: unknown key"),
        (("methods: [all_pairs, sic2, gics_sector]", "methods: [sic9]"),
         r"methods: Value error, unknown taxonomies"),
    ]:
        (toy / "bad.yaml").write_text(CONFIG.replace(*edit))
        with pytest.raises(ConfigError, match=pattern):
            load_pairs_config(toy / "bad.yaml")


def test_stock_pnl_shares_and_the_book_without_a_stock_by_hand():
    from finsae.backtest.books import PairBlock, WindowPairs
    from finsae.backtest.engine import PairPaths, TradingRules
    from finsae.backtest.summary import book_series, stock_pnl

    rules = TradingRules(borrow_bps=0.0)
    # one window, three pairs (A,B), (A,C), (D,E) over two rows (row 0 is the formation end)
    gross = np.array([[0.0, 0.0, 0.0], [0.02, 0.01, -0.01], [0.01, 0.0, 0.03]])
    active = np.array([[False] * 3, [True, True, True], [True, False, True]])
    z = np.zeros_like(gross)
    paths = PairPaths(z, z, z, gross, np.zeros_like(gross), np.zeros_like(gross), active)
    blk = PairBlock(np.arange(3), np.array([0, 0, 3]), np.array([1, 2, 4]), np.zeros(3, dtype=int), z[0],
                    z[0] + 1, z[0] + 1, paths)
    blocks = [WindowPairs(0, blk, ["A", "B", "C", "D", "E"], 3)]
    pnl = stock_pnl(blocks, "committed", 0.0, rules)
    assert pnl["A"] == pytest.approx((0.03 + 0.01) / 3) and pnl["D"] == pytest.approx(0.02 / 3)
    full = book_series(blocks, [2], "committed", 0.0, rules, 0.0)
    np.testing.assert_allclose(full, [(0.02 + 0.01 - 0.01) / 3, (0.01 + 0.03) / 3])
    # only (D,E) is left, with all the capital
    ex_a = book_series(blocks, [2], "committed", 0.0, rules, 0.0, exclude="A")
    np.testing.assert_allclose(ex_a, [-0.01, 0.03])
    emp = book_series(blocks, [2], "employed", 0.0, rules, 0.0)
    np.testing.assert_allclose(emp, [0.02 / 3, 0.04 / 2])
    pnl_emp = stock_pnl(blocks, "employed", 0.0, rules)
    assert pnl_emp["B"] == pytest.approx(0.02 / 3 + 0.01 / 2)


def test_single_member_groups_have_no_candidates(toy):
    companies = pd.read_csv(toy / "companies.csv", dtype=str)
    companies["sic"] = [f"{2000 + k}" for k in range(len(companies))]  # every company alone in its SIC code
    companies.to_csv(toy / "companies.csv", index=False)
    (toy / "pairs.yaml").write_text(CONFIG.replace("methods: [all_pairs, sic2, gics_sector]",
                                                   "methods: [sic4]"))
    res = run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), write=False)
    w = res.windows
    assert (w["candidates"] == 0).all() and (w["selected"] == 0).all()
    assert (res.daily["gross"] == 0).all() and (res.summary["trades"] == 0).all()


def test_trading_inside_text_groups_from_a_benchmark_groups_file(toy):
    companies = pd.read_csv(toy / "companies.csv").assign(as_of="2015-06-30")
    companies.to_csv(toy / "companies.csv", index=False)
    tickers = companies["ticker"]
    good = [f"t:{t[1]}" for t in tickers]  # the true co-integrated groups
    scrambled = [f"s:{k % 3}" for k in range(len(tickers))]  # groups cutting across them
    frame = pd.concat([
        pd.DataFrame({"ticker": tickers, "group": good, "name": "text@good", "vintage": "2015-06-30"}),
        pd.DataFrame({"ticker": tickers, "group": scrambled, "name": "text@bad", "vintage": "2015-06-30"}),
    ])
    frame.to_parquet(toy / "groups.parquet")
    base = CONFIG.replace("methods: [all_pairs, sic2, gics_sector]", "methods: [sic2]")
    (toy / "pairs.yaml").write_text(base + "text_groups: {file: groups.parquet, "
                                    "names: [text@good, text@bad]}\n")
    res = run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), toy / "out")
    s = res.headline()
    s = s[s["strategy"] == "coint"].set_index("method")
    assert list(s.index) == ["sic2", "text@good", "text@bad"] and not s["look_ahead"].any()
    assert s.loc["text@good", "pairs_traded"] > 0
    # the true groups are the sic2 groups: identical trading
    assert np.isclose(s.loc["text@good", "sharpe_gross"], s.loc["sic2", "sharpe_gross"])
    # a start on or before the text's publication is look-ahead: refused unless allowed, then marked
    early = base.replace("start: 2015-07-01", "start: 2015-06-30")
    (toy / "pairs.yaml").write_text(early + "text_groups: {file: groups.parquet, names: [text@good]}\n")
    with pytest.raises(ConfigError, match="would look ahead"):
        run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), toy / "out2")
    (toy / "pairs.yaml").write_text(
        early + "text_groups: {file: groups.parquet, names: [text@good], allow_look_ahead: true}\n")
    marked = run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), toy / "out3", write=False)
    assert marked.summary.set_index("method").loc["text@good", "look_ahead"].all()
    (toy / "pairs.yaml").write_text(base + "text_groups: {file: groups.parquet, names: [text@nope]}\n")
    with pytest.raises(ConfigError, match="no grouping 'text@nope'"):
        run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), toy / "out4")
    (toy / "pairs.yaml").write_text(base + "text_groups: {file: missing.parquet, names: [text@good]}\n")
    with pytest.raises(ConfigError, match="run the benchmark that writes it first"):
        run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), toy / "out5")


def test_text_groups_come_from_one_source_and_a_results_folder_needs_its_run_store(toy):
    base = CONFIG.replace("methods: [all_pairs, sic2, gics_sector]", "methods: [sic2]")
    for groups, msg in (("{names: [a]}", "give one of results"),
                        ("{results: bench, file: g.parquet, names: [a]}", "give one of results"),
                        ("{file: g.parquet, vintage: '2017', names: [a]}", "vintage goes with results")):
        (toy / "pairs.yaml").write_text(base + f"text_groups: {groups}\n")
        with pytest.raises(ConfigError, match=msg):
            load_pairs_config(toy / "pairs.yaml")
    (toy / "bench").mkdir()  # a folder without a benchmark's run store
    (toy / "pairs.yaml").write_text(base + "text_groups: {results: bench, names: [a]}\n")
    cfg = load_pairs_config(toy / "pairs.yaml")
    assert cfg.text_groups is not None and cfg.text_groups.results == toy / "bench"  # relative to the config
    with pytest.raises(ConfigError, match="finsae benchmark"):
        run_pairs_backtest(cfg, toy / "out")


def test_the_backtest_stage_does_not_import_the_config_and_its_settings_mirror_the_config(toy):
    import subprocess
    import sys

    code = ("import sys, finsae.backtest.results, finsae.backtest.books, finsae.backtest.summary, "
            "finsae.backtest.pairs; print(sorted(m for m in sys.modules if m.startswith(('finsae.config', "
            "'finsae.pipeline', 'finsae.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

    from finsae.backtest.results import BacktestSettings

    cfg = load_pairs_config(toy / "pairs.yaml")
    st = BacktestSettings.of(cfg)
    assert st.costs_bps == (0.0, 10.0) and st.headline_column == "net_10bp"
    assert st.selection.fdr == cfg.selection.fdr and st.trading.borrow_bps == cfg.trading.borrow_bps
    assert st.placebo.draws == 3 and st.strategies == ("coint", "distance")
    assert st.rf == (1 + cfg.rf_annual) ** (1 / cfg.periods_per_year) - 1
    assert st.rules("distance").stop_z == np.inf and st.rules("coint").entry_z == 1.5
    res = run_pairs_backtest(cfg, write=False)
    assert res.config == st and res.headline()["basis"].eq(cfg.headline_basis).all()


def test_a_groups_file_from_other_hands_csv_lower_case_repeated_or_foreign_tickers(toy, caplog):
    """A groups table written by a user: CSV is read, tickers follow the universe's rule (lower case
    trades as upper case), a ticker listed twice is an error naming it, a grouping that shares no ticker
    with the universe is refused and one that misses most of it is named in a warning."""
    companies = pd.read_csv(toy / "companies.csv").assign(as_of="2015-06-30")
    companies.to_csv(toy / "companies.csv", index=False)
    tickers = companies["ticker"]
    good = pd.DataFrame({"ticker": tickers, "group": [f"t:{t[1]}" for t in tickers], "name": "text@good",
                         "vintage": "2015-06-30"})
    base = CONFIG.replace("methods: [all_pairs, sic2, gics_sector]", "methods: [sic2]")

    def run(frame: pd.DataFrame, file: str, out: str):
        (frame.to_csv if file.endswith(".csv") else frame.to_parquet)(toy / file, index=False)
        (toy / "pairs.yaml").write_text(base + f"text_groups: {{file: {file}, names: [text@good]}}\n")
        return run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), toy / out, write=False)

    s = run(good.assign(ticker=good["ticker"].str.lower()), "groups.csv", "a").headline().set_index("method")
    s = s[s["strategy"] == "coint"]
    assert s.loc["text@good", "pairs_traded"] > 0
    assert np.isclose(s.loc["text@good", "sharpe_gross"], s.loc["sic2", "sharpe_gross"])
    with pytest.raises(DataError, match=r"grouping 'text@good' lists 1 ticker\(s\) twice, e.g. \['G0S0'\]"):
        run(pd.concat([good, good.iloc[:1]]), "groups.parquet", "b")
    with pytest.raises(DataError, match="shares no ticker with the backtest's priced universe"):
        run(good.assign(ticker="X" + good["ticker"]), "groups.parquet", "c")
    with caplog.at_level("WARNING"):
        run(good.iloc[:4], "groups.parquet", "d")
    assert "8 of the 12 traded stocks have no group in it" in caplog.text


def test_trading_starts_late_and_ends_early_with_a_warning(toy, caplog):
    cfg = CONFIG.replace("start: 2015-07-01", "start: 2015-01-05")
    cfg = cfg.replace("end: 2016-06-30", "end: 2019-12-31")
    (toy / "pairs.yaml").write_text(cfg)
    with caplog.at_level("WARNING"):
        run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), toy / "out", write=False)
    assert "not 2015-01-05: the prices begin 2015-01-01" in caplog.text
    assert "not 2019-12-31: the prices end there" in caplog.text


def test_a_frozen_close_is_screened_out_of_formation(toy):
    """A close held constant for months (a halt, a vendor's forward fill) has a tiny distance to anything and
    no real spread: it is not eligible in a window whose formation holds such a run (max_stale_days)."""
    from finsae.pipeline.backtest import longest_unchanged

    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=(60, 5)), 0)
    x[10:30, 2] = 7.0
    x[5, 3] = np.nan
    brute = []
    for col in x.T:
        best = run = 0
        for a, b in zip(col[:-1], col[1:], strict=True):
            run = run + 1 if a == b else 0
            best = max(best, run)
        brute.append(best)
    assert longest_unchanged(x).tolist() == brute and brute[2] >= 19
    prices = pd.read_parquet(toy / "prices.parquet")
    prices.loc[(prices["date"] >= "2015-03-01") & (prices["date"] < "2015-06-15"), "G0S0"] = 40.0
    prices.to_parquet(toy / "prices.parquet")
    res = run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), write=False)
    first = res.selections[res.selections["window"] == res.selections["window"].min()]
    assert not (first[["y", "x"]] == "G0S0").any().any()
    (toy / "pairs.yaml").write_text(CONFIG + "max_stale_days: null\n")
    res = run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), write=False)
    first = res.selections[res.selections["window"] == res.selections["window"].min()]
    assert (first[["y", "x"]] == "G0S0").any().any()  # without the screen the frozen stock is picked
