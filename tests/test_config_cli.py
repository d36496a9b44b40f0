"""Config validation and the command line, end to end on small files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from finsae.cli import cli
from finsae.config import load_benchmark_config
from finsae.errors import ConfigError

from .conftest import synthetic_prices

CONFIG = """\
name: toy
data:
  companies: companies.csv
  prices: prices.parquet
designs:
  - name: forward
    text_vintage: "2015-01-01"
    start: 2015-03-01
    end: 2016-06-30
    frequencies: [monthly, daily]
taxonomies: [all_pairs, sic2, gics_sector]
evaluation:
  null_draws: 20
  bootstrap_draws: 50
"""


@pytest.fixture()
def toy_files(tmp_path: Path) -> Path:
    prices = synthetic_prices(n_tickers=12, n_days=400)
    prices.close.reset_index().to_parquet(tmp_path / "prices.parquet")
    sic = ["2834", "2836", "2834", "6021", "6022", "6021", "7372", "7373", "7372", "2834", "6021", "7372"]
    gics = ["35202010", "35201010", "35202010", "40101015", "40101015", "40101010",
            "45103010", "45103020", "45103010", "35202010", "40101015", "45103010"]
    pd.DataFrame(
        {
            "ticker": prices.tickers,
            "description": [f"Company {t}" for t in prices.tickers],
            "sic": sic,
            "gics": gics,
            "as_of": "2015-01-01",
        }
    ).to_csv(tmp_path / "companies.csv", index=False)
    (tmp_path / "toy.yaml").write_text(CONFIG)
    return tmp_path


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_baselines_config_is_valid():
    cfg = load_benchmark_config(Path(__file__).parent.parent / "backtests" / "baselines.yaml")
    assert [d.name for d in cfg.designs] == ["forward", "contemporaneous"]
    assert cfg.evaluation.null_draws >= 200


def test_relative_data_paths_resolve_against_config(toy_files):
    cfg = load_benchmark_config(toy_files / "toy.yaml")
    assert cfg.data.companies == toy_files / "companies.csv"


def test_shipped_forward_config_points_at_the_shipped_saes():
    root = Path(__file__).parent.parent
    cfg = load_benchmark_config(root / "backtests" / "forward_2017.yaml")
    saes = {m.name: m.sae for m in cfg.text_methods if m.features == "sae"}
    assert saes["sae"] is None  # the default SAE
    assert saes["sae_5120"] == (root / "backtests" / ".." / "finsae" / "sae" / "gemma-3-270m-l3-5120")
    assert (saes["sae_5120"] / "cfg.json").is_file()


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (("null_draws: 20", "null_drawz: 20"), r"evaluation\.null_drawz: unknown key"),
        (("name: toy", "name: toy\ncolour: red"), r"colour: unknown key"),
        (
            ("frequencies: [monthly, daily]", "frequencies: [weekly]"),
            r"designs\.0\.frequencies\.0: Input should be 'monthly' or 'daily'",
        ),
        (
            ("taxonomies: [all_pairs, sic2, gics_sector]", "taxonomies: [sic5]"),
            r"taxonomies: Value error, unknown taxonomies \['sic5'\]",
        ),
        (
            ("end: 2016-06-30", "end: 2014-06-30"),
            r"designs\.0: Value error, end 2014-06-30 must be after start",
        ),
        (
            ("null_draws: 20", "null_draws: -1"),
            r"evaluation\.null_draws: Input should be greater than or equal "
            r"to 0",
        ),
    ],
)
def test_bad_configs_name_the_key(tmp_path, edit, pattern):
    path = write_config(tmp_path, CONFIG.replace(*edit))
    with pytest.raises(ConfigError, match=pattern):
        load_benchmark_config(path)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_benchmark_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_benchmark_config(write_config(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_benchmark_config(write_config(tmp_path, "- a\n- b\n"))


def test_benchmark_command_writes_results(toy_files, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["benchmark", "--config", str(toy_files / "toy.yaml"), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "| All pairs | 1 |" in result.output and "| SIC 2-digit | 3 |" in result.output
    assert "LOOK-AHEAD" not in result.output  # text of 2015-01-01 precedes a window starting 2015-03-01
    table = pd.read_parquet(out / "comovement.parquet")
    assert len(table) == 2 * 3 and set(table["frequency"]) == {"monthly", "daily"}
    assert {"pair_weighted", "pair_weighted_ci_low", "cluster_weighted", "coverage", "pair_density",
            "null_pair_weighted_mean", "null_pair_weighted_percentile"} <= set(table.columns)
    assert (out / "table.md").read_text().startswith("## Benchmark `toy`")
    assert len(pd.read_parquet(out / "size_strata.parquet")) == 2 * 3 * 5
    assert (out / "manifest.json").is_file()


def test_look_ahead_is_flagged(toy_files, tmp_path):
    text = (toy_files / "toy.yaml").read_text().replace("start: 2015-03-01", "start: 2014-12-01")
    (toy_files / "toy.yaml").write_text(text)
    result = CliRunner().invoke(
        cli, ["benchmark", "--config", str(toy_files / "toy.yaml"), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "**LOOK-AHEAD for any text method**" in result.output


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    path = write_config(tmp_path, CONFIG.replace("null_draws: 20", "null_drawz: 20"))
    result = CliRunner().invoke(cli, ["benchmark", "--config", str(path)])
    assert result.exit_code == 2
    assert "error: config" in result.output and "evaluation.null_drawz: unknown key" in result.output
    assert "Traceback" not in result.output


def test_data_info_on_bundled_data():
    result = CliRunner().invoke(cli, ["data", "info"])
    assert result.exit_code == 0, result.output
    assert "Universe: 1542 companies" in result.output
    assert "text 2017" in result.output and "published by 2017-05-31" in result.output
    assert "Survivorship" in result.output
    # what the bundled data carries that a text method or a daily return would trip over
    assert "123 companies share 47 text(s) with another company" in result.output  # wikipedia_2020
    assert "2011-02-17 (372 of 1542 priced, kept (reviewed))" in result.output
