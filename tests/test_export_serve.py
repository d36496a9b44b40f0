"""Versioned exports (schema-checked), the stable API surface, and the HTTP service started for real on a
loopback port. Built from a small TF-IDF benchmark + pairs backtest on synthetic data; one explanation folder
is made with the same functions ``finsae explain`` uses."""

from __future__ import annotations

import inspect
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finsae import api
from finsae.config import load_benchmark_config, load_pairs_config
from finsae.errors import ConfigError, DataError
from finsae.export import ExportError, top_peers, validate_export
from finsae.pipeline.backtest import run_pairs_backtest
from finsae.pipeline.benchmark import run_benchmark
from finsae.pipeline.export import export_run

from .conftest import synthetic_prices
from .test_backtest_run import CONFIG as PAIRS_CONFIG
from .test_groups import _text_files

KEY = "test-key-0123456789abcdef"
GROUPING = "tfidf@gics_industry:density"


def _explanation_folder(results: Path, out: Path) -> Path:
    """An explanation folder laid out as finsae explain writes it, for the TF-IDF grouping (tests only)."""
    from finsae.data import load_universe
    from finsae.explain.groups import explain_group, faithfulness
    from finsae.extract.documents import document_features
    from finsae.group.similarity import FeatureTransform

    manifest = json.loads((results / "manifest.json").read_text())
    universe = load_universe(manifest["data"]["companies"]["path"])
    feats = document_features(universe, "2016-01-01", "tfidf")
    z = FeatureTransform("idf").fit_transform(feats.matrix)
    groups = pd.read_parquet(results / "groups_2016-01-01.parquet")
    rows = groups[groups["name"] == GROUPING]
    group_of = pd.Series(rows["group"].to_numpy(), index=rows["ticker"]).reindex(feats.tickers)
    labels = pd.Series([f"term {w}" for w in feats.names])
    expl, faith = [], []
    for g, size in group_of.value_counts().items():
        if size < 3:
            continue
        members = (group_of == g).to_numpy()
        e = explain_group(feats.matrix, members, labels=labels, top=4, group=str(g))
        f = faithfulness(z, feats.matrix, members, e.latents["latent"].to_numpy()[:2], draws=10, group=str(g))
        expl.append(e.to_frame().assign(rank=np.arange(len(e.latents)), members=""))
        faith.append({**f.to_dict(), "members": ""})
    out.mkdir(parents=True)
    pd.concat(expl, ignore_index=True).to_parquet(out / "groups.parquet")
    pd.DataFrame(faith).to_parquet(out / "faithfulness.parquet")
    pd.DataFrame({"latent": np.arange(len(labels)), "label": labels, "top_tokens": [[w] for w in feats.names],
                  "n_active_tokens": 1, "activation_mass": 1.0}).to_parquet(out / "latent_labels.parquet")
    (out / "manifest.json").write_text(json.dumps({"grouping": GROUPING}))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("export")
    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=3)
    cfg = _text_files(tmp, prices.close)
    companies = pd.read_csv(tmp / "companies.csv", dtype=str)
    companies.loc[29, "description"] = ""  # one company without text: in the universe, without a vector
    # only words every company uses: a zero vector
    companies.loc[28, "description"] = "company serves clients"
    companies.to_csv(tmp / "companies.csv", index=False)
    text = cfg.read_text().replace("levels: [sic2, gics_industry]", "levels: [gics_sector, gics_industry]")
    text = text.replace("transform: select\n", "transform: idf\n").replace(
        "clusterer: select\n", "clusterer: average\n"
    )
    cfg.write_text(text)
    run_benchmark(load_benchmark_config(cfg), tmp / "bench")
    pairs_cfg = PAIRS_CONFIG.replace(
        "start: 2015-07-01\nend: 2016-06-30", "start: 2016-06-01\nend: 2017-12-31"
    )
    pairs_cfg = pairs_cfg.replace(
        "methods: [all_pairs, sic2, gics_sector]", "methods: [all_pairs, gics_industry]"
    )
    (tmp / "pairs.yaml").write_text(pairs_cfg)
    run_pairs_backtest(load_pairs_config(tmp / "pairs.yaml"), tmp / "pairs")
    expl = _explanation_folder(tmp / "bench", tmp / "expl")
    export_run(tmp / "bench", tmp / "out", pairs=tmp / "pairs", explanations=[expl], k=5)
    return {"tmp": tmp, "bench": tmp / "bench", "pairs": tmp / "pairs", "expl": expl, "out": tmp / "out"}


# ------------------------------------------------------------------------------------------------ the export

def test_export_matches_its_schema_and_lists_every_table(built):
    manifest = validate_export(built["out"])
    assert manifest["schema_version"] == api.SCHEMA_VERSION and manifest["vintage"] == "2016-01-01"
    assert set(manifest["tables"]) >= {"companies", "groups", "vectors", "peers", "dimensions", "latents",
                                       "group_explanations", "group_faithfulness", "benchmark_comovement",
                                       "backtest_summary"}
    assert manifest["default_grouping"] == GROUPING and manifest["explain_method"] == "tfidf"
    companies = pd.read_parquet(built["out"] / "companies.parquet")
    assert len(companies) == 30 and companies["has_text"].sum() == 29
    groups = pd.read_parquet(built["out"] / "groups.parquet")
    assert {"tfidf@gics_industry:density", "gics_industry", "gics_sector"} <= set(groups["grouping"])
    tax = groups[groups["grouping"] == "gics_industry"]
    assert len(tax) == 30 and set(tax["kind"]) == {"taxonomy"}  # taxonomy groups cover companies without text


def test_peers_table_is_the_brute_force_top_k_of_the_vectors(built):
    vec = pd.read_parquet(built["out"] / "vectors.parquet")
    peers = pd.read_parquet(built["out"] / "peers.parquet")
    companies = pd.read_parquet(built["out"] / "companies.parquet")
    order = list(companies.loc[companies["has_text"], "ticker"])
    dense = vec.pivot_table(index="ticker", columns="dim", values="value", fill_value=0.0)
    dense = dense.reindex(order, fill_value=0.0).to_numpy()
    norms = np.linalg.norm(dense, axis=1)
    assert np.allclose(norms[np.array(order) != "T28"], 1.0, atol=1e-5) and norms[order.index("T28")] == 0
    for i, t in enumerate(order):
        sims = dense @ dense[i]
        brute = sorted((j for j in range(len(order)) if j != i), key=lambda j: (-sims[j], j))[:5]
        got = peers[(peers["ticker"] == t)].sort_values("rank")
        assert list(got["peer"]) == [order[j] for j in brute]
        assert np.allclose(got["similarity"], sims[brute], atol=1e-6)


def test_top_peers_breaks_ties_by_position():
    sims = np.array([1.0, 0.5, 0.9, 0.5, 0.9, 0.1])
    order, values = top_peers(sims, 0, 3)
    assert list(order) == [2, 4, 1] and list(values) == [0.9, 0.9, 0.5]
    assert list(top_peers(sims, 0, 99)[0]) == [2, 4, 1, 3, 5]


def test_validation_names_the_table_and_column_at_fault(built, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(built["out"], bad)
    (bad / "peers.parquet").write_bytes((bad / "peers.parquet").read_bytes() + b"x")
    with pytest.raises(ExportError, match="'peers'.*sha256"):
        validate_export(bad)
    shutil.rmtree(bad)
    shutil.copytree(built["out"], bad)
    from finsae._io import file_sha256

    pd.read_parquet(bad / "peers.parquet").drop(columns=["similarity"]).to_parquet(bad / "peers.parquet")
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["tables"]["peers"]["sha256"] = file_sha256(bad / "peers.parquet")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match=r"'peers'.*\['similarity'\]"):
        validate_export(bad)
    manifest["schema_version"] = "2.0"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="schema_version"):
        validate_export(bad)
    with pytest.raises(ExportError, match="no manifest.json"):
        validate_export(tmp_path)


def test_export_refuses_to_overwrite_and_a_failed_export_keeps_the_old_one(built, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    export_run(built["bench"], out, k=3)
    before = (out / "manifest.json").read_text()
    with pytest.raises(ConfigError, match="already exists"):
        export_run(built["bench"], out, k=3)
    import finsae.pipeline.export as build

    def boom(*args, **kwargs):
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(build, "_peers_frame", boom)
    with pytest.raises(RuntimeError):
        export_run(built["bench"], out, k=4, overwrite=True)
    assert (out / "manifest.json").read_text() == before
    validate_export(out)


def test_export_takes_the_vectors_the_groups_were_formed_by_from_the_run_store(built, tmp_path, monkeypatch):
    import finsae.extract.documents as documents
    from finsae.pipeline.store import BenchmarkRun

    bench = tmp_path / "bench"
    shutil.copytree(built["bench"], bench)
    manifest = json.loads((bench / "manifest.json").read_text())
    manifest["text_methods"]["2016-01-01"]["tfidf"]["features"] = {"cache": "/somewhere/0123456789abcdef"}
    (bench / "manifest.json").write_text(json.dumps(manifest))
    # nothing is extracted again: the stored vectors are exported, whatever the manifest's provenance says
    monkeypatch.setattr(documents, "document_features", lambda *a, **k: pytest.fail("features recomputed"))
    export_run(bench, tmp_path / "ok", k=2)
    run = BenchmarkRun.load(bench)
    stored = run.vectors(run.method("tfidf"))
    vec = pd.read_parquet(tmp_path / "ok" / "vectors.parquet")
    got = vec.pivot_table(index="ticker", columns="dim", values="value", fill_value=0.0)
    want = pd.DataFrame(stored.matrix, index=stored.tickers).reindex(index=got.index, columns=got.columns)
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy().astype(np.float32))
    with pytest.raises(ConfigError, match="not a finsae benchmark results folder"):
        export_run(tmp_path, tmp_path / "x")
    with pytest.raises(ConfigError, match="vintage '2020'"):
        export_run(built["bench"], tmp_path / "y", vintage="2020")


# ------------------------------------------------------------------------------------------- the public API

PUBLIC = {
    "SCHEMA_VERSION",
    "BacktestResult",
    "BenchmarkResult",
    "Company",
    "ConfigError",
    "DataError",
    "ExportError",
    "ExportResult",
    "FinsaeError",
    "Group",
    "GroupLatent",
    "Grouping",
    "NoVectorError",
    "PairExplanation",
    "Peer",
    "PeerList",
    "ProviderError",
    "Run",
    "SharedLatent",
    "Similarity",
    "UnknownNameError",
    "UnknownTickerError",
    "backtest",
    "benchmark",
    "build_run",
    "export_run",
    "load_run",
    "validate_export",
}

SIGNATURES = {
    "load_run": ["path"],
    "benchmark": ["config", "output"],
    "backtest": ["config", "output"],
    "export_run": ["results", "out", "pairs", "explanations", "k", "overwrite"],
    "build_run": ["config", "out", "pairs", "explain_level", "companies"],
    "Run.peers": ["self", "ticker", "k", "method"],
    "Run.similarity": ["self", "a", "b", "method"],
    "Run.explain_pair": ["self", "a", "b", "top", "method", "rank_by"],
    "Run.explain_group": ["self", "group_id", "grouping"],
    "Run.groups": ["self", "method", "granularity", "match"],
    "Run.grouping": ["self", "name"],
    "Run.company": ["self", "ticker"],
}

FIELDS = {
    "Peer": ["rank", "ticker", "name", "similarity"],
    "PeerList": ["ticker", "method", "k", "peers"],
    "Similarity": ["a", "b", "method", "similarity"],
    "SharedLatent": ["latent", "label", "contribution", "share", "excess"],
    "PairExplanation": ["a", "b", "method", "similarity", "baseline", "rank_by", "latents"],
    "GroupLatent": ["rank", "latent", "label", "p_in", "p_out", "lift", "score", "evidence"],
    "Group": [
        "grouping",
        "group_id",
        "size",
        "members",
        "latents",
        "rule",
        "rule_precision",
        "rule_recall",
        "faithful",
    ],
    "Company": ["ticker", "name", "sic", "gics", "gics_sector", "gics_industry", "has_text"],
}


def test_public_api_names_and_signatures_are_stable():
    import dataclasses

    assert set(api.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(api, name), name
    for path, params in SIGNATURES.items():
        obj = api
        for part in path.split("."):
            obj = getattr(obj, part)
        assert list(inspect.signature(obj).parameters) == params, path
    for name, fields in FIELDS.items():
        cls = getattr(api, name)
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name
        assert [f.name for f in dataclasses.fields(cls)] == fields, name


def test_run_answers_match_the_exported_tables(built):
    run = api.load_run(built["out"])
    peers = pd.read_parquet(built["out"] / "peers.parquet")
    for t in peers["ticker"].unique():
        got = run.peers(t, k=5, method="tfidf")
        want = peers[peers["ticker"] == t].sort_values("rank")
        assert [p.ticker for p in got.peers] == list(want["peer"])
        assert np.allclose([p.similarity for p in got.peers], want["similarity"])
    a, b = run.peers("t00", k=1).peers[0].ticker, "t00"
    s = run.similarity(a, b)
    assert np.isclose(s.similarity, run.peers("t00", k=1).peers[0].similarity)
    e = run.explain_pair("t00", a, top=1000)
    assert np.isclose(e.similarity, s.similarity) and np.isclose(
        sum(x.contribution for x in e.latents), s.similarity
    )
    assert all(x.label for x in e.latents)  # TF-IDF terms name the shared dimensions
    # excess terms: contribution minus the dimension's squared mean, ranked largest first
    vec = pd.read_parquet(built["out"] / "vectors.parquet")
    with_text = [t for t in pd.read_parquet(built["out"] / "companies.parquet").query("has_text")["ticker"]]
    dense = vec[vec["method"] == "tfidf"].pivot_table(
        index="ticker", columns="dim", values="value", fill_value=0.0
    )
    mean = dense.reindex(with_text, fill_value=0.0).mean(axis=0)  # zero vectors count
    for x in e.latents:
        assert np.isclose(x.excess, x.contribution - mean[x.latent] ** 2)
    assert [x.excess for x in e.latents] == sorted((x.excess for x in e.latents), reverse=True)
    assert np.isclose(e.baseline, float(mean @ mean))
    by_term = run.explain_pair("t00", a, top=3, rank_by="contribution")
    assert [x.contribution for x in by_term.latents] == sorted(
        (x.contribution for x in e.latents), reverse=True
    )[:3]
    g = run.explain_group(run.grouping().labels.iloc[0])
    assert g.size >= 1 and g.grouping == GROUPING
    assert g.latents and all(x.evidence is None for x in g.latents)  # a plain grouping: no learned weights
    assert run.groups("gics", "gics_industry").n_groups == 5  # five industries in the toy codes
    assert run.groups("tfidf", "gics_industry").name == GROUPING
    frame = run.peers("T00", k=3).to_frame()
    assert list(frame.columns) == ["rank", "ticker", "name", "similarity"] and len(frame) == 3


def test_a_zero_vector_company_has_peers_at_similarity_zero(built):
    run = api.load_run(built["out"])
    vec = pd.read_parquet(built["out"] / "vectors.parquet")
    assert "T28" not in set(vec.loc[vec["method"] == "tfidf", "ticker"])  # no non-zero entry
    got = run.peers("T28", k=4)
    assert [p.similarity for p in got.peers] == [0.0] * 4
    assert [p.ticker for p in got.peers] == ["T00", "T01", "T02", "T03"]  # ties: universe order
    assert run.similarity("T28", "T00").similarity == 0.0
    assert run.explain_pair("T28", "T00").latents == ()


def test_run_errors_name_what_is_missing(built):
    run = api.load_run(built["out"])
    with pytest.raises(api.UnknownTickerError, match="'NOPE'"):
        run.peers("NOPE")
    with pytest.raises(api.UnknownTickerError):
        run.peers("../etc/passwd")
    with pytest.raises(api.NoVectorError, match="T29 has no 2016-01-01 description"):
        run.peers("t29")
    assert run.company("t29").has_text is False
    with pytest.raises(api.UnknownNameError, match="unknown method 'bert'"):
        run.peers("t00", method="bert")
    with pytest.raises(api.UnknownNameError, match="no group 'zzz'"):
        run.explain_group("zzz")
    with pytest.raises(api.UnknownNameError, match="unknown grouping"):
        run.grouping("nope@x:y")
    with pytest.raises(ConfigError, match="k must be"):
        run.peers("t00", k=0)
    for bad in (None, 2.7, "3", True):  # refused, not truncated or a TypeError from inside
        with pytest.raises(ConfigError, match=r"k must be a whole number from 1 to 1000"):
            run.peers("t00", k=bad)
    with pytest.raises(ConfigError, match=r"top must be a whole number"):
        run.explain_pair("t00", "t01", top=0)
    peers = run.peers("t00", k=1000)  # fewer companies than asked for: k says how many came back
    assert peers.k == len(peers.peers) < 1000
    with pytest.raises(ConfigError, match="'gics_industry' is not a SIC level"):
        run.groups("sic", "gics_industry")
    assert issubclass(api.UnknownTickerError, DataError)


def test_serve_refuses_an_empty_key_file_and_a_results_folder(built, tmp_path):
    from finsae.export import validate_export
    from finsae.serve import read_api_key

    empty = tmp_path / "key"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="API key file .* is empty"):
        read_api_key(empty)
    with pytest.raises(DataError, match="is a benchmark results folder, not an export: make one with finsae "
                                        "export"):
        validate_export(built["bench"])


def test_cli_export_and_its_help(built, tmp_path):
    out = tmp_path / "cli_export"
    cmd = [sys.executable, "-m", "finsae.cli", "export", "--results", str(built["bench"]), "--out", str(out),
           "--explanations", str(built["expl"]), "--k", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"schema {api.SCHEMA_VERSION}" in r.stdout and validate_export(out)["k"] == 3
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------------------------- the service

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(built):
    import uvicorn

    from finsae.serve import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(built["out"], KEY), host="127.0.0.1", port=port,
                                           log_level="warning", limit_concurrency=200))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _get(base: str, path: str, key: str | None = KEY, **params):
    import httpx

    headers = {"X-API-Key": key} if key is not None else {}
    return httpx.get(base + path, params=params, headers=headers, timeout=10)


def test_service_happy_paths(service, built):
    run = api.load_run(built["out"])
    h = _get(service, "/health", key=None)
    assert h.status_code == 200 and h.json()["companies"] == 30
    import httpx

    assert httpx.head(service + "/health", timeout=10).status_code == 200  # load balancers probe with HEAD
    r = _get(service, "/peers/t00", k=4)
    assert r.status_code == 200
    body = r.json()
    assert body["ticker"] == "T00" and [p["ticker"] for p in body["peers"]] == [
        p.ticker for p in run.peers("T00", 4).peers
    ]
    s = _get(service, "/similarity", a="T00", b="T05").json()
    assert np.isclose(s["similarity"], run.similarity("T00", "T05").similarity)
    e = _get(service, "/explain/pair", a="T00", b="T05", top=3).json()
    assert e["method"] == "tfidf" and len(e["latents"]) <= 3
    gid = run.grouping().labels.iloc[0]
    g = _get(service, f"/groups/{gid}").json()
    assert g["group_id"] == gid and g["size"] == len(g["members"]) and g["grouping"] == GROUPING
    g2 = _get(service, "/groups/40", grouping="gics_industry")
    assert g2.status_code in (200, 404)
    assert _get(service, "/openapi.json", key=None).status_code == 401  # the document needs the key too
    assert _get(service, "/docs", key=None).status_code == 401 and _get(service, "/docs").status_code == 200
    doc = _get(service, "/openapi.json").json()
    assert {"/peers/{ticker}", "/similarity", "/explain/pair", "/groups/{group_id}", "/health"} <= set(
        doc["paths"]
    )


def test_service_refuses_missing_and_wrong_keys(service):
    for key in (None, "", "wrong", KEY + "x", KEY[:-1]):
        r = _get(service, "/peers/T00", key=key)
        assert r.status_code == 401, key
        assert "API key" in r.json()["detail"]
    assert _get(service, "/similarity", key="nope", a="T00", b="T01").status_code == 401


def test_service_unknown_and_malformed_inputs(service):
    r = _get(service, "/peers/NOPE")
    assert r.status_code == 404 and "NOPE" in r.json()["detail"]
    assert _get(service, "/peers/T29").status_code == 404  # no text: no vector
    assert "no 2016-01-01 description" in _get(service, "/peers/T29").json()["detail"]
    assert _get(service, "/peers/T00", k=0).status_code == 422
    assert _get(service, "/peers/T00", k=101).status_code == 422
    assert _get(service, "/peers/T00", k="ten").status_code == 422
    assert _get(service, "/peers/T00", method="bert").status_code == 422
    assert _get(service, "/peers/" + "A" * 10_000).status_code in (414, 422, 431)
    assert _get(service, "/similarity", a="T00").status_code == 422
    assert _get(service, "/similarity", a="T00", b="X" * 5000).status_code == 422
    assert _get(service, "/groups/nope").status_code == 404
    assert _get(service, "/groups/x", grouping="a" * 500).status_code == 422
    for path in (
        "/peers/..%2Fetc%2Fpasswd",
        "/peers/%2E%2E",
        "/peers/../etc/passwd",
        "/groups/..%2F..%2Fmanifest.json",
        "/peers/~root",
        "/peers/%00",
    ):
        r = _get(service, path)
        assert r.status_code in (404, 422), (path, r.status_code)
        assert "root:" not in r.text and "schema_version" not in r.text


def test_service_answers_a_burst_of_parallel_requests(service, built):
    run = api.load_run(built["out"])
    tickers = [f"T{i:02d}" for i in range(29)] * 4
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda t: _get(service, f"/peers/{t}", k=3), tickers))
    for t, r in zip(tickers, responses, strict=True):
        assert r.status_code == 200
        assert [p["ticker"] for p in r.json()["peers"]] == [p.ticker for p in run.peers(t, 3).peers]


def test_schemathesis_finds_no_server_errors(service, tmp_path):
    exe = Path(sys.executable).parent / "schemathesis"
    if not exe.is_file():
        pytest.fail("schemathesis is not installed (dev extra)")
    cmd = [str(exe), "run", f"{service}/openapi.json", "-H", f"X-API-Key: {KEY}",
           "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
           "response_schema_conformance,ignored_auth",
           "--max-examples", "40", "--phases", "examples,coverage,fuzzing", "--seed", "1", "--workers", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
