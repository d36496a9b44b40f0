"""Extraction throughput (tokens/s) against the machine's float32 roofline, with one and with two SAEs.

Measures the machine's matrix-product rate (float32 and bfloat16, best of several, on the model's MLP shape)
and counts the model's FLOPs per token to the hook (every matrix product of the blocks up to the hook,
attention scores and values at the tokens' actual positions; elementwise work not counted), then reports for
the bundled 2017 descriptions (or the first --docs of them), from scratch (no feature cache):

* the forward pass alone to the hook (eager and compiled blocks) in the extraction's own batches: tokens/s and
  the share of the roofline ``(matmul FLOP/s) / (FLOPs per token)``; the padding share of those batches;
* the whole extraction (tokenize, forward, SAE encode, pool) with the first SAE, with all SAEs from one pass
  (``extract_features_many``) and, for comparison, with the SAEs one after the other (``--separate``):
  tokens/s, the cost of the other SAEs, and the roofline share counting the SAE encodes' FLOPs too; with
  ``--label-stats`` also the one pass that gathers every SAE's latent-label statistics, as the benchmark does;
* the process's peak resident memory; with --hf, the truncated transformers model against TransformerLens.

    python benchmarks/extract_throughput.py [--docs 1484] [--sae DIR --sae DIR ...] [--dtype float32]
        [--batch-tokens 4096] [--compile both|on|off] [--separate] [--label-stats] [--hf] [--forward-only]
        [--out results/bench/extract_throughput.json]

The padding share depends on how many documents are batched: the first 100 descriptions pad 8.4% of their
batches, all 1,484 only 0.9% (the extraction's own case), so the roofline share is measured on every document.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine

from finsae.data import load_universe
from finsae.extract import extract_features, extract_features_many, load_model, load_sae
from finsae.extract.features import (
    ResidualForward,
    clean_texts,
    document_chunks,
    hook_layer,
    length_batches,
    padded_batch,
)
from finsae.extract.sae import DEFAULT_SAE_DIR
from finsae.extract.tokenstats import StatsAccumulator


def matmul_flops(dtype: torch.dtype, m: int = 4096, k: int = 640, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of ``[m, k] @ [k, n]`` (the model's MLP shape at a batch of ``m``
    tokens)."""
    a, w = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    torch.mm(a, w)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(3):
            torch.mm(a, w)
        best = min(best, (time.perf_counter() - t0) / 3)
    return 2 * m * k * n / best


def model_flops_per_token(cfg, layer: int, mean_position: float) -> float:
    """Matrix-product FLOPs per token of blocks ``0..layer``: Q, K, V, O projections, the MLP (gated or not)
    and the attention scores and weighted values over ``mean_position + 1`` keys (causal: a token attends to
    itself and the tokens before it)."""
    d, h, dh = cfg.d_model, cfg.n_heads, cfg.d_head
    kv = getattr(cfg, "n_key_value_heads", None) or h
    mlp = (3 if cfg.gated_mlp else 2) * d * cfg.d_mlp
    proj = d * h * dh + 2 * d * kv * dh + h * dh * d
    scores_and_values = 2 * 2 * h * dh * (mean_position + 1)
    return (layer + 1) * (2 * (proj + mlp) + scores_and_values)


def forward_only(model, chunks, batch_tokens: int, layer: int, compiled: bool, repeats: int) -> float:
    """Best-of-``repeats`` tokens/s (real tokens, BOS included) of the forward pass to block ``layer`` in the
    extraction's batches."""
    forward = ResidualForward(model, layer, compile=compiled)
    batches = [padded_batch(model.tokenizer, b)[0] for b in length_batches(chunks, batch_tokens)]
    if compiled:
        for x in batches[:3]:
            forward(x)  # compile outside the clock
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in batches:
            forward(x)
        best = min(best, time.perf_counter() - t0)
    return sum(len(c.tokens) for c in chunks) / best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=None)
    parser.add_argument("--sae", action="append", default=None,
                        help="SAE directory (repeat for two; default: both shipped SAEs)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-tokens", type=int, default=4096, help="the feature cache's default is 4096")
    parser.add_argument("--compile", default="both", choices=["both", "on", "off"],
                        help="eager blocks, compiled blocks, or both (compared)")
    parser.add_argument("--separate", action="store_true", help="also time the two SAEs one after the other")
    parser.add_argument("--label-stats", action="store_true",
                        help="also time the one pass gathering every SAE's latent-label statistics "
                             "(as finsae benchmark does)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many interleaved runs")
    parser.add_argument("--forward-only", action="store_true",
                        help="time the forward pass alone (skip the whole extraction): the roofline figure "
                             "on every document in minutes rather than tens of minutes")
    parser.add_argument(
        "--hf", action="store_true", help="also compare with the truncated transformers model"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sae_dirs = args.sae or [str(DEFAULT_SAE_DIR), str(DEFAULT_SAE_DIR.parent / "gemma-3-270m-l3-5120")]

    roof = {str(dt).replace("torch.", ""): matmul_flops(dt) for dt in (torch.float32, torch.bfloat16)}
    main_dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
    rates = [roof[args.dtype]]  # measured again between the runs: the best is the machine's rate
    for name, value in roof.items():
        print(
            f"matmul 4096x640 @ 640x2048 in {name}: {value / 1e9:,.1f} GFLOP/s (best of 5)", file=sys.stderr
        )
    texts = list(load_universe().descriptions("2017"))[: args.docs]
    t0 = time.perf_counter()
    loaded = load_model(dtype=args.dtype, device="cpu")
    saes = [load_sae(d, dtype=args.dtype) for d in sae_dirs]
    model = loaded.model
    print(f"cpu, {torch.get_num_threads()} threads, dtype {args.dtype}; load {time.perf_counter() - t0:.1f} "
          "s; SAEs "
          + ", ".join(f"{s.cfg.metadata.hook_name} d_sae={s.cfg.d_sae}" for s in saes), file=sys.stderr)
    layer = max(hook_layer(s.cfg.metadata.hook_name) for s in saes)
    max_length = int(saes[0].cfg.metadata.context_size or 512)
    keep, _ = clean_texts(texts)
    chunks = document_chunks(model.tokenizer, texts, keep, max_length, 0)
    positions = [p for c in chunks for p in range(len(c.tokens))]
    mean_pos = sum(positions) / len(positions)
    padded = sum(len(b) * max(len(c.tokens) for c in b) for b in length_batches(chunks, args.batch_tokens))
    flops = model_flops_per_token(model.cfg, layer, mean_pos)
    sae_flops = [2 * int(s.cfg.d_in) * int(s.cfg.d_sae) for s in saes]
    result: dict = {"machine": machine(), "threads": torch.get_num_threads(), "dtype": args.dtype,
                    "matmul_gflops": {k: round(v / 1e9, 1) for k, v in roof.items()},
                    "hook_layer": layer, "documents": len(keep), "chunks": len(chunks),
                    "tokens_with_bos": len(positions), "padding_share": round(1 - len(positions) / padded, 4),
                    "model_mflop_per_token": round(flops / 1e6, 2),
                    "sae_mflop_per_token": [round(f / 1e6, 2) for f in sae_flops],
                    "forward": {}, "extract": {}}
    print(f"{len(keep)} documents, {len(chunks)} chunks, {len(positions):,} tokens (mean position "
          f"{mean_pos:.0f}); padding {result['padding_share']:.1%} of the batches; {flops / 1e6:.1f} "
          f"MFLOP/token to layer {layer}",
          file=sys.stderr)
    modes = [False, True] if args.compile == "both" else [args.compile == "on"]
    with torch.inference_mode():
        for compiled in modes:
            tps = forward_only(model, chunks, args.batch_tokens, layer, compiled, args.repeats)
            rates.append(matmul_flops(main_dtype))
            label = "compiled" if compiled else "eager"
            result["forward"][label] = {"tokens_per_second": round(tps)}
            print(f"forward to layer {layer} ({label}): {tps:,.0f} tokens/s", file=sys.stderr)
    runs: dict = {}
    for compiled in [] if args.forward_only else modes:
        label = "compiled" if compiled else "eager"
        if compiled:  # compile once outside the clock (inductor caches kernels on disk afterwards)
            extract_features_many(
                model, [(s, "sum") for s in saes], texts[:20], batch_tokens=args.batch_tokens, compile=True
            )
        t1 = t2 = apart = with_stats = float("inf")
        ratios = []
        for _ in range(args.repeats):  # interleaved, best of: the machine may be shared
            one = extract_features(model, saes[0], texts, batch_tokens=args.batch_tokens, progress=False,
                                   compile=compiled)
            both = extract_features_many(
                model,
                [(s, "sum") for s in saes],
                texts,
                batch_tokens=args.batch_tokens,
                progress=False,
                compile=compiled,
            )
            # same features
            assert all(a.matrix.nnz for a in both) and (both[0].matrix != one.matrix).nnz == 0
            t1, t2 = min(t1, one.manifest["seconds"]), min(t2, both[0].manifest["seconds"])
            ratios.append(both[0].manifest["seconds"] / one.manifest["seconds"])
            if args.label_stats:
                vocab = int(max(len(model.tokenizer), model.cfg.d_vocab))
                accs = [StatsAccumulator(int(s.cfg.d_sae), vocab) for s in saes]
                st = extract_features_many(model, [(s, "sum") for s in saes], texts,
                                           batch_tokens=args.batch_tokens, progress=False, compile=compiled,
                                           stats=list(accs))
                with_stats = min(with_stats, st[0].manifest["seconds"])
            if args.separate and len(saes) > 1:
                apart = min(apart, one.manifest["seconds"] + sum(
                    extract_features(model, s, texts, batch_tokens=args.batch_tokens, progress=False,
                                     compile=compiled).manifest["seconds"] for s in saes[1:]))
        rates.append(matmul_flops(main_dtype))
        n = one.manifest["tokens"]
        row = {
            "one_sae_tokens_per_second": round(n / t1),
            "two_saes_one_pass_tokens_per_second": round(n / t2),
            "second_sae_extra_share": round(t2 / t1 - 1, 3),
            "second_sae_extra_share_median_of_adjacent_runs": round(float(np.median(ratios)) - 1, 3),
            "one_sae_mflop_per_token": round((flops + sae_flops[0]) / 1e6, 2),
            "two_saes_mflop_per_token": round((flops + sum(sae_flops)) / 1e6, 2),
        }
        if apart < float("inf"):
            row["two_saes_separately_tokens_per_second"] = round(n / apart)
        if with_stats < float("inf"):
            row["saes_with_label_stats_tokens_per_second"] = round(n / with_stats)
            row["label_stats_extra_share"] = round(with_stats / t2 - 1, 3)
        runs[label] = row
        print(f"extract ({label}): one SAE {n / t1:,.0f} tokens/s, two SAEs in one pass {n / t2:,.0f} "
              f"tokens/s ({t2 / t1 - 1:+.0%} time for the second SAE; median of adjacent runs "
              f"{np.median(ratios) - 1:+.0%})"
              + (f", two SAEs separately {row['two_saes_separately_tokens_per_second']:,} tokens/s"
                 if "two_saes_separately_tokens_per_second" in row else "")
              + (f"; with every SAE's label statistics {row['saes_with_label_stats_tokens_per_second']:,} "
                 f"tokens/s ({row['label_stats_extra_share']:+.0%})"
                 if "label_stats_extra_share" in row else ""), file=sys.stderr)
    result["extract"] = runs
    rates.append(matmul_flops(main_dtype))
    peak = max(rates)
    result["matmul_gflops_measured"] = [round(r / 1e9, 1) for r in rates]
    result["roofline_gflops"] = round(peak / 1e9, 1)
    result["roofline_tokens_per_second"] = round(peak / flops)
    result["target_tokens_per_second"] = round(0.8 * peak / flops)
    for label, row in result["forward"].items():
        row["roofline_share"] = round(row["tokens_per_second"] * flops / peak, 3)
        print(
            f"forward to layer {layer} ({label}): {row['roofline_share']:.0%} of the roofline",
            file=sys.stderr,
        )
    for label, row in runs.items():
        row["one_sae_roofline_share"] = round(
            row["one_sae_tokens_per_second"] * row["one_sae_mflop_per_token"] * 1e6 / peak, 3
        )
        row["two_saes_roofline_share"] = round(row["two_saes_one_pass_tokens_per_second"]
                                               * row["two_saes_mflop_per_token"] * 1e6 / peak, 3)
        print(f"extract ({label}): one SAE {row['one_sae_roofline_share']:.0%}, two SAEs "
              f"{row['two_saes_roofline_share']:.0%} of the roofline (SAE encodes counted)", file=sys.stderr)
    print(
        f"roofline: best of {len(rates)} matmul measurements {peak / 1e9:,.1f} GFLOP/s (all: "
        + ", ".join(f"{r / 1e9:.0f}" for r in rates)
        + f") -> {peak / flops:,.0f} tokens/s to layer {layer}; "
        f"target (80%) {0.8 * peak / flops:,.0f}",
        file=sys.stderr,
    )
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if args.hf:
        result["hf_vs_transformer_lens"] = hf_forward_comparison(loaded, texts[:64], layer)
    emit(result, args.out)


def hf_forward_comparison(loaded, texts: list[str], layer: int) -> dict:
    """The same padded batch through the Hugging Face model truncated after ``layer`` (its output read by a
    forward hook, before any final norm) against TransformerLens' ``blocks.<layer>.hook_resid_post``."""
    from transformers import AutoModelForCausalLM

    from finsae.extract.model import default_checkpoint_dir

    tok = loaded.model.tokenizer
    ids = [tok(x, add_special_tokens=False)["input_ids"][:255] for x in texts]
    x = torch.full((len(ids), max(map(len, ids)) + 1), tok.pad_token_id)
    for i, s in enumerate(ids):
        x[i, 0] = tok.bos_token_id
        x[i, 1: len(s) + 1] = torch.tensor(s)
    n = sum(len(s) + 1 for s in ids)
    hf = AutoModelForCausalLM.from_pretrained(str(default_checkpoint_dir()), dtype=torch.float32).eval()
    inner = hf.model
    inner.layers = inner.layers[: layer + 1]
    captured = {}
    inner.layers[layer].register_forward_hook(
        lambda mod, inp, out: captured.update(x=out[0] if isinstance(out, tuple) else out)
    )
    hook = f"blocks.{layer}.hook_resid_post"
    out = {}
    with torch.inference_mode():
        _, cache = loaded.model.run_with_cache(x, names_filter=hook, stop_at_layer=layer + 1)
        inner(input_ids=x)
        ref, got = cache[hook], captured["x"]
        out["relative_difference"] = float((got - ref).norm() / ref.norm())
        for name, fn in (("transformer_lens", lambda: loaded.model.run_with_cache(x, names_filter=hook,
                                                                                  stop_at_layer=layer + 1)),
                         ("transformers_truncated", lambda: inner(input_ids=x))):
            fn()
            t0 = time.perf_counter()
            fn()
            out[f"{name}_tokens_per_second"] = round(n / (time.perf_counter() - t0))
    return out


if __name__ == "__main__":
    main()
