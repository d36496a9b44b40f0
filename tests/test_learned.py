"""Learned similarities in the benchmark: price peers, supervised weights, blends, cold start and the two-way
bootstrap on a small synthetic universe; no choice, weight or group can see returns after the selection
window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finsae.config import load_benchmark_config
from finsae.errors import DataError
from finsae.evaluate import correlation_matrix
from finsae.evaluate.inference import block_indices, two_way_differences
from finsae.evaluate.pricepeers import blend_similarity, price_similarity, standardise
from finsae.pipeline.benchmark import run_benchmark

from .conftest import synthetic_panel, synthetic_prices
from .test_groups import TEXT_CONFIG, _text_files

LEARNED = """\
headline_method: tfidf_sup
learned:
  methods: [tfidf]
  nonnegative: [tfidf]
  blend_with: [tfidf_sup]
  split: 2015-06-30
  alphas: [0.1, 10.0]
  priors: [zero, cosine]
  betas: [0.0, 0.5, 1.0]
  folds: 3
  two_way_draws: 40
  block_months: 3
"""


def _config(tmp_path: Path, close: pd.DataFrame) -> Path:
    path = _text_files(tmp_path, close)
    path.write_text(TEXT_CONFIG.replace("    frequencies: [daily]\n", "    frequencies: [daily, monthly]\n")
                    + LEARNED)
    return path


def test_learned_choices_weights_and_groups_cannot_see_later_returns(tmp_path):
    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=1)  # 2015-01 .. 2017-12
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    changed = prices.close.copy()
    later = changed.index > "2015-12-31"  # every return after the selection window
    rng = np.random.default_rng(7)
    changed.loc[later] *= np.exp(np.cumsum(rng.normal(0, 0.03, (later.sum(), changed.shape[1])), axis=0))
    ra = run_benchmark(load_benchmark_config(_config(a, prices.close)), a / "out")
    rb = run_benchmark(load_benchmark_config(_config(b, changed)), b / "out")
    cols = [c for c in ("method", "variant", "score_groups", "score_rank", "chosen_groups", "chosen_rank")
            if c in ra.selection]
    names = ["tfidf_sup", "tfidf_nn", "price_peers", "tfidf_sup_price"]
    learned_a = ra.selection[ra.selection["method"].isin(names)]
    learned_b = rb.selection[rb.selection["method"].isin(names)]
    assert len(learned_a) == 2 * (1 + 2 * 2) + 1 + 3  # (cosine + alpha x prior) x signed / nn; price; betas
    nn = learned_a[learned_a["method"] == "tfidf_nn"]
    assert nn["variant"].str.startswith(("non-negative ridge", "unsupervised")).all()
    pd.testing.assert_frame_equal(
        learned_a[cols].reset_index(drop=True), learned_b[cols].reset_index(drop=True)
    )
    ga = pd.read_parquet(a / "out" / "groups_2016-01-01.parquet")
    gb = pd.read_parquet(b / "out" / "groups_2016-01-01.parquet")
    assert set(names) <= set(ga["method"])
    pd.testing.assert_frame_equal(ga, gb)  # every group, learned ones included
    # the changed returns do change the evaluation, cold start and two-way tables included
    assert not np.allclose(ra.table["pair_weighted"], rb.table["pair_weighted"], equal_nan=True)
    assert len(ra.cold_start) and len(ra.two_way)
    assert set(ra.two_way["frequency"]) == {"monthly"}
    cs = ra.cold_start
    assert {"neighbours", "groups"} == set(cs["kind"])
    # 2 frequencies
    assert cs[(cs["kind"] == "neighbours") & cs["fitted"]]["method"].tolist().count("tfidf_sup") == 2
    assert (a / "out" / "cold_start.parquet").is_file() and (a / "out" / "two_way.parquet").is_file()
    wa = pd.read_parquet(a / "out" / "learned_weights_2016-01-01.parquet")
    wb = pd.read_parquet(b / "out" / "learned_weights_2016-01-01.parquet")
    assert set(wa["method"]) == {"tfidf_sup", "tfidf_nn"} and np.isfinite(wa["weight_groups"]).all()
    assert (wa.loc[wa["method"] == "tfidf_nn", ["weight_groups", "weight_rank"]] >= 0).all().all()
    pd.testing.assert_frame_equal(wa, wb)  # no weight moves either
    from finsae.pipeline.report import build_report

    nb = pd.read_parquet(a / "out" / "neighbours_2016-01-01.parquet")
    assert set(nb["method"]) == {"tfidf_sup", "tfidf_nn"} and (nb["rank"] <= 5).all()
    page = build_report(a / "out")
    assert "Nearest by the learned similarity" in page
    assert page.index('id="answer"') < page.index('id="benchmark"')  # answer first
    kinds = set(ra.ranking["method_kind"])
    assert {"text", "price", "text+price", "taxonomy"} <= kinds
    assert "tfidf_sup@gics_industry:density" in set(ra.verdict["headline"])
    # top-k neighbour differences with two-way CIs, monthly only; the headline against the taxonomies and the
    # text + price blend against price peers are among them
    rw = ra.ranking_two_way
    assert (a / "out" / "ranking_two_way.parquet").is_file() and set(rw["frequency"]) == {"monthly"}
    assert {"taxonomy", "blend vs price"} <= set(rw["comparison"])
    assert ((rw["ci_low"] <= rw["difference"]) & (rw["difference"] <= rw["ci_high"])).all()
    assert "Paired differences of top-" in page
    # a learned method's ranking row names the candidate its neighbours came from, not its groups'
    chosen = ra.selection[ra.selection["chosen_rank"].astype("boolean").fillna(False).astype(bool)]
    for row in ra.ranking[ra.ranking["method"].isin(["tfidf_sup", "tfidf_nn"])].itertuples():
        assert row.transform == chosen.loc[chosen["method"] == row.method, "variant"].iloc[0]


def test_price_similarity_and_blend():
    panel = synthetic_panel(n_periods=40, n_tickers=6, seed=2)
    corr = correlation_matrix(panel)
    tickers = pd.Index([*panel.tickers, "NEW"])  # no history: least similar to everyone
    s = price_similarity(corr, tickers)
    assert s.shape == (7, 7) and (s[6, :6] == -1).all() and s[6, 6] == 1
    np.testing.assert_allclose(s[:6, :6][~np.eye(6, dtype=bool)], corr.values[~np.eye(6, dtype=bool)])
    text = np.random.default_rng(0).random((7, 7))
    text = (text + text.T) / 2
    p = s.copy()
    p[6, :] = p[:, 6] = np.nan
    assert np.allclose(blend_similarity(text, p, 0.0), standardise(text))
    b = blend_similarity(text, p, 1.0)
    assert np.allclose(b[6, :6], 0.0)  # without history the price part is average
    off = ~np.eye(7, dtype=bool)
    assert abs(standardise(text)[off].mean()) < 1e-12 and standardise(text)[off].std() == pytest.approx(1.0)


def test_two_way_bootstrap_point_and_blocks():
    idx = block_indices(10, 3, np.random.default_rng(0))
    assert len(idx) == 10 and set(np.diff(idx[:3]) % 10) == {1}
    panel = synthetic_panel(n_periods=48, n_tickers=12, seed=3)
    corr = correlation_matrix(panel)
    good = pd.Series([f"g{i % 3}" for i in range(12)], index=panel.tickers, name="good")
    bad = pd.Series([f"b{i // 4}" for i in range(12)], index=panel.tickers, name="bad")
    (d,) = two_way_differences(panel.returns, corr, {"good": good, "bad": bad}, [("good", "bad")], draws=200,
                               block=4, seed=0)
    from finsae.evaluate import comovement

    pa = comovement(corr, good, null_draws=0, bootstrap_draws=0).pair_weighted
    pb = comovement(corr, bad, null_draws=0, bootstrap_draws=0).pair_weighted
    assert d.difference == pytest.approx(pa - pb, abs=1e-12)
    assert d.ci_low <= d.difference <= d.ci_high and d.separated


def test_ranking_row_of_a_learned_method_names_its_neighbour_candidate():
    """The top-k figures come from the neighbour similarity, so its row names that candidate (it used to name
    the group candidate)."""
    from types import SimpleNamespace as NS

    from finsae.pipeline.benchmark import _ranking_rows

    panel = synthetic_panel(n_periods=48, n_tickers=8, seed=1)
    corr = correlation_matrix(panel)
    rank_sim = np.corrcoef(np.random.default_rng(2).normal(size=(8, 20)))
    learned = NS(rank_params={"variant": "ridge alpha=100 prior=cosine"}, group_similarity=rank_sim.T.copy())
    methods = {
        "x_sup": NS(tickers=panel.tickers, similarity=lambda: rank_sim, kind="text",
                    transform="ridge alpha=0.01 prior=zero", learned=learned),
        "x": NS(tickers=panel.tickers, similarity=lambda: rank_sim, kind="text", transform="idf",
                learned=None),
    }
    cfg = NS(ranking=NS(ks=(1, 3)), taxonomies=[], granularity=NS(levels=[]), learned=None,
             evaluation=NS(seed=0))
    rows = _ranking_rows(cfg, None, corr, NS(methods=methods), {"design": "d"}, NS(text_look_ahead=False))
    assert [r["transform"] for r in rows] == ["ridge alpha=100 prior=cosine", "idf"]


def test_two_way_topk_differences_point_paired_draw_and_brute_force():
    from finsae.evaluate.inference import two_way_topk_differences
    from finsae.evaluate.ranking import topk_neighbour_correlation, topk_neighbours

    panel = synthetic_panel(n_periods=48, n_tickers=12, seed=3, nan_share=0.05)
    corr = correlation_matrix(panel)
    tickers = pd.Index([*reversed(panel.tickers), "NOPRICE"])  # another order, and a company without returns
    n = len(tickers)
    factor = np.array([int(t[1:]) % 3 if t != "NOPRICE" else 9 for t in tickers])
    rng = np.random.default_rng(4)
    sims = {"good": (factor[:, None] == factor[None, :]) + 0.1 * rng.random((n, n)),
            "random": rng.random((n, n))}
    focal, good = topk_neighbours(sims["good"], tickers, corr, 3)
    _, rand = topk_neighbours(sims["random"], tickers, corr, 3)
    assert list(focal) == list(range(12))  # corr's order; the company without returns is left out
    (d,) = two_way_topk_differences(panel.returns, corr, focal, {"good": good, "random": rand},
                                    [("good", "random")], k=3, draws=200, block=4, seed=0)
    for name, top in (("good", d.top_a), ("random", d.top_b)):  # the point figures are the ranking metric's
        assert top == topk_neighbour_correlation(sims[name], tickers, corr, (3,))[3]
    assert d.ci_low <= d.difference <= d.ci_high and d.separated and d.difference > 0
    (same,) = two_way_topk_differences(panel.returns, corr, focal, {"a": good, "b": good.copy()},
                                       [("a", "b")], k=3, draws=50, block=4, seed=0)
    assert same.difference == same.ci_low == same.ci_high == 0.0  # paired: one draw for both sides
    # one draw by hand: blocks of months, correlations on them, focal companies weighted by multinomial counts
    (one,) = two_way_topk_differences(panel.returns, corr, focal, {"good": good, "random": rand},
                                      [("good", "random")], k=2, draws=1, block=4, seed=7)
    r = np.random.default_rng(7)
    months = block_indices(48, 4, r)
    c = panel.returns.iloc[months].reindex(columns=corr.tickers).corr(min_periods=24).to_numpy()
    w = r.multinomial(12, np.full(12, 1 / 12))

    def by_hand(top: np.ndarray) -> float:
        v = c[focal[:, None], top[:, :2]]
        ok = np.isfinite(v)
        return float((w * np.where(ok, v, 0).sum(axis=1)).sum() / (w * ok.sum(axis=1)).sum())

    assert one.ci_low == pytest.approx(by_hand(good) - by_hand(rand), abs=1e-12) == one.ci_high
    with pytest.raises(DataError, match="shape"):
        two_way_topk_differences(panel.returns, corr, focal, {"a": good[:, :1], "b": good}, [("a", "b")], k=2)
    with pytest.raises(DataError, match="not given"):
        two_way_topk_differences(panel.returns, corr, focal, {"a": good}, [("a", "b")], k=2)


@pytest.mark.parametrize("nonneg", [False, True])
def test_cold_start_weights_never_see_a_held_out_companys_pairs(nonneg):
    from finsae.config import BenchmarkConfig
    from finsae.group.peers import GranularityTarget
    from finsae.group.similarity import l2_normalize
    from finsae.pipeline.learned import LearnedStage, PreWindows, _folds

    n = 24
    panel = synthetic_panel(n_periods=60, n_tickers=n, seed=5)
    tickers = panel.tickers
    cfg = BenchmarkConfig.model_validate(
        {
            "name": "t",
            "designs": [{"name": "f", "text_vintage": "v", "start": "2016-01-01", "end": "2016-12-31"}],
            "taxonomies": ["all_pairs"],
            "text_methods": [{"name": "x", "features": "tfidf"}],
            "learned": {"methods": ["x"], "alphas": [1.0], "priors": ["zero"], "folds": 3},
        }
    )
    z = l2_normalize(np.abs(np.random.default_rng(1).normal(size=(n, 5))))
    target = {"gics_industry": GranularityTarget("gics_industry", 6, 0.1, n)}

    def cold(returns: pd.DataFrame) -> np.ndarray:
        p = type(panel)(returns, panel.frequency, panel.start, panel.end, panel.dropped)
        c = correlation_matrix(p)
        stage = LearnedStage(cfg, PreWindows(c, c, c), tickers, target)
        m, _ = stage.supervised("x_nn" if nonneg else "x_sup", "x", z, nonneg=nonneg)
        assert m.rank_weights is None or (m.rank_weights >= 0).all() or not nonneg
        return m.cold_rank

    base = cold(panel.returns)
    folds = _folds(n, 3, cfg.evaluation.seed)
    held = np.flatnonzero(folds == 0)
    changed = panel.returns.copy()
    # every pair with fold 0 moves
    changed.iloc[:, held] = np.random.default_rng(2).normal(size=(60, len(held)))
    again = cold(changed)
    np.testing.assert_allclose(again[held], base[held], atol=1e-10)  # fold 0's scores never saw those pairs
    assert not np.allclose(again[folds != 0], base[folds != 0])  # the other folds' fits did


def test_learned_methods_name_the_text_method_they_are_built_on():
    from finsae.config import LearnedConfig

    cfg = LearnedConfig(methods=["sae", "tfidf"], price_peers=True, blend_with=["sae_sup"])
    assert [(n, cfg.base_method(n)) for n in cfg.names] == [
        ("sae_sup", "sae"), ("tfidf_sup", "tfidf"), ("price_peers", None), ("sae_sup_price", "sae")]
    cfg = LearnedConfig(methods=["sae"], nonnegative=["sae", "minilm"], blend_with=["sae_nn"])
    assert [(n, cfg.base_method(n)) for n in cfg.names] == [
        ("sae_sup", "sae"), ("sae_nn", "sae"), ("minilm_nn", "minilm"), ("price_peers", None),
        ("sae_nn_price", "sae")]
    assert cfg.base_method("minilm") is None


def test_nonnegative_methods_must_be_text_methods():
    from pydantic import ValidationError

    from finsae.config import BenchmarkConfig

    base = {"name": "t", "designs": [{"name": "f", "text_vintage": "v", "start": "2016-01-01",
                                      "end": "2016-12-31"}],
            "taxonomies": ["all_pairs"], "text_methods": [{"name": "x", "features": "tfidf"}]}
    with pytest.raises(ValidationError, match=r"learned.nonnegative \['y'\] are not text_methods"):
        BenchmarkConfig.model_validate({**base, "learned": {"nonnegative": ["y"]}})
    cfg = BenchmarkConfig.model_validate({**base, "headline_method": "x_nn",
                                          "learned": {"nonnegative": ["x"], "blend_with": ["x_nn"]}})
    assert cfg.learned is not None and cfg.learned.names == ["x_nn", "price_peers", "x_nn_price"]


def test_non_negative_learned_methods_export_weighted_vectors_with_their_similarity(tmp_path):
    """An `_nn` method's exported vectors are z sqrt(w) / C: their dot products times the manifest's scale are
    the learned neighbour similarity, peers rank by it, and a pair's terms are the latents' weighted
    contributions."""
    import json

    from finsae.api import load_run
    from finsae.pipeline.export import export_run
    from finsae.pipeline.store import BenchmarkRun

    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=1)
    run_benchmark(load_benchmark_config(_config(tmp_path, prices.close)), tmp_path / "out")
    store = BenchmarkRun.load(tmp_path / "out")
    vintage = store.pick_vintage()
    weights = store.learned_weights[vintage]
    w = weights[weights["method"] == "tfidf_nn"].sort_values("latent")["weight_rank"].to_numpy()
    assert (w >= 0).all() and (w > 0).any()
    base = store.vectors(store.method("tfidf", vintage))
    learned = (base.matrix * w) @ base.matrix.T  # sum_k w_k z_ak z_bk
    export_run(tmp_path / "out", tmp_path / "export", k=5)
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    info = manifest["methods"]["tfidf_nn"]
    assert manifest["schema_version"] == "1.3" and info["weighting"]["base"] == "tfidf"
    scale = info["weighting"]["scale"]
    assert "tfidf_sup" not in manifest["methods"]  # signed weights: no vectors
    api = load_run(tmp_path / "export")
    tickers = list(base.tickers)
    j = int(np.argmax(np.where(np.arange(len(tickers)) == 0, -np.inf, learned[0])))  # 0's nearest peer
    a, b = tickers[0], tickers[j]
    sim = api.similarity(a, b, method="tfidf_nn").similarity
    assert sim > 0 and sim * scale == pytest.approx(learned[0, j], rel=1e-5)  # float32 vectors
    peers = api.peers(a, k=5, method="tfidf_nn").to_frame()
    order = [tickers[j] for j in np.argsort(-np.where(np.arange(len(tickers)) == 0, -np.inf, learned[0]),
                                            kind="stable")[:5]]
    assert peers["ticker"].tolist() == order
    pair = api.explain_pair(a, b, method="tfidf_nn", rank_by="contribution", top=len(w)).to_frame()
    assert pair["contribution"].sum() == pytest.approx(sim, rel=1e-5)
    terms = w * base.matrix[0] * base.matrix[j] / scale
    got = pair.set_index("latent")["contribution"]
    assert len(got), pair
    np.testing.assert_allclose(got.to_numpy(), terms[got.index.to_numpy()], rtol=1e-4, atol=1e-9)


def test_learned_config_mistakes_are_named_and_a_one_pair_ci_separates_nothing(tmp_path, caplog):
    """learned.vintages naming no design's vintage (the learned methods and the headline would silently not
    be built), folds 1, a time split leaving 2 months on one side: errors naming the key; companies without
    selection-window returns are named for price peers; a zero-width CI is never 'separated'."""
    from finsae.errors import ConfigError, WindowError
    from finsae.evaluate.comovement import PairedDifference

    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=1)
    cfg = _config(tmp_path, prices.close)
    text = cfg.read_text()
    cfg.write_text(text.replace("  folds: 3\n", "  folds: 3\n  vintages: [\"2017\"]\n"))
    with pytest.raises(ConfigError, match=r"learned.vintages \['2017'\] names no design's text vintage "
                                          r"\(the designs use \['2016-01-01'\]"):
        run_benchmark(load_benchmark_config(cfg), tmp_path / "a")
    cfg.write_text(text.replace("  folds: 3\n", "  folds: 1\n"))
    with pytest.raises(ConfigError, match="folds must be 0 .* or at least 2"):
        load_benchmark_config(cfg)
    cfg.write_text(text.replace("  split: 2015-06-30\n", "  split: 2015-01-05\n"))
    with pytest.raises(WindowError, match=r"fit part of the time split \(selection.start..learned.split\): "
                                          r"2015-01-01..2015-01-05 has 2 daily period"):
        run_benchmark(load_benchmark_config(cfg), tmp_path / "b")
    late = prices.close.copy()
    late.loc[late.index < "2016-01-01", ["T00", "T01", "T02"]] = np.nan  # listed after the selection window
    (tmp_path / "late").mkdir()
    cfg = _config(tmp_path / "late", late)
    with caplog.at_level("WARNING"):
        run_benchmark(load_benchmark_config(cfg), tmp_path / "late" / "out")
    assert "price_peers: 3 of 30 companies have no usable returns in the selection window" in caplog.text
    assert not PairedDifference("a", "b", 0.024, 0.024, 0.024, 20).separated
    assert PairedDifference("a", "b", 0.024, 0.01, 0.03, 20).separated
