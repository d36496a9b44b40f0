"""Sanity on the bundled real data: the taxonomy ordering the foundation issue states."""

from __future__ import annotations

import pytest

from finsae.data import log_returns
from finsae.evaluate import comovement, correlation_matrix
from finsae.group import TAXONOMIES, taxonomy_labels


@pytest.fixture(scope="module")
def corr_2010s(universe, prices):
    return correlation_matrix(
        log_returns(prices, "2010-01-01", "2019-12-31", "monthly", tickers=universe.tickers)
    )


def test_pair_weighted_rises_from_all_pairs_to_sector_to_industry(universe, corr_2010s):
    pw = {
        name: comovement(
            corr_2010s, taxonomy_labels(universe, name), null_draws=0, bootstrap_draws=0
        ).pair_weighted
        for name in ("all_pairs", "gics_sector", "gics_industry")
    }
    assert pw["all_pairs"] < pw["gics_sector"] < pw["gics_industry"]
    assert pw["all_pairs"] == pytest.approx(0.25, abs=0.02)
    assert pw["gics_sector"] == pytest.approx(0.32, abs=0.02)
    assert pw["gics_industry"] == pytest.approx(0.39, abs=0.02)


def test_every_taxonomy_beats_its_null(universe, corr_2010s):
    for name in TAXONOMIES:
        if name == "all_pairs":
            continue
        res = comovement(corr_2010s, taxonomy_labels(universe, name), null_draws=50, bootstrap_draws=200)
        assert res.null_pair_weighted_percentile == 100.0, name
        assert res.null_pair_weighted_mean == pytest.approx(corr_2010s.mean_all_pairs(), abs=0.01)
        assert res.pair_weighted_ci_low < res.pair_weighted < res.pair_weighted_ci_high


def test_taxonomy_labels(universe):
    sic2 = taxonomy_labels(universe, "sic2")
    assert sic2.str.len().eq(2).all() and sic2.name == "sic2"
    assert taxonomy_labels(universe, "gics_industry")["AAPL"] == "452020"
    assert taxonomy_labels(universe, "all_pairs").nunique() == 1


def test_text_benchmark_on_bundled_data_with_tfidf(tmp_path):
    """The forward design end to end on the real data with the fast text method (TF-IDF); the SAE and MiniLM
    run in the main job (their features take minutes to compute on a CPU)."""
    from finsae.config import load_benchmark_config
    from finsae.pipeline.benchmark import run_benchmark

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("""\
name: real_tfidf
designs:
  - name: forward
    text_vintage: "2017"
    start: 2017-06-01
    end: 2020-01-31
    frequencies: [monthly]
taxonomies: [all_pairs, gics_industry, sic4]
text_methods:
  - name: tfidf
    features: tfidf
    transform: select
    clusterer: average
granularity:
  levels: [gics_industry, sic4]
  match: [density]
hybrid:
  method: tfidf
  parent: gics_sector
selection:
  transforms: [raw, binary]
  clusterers: [average]
ranking:
  ks: [1, 10]
  difference_draws: 100
evaluation:
  null_draws: 20
  bootstrap_draws: 100
""")
    res = run_benchmark(load_benchmark_config(cfg), tmp_path / "out")
    t = res.table.set_index("method")
    all_pairs = t.loc["all_pairs", "pair_weighted"]
    assert 0.25 < all_pairs < 0.29  # the reference: 0.27
    for level in ("gics_industry", "sic4"):
        row = t.loc[f"tfidf@{level}:density"]
        assert row["matched"] and abs(row["formation_density"] / row["target_density"] - 1) <= 0.05
        assert row["pair_weighted"] > all_pairs + 0.1
        assert row["pair_weighted"] > t.loc[f"random@{level}:same_sizes", "pair_weighted"] + 0.1
    assert set(res.verdict["level"]) == {"gics_industry", "sic4"}
    rank = res.ranking.set_index("method")
    assert rank.loc["tfidf", "top10"] > all_pairs + 0.05
    assert res.selection["chosen"].sum() == 1
    assert (tmp_path / "out" / "groups_2017.parquet").is_file()
