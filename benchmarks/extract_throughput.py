"""End-to-end extraction throughput (tokens/s) and peak memory with the default model and the shipped SAE.

Encodes the bundled 2017 descriptions (or the first --docs of them) from scratch (no feature cache) and reports
tokens per second of the whole pipeline (tokenize, forward to the hook, SAE encode, pool) and the process's peak
resident memory. Also reports the forward pass alone at a few hook depths, because on a CPU without bf16
instructions the depth of the hook decides the speed.

    python benchmarks/extract_throughput.py [--docs 1484] [--sae DIR] [--dtype float32] [--batch-tokens 8192]
        [--compile both|on|off]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from finsae.data import load_universe
from finsae.extract import extract_features, load_model, load_sae
from finsae.extract.sae import DEFAULT_SAE_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=None)
    parser.add_argument("--sae", default=str(DEFAULT_SAE_DIR))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--compile", default="both", choices=["both", "on", "off"],
                        help="end-to-end run with eager blocks, compiled blocks, or both (compared)")
    args = parser.parse_args()

    a, w = torch.randn(8192, 640), torch.randn(640, 2048)
    for dt in (torch.float32, torch.bfloat16):  # bf16 is fast only on CPUs with bf16 instructions
        x, y = a.to(dt), w.to(dt)
        torch.mm(x, y)
        t0 = time.perf_counter()
        for _ in range(3):
            torch.mm(x, y)
        print(f"matmul 8192x640 @ 640x2048 in {str(dt).replace('torch.', '')}: "
              f"{3 * 2 * 8192 * 640 * 2048 / (time.perf_counter() - t0) / 1e9:,.1f} GFLOP/s")
    texts = list(load_universe().descriptions("2017"))[: args.docs]
    t0 = time.perf_counter()
    loaded = load_model(dtype=args.dtype)
    sae = load_sae(args.sae, dtype=args.dtype)
    print(f"device cpu, {torch.get_num_threads()} threads, dtype {args.dtype}; load {time.perf_counter() - t0:.1f} s; "
          f"SAE {sae.cfg.metadata.hook_name} d_sae={sae.cfg.d_sae}")
    runs = {}
    for compiled in ([False, True] if args.compile == "both" else [args.compile == "on"]):
        if compiled:  # compile once on a few documents, timed apart (inductor caches kernels on disk afterwards)
            t0 = time.perf_counter()
            extract_features(loaded.model, sae, texts[:40], batch_tokens=args.batch_tokens, compile=True)
            print(f"torch.compile of the blocks + 40 documents: {time.perf_counter() - t0:.1f} s")
        fs = extract_features(loaded.model, sae, texts, batch_tokens=args.batch_tokens, progress=False,
                              compile=compiled)
        m = fs.manifest
        runs[compiled] = fs
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"end to end{' (compiled blocks)' if compiled else ' (eager)'}: {m['documents']} documents, "
              f"{m['tokens']:,} tokens in {m['seconds']:.1f} s = {m['tokens_per_second']:,.0f} tokens/s; "
              f"peak RSS {peak:,.0f} MiB")
    if len(runs) == 2:
        a, b = runs[False].matrix.toarray(), runs[True].matrix.toarray()
        print(f"compiled vs eager features: max abs difference {abs(a - b).max():.2e} "
              f"(largest value {abs(a).max():.1f}); active in one only: {int(((a > 0) != (b > 0)).sum())} of "
              f"{int((a > 0).sum())} pooled entries")
    sample = texts[:64]
    tok = loaded.model.tokenizer
    ids = [tok(x, add_special_tokens=False)["input_ids"][:255] for x in sample]
    width = max(map(len, ids)) + 1
    x = torch.full((len(ids), width), tok.pad_token_id)
    for i, s in enumerate(ids):
        x[i, 0] = tok.bos_token_id
        x[i, 1: len(s) + 1] = torch.tensor(s)
    n = sum(len(s) + 1 for s in ids)
    with torch.inference_mode():
        for layer in (3, 6, 9, 17):
            hook = f"blocks.{layer}.hook_resid_post"
            t0 = time.perf_counter()
            loaded.model.run_with_cache(x, names_filter=hook, stop_at_layer=layer + 1)
            print(f"forward to {hook}: {n / (time.perf_counter() - t0):,.0f} tokens/s (64 documents, padded batch)")
    hf_forward_comparison(loaded, x, n)


def hf_forward_comparison(loaded, x: torch.Tensor, n: int, layer: int = 3) -> None:
    """The same padded batch through the Hugging Face model truncated after ``layer`` (its output read by a
    forward hook, before any final norm) against TransformerLens' ``blocks.<layer>.hook_resid_post``."""
    from transformers import AutoModelForCausalLM

    from finsae.extract.model import default_checkpoint_dir

    hf = AutoModelForCausalLM.from_pretrained(str(default_checkpoint_dir()), torch_dtype=torch.float32).eval()
    inner = hf.model
    inner.layers = inner.layers[: layer + 1]
    captured = {}
    inner.layers[layer].register_forward_hook(lambda mod, inp, out: captured.update(x=out[0] if isinstance(out, tuple) else out))
    hook = f"blocks.{layer}.hook_resid_post"
    with torch.inference_mode():
        _, cache = loaded.model.run_with_cache(x, names_filter=hook, stop_at_layer=layer + 1)
        inner(input_ids=x)
        ref, got = cache[hook], captured["x"]
        rel = float((got - ref).norm() / ref.norm())
        for name, fn in (("TransformerLens", lambda: loaded.model.run_with_cache(x, names_filter=hook,
                                                                                 stop_at_layer=layer + 1)),
                         ("transformers (truncated)", lambda: inner(input_ids=x))):
            fn()
            t0 = time.perf_counter()
            fn()
            print(f"forward to {hook} with {name}: {n / (time.perf_counter() - t0):,.0f} tokens/s")
    print(f"transformers vs TransformerLens activations at {hook}: relative difference {rel:.1e}")


if __name__ == "__main__":
    main()
