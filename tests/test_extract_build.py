"""The first model build in less memory (#18 item 2): TransformerLens' weight processing inside
``_lean_processing`` gives the same weights, tensor for tensor, as the plain processing; the GGUF conversion
writes a valid safetensors file tensor by tensor."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from finsae.extract.model import _lean_processing


def _cfg(norm: str) -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=3,
        d_model=32,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        n_ctx=32,
        d_vocab=50,
        act_fn="gelu",
        normalization_type=norm,
        positional_embedding_type="rotary",
        gated_mlp=True,
        n_key_value_heads=2,
        final_rms=norm == "RMS",
    )


@pytest.mark.parametrize("norm", ["RMS", "LN"])
def test_lean_processing_gives_the_same_weights(norm):
    torch.manual_seed(0)
    donor = HookedTransformer(_cfg(norm))
    raw = {
        k: torch.randn_like(v) * 0.3 + (1.0 if k.endswith(".w") else 0.0)
        for k, v in donor.state_dict().items()
        if not k.endswith(("IGNORE", ".mask", "rotary_sin", "rotary_cos"))
    }
    plain = HookedTransformer(_cfg(norm))
    plain.load_and_process_state_dict({k: v.clone() for k, v in raw.items()})
    hf = torch.nn.Linear(4, 4)  # stands for the Hugging Face model whose parameters are released
    lean = HookedTransformer(_cfg(norm))
    with _lean_processing(hf):
        lean.load_and_process_state_dict({k: v.clone() for k, v in raw.items()})
    assert hf.weight.numel() == 0
    a, b = plain.state_dict(), lean.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert HookedTransformer.load_and_process_state_dict.__name__ == "load_and_process_state_dict"  # restored
