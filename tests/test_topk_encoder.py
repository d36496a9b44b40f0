"""TopKEncoder (#18): sae_lens' TopK encode with less work, equal to ``sae.encode`` bit for bit, and the
plain ``sae.encode`` for any SAE it does not reproduce."""

from __future__ import annotations

import pytest
import torch

from finsae.extract.sae import DEFAULT_SAE_DIR, TopKEncoder

from .conftest import tiny_sae


def _reference(sae, x, mask):
    return sae.encode(x).float() * mask[..., None]


def _inputs(d_in: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 11, d_in, generator=g) * 2
    mask = torch.rand(3, 11, generator=g) > 0.3
    return x, mask


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("b_dec_in", [False, True])
def test_equals_sae_encode_bit_for_bit(tmp_path, rescale, b_dec_in):
    sae = tiny_sae(tmp_path, d_sae=96, k=8)
    sae.cfg.rescale_acts_by_decoder_norm = rescale
    sae.cfg.apply_b_dec_to_input = b_dec_in
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 96)[:, None])  # unequal decoder norms: rescaling matters
    x, mask = _inputs(32)
    enc = TopKEncoder(sae)
    assert enc.fast
    with torch.inference_mode():
        got, want = enc(x, mask), _reference(sae, x, mask)
        assert got.dtype == torch.float32 and got.shape == (3, 11, 96)
        assert got.numpy().tobytes() == want.numpy().tobytes()
        assert int((got[mask] > 0).sum(dim=-1).max()) <= 8 and not got[~mask].any()
        assert torch.equal(enc(x), sae.encode(x).float())  # no mask: encode itself


def test_bfloat16_sae_equals_encode(tmp_path):
    sae = tiny_sae(tmp_path).to(torch.bfloat16)
    x, mask = _inputs(32, seed=1)
    enc = TopKEncoder(sae)
    assert enc.fast
    with torch.inference_mode():
        assert torch.equal(enc(x, mask), _reference(sae, x.to(torch.bfloat16), mask))


def test_shipped_sae_equals_encode():
    from finsae.extract import load_sae

    sae = load_sae(DEFAULT_SAE_DIR)
    assert sae.cfg.rescale_acts_by_decoder_norm  # the case the encoder's precomputed norm is for
    x, mask = _inputs(int(sae.cfg.d_in), seed=2)
    enc = TopKEncoder(sae)
    assert enc.fast
    with torch.inference_mode():
        got, want = enc(x * 20, mask), _reference(sae, x * 20, mask)
    assert got.any() and got.numpy().tobytes() == want.numpy().tobytes()


def test_hooked_sae_takes_sae_encode(tmp_path):
    """A hook on the SAE (an ablation, a probe) must run: the encoder falls back to ``sae.encode``."""
    sae = tiny_sae(tmp_path)
    x, mask = _inputs(32, seed=3)
    handle = sae.hook_sae_acts_pre.register_forward_hook(lambda mod, inp, out: out * 0 + 1.0)
    try:
        enc = TopKEncoder(sae)
        assert not enc.fast
        with torch.inference_mode():
            got = enc(x, mask)
        assert torch.equal(got, _reference(sae, x, mask))
        assert torch.equal((got > 0).sum(-1)[mask], torch.full((int(mask.sum()),), 8))  # the hook's output
    finally:
        handle.remove()
    assert TopKEncoder(sae).fast


def test_other_architectures_take_sae_encode(tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=32, d_sae=40, metadata=SAEMetadata(hook_name="h"))).eval()
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, mask = _inputs(32, seed=4)
    enc = TopKEncoder(sae)
    assert not enc.fast
    with torch.inference_mode():
        assert torch.equal(enc(x, mask), _reference(sae, x, mask))
    topk = tiny_sae(tmp_path)
    topk.train()
    assert not TopKEncoder(topk).fast  # a training SAE may change between calls
