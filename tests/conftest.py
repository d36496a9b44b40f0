"""Shared fixtures: small synthetic panels for unit tests, the bundled real data for the sanity tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finsae.data import Prices, ReturnsPanel, load_prices, load_universe


def synthetic_prices(n_tickers: int = 12, n_days: int = 400, seed: int = 0, n_factors: int = 3) -> Prices:
    """Daily prices with a factor structure: ticker k loads on factor k % n_factors (so groups co-move)."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2015-01-01", periods=n_days, name="date")
    factors = rng.normal(0, 0.01, (n_days, n_factors))
    loads = np.zeros((n_factors, n_tickers))
    loads[np.arange(n_tickers) % n_factors, np.arange(n_tickers)] = 1.0
    rets = factors @ loads + rng.normal(0, 0.01, (n_days, n_tickers))
    close = 50 * np.exp(np.cumsum(rets, axis=0))
    cols = pd.Index([f"T{i:02d}" for i in range(n_tickers)], name="ticker")
    return Prices(pd.DataFrame(close, index=dates, columns=cols), "synthetic")


def synthetic_panel(
    n_periods: int = 60, n_tickers: int = 12, seed: int = 0, nan_share: float = 0.0
) -> ReturnsPanel:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n_periods, 3))
    x = factors[:, np.arange(n_tickers) % 3] + rng.normal(size=(n_periods, n_tickers))
    if nan_share:
        x[rng.random(x.shape) < nan_share] = np.nan
    idx = pd.period_range("2015-01", periods=n_periods, freq="M").to_timestamp("M")
    cols = pd.Index([f"T{i:02d}" for i in range(n_tickers)], name="ticker")
    return ReturnsPanel(pd.DataFrame(x, index=idx, columns=cols), "monthly", idx[0], idx[-1],
                        pd.Series(dtype="string", name="reason"))


@pytest.fixture(scope="session")
def universe():
    return load_universe()


@pytest.fixture(scope="session")
def prices():
    return load_prices()


# ---------------------------------------------------------------- a tiny language model and SAE

WORDS = (
    "the company makes sells phones chips banks lend money loans customers in ohio texas real estate trusts "
    "own offices malls oil gas drilling software cloud services retail stores food drinks insurance policies "
    "die firma verkauft autos 会社 は 銀行 です"
).split()
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """A word-level tokenizer with BOS/EOS/PAD/UNK, saved and reloaded as TransformerLens expects."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    folder = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(folder)  # reloaded from disk, as TransformerLens expects (name_or_path)
    return PreTrainedTokenizerFast.from_pretrained(folder)


@pytest.fixture(scope="session")
def model(tokenizer):
    """A tiny randomly initialised HookedTransformer (3 layers, d_model 32)."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=3, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=64,
                                  d_vocab=len(tokenizer), act_fn="gelu", normalization_type="LN",
                                  default_prepend_bos=True, positional_embedding_type="standard")
    return HookedTransformer(cfg, tokenizer=tokenizer).eval()


def tiny_sae(folder, hook: str = HOOK, d_sae: int = 96, k: int = 8, seed: int = 1, context: int = 16):
    """A random TopK SAE for the tiny model (``d_in`` 32) on ``hook``, saved to ``folder`` and loaded back."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from finsae.extract import load_sae

    torch.manual_seed(seed)
    cfg = TopKSAEConfig(d_in=32, d_sae=d_sae, k=k, metadata=SAEMetadata(hook_name=hook, context_size=context,
                                                                        model_name="tiny"))
    sae = TopKSAE(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sae.save_model(str(folder))
    return load_sae(folder)


@pytest.fixture(scope="session")
def sae(tmp_path_factory):
    """A random TopK SAE on the tiny model's layer-1 residual stream, saved to and loaded from disk."""
    return tiny_sae(tmp_path_factory.mktemp("sae"))
