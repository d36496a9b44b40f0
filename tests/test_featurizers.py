"""scikit-learn featurizers: nothing loaded in __init__, clone/pickle safe, one row per text, empty
handling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone

from finsae.errors import DataError
from finsae.extract.featurizers import EmbeddingFeaturizer, SAEFeaturizer, tfidf_vectorizer

TEXTS = [
    "Banks lend money to customers in Ohio.",
    "The company designs semiconductors and chips.",
    "A real estate investment trust owning shopping malls.",
    "Regional bank offering loans and deposits.",
]


def test_init_loads_nothing_and_clones():
    f = SAEFeaturizer(pooling="max", sae="/nowhere")
    assert not hasattr(f, "model_") and f.get_params()["pooling"] == "max"
    g = clone(f)
    assert g.get_params() == f.get_params() and g is not f
    e = EmbeddingFeaturizer(batch_size=8)
    assert not hasattr(e, "model_") and clone(e).get_params()["batch_size"] == 8


def test_embedding_featurizer_offline():
    e = EmbeddingFeaturizer().fit()
    x = e.transform(TEXTS)
    assert x.shape == (4, 384) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sim = x @ x.T
    assert sim[0, 3] > sim[0, 1]  # the two banks are closer than a bank and a chip maker
    assert len(e.get_feature_names_out()) == 384
    restored = pickle.loads(pickle.dumps(e))
    assert not hasattr(restored, "model_")  # the model is not pickled; it reloads on use
    np.testing.assert_allclose(restored.transform(TEXTS[:1]), x[:1], atol=1e-6)
    with pytest.raises(DataError, match=r"missing or blank at positions \[1\]"):
        e.transform(["ok text", "   "])
    z = EmbeddingFeaturizer(on_empty="zero").fit().transform(["ok text", None])
    assert (z[1] == 0).all() and (z[0] != 0).any()


def test_tfidf_drops_words_used_by_more_than_a_quarter():
    docs = ["company bank loans", "company chips design", "company malls retail", "company bank deposits",
            "company oil gas", "company software cloud", "bank loans mortgage", "chips design fabs"]
    vec = tfidf_vectorizer(max_df=0.25, min_df=2)
    vec.fit(docs)
    vocab = set(vec.get_feature_names_out())
    assert "company" not in vocab and "bank" not in vocab  # in 7 and 3 of 8 documents
    assert {"loans", "chips", "design"} <= vocab


def test_sae_featurizer_rows_and_empty_texts(monkeypatch, model, sae):
    from finsae.extract import LoadedModel, LoadedSAE

    from .conftest import HOOK

    def fake_load(self):
        self.model_, self.sae_ = LoadedModel(model, "tiny", "w"), LoadedSAE(sae)
        self.n_features_out_, self.hook_ = int(sae.cfg.d_sae), HOOK

    monkeypatch.setattr(SAEFeaturizer, "_load", fake_load)
    texts = ["the company makes phones", "", "banks lend money"]
    with pytest.raises(DataError, match="positions \\[1\\]"):
        SAEFeaturizer(cache=False).fit().transform(texts)
    f = SAEFeaturizer(cache=False, on_empty="zero").fit()
    x = f.transform(texts)
    assert x.shape == (3, 96) and x[1].nnz == 0 and x[0].nnz > 0 and f.empty_ == [1]
    assert f.get_feature_names_out()[0] == "sae_0"
    state = pickle.loads(pickle.dumps(f)).__dict__
    assert "model_" not in state and "sae_" not in state


def test_embedding_cache_hit_and_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path))
    e = EmbeddingFeaturizer(cache=True).fit()
    x = e.transform(TEXTS)
    path = tmp_path / "embeddings"
    files = list(path.glob("*.npy"))
    assert len(files) == 1 and e.cache_path_ == str(files[0])
    np.testing.assert_array_equal(np.load(files[0]), x)
    hit = EmbeddingFeaturizer(cache=True).fit()
    np.testing.assert_array_equal(hit.transform(TEXTS), x)  # a hit ...
    assert getattr(hit, "model_", None) is None  # ... that never loaded the model
    files[0].write_bytes(b"garbage")  # unreadable: recomputed, not a crash
    np.testing.assert_allclose(EmbeddingFeaturizer(cache=True).fit().transform(TEXTS), x, atol=1e-6)
    EmbeddingFeaturizer(cache=True).fit().transform(TEXTS[:2])  # other texts: another entry
    assert len(list(path.glob("*.npy"))) == 2


def test_minilm_reads_the_whole_text_in_chunks():
    short = "A regional bank holding company offering loans and deposits."
    tail = " It also operates a large chain of pet grooming salons across the Midwest." * 40
    long = "A regional bank holding company offering loans and deposits." + tail
    chunked = EmbeddingFeaturizer().fit()
    plain = EmbeddingFeaturizer(chunk=False).fit()
    # a text within the window: the same vector either way
    np.testing.assert_allclose(chunked.transform([short]), plain.transform([short]), atol=1e-5)
    chunks, owner, sizes = chunked._windows([long])
    assert len(chunks) >= 3 and (owner == 0).all() and sizes.sum() > 256
    # what lies beyond the first 256 tokens changes the chunked vector, not the truncated one
    long = long + " The group also runs pet grooming salons and animal clinics." * 20
    other = (
        "A regional bank holding company offering loans and deposits." + tail + " It also smelts steel." * 40
    )
    assert np.abs(plain.transform([long]) - plain.transform([other])).max() < 1e-3
    assert np.abs(chunked.transform([long]) - chunked.transform([other])).max() > 1e-2
    v = chunked.transform([long])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
