"""Explanations: latent labels against a brute-force per-token computation on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finsae.explain import latent_labels
from finsae.extract import LoadedModel

from .conftest import HOOK, WORDS

DOCS = ["the company makes phones and chips", "banks lend money loans to customers in ohio",
        "real estate trusts own offices malls", "oil gas drilling in texas", "software cloud services retail stores",
        "banks lend money loans in texas"]


def per_token_activations(model, sae, text):
    tokens = model.to_tokens(text)  # BOS + text
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=HOOK)
        feats = sae.encode(cache[HOOK])[0]
    return tokens[0], feats


def test_latent_labels_match_brute_force(model, sae, tmp_path, monkeypatch):
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path))
    ids = [f"D{k}" for k in range(len(DOCS))]
    res = latent_labels(LoadedModel(model, "tiny", "w0"), sae, DOCS, ids, n_examples=3, batch_tokens=16)
    d = int(sae.cfg.d_sae)
    best = np.zeros(d)
    best_doc = np.full(d, "", dtype=object)
    best_tok = np.full(d, "", dtype=object)
    active = np.zeros(d, dtype=int)
    for doc_id, text in zip(ids, DOCS, strict=True):
        tokens, feats = per_token_activations(model, sae, text)
        feats = feats[1:]  # BOS never counts
        active += (feats > 0).sum(dim=0).numpy()
        v, pos = feats.max(dim=0)
        for j in np.flatnonzero(v.numpy() > best):
            best[j] = float(v[j])
            best_doc[j] = doc_id
            best_tok[j] = model.tokenizer.decode([int(tokens[1 + int(pos[j])])])
    np.testing.assert_array_equal(res.table["n_active_tokens"].to_numpy(), active)
    top = res.examples[res.examples["rank"] == 0].set_index("latent")
    alive = np.flatnonzero(best > 0)
    assert set(top.index) == set(alive)
    np.testing.assert_allclose(top.loc[alive, "value"].to_numpy(), best[alive], rtol=1e-5)
    assert (top.loc[alive, "token"].to_numpy() == best_tok[alive]).all()
    assert all(f"[[{t}]]" in s for t, s in zip(top["token"], top["snippet"], strict=True))
    # ranks are in decreasing order of activation; dead latents say so
    for _, g in res.examples.groupby("latent"):
        assert (np.diff(g.sort_values("rank")["value"].to_numpy()) <= 1e-6).all()
    dead = np.flatnonzero(active == 0)
    assert all(res.label(int(j)) == "(never active)" for j in dead)
    words = set(WORDS)
    for j in alive[:20]:
        assert all(w in words for w in res.table.at[j, "top_tokens"])
    # a second call is a cache hit that needs no model
    again = latent_labels(LoadedModel(None, "tiny", "w0", loader=lambda: pytest.fail("model loaded")), sae, DOCS, ids,
                          n_examples=3)
    assert again.table["label"].tolist() == res.table["label"].tolist()
