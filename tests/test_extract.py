"""Extraction with a tiny random HookedTransformer and a random sae_lens SAE (saved to and loaded from disk):
pooling against a direct per-token computation, masking, batching, chunking, the cache, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_lens import SAE, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from finsae.errors import DataError
from finsae.extract import (
    Execution,
    ExtractionSpec,
    LoadedModel,
    cached_extract,
    check_compatible,
    chunk_tokens,
    extract_features,
    load_sae,
    sae_hash,
)

from .conftest import HOOK, WORDS

DOCS = [
    "the company makes phones and chips",
    "banks lend money to customers in ohio",
    "real estate trusts own offices malls",
    "oil gas drilling",
    "software cloud services retail stores food",
]


def direct_pool(model, sae, text, pooling):
    """Reference: one document, one forward pass, explicit per-token SAE activations without BOS."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    tokens = torch.tensor([[model.tokenizer.bos_token_id, *ids]])
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=HOOK)
        f = sae.encode(cache[HOOK])[0, 1:].numpy()  # drop BOS
    return {"sum": f.sum(0), "mean": f.mean(0), "max": f.max(0), "binary": (f.max(0) > 0).astype(float),
            "count": (f > 0).sum(0).astype(float)}[pooling]


@pytest.mark.parametrize("pooling", ["sum", "mean", "max", "binary", "count"])
def test_pooling_equals_direct_per_token_computation(model, sae, pooling):
    fs = extract_features(model, sae, DOCS, pooling=pooling, batch_tokens=64)
    dense = fs.matrix.toarray()
    for k, text in enumerate(DOCS):
        np.testing.assert_allclose(dense[k], direct_pool(model, sae, text, pooling), rtol=1e-5, atol=1e-5)
    assert fs.n_tokens.tolist() == [len(d.split()) for d in DOCS]


def test_batched_equals_one_by_one_and_padding_never_counts(model, sae):
    together = extract_features(model, sae, DOCS, batch_tokens=1000).matrix.toarray()  # one padded batch
    alone = np.vstack([extract_features(model, sae, [d], batch_tokens=1000).matrix.toarray() for d in DOCS])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_bos_is_masked(model, sae):
    fs = extract_features(model, sae, ["oil"], pooling="count")
    assert fs.matrix.sum() == sae.cfg.k  # one pooled token with exactly k active latents: BOS adds nothing


def test_chunk_tokens_cover_every_token_once():
    ids = list(range(100, 137))
    pieces = chunk_tokens(ids, bos=2, max_length=10, overlap=3)
    pooled = [t for piece, first in pieces for t in piece[first:]]
    assert pooled == ids and all(p[0] == 2 and len(p) <= 10 for p, _ in pieces)
    assert pieces[1][0][1:4] == ids[6:9]  # the overlap is context from the previous chunk
    with pytest.raises(DataError, match="overlap"):
        chunk_tokens(ids, 2, 10, 9)


def test_chunked_long_document_pools_like_hand_computed_chunks(model, sae):
    text = " ".join(WORDS[:30])
    fs = extract_features(model, sae, [text], pooling="sum", max_length=12, overlap=4)
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    expected = np.zeros(sae.cfg.d_sae)
    for piece, first in chunk_tokens(ids, model.tokenizer.bos_token_id, 12, 4):
        with torch.no_grad():
            _, cache = model.run_with_cache(torch.tensor([piece]), names_filter=HOOK)
            expected += sae.encode(cache[HOOK])[0, first:].sum(0).numpy()
    np.testing.assert_allclose(fs.matrix.toarray()[0], expected, rtol=1e-5, atol=1e-5)
    assert fs.n_chunks[0] == len(chunk_tokens(ids, 2, 12, 4)) > 1 and fs.n_tokens[0] == len(ids)


def test_missing_blank_long_and_foreign_texts(model, sae):
    texts = [
        "the company makes phones",
        "",
        "   ",
        float("nan"),
        None,
        "phones " * 20000,
        "die firma verkauft autos",
        "会社 は 銀行 です",
    ]
    fs = extract_features(model, sae, texts, doc_ids=list("abcdefgh"))
    assert fs.doc_ids == ["a", "f", "g", "h"]
    assert fs.skipped == {"b": "empty or blank", "c": "empty or blank", "d": "missing", "e": "missing"}
    assert fs.n_tokens[1] == 20000 and fs.n_chunks[1] == int(np.ceil(20000 / 15))  # context 16 = BOS + 15
    assert (np.diff(fs.matrix.indptr) > 0).all()


def test_mismatch_and_bad_arguments_fail_before_any_forward_pass(model, sae, tmp_path):
    wrong_width = TopKSAE(TopKSAEConfig(d_in=48, d_sae=96, k=8, metadata=SAEMetadata(hook_name=HOOK)))
    with pytest.raises(DataError, match="SAE/model mismatch: the SAE expects d_in=48"):
        check_compatible(model, wrong_width)
    wrong_hook = TopKSAE(
        TopKSAEConfig(d_in=32, d_sae=96, k=8, metadata=SAEMetadata(hook_name="blocks.7.hook_resid_post"))
    )
    with pytest.raises(DataError, match="does not have"):
        extract_features(model, wrong_hook, DOCS)
    with pytest.raises(DataError, match="unknown pooling 'median'"):
        extract_features(model, sae, DOCS, pooling="median")
    with pytest.raises(DataError, match="no sae_lens SAE"):
        load_sae(tmp_path)


def test_cache_hit_miss_corruption_and_resume(model, sae, tmp_path):
    loaded = LoadedModel(model, "tiny", "w0")
    ids = [f"D{k}" for k in range(len(DOCS))]
    run = Execution(shard_size=2, root=tmp_path)
    first = cached_extract(loaded, sae, DOCS, ids, run=run)
    assert first.manifest["shards_from_cache"] == 0 and first.manifest["shards"] == 3
    again = cached_extract(loaded, sae, DOCS, ids, run=run)
    assert again.manifest["shards_from_cache"] == 3
    np.testing.assert_array_equal(again.matrix.toarray(), first.matrix.toarray())
    shards = sorted(tmp_path.glob("*.npz"))
    shards[0].write_bytes(b"not a shard")  # corrupted: recomputed, not a crash
    shards[1].unlink()  # missing, as after a kill: resumed
    fixed = cached_extract(loaded, sae, DOCS, ids, run=run)
    assert fixed.manifest["shards_from_cache"] == 1
    np.testing.assert_allclose(fixed.matrix.toarray(), first.matrix.toarray(), rtol=1e-6)
    changed = cached_extract(loaded, sae, [*DOCS[:4], "oil gas"], ids, run=run)
    assert changed.manifest["shards_from_cache"] == 2  # only the shard whose text changed is recomputed


def test_saved_sae_round_trips(sae):
    assert isinstance(sae, SAE) and sae.cfg.metadata.hook_name == HOOK and sae.cfg.d_sae == 96


def test_train_and_evaluate_on_tiny_model(model, tmp_path):
    from finsae.extract.train import collect_activations, evaluate_sae, train_topk_sae

    texts = [" ".join(np.random.default_rng(k).choice(WORDS[:40], 12)) for k in range(120)]
    acts, rows = collect_activations(model, texts, [HOOK], max_length=16, return_docs=True)
    assert acts[HOOK].shape == (len(rows[HOOK]), 32) and rows[HOOK].max() == 119
    for arch in ("topk", "batchtopk"):
        sae = train_topk_sae(acts[HOOK], hook_name=HOOK, d_sae=64, k=4, context_size=16, epochs=20,
                             batch_size=128, out_dir=tmp_path / arch, architecture=arch)
        saved = load_sae(tmp_path / arch)
        assert saved.cfg.metadata.hook_name == HOOK and saved.cfg.d_sae == 64
        q = evaluate_sae(model, sae, texts[:10], max_length=16, loss_batch_tokens=32)
        assert 0 < q.explained_variance <= 1  # (a random tiny model: zeroing need not hurt its loss)
        assert q.loss_recovered == pytest.approx((q.ce_zero - q.ce_sae) / (q.ce_zero - q.ce_clean))
        if arch == "topk":
            assert q.l0 <= 4 + 1e-6
        # the clean / zeroed losses of another SAE of the same layer are reused, not recomputed
        again = evaluate_sae(model, sae, texts[:10], max_length=16, loss_batch_tokens=32,
                             reference=(q.ce_clean, q.ce_zero))
        assert again == q
    with pytest.raises(DataError, match="architecture"):
        train_topk_sae(acts[HOOK], hook_name=HOOK, d_sae=64, architecture="relu")  # type: ignore[arg-type]


def test_cache_hit_through_handles_loads_neither_model_nor_sae(model, sae, tmp_path, monkeypatch):
    from finsae.extract import SAEHandle

    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path / "cache"))  # the SAE digest memo lives there
    folder = tmp_path / "sae"
    sae.save_model(str(folder))
    ids = [f"D{k}" for k in range(len(DOCS))]
    handle = SAEHandle(folder)
    assert (handle.d_sae, handle.hook_name, handle.context_size) == (96, HOOK, 16)
    loaded = LoadedModel(model, "tiny", "w0")
    first = cached_extract(loaded, handle, DOCS, ids, run=Execution(root=tmp_path / "f"))
    direct = cached_extract(loaded, sae, DOCS, ids, run=Execution(root=tmp_path / "g"))
    np.testing.assert_allclose(first.matrix.toarray(), direct.matrix.toarray(), rtol=1e-6)
    assert handle.digest == sae_hash(sae)  # same cache identity as the loaded SAE

    def no_load():
        raise AssertionError("the model was loaded on a cache hit")

    fresh = SAEHandle(folder)
    again = cached_extract(LoadedModel(None, "tiny", "w0", loader=no_load), fresh, DOCS, ids,
                           run=Execution(root=tmp_path / "f"))
    assert again.manifest["shards_from_cache"] == again.manifest["shards"]
    assert fresh._sae is None  # digest from the memo, weights never read
    np.testing.assert_array_equal(again.matrix.toarray(), first.matrix.toarray())
    with pytest.raises(DataError, match="no sae_lens SAE"):
        SAEHandle(tmp_path / "nowhere")


def test_processed_weights_round_trip(model, tmp_path):
    import torch

    from finsae.extract.model import load_hooked, save_hooked

    save_hooked(model, tmp_path / "hooked")
    again = load_hooked(tmp_path / "hooked", model.tokenizer, device="cpu", dtype=torch.float32)
    tokens = model.to_tokens(DOCS[:3])
    with torch.no_grad():
        np.testing.assert_array_equal(model(tokens).numpy(), again(tokens).numpy())


def test_direct_block_forward_equals_transformer_lens_and_compiles(model, sae):
    """The residual after block L from calling the blocks directly equals run_with_cache exactly; compiled
    blocks equal it to float reassociation; extraction with compile gives the same features."""
    import time

    from finsae.extract.features import ResidualForward, document_chunks, padded_batch

    hook = sae.cfg.metadata.hook_name
    layer = int(hook.split(".")[1])
    chunks = document_chunks(model.tokenizer, DOCS, list(range(len(DOCS))), 16, 0)
    tokens, _ = padded_batch(model.tokenizer, chunks)  # right-padded batch of unequal lengths
    with torch.no_grad():
        ref = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=layer + 1)[1][hook]
        eager = ResidualForward(model, layer)(tokens)
        assert torch.equal(eager, ref)
        t0 = time.perf_counter()
        compiled = ResidualForward(model, layer, compile=True)
        out = compiled(tokens)
        assert compiled.compiled, "torch.compile fell back to eager"
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    plain = extract_features(model, sae, DOCS, compile=False)
    fast = extract_features(model, sae, DOCS, compile=True)
    assert fast.manifest["compiled"] and not plain.manifest["compiled"]
    assert np.allclose(fast.matrix.toarray(), plain.matrix.toarray(), rtol=1e-4, atol=1e-4)
    assert time.perf_counter() - t0 < 300
    with pytest.raises(DataError, match="compile must be"):
        extract_features(model, sae, DOCS, compile="yes")


def test_compiled_features_are_cached_apart(model, sae, tmp_path, monkeypatch):
    from finsae.extract.identity import config_key

    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path))
    base = ("tiny", "w0", "sae", "sum", 16, 0, "torch.float32")
    assert config_key(*base) == config_key(*base, compiled=False) != config_key(*base, compiled=True)
    ids = [f"d{i}" for i in range(len(DOCS))]
    eager = cached_extract(LoadedModel(model, "tiny", "w0"), sae, DOCS, ids)
    fast = cached_extract(LoadedModel(model, "tiny", "w0"), sae, DOCS, ids, ExtractionSpec(compile=True))
    assert eager.manifest["cache"] != fast.manifest["cache"] and fast.manifest["compiled"]
    assert fast.manifest["shards_from_cache"] == 0  # not served from the eager shards
    again = cached_extract(LoadedModel(model, "tiny", "w0"), sae, DOCS, ids, ExtractionSpec(compile=True))
    assert again.manifest["shards_from_cache"] == again.manifest["shards"]


def test_training_works_where_the_caller_left_autograd_off():
    """TransformerLens' ``toggle_autodiff`` turns the global grad mode off, and a grad-mode context inside an
    unfinished generator outlives its yield: training must not depend on the caller's grad mode."""
    from finsae.extract.train import train_topk_sae

    x = np.random.default_rng(0).normal(size=(1024, 16)).astype(np.float32)
    before = torch.is_grad_enabled()
    try:
        torch.set_grad_enabled(False)
        train_topk_sae(x, hook_name=HOOK, d_sae=32, k=4, epochs=1, batch_size=256, autocast=False)
        with torch.inference_mode():
            train_topk_sae(x, hook_name=HOOK, d_sae=32, k=4, epochs=1, batch_size=256, autocast=False)
    finally:
        torch.set_grad_enabled(before)
