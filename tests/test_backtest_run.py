"""The whole pairs backtest on a small synthetic universe: outputs, no look-ahead in selection, CLI, config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from finsae.backtest.run import run_pairs_backtest
from finsae.cli import cli
from finsae.config import load_pairs_config
from finsae.errors import ConfigError

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
    """Stocks of a group share a random-walk trend plus their own AR(1) deviation: co-integrated within groups."""
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
                  "gics": [gics[int(c[1])] for c in prices.columns]}).to_csv(tmp_path / "companies.csv", index=False)
    (tmp_path / "pairs.yaml").write_text(CONFIG)
    return tmp_path


def test_backtest_runs_and_writes_every_table(toy):
    cfg = load_pairs_config(toy / "pairs.yaml")
    res = run_pairs_backtest(cfg, toy / "out")
    assert list(res.summary["method"]) == ["all_pairs", "sic2", "gics_sector"]
    for name in ("summary", "daily", "windows", "placebo", "trades", "selections"):
        assert (toy / "out" / f"{name}.parquet").is_file()
    assert (toy / "out" / "table.md").read_text().startswith("## Pairs backtest `toy_pairs`")
    # within-group pairs of co-integrated groups are selected, and they trade
    sel = res.selections[res.selections["method"] == "sic2"]
    assert len(sel) > 0 and (sel["y"].str[:2] == sel["x"].str[:2]).all()
    assert res.summary.set_index("method").loc["sic2", "trades"] > 0
    # net returns are gross minus costs: never higher
    d = res.daily
    assert (d["net_10bp"] <= d["gross"] + 1e-15).all() and (d["net_0bp"] <= d["gross"] + 1e-15).all()
    # placebo books: 3 draws each; all_pairs has no random-group placebo (one group)
    counts = res.placebo.groupby(["method", "kind"]).size().to_dict()
    assert counts[("sic2", "random_groups")] == 3 and ("all_pairs", "random_groups") not in counts
    # a second run uses the cached pair tests and gives identical results
    again = run_pairs_backtest(cfg, toy / "out2")
    pd.testing.assert_frame_equal(again.summary, res.summary)


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
    result = CliRunner().invoke(cli, ["backtest", "--config", str(toy / "pairs.yaml"), "--output", str(toy / "o")])
    assert result.exit_code == 0, result.output
    assert "| SIC 2-digit |" in result.output
    for edit, pattern in [
        (("entry_z: 1.5, exit_z: 0.3", "entry_z: 0.3, exit_z: 0.3"), r"trading: Value error, entry_z \(0.3\) must be greater than exit_z \(0.3\)"),
        (("costs_bps: [0, 10]", "costs_bps: [-5, 10]"), r"costs_bps: Value error, costs must be >= 0"),
        (("headline_cost_bps: 10", "headline_cost_bps: 7"), r"headline_cost_bps 7.0 must be one of costs_bps"),
        (("max_pairs: 4", "max_pairz: 4"), r"selection\.max_pairz: unknown key"),
        (("methods: [all_pairs, sic2, gics_sector]", "methods: [sic9]"), r"methods: Value error, unknown taxonomies"),
    ]:
        (toy / "bad.yaml").write_text(CONFIG.replace(*edit))
        with pytest.raises(ConfigError, match=pattern):
            load_pairs_config(toy / "bad.yaml")


def test_single_member_groups_have_no_candidates(toy):
    companies = pd.read_csv(toy / "companies.csv", dtype=str)
    companies["sic"] = [f"{2000 + k}" for k in range(len(companies))]  # every company alone in its SIC code
    companies.to_csv(toy / "companies.csv", index=False)
    (toy / "pairs.yaml").write_text(CONFIG.replace("methods: [all_pairs, sic2, gics_sector]", "methods: [sic4]"))
    res = run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), write=False)
    w = res.windows
    assert (w["candidates"] == 0).all() and (w["selected"] == 0).all()
    assert (res.daily["gross"] == 0).all() and res.summary.loc[0, "trades"] == 0


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
    (toy / "pairs.yaml").write_text(base + "text_groups: {file: groups.parquet, names: [text@good, text@bad]}\n")
    res = run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), toy / "out")
    s = res.summary.set_index("method")
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
    assert marked.summary.set_index("method").loc["text@good", "look_ahead"]
    (toy / "pairs.yaml").write_text(base + "text_groups: {file: groups.parquet, names: [text@nope]}\n")
    with pytest.raises(ConfigError, match="no grouping 'text@nope'"):
        run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), toy / "out4")
    (toy / "pairs.yaml").write_text(base + "text_groups: {file: missing.parquet, names: [text@good]}\n")
    with pytest.raises(ConfigError, match="run the benchmark that writes it first"):
        run_pairs_backtest(load_pairs_config(toy / "pairs.yaml"), toy / "out5")
