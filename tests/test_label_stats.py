"""Latent-label statistics from the feature extraction's own pass (#18): shards merge exactly, the features
are unchanged, and labels read the stored statistics instead of running the model again, equal to labels
computed from scratch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import finsae.extract.shards as shards_mod
from finsae.explain import latent_labels
from finsae.extract import Execution, ExtractionSpec, LoadedModel, cached_extract, cached_extract_many
from finsae.extract.tokenstats import StatsAccumulator, load_stats, merge_stats, save_stats, stats_path

from .conftest import WORDS

DOCS = [
    "the company makes phones and chips",
    "banks lend money loans to customers in ohio",
    "",
    "real estate trusts own offices malls",
    "oil gas drilling in texas",
    "software cloud services retail stores",
    " ".join(WORDS[:25]),
    "banks lend money loans in texas",
]


def _stream(seed: int = 0, n_docs: int = 9, d: int = 12, vocab: int = 30):
    """Random sparse token activations in document order: (feats, ids, docs) per document."""
    rng = np.random.default_rng(seed)
    out = []
    for doc in range(n_docs):
        n = int(rng.integers(3, 9))
        f = rng.random((n, d)) * (rng.random((n, d)) < 0.3)
        out.append((torch.tensor(f, dtype=torch.float32), rng.integers(0, vocab, n), np.full(n, doc)))
    return out, d, vocab


def test_merged_shards_equal_one_accumulator(tmp_path):
    stream, d, vocab = _stream()
    whole = StatsAccumulator(d, vocab, n_examples=4)
    for f, ids, docs in stream:
        whole.add(f, ids, docs)
    one = whole.result()
    parts = []
    for lo, hi in ((0, 4), (4, 5), (5, 9)):  # shards of 4, 1 and 4 documents, rows counted from 0 in each
        acc = StatsAccumulator(d, vocab, n_examples=4)
        for f, ids, docs in stream[lo:hi]:
            acc.add(f, ids, docs - lo)
        path = tmp_path / f"s{lo}.npz"
        save_stats(acc.result(rows=hi - lo), path)  # through the file, as the cache stores them
        parts.append(load_stats(path))
    merged = merge_stats(parts)
    for name in ("active", "doc_freq", "ids", "docs", "top_val", "top_pos"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(one, name), err_msg=name)
    assert merged.n_docs == one.n_docs and merged.rows == one.rows == 9
    np.testing.assert_allclose(merged.mass.toarray(), one.mass.toarray(), rtol=1e-12)
    with pytest.raises(ValueError, match="different shapes"):
        merge_stats([parts[0], StatsAccumulator(d, vocab + 1, n_examples=4).result()])


def test_labels_read_the_feature_pass_statistics(model, sae, tmp_path, monkeypatch):
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path / "cache"))
    loaded = LoadedModel(model, "tiny", "w0")
    ids = [f"d{k}" for k in range(len(DOCS))]
    spec = ExtractionSpec(batch_tokens=24)
    with_stats = cached_extract_many(loaded, [(sae, spec)], DOCS, ids, shard_size=3, label_stats=True)[0]
    plain = cached_extract(loaded, sae, DOCS, ids, spec, Execution(shard_size=3, root=tmp_path / "plain"))
    assert (with_stats.matrix != plain.matrix).nnz == 0  # the statistics change no feature
    folder = tmp_path / "cache" / "features"
    stored = sorted(folder.rglob("*.stats10.npz"))
    assert len(stored) == 3  # one per shard (the blank text is skipped inside its shard)

    calls = []
    real = shards_mod.extract_features_many

    def counted(*args, **kwargs):
        calls.append(kwargs.get("doc_ids"))
        return real(*args, **kwargs)

    monkeypatch.setattr(shards_mod, "extract_features_many", counted)
    shared = latent_labels(loaded, sae, DOCS, ids, spec=spec, shard_size=3, cache=False)
    assert calls == []  # no language-model pass: every shard's statistics were stored by the feature pass

    stored[1].unlink()  # one shard's statistics lost: only that shard is encoded again
    again = latent_labels(loaded, sae, DOCS, ids, spec=spec, shard_size=3, cache=False)
    assert len(calls) == 1 and len(calls[0]) == 3
    assert stats_path(stored[0].with_name("x.npz")).parent == stored[0].parent  # beside the feature shards

    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path / "fresh"))  # from scratch, no stored statistics
    fresh = latent_labels(loaded, sae, DOCS, ids, spec=spec, shard_size=3, cache=False)
    assert len(calls) == 4
    for got in (shared, again):
        pd.testing.assert_frame_equal(got.table, fresh.table)
        pd.testing.assert_frame_equal(got.examples, fresh.examples)
    assert set(fresh.examples["doc_id"]) <= set(ids) - {"d2"}
