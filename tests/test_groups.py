"""Peer groups from features: clusterers against scipy / scikit-learn, matched granularity, ranking metrics
against loops, the paired difference, and the text benchmark's no-look-ahead guarantee."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from finsae.config import load_benchmark_config
from finsae.errors import ConfigError, DataError
from finsae.evaluate import comovement, correlation_matrix
from finsae.evaluate.comovement import paired_difference
from finsae.evaluate.ranking import same_group_similarity, similarity_spearman, topk_neighbour_correlation
from finsae.group.cluster import (
    HybridClustering,
    LinkageClustering,
    MSTClustering,
    SphericalKMeans,
    kmeans_for_density,
    mst_edges,
    n_groups,
    pair_density,
)
from finsae.group.peers import GranularityTarget, PeerGrouper
from finsae.group.similarity import FeatureTransform, cosine_similarity
from finsae.pipeline.benchmark import run_benchmark

from .conftest import synthetic_panel, synthetic_prices


def blobs(
    n_per: int = 15, k: int = 4, dim: int = 12, seed: int = 0, spread: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 3
    x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centers])
    truth = np.repeat(np.arange(k), n_per)
    return x, truth


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------- clusterers


@pytest.mark.parametrize("threshold", [0.02, 0.1, 0.3, 0.6])
def test_mst_cut_equals_single_linkage_cut(threshold):
    x, _ = blobs(seed=1, spread=1.0)
    got = MSTClustering(threshold=threshold).fit(x).labels_
    ref = fcluster(linkage(pdist(x, "cosine"), "single"), t=threshold, criterion="distance")
    assert adjusted_rand_score(ref, got) == 1.0
    assert n_groups(got) == len(np.unique(ref))


@pytest.mark.parametrize("k", [1, 3, 7, 20])
def test_mst_n_clusters_equals_single_linkage_maxclust(k):
    x, _ = blobs(seed=2, spread=1.0)
    got = MSTClustering(n_clusters=k).fit(x).labels_
    ref = fcluster(linkage(pdist(x, "cosine"), "single"), t=k, criterion="maxclust")
    assert n_groups(got) == k
    assert adjusted_rand_score(ref, got) == 1.0


def test_mst_edges_total_weight_equals_scipy():
    from scipy.sparse.csgraph import minimum_spanning_tree

    x, _ = blobs(seed=3, spread=1.0)
    d = 1 - unit(x) @ unit(x).T
    np.fill_diagonal(d, 0)
    _, _, w = mst_edges(d)
    assert len(w) == len(x) - 1
    assert np.isclose(w.sum(), minimum_spanning_tree(np.clip(d, 1e-15, None)).sum())


@pytest.mark.parametrize("k", [2, 4, 9])
def test_average_linkage_equals_sklearn(k):
    x, _ = blobs(seed=4, spread=1.5)
    got = LinkageClustering(n_clusters=k).fit(x).labels_
    ref = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average").fit(x).labels_
    assert adjusted_rand_score(ref, got) == 1.0


def test_spherical_kmeans_recovers_separated_groups_and_is_deterministic():
    x, truth = blobs(seed=5, spread=0.2)
    a = SphericalKMeans(4, random_state=0).fit(x)
    b = clone(a).fit(x)
    assert adjusted_rand_score(truth, a.labels_) == 1.0
    np.testing.assert_array_equal(a.labels_, b.labels_)


def test_hybrid_groups_never_cross_parents_and_hit_the_count():
    x, truth = blobs(n_per=10, k=6, seed=6, spread=1.0)
    parents = np.where(truth < 3, "A", "B").astype(object)
    parents[0] = None  # no parent: in no group
    model = HybridClustering(parents=parents, n_clusters=8).fit(x)
    assert model.labels_[0] == -1
    assert n_groups(model.labels_) == 8
    for g in np.unique(model.labels_[model.labels_ >= 0]):
        assert len(set(parents[model.labels_ == g])) == 1


def test_clusterers_reject_bad_parameters():
    x, _ = blobs()
    with pytest.raises(DataError, match="exactly one"):
        MSTClustering().fit(x)
    with pytest.raises(DataError, match="exactly one"):
        LinkageClustering(n_clusters=3, distance_threshold=0.5).fit(x)
    with pytest.raises(DataError, match="NaN"):
        MSTClustering(threshold=0.1).fit(np.full((4, 3), np.nan))
    with pytest.raises(DataError, match="n_clusters"):
        SphericalKMeans(100).fit(x)


# ---------------------------------------------------------------------------------------- matched granularity


@pytest.mark.parametrize("clusterer", ["average", "kmeans"])
@pytest.mark.parametrize("k", [5, 12, 30])
def test_matched_count_is_within_one_group(clusterer, k):
    x, _ = blobs(n_per=25, k=8, seed=7, spread=2.0)
    tickers = pd.Index([f"T{i}" for i in range(len(x))])
    target = GranularityTarget("level", k, 0.0, len(x))
    g = PeerGrouper(unit(x), tickers, clusterer).grouping("m", target, "count")
    assert abs(g.n_groups - k) <= 1 and g.matched


@pytest.mark.parametrize("clusterer", ["average", "kmeans"])
@pytest.mark.parametrize("density", [0.02, 0.05, 0.15])
def test_matched_density_is_within_five_percent(clusterer, density):
    x, _ = blobs(n_per=25, k=8, seed=8, spread=2.0)
    tickers = pd.Index([f"T{i}" for i in range(len(x))])
    target = GranularityTarget("level", 0, density, len(x))
    g = PeerGrouper(unit(x), tickers, clusterer).grouping("m", target, "density")
    assert abs(g.density - density) <= 0.05 * density, g.density
    assert g.matched
    assert np.isclose(g.density, pair_density(pd.factorize(g.labels)[0]))


def test_kmeans_for_density_counts_unlabelled_companies():
    x, _ = blobs(n_per=25, k=8, seed=9, spread=2.0)
    model = kmeans_for_density(unit(x), 0.05, n_total=len(x) + 50)
    _, counts = np.unique(model.labels_, return_counts=True)
    n = len(x) + 50
    assert abs((counts * (counts - 1) / 2).sum() / (n * (n - 1) / 2) - 0.05) <= 0.0025


def test_unreachable_density_is_flagged_unmatched():
    # two far-apart blobs: density goes from 2 x 190 / 780 = 0.49 (each blob whole) straight to 1 (one group)
    x, _ = blobs(n_per=20, k=2, seed=10, spread=0.01)
    tickers = pd.Index([f"T{i}" for i in range(len(x))])
    target = GranularityTarget("level", 0, 0.7, len(x))
    g = PeerGrouper(unit(x), tickers, "mst").grouping("m", target, "density")
    assert not g.matched


# ------------------------------------------------------------------------------------------------- transforms


def test_feature_transform_idf_and_formation_only_fit():
    rng = np.random.default_rng(0)
    x = sp.random(30, 20, density=0.3, random_state=1, format="csr") * 5
    t = FeatureTransform("idf").fit(x)
    df = np.asarray((x > 0).sum(axis=0)).ravel()
    np.testing.assert_allclose(t.idf_, np.log(31 / (1 + df)) + 1)
    z = t.transform(x)
    manual = np.log1p(x.toarray()) * t.idf_
    norms = np.linalg.norm(manual, axis=1, keepdims=True)
    np.testing.assert_allclose(z, np.divide(manual, norms, out=np.zeros_like(manual), where=norms > 0))
    later = sp.csr_matrix(rng.random((5, 20)))  # new documents do not change the fitted weights
    idf_before = t.idf_.copy()
    t.transform(later)
    np.testing.assert_array_equal(idf_before, t.idf_)
    s = cosine_similarity(z)
    assert np.allclose(np.diag(s)[norms.ravel() > 0], 1.0)


def test_feature_transform_errors():
    with pytest.raises(DataError, match="unknown transform"):
        FeatureTransform("sqrt").fit(np.ones((3, 2)))
    with pytest.raises(DataError, match="non-negative"):
        FeatureTransform("log1p").fit(-np.ones((3, 2)))
    with pytest.raises(DataError, match="not fitted"):
        FeatureTransform().transform(np.ones((3, 2)))
    with pytest.raises(DataError, match="columns"):
        FeatureTransform("raw").fit(np.ones((3, 2))).transform(np.ones((3, 4)))


# -------------------------------------------------------------------------------------------- ranking metrics


def test_ranking_metrics_equal_loops():
    panel = synthetic_panel(n_periods=80, n_tickers=15, seed=3, nan_share=0.05)
    corr = correlation_matrix(panel, min_periods=10)
    rng = np.random.default_rng(0)
    tickers = pd.Index(list(panel.tickers[:12]) + ["X1", "X2"])  # two companies without returns
    sim = rng.random((len(tickers), len(tickers)))
    sim = (sim + sim.T) / 2
    got = topk_neighbour_correlation(sim, tickers, corr, (1, 3, 5))
    c = panel.returns.corr(min_periods=10)
    for k in (1, 3, 5):
        vals = []
        for i, a in enumerate(tickers[:12]):
            others = sorted((j for j in range(12) if j != i), key=lambda j: -sim[i, j])[:k]
            vals += [c.loc[a, tickers[j]] for j in others]
        assert np.isclose(got[k], np.nanmean(vals))
    pairs = [
        (sim[i, j], c.iloc[i, j])
        for i, j in itertools.combinations(range(12), 2)
        if not np.isnan(c.iloc[i, j])
    ]
    ref = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    assert np.isclose(similarity_spearman(sim, tickers, corr), ref)


def test_same_group_ranking_breaks_ties_at_random_not_by_position():
    panel = synthetic_panel(n_periods=60, n_tickers=12, seed=4)
    corr = correlation_matrix(panel)
    labels = pd.Series(["a"] * 6 + ["b"] * 6, index=panel.tickers)
    sim = same_group_similarity(labels, panel.tickers)
    assert sim[0, 5] == 1 and sim[0, 6] == 0
    draws = [topk_neighbour_correlation(sim, panel.tickers, corr, (1,), tie_seed=s)[1] for s in range(30)]
    assert len(set(np.round(draws, 12))) > 1  # different seeds pick different same-group neighbours
    c = panel.returns.corr()
    within = np.mean([c.iloc[i, j] for i in range(12) for j in range(12) if i != j and (i < 6) == (j < 6)])
    assert abs(np.mean(draws) - within) < 0.05


def test_paired_difference_point_estimate_and_ci():
    panel = synthetic_panel(n_periods=80, n_tickers=12, seed=5)
    corr = correlation_matrix(panel)
    good = pd.Series([f"g{i % 3}" for i in range(12)], index=panel.tickers, name="good")
    bad = pd.Series([f"b{i // 4}" for i in range(12)], index=panel.tickers, name="bad")
    d = paired_difference(corr, good, bad, draws=300, seed=0)
    a = comovement(corr, good, null_draws=0, bootstrap_draws=0).pair_weighted
    b = comovement(corr, bad, null_draws=0, bootstrap_draws=0).pair_weighted
    assert np.isclose(d.difference, a - b)
    assert d.ci_low <= d.difference <= d.ci_high
    assert d.separated  # factor groups co-move far more than groups cutting across factors
    same = paired_difference(corr, good, good.rename("copy"), draws=50)
    assert same.difference == 0 and same.ci_low == 0 and same.ci_high == 0 and not same.separated


# ----------------------------------------------------------------------------- the text benchmark, end to end

TOPICS = [
    "bank loans deposits mortgages lending branches",
    "semiconductor chips wafers foundry transistors lithography",
    "oil gas drilling wells pipelines refining",
    "insurance policies underwriting premiums claims reinsurance",
    "restaurants franchise menu dining burgers kitchens",
]

SIC = [("6021", "6022"), ("3674", "3672"), ("1311", "1381"), ("6311", "6331"), ("5812", "5813")]
GICS = [
    ("40101010", "40101015"),
    ("45301020", "45301010"),
    ("10102020", "10102010"),
    ("40301020", "40301040"),
    ("25301040", "25301030"),
]

TEXT_CONFIG = """\
name: toytext
data:
  companies: companies.csv
  prices: prices.parquet
designs:
  - name: forward
    text_vintage: "2016-01-01"
    start: 2016-01-04
    end: 2017-12-31
    frequencies: [daily]
taxonomies: [all_pairs, sic2, gics_industry]
text_methods:
  - name: tfidf
    features: tfidf
    transform: select
    clusterer: select
granularity:
  levels: [sic2, gics_industry]
  match: [count, density]
hybrid:
  method: tfidf
  parent: gics_sector
selection:
  start: 2015-01-01
  end: 2015-12-31
  frequency: daily
  level: gics_industry
  match: count
  transforms: [raw, log1p, binary, idf]
  clusterers: [average, mst, kmeans]
ranking:
  ks: [1, 3]
  difference_draws: 50
evaluation:
  null_draws: 10
  bootstrap_draws: 20
"""


def _text_files(tmp_path: Path, prices_close: pd.DataFrame) -> Path:
    tickers = prices_close.columns
    rng = np.random.default_rng(0)
    descriptions = []
    for i, _ in enumerate(tickers):
        words = TOPICS[i % 5].split()
        descriptions.append(" ".join(rng.choice(words, 12)) + f" company number{i % 7} serves clients")
    sic = [SIC[i % 5][i % 2] for i in range(len(tickers))]
    gics = [GICS[i % 5][i % 2] for i in range(len(tickers))]
    pd.DataFrame({"ticker": tickers, "description": descriptions, "sic": sic, "gics": gics,
                  "as_of": "2016-01-01"}).to_csv(tmp_path / "companies.csv", index=False)
    prices_close.reset_index().to_parquet(tmp_path / "prices.parquet")
    (tmp_path / "cfg.yaml").write_text(TEXT_CONFIG)
    return tmp_path / "cfg.yaml"


def test_forward_design_choices_cannot_see_later_returns(tmp_path):
    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=1)  # 2015-01 .. 2017-12
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    cfg_a = load_benchmark_config(_text_files(a, prices.close))
    changed = prices.close.copy()
    later = changed.index > "2015-12-31"
    rng = np.random.default_rng(99)
    changed.loc[later] *= np.exp(np.cumsum(rng.normal(0, 0.03, (later.sum(), changed.shape[1])), axis=0))
    cfg_b = load_benchmark_config(_text_files(b, changed))
    ra = run_benchmark(cfg_a, a / "out")
    rb = run_benchmark(cfg_b, b / "out")
    cols = ["method", "transform", "clusterer", "n_groups", "pair_weighted", "chosen"]
    pd.testing.assert_frame_equal(ra.selection[cols], rb.selection[cols])
    ga = pd.read_parquet(a / "out" / "groups_2016-01-01.parquet")
    gb = pd.read_parquet(b / "out" / "groups_2016-01-01.parquet")
    pd.testing.assert_frame_equal(ga, gb)
    # the returns that changed do change the evaluation (so the test could have seen a leak)
    assert not np.allclose(
        ra.table["pair_weighted"].to_numpy(), rb.table["pair_weighted"].to_numpy(), equal_nan=True
    )
    # and the outputs are complete: text, hybrid and random rows, ranking, verdict lines, markdown
    kinds = set(ra.table["method_kind"])
    assert {"taxonomy", "text", "random"} <= kinds
    assert len(ra.verdict) == 4 and {"top1", "top3", "spearman"} <= set(ra.ranking.columns)
    md = (a / "out" / "table.md").read_text()
    assert "Verdict" in md and "Chosen on daily returns 2015-01-01 to 2015-12-31" in md
    # topic words make text groups that co-move: the chosen tfidf grouping beats random groups
    t = ra.table
    text_pw = t[(t["method_kind"] == "text") & (t["level"] == "gics_industry")]["pair_weighted"].max()
    rand_pw = t[(t["method_kind"] == "random") & (t["level"] == "gics_industry")]["pair_weighted"].iloc[0]
    assert text_pw > rand_pw


def test_selection_window_overlapping_a_forward_design_is_refused(tmp_path):
    prices = synthetic_prices(n_tickers=30, n_days=500, n_factors=5)
    path = _text_files(tmp_path, prices.close)
    path.write_text(TEXT_CONFIG.replace("  end: 2015-12-31\n  frequency", "  end: 2016-03-31\n  frequency"))
    with pytest.raises(ConfigError, match="choose parameters on its own returns"):
        run_benchmark(load_benchmark_config(path), tmp_path / "out")


def test_text_config_errors_name_the_key(tmp_path):
    prices = synthetic_prices(n_tickers=30, n_days=300, n_factors=5)
    path = _text_files(tmp_path, prices.close)
    path.write_text(TEXT_CONFIG.replace("method: tfidf\n  parent", "method: nope\n  parent"))
    with pytest.raises(ConfigError, match="hybrid.method 'nope'"):
        load_benchmark_config(path)
    path.write_text(TEXT_CONFIG.replace("features: tfidf", "features: bert"))
    with pytest.raises(ConfigError, match="text_methods.0.features"):
        load_benchmark_config(path)
    path.write_text(textwrap.dedent(TEXT_CONFIG).replace("levels: [sic2, gics_industry]", "levels: [sic9]"))
    with pytest.raises(ConfigError, match="granularity.levels"):
        load_benchmark_config(path)


def test_universe_snapshot_takes_each_companys_latest_text_by_the_date():
    from finsae.data.universe import universe_from_frame

    table = pd.DataFrame(
        {
            "ticker": ["A", "A", "B", "C"],
            "description": ["a old", "a new", "b old", "c later"],
            "as_of": ["2015-01-31", "2016-01-31", "2015-03-31", "2017-01-31"],
        }
    )
    u = universe_from_frame(table).snapshot(pd.Timestamp("2016-06-30"))
    snap = u.descriptions("asof_2016-06-30")
    assert snap.to_dict() == {"A": "a new", "B": "b old"}  # C's text is not published yet
    assert u.vintage("asof_2016-06-30").published == pd.Timestamp("2016-01-31")
    with pytest.raises(DataError, match="no dated text vintage"):
        u.snapshot(pd.Timestamp("2014-01-01"))


def test_rolling_design_forms_at_each_date_and_tests_on_the_next_window(tmp_path):
    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=2)  # 2015-01 .. 2017-12
    path = _text_files(tmp_path, prices.close)
    companies = pd.read_csv(tmp_path / "companies.csv")
    later = companies.assign(as_of="2016-12-31")  # every company re-describes itself a year later
    pd.concat([companies, later]).to_csv(tmp_path / "companies.csv", index=False)
    text = TEXT_CONFIG.replace('''designs:
  - name: forward
    text_vintage: "2016-01-01"
    start: 2016-01-04
    end: 2017-12-31
    frequencies: [daily]
''', '''rolling:
  - name: roll
    horizon_months: 12
    frequencies: [daily]
''')
    path.write_text(text)
    res = run_benchmark(load_benchmark_config(path), tmp_path / "out")
    windows = res.table.groupby("design")[["start", "end"]].first()
    assert list(windows.index) == ["roll:2016-01-01", "roll:2016-12-31"]
    assert windows.loc["roll:2016-01-01", "start"] >= pd.Timestamp("2016-01-02")
    assert windows.loc["roll:2016-01-01", "end"] <= pd.Timestamp("2016-12-31")
    assert windows.loc["roll:2016-12-31", "start"] >= pd.Timestamp("2017-01-01")
    assert not res.table["text_look_ahead"].any()
    assert set(res.verdict["design"]) == {"roll:2016-01-01", "roll:2016-12-31"}
    # the run store remakes each formation date's snapshot, so an export of a rolling run finds its texts
    from finsae.pipeline.export import export_run
    from finsae.pipeline.store import BenchmarkRun

    u = BenchmarkRun.load(tmp_path / "out").universe()
    assert {"roll_asof_2016-01-01", "roll_asof_2016-12-31"} <= set(u.vintages)
    assert len(u.descriptions("roll_asof_2016-12-31")) == 30
    export_run(tmp_path / "out", tmp_path / "export", k=3)


def test_greedy_density_fill_skips_overshooting_merges_and_keeps_cut_groups_whole():
    from finsae.group.cluster import linkage_merges

    x, _ = blobs(n_per=30, k=5, seed=11, spread=1.5)
    z = unit(x)
    d = 1 - z @ z.T
    np.fill_diagonal(d, 0)
    seq = linkage_merges(np.clip(d, 0, 2))
    n = len(z)
    target = 0.08 * n * (n - 1) / 2
    labels, taken, _ = seq.greedy_labels(target)
    _, counts = np.unique(labels, return_counts=True)
    pairs = (counts * (counts - 1) / 2).sum()
    assert abs(pairs - target) <= 0.05 * target
    # before the first skipped merge the greedy groups equal the plain cut
    first_cut = int(np.searchsorted(np.cumsum(seq.new_pairs), target, side="right"))
    greedy_prefix, _, _ = seq.greedy_labels(float(np.cumsum(seq.new_pairs)[first_cut - 1]))
    assert adjusted_rand_score(greedy_prefix, seq.labels(first_cut)) == 1.0


def test_windows_scored_side_by_side_give_the_same_tables(tmp_path):
    """run_benchmark scores its (design, frequency) windows in threads: every table equals the one of the
    windows run one after another, in the same row order."""
    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=1)
    path = _text_files(tmp_path, prices.close)
    path.write_text(TEXT_CONFIG.replace("frequencies: [daily]", "frequencies: [daily, monthly]"))
    cfg = load_benchmark_config(path)
    one = run_benchmark(cfg, tmp_path / "one", threads=1)
    two = run_benchmark(cfg, tmp_path / "two", threads=2)
    pd.testing.assert_frame_equal(one.table, two.table)
    assert set(one.table["frequency"]) == {"daily", "monthly"}
    for name in ("comovement", "size_strata", "ranking", "verdict", "dropped"):
        a = pd.read_parquet(tmp_path / "one" / f"{name}.parquet").drop(columns="run_id", errors="ignore")
        b = pd.read_parquet(tmp_path / "two" / f"{name}.parquet").drop(columns="run_id", errors="ignore")
        pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ConfigError, match="threads"):
        run_benchmark(cfg, tmp_path / "three", threads=0)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork start method")
def test_features_extracted_in_a_child_process_give_the_same_tables(tmp_path):
    """The benchmark extracts its text features in a forked child by default (#18: the model's memory never
    enters the benchmark's process); the tables equal those of an in-process extraction."""
    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=1)
    cfg = load_benchmark_config(_text_files(tmp_path, prices.close))
    child = run_benchmark(cfg, tmp_path / "child", extract_in_child=True)
    here = run_benchmark(cfg, tmp_path / "here", extract_in_child=False)
    pd.testing.assert_frame_equal(child.table, here.table)
    pd.testing.assert_frame_equal(child.ranking, here.ranking)
    pd.testing.assert_frame_equal(child.selection, here.selection)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork start method")
def test_a_child_extractions_errors_reach_the_caller(tmp_path, monkeypatch):
    import finsae.pipeline.textgroups as tg

    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=1)
    cfg = load_benchmark_config(_text_files(tmp_path, prices.close))

    def bad_text(universe, vintage, kind, **kwargs):
        raise DataError(f"universe {universe.source} has no {vintage!r} descriptions")

    monkeypatch.setattr(tg, "document_features", bad_text)  # the fork sees the patched module
    with pytest.raises(DataError, match="has no '2016-01-01' descriptions"):
        run_benchmark(cfg, tmp_path / "a", extract_in_child=True)
    monkeypatch.setattr(tg, "document_features", lambda *a, **k: os._exit(3))  # the child dies
    with pytest.raises(DataError, match="child process died"):
        run_benchmark(cfg, tmp_path / "b", extract_in_child=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
