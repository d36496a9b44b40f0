"""Extraction on a Ray cluster: the missing shards of a cached extraction, one model replica per worker.

``ray.init()`` starts a local cluster on one machine; ``address="ray://head:10001"`` (or ``"auto"`` on a
cluster node) joins a real one with the same code. Each worker is a Ray actor that loads the model and the SAE
once, in its own process (on its own GPU where the cluster has GPUs), encodes the shards it is given and
writes each one to the feature cache atomically, under the same content keys as the local backend; the driver
only hands out shards and reads the finished files back, so the features are exactly those of one process.

Failures: a worker that dies (killed, out of memory, a lost node) is replaced and its shard handed out again,
up to ``max_failures`` times; past that the job stops with an error, and a rerun computes only the shards that
are still missing (finished shards are already in the cache). On a multi-node cluster the cache folder must be
on a file system every node sees (``$FINSAE_CACHE_DIR``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from finsae.errors import ConfigError
from finsae.extract.features import FeatureSet
from finsae.extract.model import LoadedModel
from finsae.extract.sae import SAESource, as_sae_source
from finsae.extract.shards import Shard, ShardPlan, compute_shard
from finsae.parallel import ensure_ray, import_ray, ray_schedule

if TYPE_CHECKING:
    from sae_lens import SAE

logger = logging.getLogger(__name__)

#: ``compute(loaded, sae, plan, shard) -> FeatureSet``: encodes one shard and writes its file.
ShardCompute = Callable[[LoadedModel, SAESource, ShardPlan, Shard], FeatureSet]


class ShardWorker:
    """A Ray actor: loads the model and the SAE once, on its own device, then encodes shards (see the module
    docstring). ``loaded`` is :meth:`LoadedModel.portable`: it loads in the worker, not in the driver."""

    def __init__(self, loaded: LoadedModel, sae: SAESource, plan: ShardPlan, threads: int | None,
                 compute: ShardCompute | None) -> None:
        import torch  # heavy optional import: only in a worker process

        if threads:
            torch.set_num_threads(threads)
        self.loaded, self.plan = loaded, plan
        self.compute = compute or compute_shard
        self._given = sae
        self._sae: SAESource | None = None

    def _source(self) -> SAESource:
        """The SAE on this worker's device (made on the first shard, so a bad SAE is that shard's error)."""
        if self._sae is None:
            import torch

            self._sae = self._given.on_device("cuda" if torch.cuda.is_available() else "cpu")
        return self._sae

    def run(self, shard: Shard) -> dict[str, Any]:
        sae = self._source()
        t0 = time.perf_counter()
        fs = self.compute(self.loaded, sae, self.plan, shard)
        return {"index": shard.index, "tokens": int(fs.manifest.get("tokens", 0)),
                "seconds": float(fs.manifest.get("seconds", time.perf_counter() - t0)),
                "host": socket.gethostname(), "pid": os.getpid()}


def ray_compute_shards(loaded: LoadedModel, sae: SAESource | SAE, plan: ShardPlan, missing: list[Shard], *,
                       workers: int | None = None, address: str | None = None,
                       cpus_per_worker: float | None = None, gpus_per_worker: float | None = None,
                       max_failures: int | None = None, progress: bool | None = None,
                       compute: ShardCompute | None = None) -> dict[str, Any]:
    """Compute ``missing`` shards of ``plan`` on Ray workers; each writes its shards to the cache.

    ``workers`` defaults to one per GPU of the cluster, else one per ``cpus_per_worker`` CPUs (default 1).
    ``compute(loaded, sae, plan, shard) -> FeatureSet`` replaces :func:`finsae.extract.shards.compute_shard`
    (it must write the shard). Returns ``{"workers", "seconds" (summed worker compute time), "wall_seconds",
    "tokens", "failures"}``."""
    ray = import_ray()
    started = ensure_ray(address)
    t0 = time.perf_counter()
    try:
        resources = ray.cluster_resources()
        n_gpus = int(resources.get("GPU", 0))
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if n_gpus else 0.0
        if cpus_per_worker is None:
            cpus_per_worker = 1.0
        if workers is None:
            workers = max(1, n_gpus if gpus_per_worker else int(resources.get("CPU", 1) // cpus_per_worker))
        if workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        workers = min(workers, len(missing))
        threads = max(1, int(cpus_per_worker)) if not gpus_per_worker else None
        actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
                               max_restarts=0)(ShardWorker)
        model_ref, sae_ref, plan_ref = ray.put(loaded.portable()), ray.put(as_sae_source(sae)), ray.put(plan)

        def spawn() -> Any:
            return actor_cls.remote(model_ref, sae_ref, plan_ref, threads, compute)

        actors = [spawn() for _ in range(workers)]
        spawned = list(actors)

        def replace(slot: int) -> None:
            actors[slot] = spawn()
            spawned.append(actors[slot])

        totals = {"tokens": 0, "seconds": 0.0}
        bar = tqdm(total=len(missing), desc=f"extract on {workers} Ray worker(s)", unit="shard",
                   disable=None if progress is None else not progress)

        def finished(_shard: Shard, info: dict[str, Any]) -> None:
            totals["tokens"] += info["tokens"]
            totals["seconds"] += info["seconds"]
            bar.update(1)
            bar.set_postfix_str(f"{totals['tokens'] / max(time.perf_counter() - t0, 1e-9):,.0f} tok/s")

        _, failures = ray_schedule(
            ray, missing, lambda slot, shard: actors[slot].run.remote(shard), slots=workers,
            describe=lambda shard: f"shard {shard.path.name}", replace_slot=replace,
            max_failures=workers if max_failures is None else max_failures, on_result=finished,
            lost_hint="; finished shards are in the cache, a rerun computes only the rest")
        bar.close()
        for actor in spawned:
            ray.kill(actor)
        wall = time.perf_counter() - t0
        logger.info("Ray extraction: %d shards on %d workers in %.1f s (%d failures)", len(missing), workers,
                    wall, failures)
        return {"workers": workers, "seconds": totals["seconds"], "wall_seconds": round(wall, 3),
                "tokens": int(totals["tokens"]), "failures": failures}
    finally:
        if started:
            ray.shutdown()
