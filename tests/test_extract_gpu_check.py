"""benchmarks/gpu_extract_check.py on CPU with a tiny random model (#18 item 4): the GPU check's code path
runs and reports what it promises; float32 against the float32 reference agrees exactly, bfloat16 nearly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_extract_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_extract_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_runs_on_cpu_with_a_tiny_model(tmp_path):
    check = _script()
    same = check.main(
        ["--device", "cpu", "--tiny", "--dtype", "float32", "--docs", "24", "--compare-docs", "8"]
    )
    a = same["agreement_with_cpu_float32"]
    assert (
        a["mean_jaccard_active_latents"]
        == a["top1_latent_same_share"]
        == a["cpu_top8_still_active_share"]
        == 1.0
    )
    out = tmp_path / "gpu.json"
    bf16 = check.main(["--device", "cpu", "--tiny", "--docs", "24", "--compare-docs", "8", "--out", str(out)])
    assert json.loads(out.read_text()) == bf16
    assert bf16["dtype"] == bf16["sae_dtype"] == "bfloat16" and bf16["documents"] == 24 and bf16["tokens"] > 0
    assert (
        bf16["tokens_per_second"] > 0 and bf16["peak_rss_mib"] > 0 and bf16["device_peak_memory_mib"] is None
    )
    b = bf16["agreement_with_cpu_float32"]
    assert b["documents"] == 8 and b["tokens"] > 0
    assert 0.5 < b["mean_jaccard_active_latents"] <= 1.0 and b["pooled_cosine_min"] > 0.95
