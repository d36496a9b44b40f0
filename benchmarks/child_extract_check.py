"""The benchmark's text features extracted in a forked child process against the same extraction in process
(issue #18): equal exactly, time and peak memory of each.

``finsae benchmark`` extracts every text method's features in a forked child by default
(``TextStage.prefetch``) so that the language model's memory never enters the benchmark's own process. This
script extracts the features of a config's text methods for the first ``--docs`` companies with text, once
each way, each in a fresh Python process with its own empty feature cache (the built model checkpoint and the
SAE digests of the user's cache are shared, so neither run pays the one-off model build), and prints:

* whether every method's feature matrix (and its tickers) is identical between the two (``np.array_equal``);
* each way's wall time of the extraction, the peak resident memory of the process that runs the benchmark
  (``ru_maxrss`` of itself) and of its children (the forked extractor).

    python benchmarks/child_extract_check.py [--docs 40] [--config backtests/forward_2017.yaml]
        [--vintage 2017] [--repeats 2] [--out results/bench/child_extract.json]

The two ways alternate (child, here, child, here, ...) so that a change in the host's load hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("models", "sae_digests")  # built once per machine; not what this script measures


def worker(config: Path, vintage: str, docs: int, in_child: bool, out: Path) -> None:
    """One extraction (run in a fresh process): every text method's features of ``vintage`` for the first
    ``docs`` companies with text, saved to ``out`` (npz) with the timings beside it (json)."""
    from finsae.config import load_benchmark_config
    from finsae.data import load_prices, load_universe
    from finsae.pipeline.textgroups import TextStage

    cfg = load_benchmark_config(config)
    universe = load_universe(cfg.data.companies)
    with_text = universe.descriptions(vintage).index
    universe = universe.subset(list(with_text[:docs]))
    prices = load_prices(cfg.data.prices, nonpositive=cfg.data.nonpositive_prices,
                         bad_ticks=cfg.data.bad_ticks, splits=cfg.data.splits)
    stage = TextStage(cfg, universe, prices, progress=False)
    t0 = time.perf_counter()
    stage.prefetch([vintage], in_child=in_child)
    seconds = time.perf_counter() - t0
    arrays = {}
    for m in cfg.text_methods:
        f = stage.features(m, vintage)  # prefetched: no extraction here
        matrix = f.matrix.toarray() if hasattr(f.matrix, "toarray") else f.matrix  # TF-IDF: sparse
        arrays[f"{m.name}.matrix"] = np.asarray(matrix)
        arrays[f"{m.name}.tickers"] = np.asarray(list(f.tickers), dtype=str)
    if in_child and "torch" in sys.modules:
        raise SystemExit("torch was imported in the benchmark process: a feature was extracted here, not in "
                         "the child")
    np.savez(out, **arrays)
    kib = 1024  # ru_maxrss is in KiB on Linux
    out.with_suffix(".json").write_text(json.dumps({
        "seconds": seconds,
        "self_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 2**20,
        "children_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / 2**20,
    }))


def run_once(config: Path, vintage: str, docs: int, in_child: bool, scratch: Path, tag: str) -> dict:
    """``worker`` in a fresh Python process with an empty feature cache; its features and timings."""
    from finsae._paths import cache_dir

    cache = scratch / f"cache_{tag}"
    cache.mkdir()
    user = cache_dir()
    for name in SHARED:
        if (user / name).exists():
            (cache / name).symlink_to(user / name)
    out = scratch / f"{tag}.npz"
    env = {**os.environ, "FINSAE_CACHE_DIR": str(cache)}
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from child_extract_check import worker; "
            "from pathlib import Path; worker(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), "
            "sys.argv[5] == '1', Path(sys.argv[6]))")
    subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(config), vintage, str(docs),
                    "1" if in_child else "0", str(out)], check=True, env=env, cwd=ROOT)
    with np.load(out) as z:
        arrays = {k: z[k] for k in z.files}
    return {"arrays": arrays, **json.loads(out.with_suffix(".json").read_text())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "backtests" / "forward_2017.yaml")
    ap.add_argument("--vintage", default="2017")
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"child": [], "in_process": []}
    with tempfile.TemporaryDirectory(prefix="finsae_child_check_") as tmp:
        for r in range(args.repeats):
            for way in runs:
                runs[way].append(run_once(args.config, args.vintage, args.docs, way == "child", Path(tmp),
                                          f"{way}_{r}"))
    reference = runs["in_process"][0]["arrays"]
    names = [k.removesuffix(".matrix") for k in reference if k.endswith(".matrix")]
    identical = {name: all(np.array_equal(run["arrays"][f"{name}.{part}"], reference[f"{name}.{part}"])
                           for way in runs.values() for run in way for part in ("matrix", "tickers"))
                 for name in names}
    emit({
        "machine": machine(),
        "config": str(args.config),
        "vintage": args.vintage,
        "docs": args.docs,
        "features_identical": identical,
        "all_identical": all(identical.values()),
        **{way: {"seconds": [round(run["seconds"], 2) for run in way_runs],
                 "benchmark_process_peak_mb": [round(run["self_peak_mb"]) for run in way_runs],
                 "child_peak_mb": [round(run["children_peak_mb"]) for run in way_runs]}
           for way, way_runs in runs.items()},
    }, args.out)


if __name__ == "__main__":
    main()
