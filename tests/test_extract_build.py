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


def _tiny_gguf(path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_one_gguf_parse_shares_one_reader_and_restores(tmp_path):
    """Inside ``one_gguf_parse`` every reader of the file is one parse and every metadata load one deep-copied
    result (what the conversion's tokenizer, config and weights read); other files and tensor loads take the
    real functions; both are restored afterwards, also after an error."""
    import gguf
    import numpy as np
    import transformers.modeling_gguf_pytorch_utils as tf_gguf

    from finsae.extract.model import one_gguf_parse

    path = _tiny_gguf(tmp_path / "tiny.gguf")
    other = _tiny_gguf(tmp_path / "other.gguf")
    real_reader, real_load = gguf.GGUFReader, tf_gguf.load_gguf_checkpoint
    calls = []
    counting = lambda p, *a, **k: calls.append(p) or real_load(p, *a, **k)  # noqa: E731
    tf_gguf.load_gguf_checkpoint = counting
    try:
        with one_gguf_parse(path) as reader:
            assert gguf.GGUFReader(str(path)) is reader
            assert gguf.GGUFReader(str(tmp_path / "." / "tiny.gguf")) is reader  # same file, other spelling
            assert gguf.GGUFReader(str(other)) is not reader
            first = tf_gguf.load_gguf_checkpoint(str(path), return_tensors=False)
            first["config"]["edited"] = True  # a caller's edit never reaches the next caller
            second = tf_gguf.load_gguf_checkpoint(str(path), return_tensors=False)
            assert "edited" not in second["config"] and second["config"] == real_load(str(path))["config"]
            assert len(calls) == 1  # one parse for both
            np.testing.assert_array_equal(reader.tensors[0].data.reshape(4, 8),
                                          np.arange(32, dtype=np.float32).reshape(4, 8))
        assert gguf.GGUFReader is real_reader and tf_gguf.load_gguf_checkpoint is counting
        with pytest.raises(RuntimeError), one_gguf_parse(path):
            raise RuntimeError("boom")
        assert gguf.GGUFReader is real_reader and tf_gguf.load_gguf_checkpoint is counting
        assert gguf.GGUFReader(str(path)) is not reader
    finally:
        tf_gguf.load_gguf_checkpoint = real_load
