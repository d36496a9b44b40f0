"""The Ray backend on a local Ray cluster (2 worker processes on this machine): extraction equals the
single-process run exactly, a worker killed mid-run is replaced, a failed job resumes without recomputing
finished shards, and the pairs tests / placebo draws match the local run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from finsae.errors import ProviderError
from finsae.extract import Execution, LoadedModel, cached_extract
from finsae.extract.distributed import ray_compute_shards
from finsae.extract.shards import compute_shard, plan_shards, read_shard

ray = pytest.importorskip("ray", reason="the Ray backend is an optional extra (pip install 'finsae[ray]')")

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests package

DOCS = [
    f"{a} {b} company serves customers in ohio"
    for a in (
        "banks lend money",
        "oil gas drilling",
        "software cloud services",
        "real estate trusts own offices",
    )
    for b in ("and more", "for clients", "with stores")
]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _same(a, b) -> None:
    assert a.doc_ids == b.doc_ids
    assert a.matrix.shape == b.matrix.shape
    assert (a.matrix != b.matrix).nnz == 0  # exactly equal, not close
    assert np.array_equal(a.n_tokens, b.n_tokens) and a.skipped == b.skipped


def test_ray_extraction_with_two_workers_equals_the_local_run(model, sae, tmp_path, cluster):
    ids = [f"D{i}" for i in range(len(DOCS))]
    docs = [*DOCS[:5], "   ", *DOCS[5:]]  # a blank one is skipped the same way
    ids = [*ids[:5], "BLANK", *ids[5:]]
    on_ray = Execution(backend="ray", workers=2, shard_size=3, root=tmp_path / "ray")
    local = cached_extract(LoadedModel(model, "tiny", "w0"), sae, docs, ids,
                           run=Execution(shard_size=3, root=tmp_path / "local"))
    dist = cached_extract(LoadedModel(model, "tiny", "w0"), sae, docs, ids, run=on_ray)
    _same(local, dist)
    assert dist.manifest["workers"] == 2 and dist.manifest["shards_from_cache"] == 0
    assert sorted(p.name for p in (tmp_path / "local").glob("*.npz")) == sorted(
        p.name for p in (tmp_path / "ray").glob("*.npz")
    )
    again = cached_extract(LoadedModel(model, "tiny", "w0"), sae, docs, ids, run=on_ray)
    assert again.manifest["shards_from_cache"] == again.manifest["shards"]  # a full hit starts no worker
    _same(local, again)


def _crash_once(marker_dir: Path, crash_index: int):
    """A compute function whose worker process dies the first time it meets shard ``crash_index``; every shard
    computed leaves a marker file, so the test can count recomputations."""

    def compute(loaded, sae, plan, shard):
        if shard.index == crash_index and not (marker_dir / "crashed").exists():
            (marker_dir / "crashed").touch()
            os._exit(1)  # the worker process dies mid-shard, as on a killed node
        fs = compute_shard(loaded, sae, plan, shard)
        (marker_dir / f"computed-{shard.index}-{os.getpid()}-{len(list(marker_dir.iterdir()))}").touch()
        return fs

    return compute


def _planned(model, sae, tmp_path: Path):
    """The tiny model, DOCS in shards of 2 under tmp_path/cache, and an empty marker folder."""
    ids = [f"D{i}" for i in range(len(DOCS))]
    loaded = LoadedModel(model, "tiny", "w0")
    plan = plan_shards(loaded, sae, DOCS, ids, run=Execution(shard_size=2, root=tmp_path / "cache"))
    plan.folder.mkdir(parents=True)
    markers = tmp_path / "markers"
    markers.mkdir()
    return loaded, ids, plan, markers


def test_a_killed_worker_is_replaced_and_only_its_shard_is_redone(model, sae, tmp_path, cluster):
    loaded, ids, plan, markers = _planned(model, sae, tmp_path)
    stats = ray_compute_shards(
        loaded, sae, plan, list(plan.shards), workers=2, compute=_crash_once(markers, 2)
    )
    assert stats["failures"] == 1
    computed = [p.name.split("-")[1] for p in markers.glob("computed-*")]
    assert sorted(map(int, computed)) == list(range(len(plan.shards)))  # each shard computed exactly once
    local = cached_extract(loaded, sae, DOCS, ids, run=Execution(shard_size=2, root=tmp_path / "local"))
    parts = [read_shard(s, plan.spec.pooling) for s in plan.shards]
    assert all(p is not None for p in parts)
    dist = cached_extract(loaded, sae, DOCS, ids, run=Execution(shard_size=2, root=tmp_path / "cache"))
    assert dist.manifest["shards_from_cache"] == len(plan.shards)
    _same(local, dist)


def test_a_failed_job_resumes_without_recomputing_finished_shards(model, sae, tmp_path, cluster):
    loaded, ids, plan, markers = _planned(model, sae, tmp_path)
    with pytest.raises(ProviderError, match="a rerun computes only the rest"):
        ray_compute_shards(loaded, sae, plan, list(plan.shards), workers=1, max_failures=0,
                           compute=_crash_once(markers, 3))
    finished = {p.name: p.stat().st_mtime_ns for p in plan.folder.glob("*.npz")}
    assert 0 < len(finished) < len(plan.shards)  # the job died part way
    resumed = cached_extract(loaded, sae, DOCS, ids,
                             run=Execution(backend="ray", workers=2, shard_size=2, root=tmp_path / "cache"))
    assert resumed.manifest["shards_from_cache"] == len(finished)
    for name, mtime in finished.items():
        assert (plan.folder / name).stat().st_mtime_ns == mtime  # finished shards were not rewritten
    local = cached_extract(loaded, sae, DOCS, ids, run=Execution(shard_size=2, root=tmp_path / "local"))
    _same(local, resumed)


def test_a_worker_error_names_the_shard(model, sae, tmp_path, cluster):
    def broken(loaded, sae, plan, shard):
        raise ValueError("tokenizer exploded")

    loaded = LoadedModel(model, "tiny", "w0")
    plan = plan_shards(loaded, sae, DOCS[:2], ["A", "B"], run=Execution(shard_size=2, root=tmp_path / "c"))
    with pytest.raises(ProviderError, match=r"failed on a Ray worker: ValueError\('tokenizer exploded'\)"):
        ray_compute_shards(loaded, sae, plan, list(plan.shards), workers=1, compute=broken)


# ---------------------------------------------------------------------------------- pairs backtest on Ray

def test_pair_tests_on_ray_equal_the_local_run(cluster):
    from finsae.backtest.pairs import all_pairs, pair_tests
    from finsae.parallel import RayBackend

    rng = np.random.default_rng(3)
    logp = np.cumsum(rng.normal(0, 0.01, (200, 14)), axis=0)
    logp[:, 1] = logp[:, 0] + rng.normal(0, 0.005, 200)  # one co-integrated pair
    i, j = all_pairs(14)
    local = pair_tests(logp, i, j, maxlag=None, autolag="aic", both_orderings=True, chunk_pairs=10)
    backend = RayBackend(workers=2)
    dist = pair_tests(
        logp, i, j, maxlag=None, autolag="aic", both_orderings=True, chunk_pairs=10, backend=backend
    )
    backend.close()
    for field in (
        "pvalue",
        "stat",
        "half_life",
        "hedge_ratio",
        "lags",
        "collinear",
        "valid",
        "pvalue_ij",
        "pvalue_ji",
    ):
        assert np.array_equal(getattr(local, field), getattr(dist, field), equal_nan=True), field
    assert local.pvalue[0] < 0.01


def test_pairs_backtest_on_ray_equals_the_local_run(tmp_path, monkeypatch, cluster):
    import pandas as pd

    from finsae.config import load_pairs_config
    from finsae.pipeline.backtest import run_pairs_backtest

    from .test_backtest_run import CONFIG, synthetic_market

    prices = synthetic_market()
    prices.reset_index().to_parquet(tmp_path / "prices.parquet")
    sic = {0: "2834", 1: "6021", 2: "7372"}
    gics = {0: "35202010", 1: "40101015", 2: "45103010"}
    pd.DataFrame(
        {
            "ticker": prices.columns,
            "description": "x",
            "sic": [sic[int(c[1])] for c in prices.columns],
            "gics": [gics[int(c[1])] for c in prices.columns],
        }
    ).to_csv(tmp_path / "companies.csv", index=False)
    config = CONFIG.replace("placebo: {draws: 3, seed: 1}", "placebo: {draws: 7, seed: 1}")
    (tmp_path / "local.yaml").write_text(config)
    (tmp_path / "ray.yaml").write_text(config + "backend: {kind: ray, workers: 2, placebo_chunk: 2}\n")
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path / "cache_local"))
    local = run_pairs_backtest(load_pairs_config(tmp_path / "local.yaml"), tmp_path / "out_local")
    # pair tests recomputed on Ray, not read
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path / "cache_ray"))
    dist = run_pairs_backtest(load_pairs_config(tmp_path / "ray.yaml"), tmp_path / "out_ray")
    assert list((tmp_path / "cache_ray" / "pairtests").glob("*.parquet"))
    for name in ("summary", "daily", "windows", "placebo", "trades", "selections"):
        pd.testing.assert_frame_equal(getattr(local, name), getattr(dist, name), check_exact=True, obj=name)
    assert len(local.placebo) > 0 and local.placebo["sharpe_gross"].notna().any()
