"""Speed-up of the Ray backend with 2 local workers against 1, on the bundled data.

1. Extraction: the first ``--docs`` 2017 descriptions with the default model and SAE, into a fresh temporary
   cache (so every shard is computed), with 1 and then 2 Ray workers (each worker: one model replica, one CPU
   thread, model load included in the wall time). The two runs' features are checked to be identical.
2. Pair tests: all Engle-Granger tests of one formation window (252 days to 2019-12-31, every stock with
   complete prices), with 1 and 2 Ray tasks at a time, checked identical.

    python benchmarks/ray_speedup.py [--docs 240] [--out results/ray_speedup.json]

The speed-up is bounded by the machine: this project's machine has 2 cores, so 2 workers can at most double
the throughput of 1 single-threaded worker (and the local backend already uses both cores for one model).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit, machine


def _extract(
    workers: int, docs: list[str], ids: list[str], root: Path, shard_size: int
) -> tuple[float, object]:
    from finsae.extract import Execution, ExtractionSpec, cached_extract

    spec = ExtractionSpec(batch_tokens=8192)
    run = Execution(backend="ray", workers=workers, shard_size=shard_size, root=root)
    loaded = spec.load_model()
    t0 = time.perf_counter()
    fs = cached_extract(loaded, spec.sae_source(), docs, ids, spec, run)
    return time.perf_counter() - t0, fs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=240)
    ap.add_argument("--shard-size", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import ray

    from finsae.backtest.pairs import all_pairs, pair_tests
    from finsae.data import load_prices, load_universe
    from finsae.parallel import RayBackend

    texts = load_universe().descriptions("2017")
    docs, ids = list(texts.iloc[: args.docs]), list(texts.index[: args.docs])
    result: dict = {"machine": machine(),
                    "documents": len(docs)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        runs = {}
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                seconds, fs = _extract(workers, docs, ids, Path(tmp) / "features", args.shard_size)
                runs[workers] = (seconds, fs)
        (s1, f1), (s2, f2) = runs[1], runs[2]
        assert f1.doc_ids == f2.doc_ids and (f1.matrix != f2.matrix).nnz == 0, "features differ between runs"
        tokens = int(f1.manifest["tokens"])
        result["extraction"] = {
            "tokens": tokens,
            "shards": f1.manifest["shards"],
            "one_worker_s": round(s1, 1),
            "two_workers_s": round(s2, 1),
            "one_worker_tokens_per_s": round(tokens / s1),
            "two_workers_tokens_per_s": round(tokens / s2),
            "speedup": round(s1 / s2, 2),
            "identical": True,
        }
        print(json.dumps(result["extraction"]), flush=True)

        prices = load_prices()
        close = prices.close.loc[:"2019-12-31"].iloc[-252:]
        close = close.loc[:, close.notna().all()]
        logp = np.log(close.to_numpy())
        i, j = all_pairs(logp.shape[1])
        timings, outs = {}, {}
        for workers in (1, 2):
            backend = RayBackend(workers=workers)
            t0 = time.perf_counter()
            outs[workers] = pair_tests(logp, i, j, maxlag=1, backend=backend)
            timings[workers] = time.perf_counter() - t0
        same = all(np.array_equal(getattr(outs[1], f), getattr(outs[2], f), equal_nan=True)
                   for f in ("pvalue", "stat", "half_life", "hedge_ratio", "valid"))
        assert same, "pair tests differ between runs"
        result["pair_tests"] = {
            "stocks": logp.shape[1],
            "pairs": len(i),
            "one_worker_s": round(timings[1], 1),
            "two_workers_s": round(timings[2], 1),
            "speedup": round(timings[1] / timings[2], 2),
            "identical": True,
        }
        print(json.dumps(result["pair_tests"]), flush=True)
    finally:
        ray.shutdown()
    emit(result, args.out)


if __name__ == "__main__":
    main()
