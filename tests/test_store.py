"""The run store (issue #14): a benchmark with two SAEs of different widths on the tiny model;
``finsae explain``, ``finsae export`` and ``finsae report`` of a grouping of the non-default (wide) SAE
use that SAE, its vectors and its features; the store round-trips, and a store of another version, from
another run, incomplete, or missing (a folder written before it existed) is refused with an error that says
to rerun the benchmark."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from finsae.cli import cli
from finsae.errors import ConfigError, DataError
from finsae.pipeline.store import STORE_DIR, STORE_FILE, STORE_VERSION, BenchmarkRun

from .conftest import HOOK, synthetic_prices, tiny_sae
from .test_groups import GICS, SIC

NARROW, WIDE = 96, 160
TOPICS = [
    "banks lend money loans customers in ohio",
    "phones chips software cloud services",
    "oil gas drilling in texas",
    "real estate trusts own offices malls",
    "retail stores food drinks",
]

CONFIG = """\
name: twosae
data:
  companies: {tmp}/companies.csv
  prices: {tmp}/prices.parquet
designs:
  - name: forward
    text_vintage: "2016-01-01"
    start: 2016-01-04
    end: 2017-12-31
    frequencies: [daily]
taxonomies: [all_pairs, gics_industry]
text_methods:
  - name: narrow
    features: sae
    model: tiny-model
    sae: {narrow}
    transform: log1p
    clusterer: average
  - name: wide
    features: sae
    model: tiny-model
    sae: {wide}
    pooling: max
    transform: binary
    clusterer: average
  - name: tfidf
    features: tfidf
    transform: idf
    clusterer: average
headline_method: wide
granularity:
  levels: [gics_sector, gics_industry]
  match: [density]
hybrid:
  method: wide
  parent: gics_sector
random_groups: true
ranking:
  ks: [1, 3]
  difference_draws: 20
evaluation:
  null_draws: 5
  bootstrap_draws: 10
"""


@pytest.fixture(scope="module")
def tiny_env(model, tmp_path_factory):
    """The tiny model in place of every language model a benchmark, explanation or label asks for, and a
    feature cache of its own."""
    from finsae.extract import model as model_module
    from finsae.extract.model import LoadedModel

    mp = pytest.MonkeyPatch()
    mp.setenv("FINSAE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))

    def load(source: str = "tiny-model", **kwargs: object) -> LoadedModel:
        assert source == "tiny-model", source
        return LoadedModel(model, "tiny", "w0")

    mp.setattr(model_module, "load_model", load)
    for name in ("finsae.extract.spec", "finsae.extract.documents", "finsae.pipeline.explain"):  # by name
        mp.setattr(f"{name}.load_model", load, raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def bench(tiny_env, tmp_path_factory) -> dict[str, Path]:
    from finsae.config import load_benchmark_config
    from finsae.pipeline.benchmark import run_benchmark

    tmp = tmp_path_factory.mktemp("twosae")
    narrow, wide = tmp / "sae_narrow", tmp / "sae_wide"
    tiny_sae(narrow, HOOK, NARROW, k=6, seed=11)
    tiny_sae(wide, HOOK, WIDE, k=6, seed=12)
    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=3)
    tickers = prices.close.columns
    rng = np.random.default_rng(0)
    descriptions = [
        " ".join(rng.choice(TOPICS[i % 5].split(), 8)) + " the company" for i in range(len(tickers))
    ]
    pd.DataFrame(
        {
            "ticker": tickers,
            "description": descriptions,
            "sic": [SIC[i % 5][i % 2] for i in range(30)],
            "gics": [GICS[i % 5][i % 2] for i in range(30)],
            "as_of": "2016-01-01",
        }
    ).to_csv(tmp / "companies.csv", index=False)
    prices.close.reset_index().to_parquet(tmp / "prices.parquet")
    (tmp / "cfg.yaml").write_text(CONFIG.format(tmp=tmp, narrow=narrow, wide=wide))
    run_benchmark(load_benchmark_config(tmp / "cfg.yaml"), tmp / "bench")
    return {"tmp": tmp, "bench": tmp / "bench", "narrow": narrow, "wide": wide}


def _cli(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_the_store_records_how_every_method_made_its_features(bench):
    run = BenchmarkRun.load(bench["bench"])
    assert run.headline_method == "wide" and run.headline_vintage == "2016-01-01"
    wide, narrow, tfidf = (run.method(n) for n in ("wide", "narrow", "tfidf"))
    assert wide.extraction.sae == str(bench["wide"]) and wide.extraction.d_sae == WIDE
    assert narrow.extraction.sae == str(bench["narrow"]) and narrow.extraction.d_sae == NARROW
    assert (
        wide.extraction.hook == HOOK
        and wide.extraction.pooling == "max"
        and narrow.extraction.pooling == "sum"
    )
    assert wide.extraction.model == "tiny-model" and wide.extraction.model_id == "tiny"
    assert wide.extraction.cache_key and wide.extraction.cache_key != narrow.extraction.cache_key
    assert wide.extraction.max_length == 16 and wide.extraction.sae_digest
    assert (wide.transform, narrow.transform, tfidf.transform) == ("binary", "log1p", "idf")
    assert tfidf.extraction.features == "tfidf" and tfidf.features_file is None
    # the stored vectors are the unit rows of the method's transform of its stored features
    from finsae.group.similarity import FeatureTransform

    for spec in (wide, narrow):
        z = run.vectors(spec)
        assert z.matrix.shape == (30, spec.extraction.d_sae)
        again = FeatureTransform(spec.transform).fit_transform(run.features(spec).matrix)
        np.testing.assert_array_equal(z.matrix, again)
    hybrid = run.grouping("wide_in_gics_sector@gics_industry:density")
    assert hybrid.kind == "hybrid" and run.features_of(hybrid).name == "wide"
    with pytest.raises(ConfigError, match="random grouping: it was not formed from text features"):
        run.features_of(run.grouping("random@gics_industry:same_sizes"))


def test_store_round_trip(bench, tmp_path):
    run = BenchmarkRun.load(bench["bench"])
    run.save(tmp_path / "copy")
    back = BenchmarkRun.load(tmp_path / "copy")
    assert back.methods == run.methods and back.groupings == run.groupings and back.designs == run.designs
    assert (back.run_id, back.headline_method, back.levels, back.vintages) == (
        run.run_id,
        run.headline_method,
        run.levels,
        run.vintages,
    )
    pd.testing.assert_frame_equal(back.result.table, run.result.table)
    pd.testing.assert_frame_equal(back.groups["2016-01-01"], run.groups["2016-01-01"])
    for spec in run.methods:
        if spec.vectors is not None:
            np.testing.assert_array_equal(back.vectors(spec).matrix, run.vectors(spec).matrix)
            assert list(back.vectors(spec).tickers) == list(run.vectors(spec).tickers)
        if spec.features_file is not None:
            assert (back.features(spec).matrix != run.features(spec).matrix).nnz == 0


def test_store_of_another_version_another_run_incomplete_or_missing_is_refused(bench, tmp_path):
    folder = tmp_path / "bench"
    shutil.copytree(bench["bench"], folder)
    index_path = folder / STORE_DIR / STORE_FILE
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({**index, "store_version": STORE_VERSION + 1}))
    with pytest.raises(
        ConfigError,
        match=rf"{index_path}.*version {STORE_VERSION + 1}.*reads version "
        rf"{STORE_VERSION}.*rerun finsae benchmark",
    ):
        BenchmarkRun.load(folder)
    index_path.write_text(json.dumps({**index, "run_id": "20200101T000000-00000000"}))
    with pytest.raises(
        ConfigError, match="from run 20200101T000000-00000000.*inconsistent.*rerun finsae benchmark"
    ):
        BenchmarkRun.load(folder)
    index_path.write_text(json.dumps(index))
    (folder / STORE_DIR / "2016-01-01" / "wide.vectors.npz").unlink()
    with pytest.raises(
        ConfigError, match=r"wide\.vectors\.npz is missing.*incomplete.*rerun finsae benchmark"
    ):
        BenchmarkRun.load(folder)
    shutil.rmtree(folder / STORE_DIR)  # a results folder written before the store existed
    for args in (
        ["explain", "--results", str(folder), "--grouping", "wide@gics_industry:density"],
        ["export", "--results", str(folder), "--out", str(tmp_path / "exp")],
        ["report", "--results", str(folder), "--out", str(tmp_path / "r.html")],
    ):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code != 0 and "before the store existed" in res.output, res.output
        assert "rerun finsae benchmark" in res.output
    with pytest.raises(ConfigError, match="no benchmark results folder"):
        BenchmarkRun.load(tmp_path / "nowhere")


def test_explain_of_the_wide_sae_grouping_uses_the_wide_sae(bench, monkeypatch):
    import finsae.extract.shards as shards

    results = bench["bench"]
    # the benchmark's feature pass stored the latents' token statistics: labels need no model pass (#18)
    monkeypatch.setattr(shards, "extract_features_many", lambda *a, **k: pytest.fail("a second model pass"))
    out = _cli(
        "explain", "--results", str(results), "--grouping", "wide@gics_industry:density", "--draws", "5"
    )
    assert "Explanations of `wide@gics_industry:density`" in out
    folder = results / "explanations" / "wide@gics_industry_density"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (
        manifest["sae"] == str(bench["wide"]) and manifest["d_sae"] == WIDE and manifest["method"] == "wide"
    )
    assert (
        manifest["transform"] == "binary" and manifest["results_run_id"] == BenchmarkRun.load(results).run_id
    )
    labels = pd.read_parquet(folder / "latent_labels.parquet")
    assert len(labels) == WIDE  # one label per latent of the wide SAE, not of another
    groups = pd.read_parquet(folder / "groups.parquet")
    assert groups["latent"].between(0, WIDE - 1).all()
    # the explaining latents are active in the group's members under the wide SAE's own features
    run = BenchmarkRun.load(results)
    feats = run.features(run.method("wide"))
    rows = run.labels(run.grouping("wide@gics_industry:density"))
    members = rows.set_index("ticker")["group"].reindex(feats.tickers)
    first = groups[groups["rank"] == 0].iloc[0]
    in_group = (members == first["group"]).to_numpy()
    active = np.asarray((feats.matrix[:, int(first["latent"])] > 0).toarray()).ravel()
    assert active[in_group].mean() == pytest.approx(first["p_in"])
    # the narrow SAE's grouping and the hybrid (formed with the wide SAE's vectors) use their own SAEs
    _cli("explain", "--results", str(results), "--grouping", "narrow@gics_industry:density", "--draws", "5")
    narrow = results / "explanations" / "narrow@gics_industry_density"
    assert len(pd.read_parquet(narrow / "latent_labels.parquet")) == NARROW
    assert json.loads((narrow / "manifest.json").read_text())["sae"] == str(bench["narrow"])
    from finsae.pipeline.explain import explain_grouping

    hybrid = explain_grouping(results, "wide_in_gics_sector@gics_industry:density", draws=5, write=False)
    assert hybrid.sae == str(bench["wide"]) and len(hybrid.labels.table) == WIDE


def test_explain_refuses_what_was_not_formed_by_sae_latents_or_another_sae(bench):
    from finsae.pipeline.explain import explain_grouping

    results = bench["bench"]
    with pytest.raises(ConfigError, match="method 'tfidf' was formed from tfidf features, not SAE latents"):
        explain_grouping(results, "tfidf@gics_industry:density", write=False)
    with pytest.raises(ConfigError, match="random grouping: it was not formed from text features"):
        explain_grouping(results, "random@gics_industry:same_sizes", write=False)
    with pytest.raises(ConfigError, match=r"formed with the SAE .*sae_wide, not .*sae_narrow"):
        explain_grouping(results, "wide@gics_industry:density", sae=bench["narrow"], write=False)
    with pytest.raises(ConfigError, match="no grouping 'nope'"):
        explain_grouping(results, "nope", write=False)


def test_export_and_report_of_the_wide_sae_use_its_vectors_and_explanations(bench, tmp_path):
    results = bench["bench"]
    _cli("explain", "--results", str(results), "--grouping", "wide@gics_industry:density", "--draws", "5")
    from finsae.explain.labels import LABEL_RULE

    folder = results / "explanations" / "wide@gics_industry_density"
    explained = json.loads((folder / "manifest.json").read_text())
    assert explained["label_rule"] == LABEL_RULE == "v6"
    assert sum(explained["label_kinds"].values()) == WIDE
    assert sum(explained["top_label_kinds"].values()) == len(
        pd.read_parquet(folder / "groups.parquet").query("rank == 0"))
    out = tmp_path / "export"
    _cli(
        "export",
        "--results",
        str(results),
        "--out",
        str(out),
        "--k",
        "3",
        "--explanations",
        str(results / "explanations" / "wide@gics_industry_density"),
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["headline_method"] == "wide" and manifest["default_grouping"] == "wide@gics_industry:density"
    )
    assert manifest["methods"]["wide"]["dims"] == WIDE and manifest["methods"]["narrow"]["dims"] == NARROW
    assert manifest["methods"]["wide"]["source"]["sae"] == str(bench["wide"])
    vec = pd.read_parquet(out / "vectors.parquet")
    run = BenchmarkRun.load(results)
    for name, width in (("wide", WIDE), ("narrow", NARROW)):
        got = vec[vec["method"] == name].pivot_table(
            index="ticker", columns="dim", values="value", fill_value=0.0
        )
        stored = run.vectors(run.method(name))
        dense = pd.DataFrame(stored.matrix, index=stored.tickers).reindex(
            index=got.index, columns=got.columns
        )
        assert got.columns.max() < width
        np.testing.assert_allclose(got.to_numpy(), dense.to_numpy().astype(np.float32), rtol=0, atol=0)
    dims = pd.read_parquet(out / "dimensions.parquet")
    assert len(dims[dims["method"] == "wide"]) == WIDE and len(dims[dims["method"] == "narrow"]) == NARROW
    page = tmp_path / "report.html"
    _cli(
        "report",
        "--results",
        str(results),
        "--out",
        str(page),
        "--explanations",
        str(results / "explanations" / "wide@gics_industry_density"),
    )
    html = page.read_text()
    assert "wide@gics_industry:density" in html and str(bench["wide"]) in html
    assert 'id="groups"' in html and "narrow@gics_industry:density" in html
    assert 'id="groups-2"' not in html
    # a second explained grouping gets a section (and a link) of its own; the lookup keeps the first's labels
    _cli("explain", "--results", str(results), "--grouping", "narrow@gics_industry:density", "--draws", "5")
    _cli("report", "--results", str(results), "--out", str(page), "--explanations",
         str(results / "explanations" / "wide@gics_industry_density"), "--explanations",
         str(results / "explanations" / "narrow@gics_industry_density"))
    html = page.read_text()
    second = html[html.index('<section id="groups-2">'):]
    assert '<a href="#groups-2">' in html and second.index("narrow@gics_industry:density") < 200
    assert html.index('<section id="groups">') < html.index('<section id="groups-2">') < html.index(
        '<section id="lookup">')


def test_text_groups_loader_for_the_pairs_backtest(bench):
    run = BenchmarkRun.load(bench["bench"])
    published = run.vintages["2016-01-01"]
    got = run.text_groups(
        ["wide@gics_industry:density", "tfidf@gics_sector:density"], published + pd.Timedelta(days=1)
    )
    wide = got["wide@gics_industry:density"]
    assert wide.vintage == "2016-01-01" and not wide.look_ahead and wide.labels.dtype == "string"
    rows = run.labels(run.grouping("wide@gics_industry:density"))
    assert dict(wide.labels) == dict(zip(rows["ticker"], rows["group"], strict=True))
    assert run.text_groups(["wide@gics_industry:density"], published)["wide@gics_industry:density"].look_ahead
    with pytest.raises(ConfigError, match="no grouping 'sae@gics_industry:density'"):
        run.text_groups(["sae@gics_industry:density"], published)
    with pytest.raises(ConfigError, match="no text groups for vintage '2020'"):
        run.pick_vintage("2020")
    with pytest.raises(DataError, match="companies table .* is missing"):
        run.universe(bench["tmp"] / "nope.csv")


LEARNED = """\
learned:
  methods: [wide]
  split: 2015-06-30
  alphas: [0.1, 10.0]
  priors: [zero, cosine]
  folds: 3
  two_way_draws: 10
  block_months: 3
selection:
  start: 2015-01-01
  end: 2015-12-31
  frequency: daily
  level: gics_industry
  match: density
"""


def test_a_learned_sae_grouping_is_explained_by_evidence_through_report_export_api(bench, tmp_path):
    """End to end for a learned (signed-weight) SAE method: ``finsae explain`` lists the latents a group's
    members share (w > 0, positive excess) before those they lack; the export carries each latent's
    ``evidence`` (schema 1.3), the Python API returns it per group, and the markdown marks the absent ones."""
    from finsae.api import load_run
    from finsae.config import load_benchmark_config
    from finsae.pipeline.benchmark import run_benchmark
    from finsae.pipeline.explain import explain_grouping

    tmp = bench["tmp"]
    cfg = tmp_path / "learned.yaml"
    cfg.write_text(CONFIG.format(tmp=tmp, narrow=bench["narrow"], wide=bench["wide"]) + LEARNED)
    results = tmp_path / "bench"
    run_benchmark(load_benchmark_config(cfg), results)
    grouping = "wide_sup@gics_industry:density"
    e = explain_grouping(results, grouping, draws=5, min_size=2, top=40)
    g = e.groups
    assert {"shared", "absent", "none"} == set(g["evidence"])  # top 40 of 160 latents: every tier
    tiers = {"shared": 0, "absent": 1, "none": 2}
    for _, rows in g.groupby("group"):
        assert rows.sort_values("rank")["evidence"].map(tiers).is_monotonic_increasing
    shared = g["evidence"] == "shared"
    assert ((g["weight"] > 0) & (g["excess"] > 0)).eq(shared).all()
    assert ((g["weight"] < 0) & (g["excess"] > 0)).eq(g["evidence"] == "absent").all()
    folder = results / "explanations" / "wide_sup@gics_industry_density"
    out = tmp_path / "export"
    _cli("export", "--results", str(results), "--out", str(out), "--k", "3", "--explanations", str(folder))
    assert json.loads((out / "manifest.json").read_text())["schema_version"] == "1.3"
    api = load_run(out)
    for gid, rows in g.groupby("group"):
        got = api.explain_group(str(gid), grouping=grouping)
        want = rows.sort_values("rank")
        assert [x.latent for x in got.latents] == want["latent"].tolist()
        assert [x.evidence for x in got.latents] == want["evidence"].tolist()
    from finsae.report.markdown import explanation_markdown

    shown = g[g["group"].isin(e.faithfulness["group"])].sort_values("rank").groupby("group").head(4)
    assert explanation_markdown(e).count("[absent]") == (shown["evidence"] == "absent").sum()
