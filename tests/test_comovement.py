"""Co-movement metrics against direct, loop-based computations on small synthetic panels."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from finsae.errors import DataError
from finsae.evaluate import (
    comovement,
    correlation_matrix,
    null_distribution,
    pairwise_correlation,
    within_pairs,
)
from finsae.evaluate.comovement import encode_labels

from .conftest import synthetic_panel


def loop_metrics(returns: pd.DataFrame, labels: pd.Series, min_periods: int) -> dict:
    """Reference: every metric by explicit loops over groups and pairs, with pandas' correlation."""
    corr = returns.corr(min_periods=min_periods)
    tickers = list(returns.columns)
    groups: dict[object, list[str]] = {}
    for t in tickers:
        lab = labels.get(t, np.nan)
        if pd.notna(lab):
            groups.setdefault(lab, []).append(t)
    pair_vals, group_means, within, sizes = [], [], 0, []
    for members in groups.values():
        sizes.append(len(members))
        vals = []
        for a, b in itertools.combinations(members, 2):
            within += 1
            if not np.isnan(corr.loc[a, b]):
                vals.append(corr.loc[a, b])
        pair_vals += vals
        if vals:
            group_means.append(np.mean(vals))
    n = len(tickers)
    return {
        "pair_weighted": np.mean(pair_vals),
        "cluster_weighted": np.mean(group_means),
        "n_groups": sum(s >= 2 for s in sizes),
        "n_singletons": sum(s == 1 for s in sizes),
        "coverage": sum(s for s in sizes if s >= 2) / n,
        "pair_density": within / (n * (n - 1) / 2),
        "n_pairs": len(pair_vals),
        "groups": groups,
        "corr": corr,
    }


@pytest.mark.parametrize("nan_share", [0.0, 0.15])
def test_pairwise_correlation_equals_pandas(nan_share):
    panel = synthetic_panel(n_periods=40, n_tickers=9, nan_share=nan_share, seed=3)
    corr, n_obs = pairwise_correlation(panel.returns.to_numpy(), min_periods=25)
    ref = panel.returns.corr(min_periods=25).to_numpy()
    assert np.array_equal(np.isnan(corr), np.isnan(ref))
    np.testing.assert_allclose(corr[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-12)
    assert n_obs[0, 1] == panel.returns.iloc[:, [0, 1]].dropna().shape[0]


@pytest.mark.parametrize("nan_share", [0.0, 0.3])
def test_pairwise_correlation_at_equals_the_matrix_bit_for_bit(nan_share):
    """The bootstrap reads a few pairs per draw: those entries must be the full matrix's, NaNs included (a
    constant column, too few overlapping periods), in the order asked, both triangles and the diagonal."""
    from finsae.evaluate.comovement import pairwise_correlation_at

    x = synthetic_panel(n_periods=30, n_tickers=12, nan_share=nan_share, seed=5).returns.to_numpy().copy()
    x[:, 3] = 0.25  # constant: no correlation
    full, _ = pairwise_correlation(x, min_periods=20)
    flat = np.random.default_rng(1).permutation(12 * 12)[:100]
    got = pairwise_correlation_at(x, flat, min_periods=20)
    want = full.ravel()[flat]
    assert np.isnan(want).any()
    assert np.array_equal(got, want, equal_nan=True)
    too_few = pairwise_correlation_at(x, flat, min_periods=31)  # 30 periods
    assert np.isnan(too_few).all()


def test_constant_column_has_no_correlation():
    x = np.random.default_rng(0).normal(size=(30, 3))
    x[:, 1] = 0.5
    corr, _ = pairwise_correlation(x)
    assert np.isnan(corr[0, 1]) and np.isnan(corr[1, 2]) and not np.isnan(corr[0, 2])


@pytest.mark.parametrize("nan_share", [0.0, 0.3])
def test_metrics_equal_loop_computation(nan_share):
    panel = synthetic_panel(n_periods=30, n_tickers=14, nan_share=nan_share, seed=1)
    # groups of sizes 4, 3, 2, 1, an unlabelled company, and one ticker missing from the labels entirely
    labels = pd.Series(["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"] + [np.nan] + ["a", "b"],
                       index=panel.tickers[:13], name="toy")
    min_periods = 15
    corr = correlation_matrix(panel, min_periods=min_periods)
    res = comovement(corr, labels, null_draws=0, bootstrap_draws=0)
    ref = loop_metrics(panel.returns, labels, min_periods)
    assert res.pair_weighted == pytest.approx(ref["pair_weighted"], abs=1e-12)
    assert res.cluster_weighted == pytest.approx(ref["cluster_weighted"], abs=1e-12)
    assert res.n_groups == ref["n_groups"] == 3
    assert res.n_singletons == ref["n_singletons"] == 1
    assert res.coverage == pytest.approx(ref["coverage"])
    assert res.pair_density == pytest.approx(ref["pair_density"])
    assert res.n_pairs == ref["n_pairs"]
    assert res.n_companies == 14


def test_size_strata_equal_loop_computation():
    panel = synthetic_panel(n_periods=50, n_tickers=60, seed=2)
    sizes = [2, 2, 3, 5, 6, 15, 16, 11]  # strata: 2, 2, 3-5, 3-5, 6-15, 6-15, 16-50, 6-15
    labels = pd.Series(np.repeat(np.arange(len(sizes)), sizes), index=panel.tickers[: sum(sizes)])
    corr = correlation_matrix(panel)
    res = comovement(corr, labels, null_draws=0, bootstrap_draws=0)
    ref = loop_metrics(panel.returns, labels, corr_min := max(3, panel.n_periods // 2))
    assert corr_min == 25
    strata = res.strata.set_index("stratum")
    bounds = {"2": (2, 2), "3-5": (3, 5), "6-15": (6, 15), "16-50": (16, 50), "51+": (51, 10**9)}
    for name, (lo, hi) in bounds.items():
        members = [m for m in ref["groups"].values() if lo <= len(m) <= hi]
        assert strata.loc[name, "n_groups"] == len(members)
        vals = [ref["corr"].loc[a, b] for m in members for a, b in itertools.combinations(m, 2)]
        if vals:
            assert strata.loc[name, "pair_weighted"] == pytest.approx(np.mean(vals), abs=1e-12)
            means = [
                np.mean([ref["corr"].loc[a, b] for a, b in itertools.combinations(m, 2)]) for m in members
            ]
            assert strata.loc[name, "cluster_weighted"] == pytest.approx(np.mean(means), abs=1e-12)
        else:
            assert np.isnan(strata.loc[name, "pair_weighted"])


def test_within_pairs_lists_every_within_group_pair_once():
    codes = np.array([1, 0, 1, -1, 0, 1, 2])
    wi, wj, wg = within_pairs(codes)
    got = sorted(zip(wi.tolist(), wj.tolist(), wg.tolist(), strict=True))
    assert got == [(0, 2, 1), (0, 5, 1), (1, 4, 0), (2, 5, 1)]


def test_null_is_a_same_size_relabelling():
    """Each null draw scores exactly the grouping 'company q[i] gets the label of company i'."""
    panel = synthetic_panel(n_periods=40, n_tickers=15, seed=4)
    corr = correlation_matrix(panel)
    labels = pd.Series(list("aaaabbbccdde") + [np.nan] * 3, index=panel.tickers)
    codes, _, _ = encode_labels(corr, labels)
    null_pw, null_cw = null_distribution(corr, codes, 25, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    for d in range(25):
        q = rng.permutation(len(codes))
        relabelled = pd.Series(np.nan, index=panel.tickers, dtype=object)
        relabelled.iloc[q] = labels.to_numpy()
        # group sizes preserved exactly, including the unlabelled companies
        assert (
            relabelled.value_counts(dropna=False)
            .sort_index()
            .equals(labels.value_counts(dropna=False).sort_index())
        )
        ref = loop_metrics(panel.returns, relabelled, max(3, panel.n_periods // 2))
        assert null_pw[d] == pytest.approx(ref["pair_weighted"], abs=1e-12)
        assert null_cw[d] == pytest.approx(ref["cluster_weighted"], abs=1e-12)


def test_null_centres_on_all_pairs_mean_and_real_groups_beat_it():
    panel = synthetic_panel(n_periods=80, n_tickers=30, seed=5)
    corr = correlation_matrix(panel)
    factor_groups = pd.Series(np.arange(30) % 3, index=panel.tickers)
    res = comovement(corr, factor_groups, null_draws=400, seed=1)
    assert res.null_pair_weighted_mean == pytest.approx(corr.mean_all_pairs(), abs=0.02)
    assert res.null_pair_weighted_percentile == 100.0
    assert res.null_pair_weighted_p_value == pytest.approx(1 / 401)
    assert res.pair_weighted_ci_low <= res.pair_weighted <= res.pair_weighted_ci_high


def test_bootstrap_ci_resamples_groups():
    """The CI equals percentiles of pair-weighted means over groups drawn with replacement (same draws)."""
    panel = synthetic_panel(n_periods=40, n_tickers=20, seed=6)
    corr = correlation_matrix(panel)
    labels = pd.Series(np.repeat(np.arange(6), [2, 3, 3, 4, 4, 4]), index=panel.tickers)
    res = comovement(corr, labels, null_draws=0, bootstrap_draws=300, seed=11)
    ref = loop_metrics(panel.returns, labels, max(3, panel.n_periods // 2))
    group_pairs = [
        [ref["corr"].loc[a, b] for a, b in itertools.combinations(m, 2)] for m in ref["groups"].values()
    ]
    weights = np.random.default_rng(11).multinomial(6, np.full(6, 1 / 6), size=300)
    boots = []
    for w in weights:
        drawn = [v for g, count in enumerate(w) for _ in range(count) for v in group_pairs[g]]
        boots.append(np.mean(drawn))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    assert res.pair_weighted_ci_low == pytest.approx(lo, abs=1e-12)
    assert res.pair_weighted_ci_high == pytest.approx(hi, abs=1e-12)


def test_single_group_has_no_ci_and_neutral_null():
    panel = synthetic_panel(n_tickers=8)
    corr = correlation_matrix(panel)
    res = comovement(corr, pd.Series("all", index=panel.tickers), null_draws=50)
    assert res.pair_weighted == pytest.approx(corr.mean_all_pairs())
    assert np.isnan(res.pair_weighted_ci_low)
    assert res.null_pair_weighted_percentile == 50.0
    assert res.pair_density == 1.0


def test_label_for_unknown_ticker_is_an_error():
    panel = synthetic_panel(n_tickers=6)
    corr = correlation_matrix(panel)
    labels = pd.Series(["a"] * 7, index=[*panel.tickers, "ZZZZ"], name="bad")
    with pytest.raises(DataError, match=r"not in the universe: \['ZZZZ'\]"):
        comovement(corr, labels)


def test_duplicate_label_tickers_are_an_error():
    panel = synthetic_panel(n_tickers=6)
    corr = correlation_matrix(panel)
    labels = pd.Series(["a", "b", "a"], index=["T00", "T01", "T00"])
    with pytest.raises(DataError, match="duplicate tickers.*T00"):
        comovement(corr, labels)


def test_dropped_tickers_are_counted_not_errors():
    panel = synthetic_panel(n_tickers=6)
    panel = type(panel)(panel.returns, panel.frequency, panel.start, panel.end,
                        pd.Series({"GONE": "no prices"}, dtype="string"))
    corr = correlation_matrix(panel)
    labels = pd.Series(["a", "a", "b", "b", "c", "c", "c"], index=[*panel.tickers, "GONE"])
    res = comovement(corr, labels, null_draws=0)
    assert res.n_dropped == 1 and res.n_companies == 6
