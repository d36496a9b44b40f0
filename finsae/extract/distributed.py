"""Extraction on a Ray cluster: the missing shards of a cached extraction, one model replica per worker.

``ray.init()`` starts a local cluster on one machine; ``address="ray://head:10001"`` (or ``"auto"`` on a cluster
node) joins a real one with the same code. Each worker is a Ray actor that loads the model and the SAE once, in
its own process (on its own GPU where the cluster has GPUs), encodes the shards it is given and writes each one
to the feature cache atomically, under the same content keys as the local backend; the driver only hands out
shards and reads the finished files back, so the features are exactly those of a single-process run.

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
from typing import Any

from tqdm.auto import tqdm

from finsae.errors import ConfigError, ProviderError
from finsae.extract.cache import Shard, ShardPlan, compute_shard
from finsae.parallel import ensure_ray, import_ray

logger = logging.getLogger(__name__)


def _portable_model(loaded):
    """What a worker rebuilds the model from: load arguments where known (each worker loads in its own process,
    on its own device), else the model object itself (small in-memory models)."""
    from finsae.extract.model import LoadedModel

    if getattr(loaded, "spec", None):
        return ("spec", loaded.spec, loaded.model_id, loaded.weight_hash)
    return ("object", LoadedModel(loaded.model, loaded.model_id, loaded.weight_hash), None, None)


def _portable_sae(sae):
    from finsae.extract.sae import SAEHandle

    if isinstance(sae, SAEHandle):
        return ("handle", str(sae.path), sae.dtype)
    return ("object", sae, None)


class ShardWorker:
    """A Ray actor: loads the model and the SAE once, then encodes shards (see the module docstring)."""

    def __init__(self, model_spec: tuple, sae_spec: tuple, plan: ShardPlan, threads: int | None,
                 compute: Callable[..., Any] | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model_spec, self.sae_spec, self.plan = model_spec, sae_spec, plan
        self.compute = compute or compute_shard
        self._loaded = self._sae = None

    def _materialise(self) -> None:
        from finsae.extract.model import load_model
        from finsae.extract.sae import SAEHandle

        kind, payload, model_id, weight_hash = self.model_spec
        if kind == "spec":
            loaded = load_model(**payload, lazy=True)
            if (loaded.model_id, loaded.weight_hash) != (model_id, weight_hash):
                raise ProviderError(f"worker on {socket.gethostname()} resolves the model to {loaded.model_id} / "
                                    f"{loaded.weight_hash}, the driver to {model_id} / {weight_hash}")
        else:
            loaded = payload
        kind, payload, dtype = self.sae_spec
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._sae = SAEHandle(payload, dtype=dtype, device=device) if kind == "handle" else payload
        self._loaded = loaded

    def run(self, shard: Shard) -> dict:
        if self._loaded is None:
            self._materialise()
        t0 = time.perf_counter()
        fs = self.compute(self._loaded, self._sae, self.plan, shard)
        return {"index": shard.index, "tokens": int(fs.manifest.get("tokens", 0)),
                "seconds": float(fs.manifest.get("seconds", time.perf_counter() - t0)),
                "host": socket.gethostname(), "pid": os.getpid()}


def ray_compute_shards(loaded, sae, plan: ShardPlan, missing: list[Shard], *, workers: int | None = None,
                       address: str | None = None, cpus_per_worker: float | None = None,
                       gpus_per_worker: float | None = None, max_failures: int | None = None,
                       progress: bool | None = None, compute: Callable[..., Any] | None = None) -> dict:
    """Compute ``missing`` shards of ``plan`` on Ray workers; each writes its shards to the cache.

    ``workers`` defaults to one per GPU of the cluster, else one per ``cpus_per_worker`` CPUs (default 1).
    ``compute(loaded, sae, plan, shard) -> FeatureSet`` replaces :func:`finsae.extract.cache.compute_shard`
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
        max_failures = workers if max_failures is None else max_failures
        threads = max(1, int(cpus_per_worker)) if not gpus_per_worker else None
        actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0)(ShardWorker)
        model_spec, sae_spec = ray.put(_portable_model(loaded)), ray.put(_portable_sae(sae))
        plan_ref = ray.put(plan)

        def spawn():
            return actor_cls.remote(model_spec, sae_spec, plan_ref, threads, compute)

        actors = [spawn() for _ in range(workers)]
        queue = list(missing)
        pending: dict[Any, tuple[Any, Shard]] = {}
        for actor in actors:
            if queue:
                shard = queue.pop(0)
                pending[actor.run.remote(shard)] = (actor, shard)
        failures, tokens, seconds = 0, 0, 0.0
        bar = tqdm(total=len(missing), desc=f"extract on {workers} Ray worker(s)", unit="shard",
                   disable=None if progress is None else not progress)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            actor, shard = pending.pop(done[0])
            try:
                info = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                failures += 1
                logger.warning("Ray worker died on shard %d (%s); %d failure(s) so far", shard.index,
                               type(exc).__name__, failures)
                if failures > max_failures:
                    raise ProviderError(f"{failures} Ray worker failures (the last on shard {shard.path.name}): "
                                        "stopping; finished shards are in the cache, a rerun computes only the rest") from exc
                actor = spawn()
                actors.append(actor)
                pending[actor.run.remote(shard)] = (actor, shard)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise ProviderError(f"shard {shard.path.name} failed on a Ray worker: {exc.cause!r}") from exc.cause
            tokens += info["tokens"]
            seconds += info["seconds"]
            bar.update(1)
            bar.set_postfix_str(f"{tokens / max(time.perf_counter() - t0, 1e-9):,.0f} tok/s")
            if queue:
                nxt = queue.pop(0)
                pending[actor.run.remote(nxt)] = (actor, nxt)
        bar.close()
        for actor in actors:
            ray.kill(actor)
        wall = time.perf_counter() - t0
        logger.info("Ray extraction: %d shards on %d workers in %.1f s (%d failures)", len(missing), workers, wall,
                    failures)
        return {"workers": workers, "seconds": seconds, "wall_seconds": round(wall, 3), "tokens": tokens,
                "failures": failures}
    finally:
        if started:
            ray.shutdown()
