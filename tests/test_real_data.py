"""Sanity on the bundled real data: the taxonomy ordering the foundation issue states."""

from __future__ import annotations

import pytest

from finsae.data import log_returns
from finsae.evaluate import comovement, correlation_matrix
from finsae.group import TAXONOMIES, taxonomy_labels


@pytest.fixture(scope="module")
def corr_2010s(universe, prices):
    return correlation_matrix(log_returns(prices, "2010-01-01", "2019-12-31", "monthly", tickers=universe.tickers))


def test_pair_weighted_rises_from_all_pairs_to_sector_to_industry(universe, corr_2010s):
    pw = {name: comovement(corr_2010s, taxonomy_labels(universe, name), null_draws=0, bootstrap_draws=0).pair_weighted
          for name in ("all_pairs", "gics_sector", "gics_industry")}
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
