"""One language-model pass for several SAEs (#18): features equal the per-SAE path bit for bit, each SAE keeps
its own cache key, and the model runs once per batch whatever the number of SAEs and hooks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from finsae.errors import DataError
from finsae.extract import (
    Execution,
    ExtractionSpec,
    LoadedModel,
    cached_extract,
    cached_extract_many,
    extract_features,
    extract_features_many,
)
from finsae.extract.features import ResidualForward, document_chunks, hook_activations, padded_batch

from .conftest import HOOK, WORDS, tiny_sae

DOCS = [
    "the company makes phones and chips",
    "banks lend money to customers in ohio",
    "real estate trusts own offices malls",
    "oil gas drilling",
    "",
    "software cloud services retail stores food",
    " ".join(WORDS[:30]),
    "insurance policies " * 9,
]


def _sae(hook: str, d_sae: int, seed: int, tmp_path_factory, context: int = 16):
    return tiny_sae(tmp_path_factory.mktemp("sae"), hook, d_sae, k=6, seed=seed, context=context)


@pytest.fixture(scope="module")
def others(tmp_path_factory):
    """SAEs on a shallower resid_post hook, the same hook as ``sae`` (other width) and two non-resid_post
    hooks."""
    return {"l0": _sae("blocks.0.hook_resid_post", 64, 2, tmp_path_factory),
            "l1_wide": _sae(HOOK, 160, 3, tmp_path_factory),
            "pre2": _sae("blocks.2.hook_resid_pre", 48, 4, tmp_path_factory),
            "mlp0": _sae("blocks.0.hook_mlp_out", 40, 5, tmp_path_factory)}


def _same(a, b) -> None:
    """Bit-identical feature sets (CSR arrays, row ids, counts)."""
    assert a.doc_ids == b.doc_ids and a.skipped == b.skipped
    assert np.array_equal(a.matrix.indptr, b.matrix.indptr) and np.array_equal(
        a.matrix.indices, b.matrix.indices
    )
    assert a.matrix.data.dtype == b.matrix.data.dtype and a.matrix.data.tobytes() == b.matrix.data.tobytes()
    assert np.array_equal(a.n_tokens, b.n_tokens) and np.array_equal(a.n_chunks, b.n_chunks)


def test_hook_activations_read_every_hook_from_one_pass_equal_to_stopped_passes(model, others):
    chunks = document_chunks(model.tokenizer, DOCS, [0, 1, 2, 3, 5], 16, 0)
    tokens, _ = padded_batch(model.tokenizer, chunks)
    hooks = ["blocks.0.hook_resid_post", HOOK, "blocks.2.hook_resid_pre", "blocks.0.hook_mlp_out"]
    with torch.inference_mode():
        acts = hook_activations(model, hooks)(tokens)
        for h in hooks[:2]:
            alone = ResidualForward(model, int(h.split(".")[1]))(tokens)
            assert torch.equal(acts[h], alone)
        for h in hooks[2:]:
            stop = int(h.split(".")[1]) + 1
            assert torch.equal(
                acts[h], model.run_with_cache(tokens, names_filter=h, stop_at_layer=stop)[1][h]
            )


@pytest.mark.parametrize("batch_tokens", [40, 4096])
def test_one_pass_features_equal_per_sae_features_exactly(model, sae, others, batch_tokens):
    requests = [(sae, "sum"), (others["l0"], "sum"), (others["l1_wide"], "max"), (others["pre2"], "mean"),
                (others["mlp0"], "count"), (sae, "binary")]  # sae twice: encoded once, pooled twice
    ids = [f"d{k}" for k in range(len(DOCS))]
    many = extract_features_many(model, requests, DOCS, doc_ids=ids, batch_tokens=batch_tokens, overlap=3)
    for (s, pooling), got in zip(requests, many, strict=True):
        alone = extract_features(
            model, s, DOCS, doc_ids=ids, pooling=pooling, batch_tokens=batch_tokens, overlap=3
        )
        _same(got, alone)
        assert got.manifest["hook"] == s.cfg.metadata.hook_name and got.manifest["shared_pass_saes"] == 5
        assert got.skipped == {"d4": "empty or blank"}


def test_one_pass_runs_the_model_once_per_batch(model, sae, others):
    calls = []
    handle = model.hook_dict["hook_embed"].register_forward_hook(lambda *a: calls.append(1))
    try:
        extract_features(model, sae, DOCS, batch_tokens=40)
        one = len(calls)
        calls.clear()
        extract_features_many(model, [(sae, "sum"), (others["l0"], "sum"), (others["l1_wide"], "sum")], DOCS,
                              batch_tokens=40)
        assert len(calls) == one > 1  # three SAEs on two layers: one pass per batch
        calls.clear()
        extract_features_many(model, [(sae, "sum"), (others["pre2"], "sum")], DOCS, batch_tokens=40)
        assert len(calls) == 2 * one  # a resid_post and a resid_pre hook: one pass of each kind
    finally:
        handle.remove()


def test_different_context_sizes_need_max_length(model, sae, tmp_path_factory):
    long = _sae(HOOK, 32, 7, tmp_path_factory, context=32)
    with pytest.raises(DataError, match="different context sizes"):
        extract_features_many(model, [(sae, "sum"), (long, "sum")], DOCS)
    many = extract_features_many(model, [(sae, "sum"), (long, "sum")], DOCS, max_length=16)
    _same(many[1], extract_features(model, long, DOCS, max_length=16))


def test_cached_many_keeps_each_sae_key_and_values_and_reuses_cached_shards(model, sae, others, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path))
    loaded = LoadedModel(model, "tiny", "w0")
    ids = [f"d{k}" for k in range(len(DOCS))]
    run = Execution(shard_size=3)
    first = cached_extract(loaded, sae, DOCS, ids, run=run)  # cached before: must be reused as it is
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npz")}
    requests = [(s, ExtractionSpec(pooling=pooling)) for s, pooling in
                ((sae, "sum"), (others["l0"], "sum"), (others["l1_wide"], "max"), (others["pre2"], "sum"))]
    many = cached_extract_many(loaded, requests, DOCS, ids, shard_size=3)
    assert many[0].manifest["shards_from_cache"] == 3 and many[1].manifest["shards_from_cache"] == 0
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    _same(many[0], first)
    for (s, spec), got in zip(requests[1:], many[1:], strict=True):
        apart = tmp_path / "apart" / spec.pooling / s.cfg.metadata.hook_name
        alone = cached_extract(loaded, s, DOCS, ids, spec, Execution(shard_size=3, root=apart))
        _same(got, alone)
        again = cached_extract(loaded, s, DOCS, ids, spec, run)  # the one-pass files, per key
        assert again.manifest["cache"] == got.manifest["cache"]
        assert again.manifest["shards_from_cache"] == again.manifest["shards"]
        _same(again, alone)
    hit = cached_extract_many(
        LoadedModel(None, "tiny", "w0", loader=lambda: pytest.fail("model loaded")),
        requests,
        DOCS,
        ids,
        shard_size=3,
    )
    assert [h.manifest["shards_from_cache"] for h in hit] == [3, 3, 3, 3]


def test_compiled_one_pass_equals_compiled_per_sae(model, sae, others):
    requests = [(sae, "sum"), (others["l0"], "sum")]
    many = extract_features_many(model, requests, DOCS, compile=True)
    for (s, pooling), got in zip(requests, many, strict=True):
        _same(got, extract_features(model, s, DOCS, pooling=pooling, compile=True))


def test_text_stage_asks_for_every_sae_method_of_a_vintage_at_once(monkeypatch):
    import finsae.pipeline.textgroups as tg

    calls = []

    def fake_many(universe, vintage, specs, progress=None, label_stats=False):
        assert label_stats  # the benchmark's pass also keeps the latent-label statistics
        calls.append((vintage, [s["sae"] for s in specs]))
        return [SimpleNamespace(sae=s["sae"]) for s in specs]

    monkeypatch.setattr(tg, "document_features_many", fake_many)
    monkeypatch.setattr(tg, "document_features", lambda *a, **k: pytest.fail("per-method path used for SAE"))
    methods = [SimpleNamespace(features=f, model="m", tl_name=None, sae=s, pooling="sum")
               for f, s in (("sae", None), ("sae", "wide"), ("sae", None), ("tfidf", None))]
    stage = tg.TextStage(SimpleNamespace(text_methods=methods), None, None)
    assert stage.features(methods[1], "2017").sae == "wide"
    assert stage.features(methods[0], "2017").sae is None and stage.features(methods[2], "2017").sae is None
    assert calls == [("2017", [None, "wide"])]
