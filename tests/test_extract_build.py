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
def test_lean_processing_gives_the_same_weights(norm, monkeypatch):
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
    from transformer_lens.weight_processing import ProcessWeights

    original, calls = ProcessWeights.process_weights, []

    def spy(state_dict, cfg, *args, **kwargs):  # what each processing call was given
        w_u = state_dict.get("unembed.W_U")
        calls.append((cfg.n_layers, None if w_u is None else w_u.shape[0]))
        return original(state_dict, cfg, *args, **kwargs)

    monkeypatch.setattr(ProcessWeights, "process_weights", staticmethod(spy))
    with _lean_processing(hf):  # tensors that require grad, as a Hugging Face model's parameters do
        lean.load_and_process_state_dict({k: v.clone().requires_grad_() for k, v in raw.items()})
    assert hf.weight.numel() == 0
    if norm == "RMS":  # the unembedding processed in place (not by TransformerLens), then block by block
        assert calls == [(1, None), (1, None), (1, None)]
    else:
        assert calls == [(3, 32)]  # LayerNorm models with centred weights: processed whole, as before
    a, b = plain.state_dict(), lean.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert HookedTransformer.load_and_process_state_dict.__name__ == "load_and_process_state_dict"  # restored
