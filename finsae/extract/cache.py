"""On-disk cache of pooled features, in shards written atomically.

The cache folder is ``<finsae cache>/features/<key>/``, the key being :meth:`ExtractionSpec.key
<finsae.extract.spec.ExtractionSpec.key>`: the model identity and weight hash, the SAE's config and weights,
the pooling, the chunking (``max_length``, ``overlap``), the dtype, the forward and the batch size. Documents
are split into shards (:mod:`finsae.extract.shards`); a shard is computed only if its file is missing or
unreadable, so a second run is a cache hit, a killed run resumes with the shards it had not written, and a
corrupted shard is recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from finsae.errors import DataError
from finsae.extract.distributed import ray_compute_shards
from finsae.extract.features import FeatureSet
from finsae.extract.model import LoadedModel
from finsae.extract.sae import SAESource, as_sae_source
from finsae.extract.shards import (
    assemble,
    compute_shard,
    compute_shard_many,
    plan_shards,
    read_shard,
    read_shards,
)
from finsae.extract.spec import Execution, ExtractionSpec
from finsae.extract.tokenstats import LABEL_EXAMPLES

if TYPE_CHECKING:  # sae_lens loads lazily: a cache hit through a folder handle never imports it
    from sae_lens import SAE

logger = logging.getLogger(__name__)

__all__ = ["cached_extract", "cached_extract_many"]

def cached_extract(loaded: LoadedModel, sae: SAESource | SAE, texts: Sequence[object], doc_ids: Sequence[str],
                   spec: ExtractionSpec | None = None, run: Execution | None = None) -> FeatureSet:
    """:func:`finsae.extract.features.extract_features` of ``spec`` through the shard cache (see the module
    docstring), with the model ``loaded`` and the SAE ``sae``.

    ``sae`` is an :class:`~finsae.extract.sae.SAESource` (a :class:`~finsae.extract.sae.SAEHandle`: then
    nothing is loaded on a full hit) or a sae_lens SAE. ``run`` says where missing shards are computed
    (:class:`~finsae.extract.spec.Execution`; Ray gives the same features as the local backend) and how the
    cache is laid out. ``spec.compile`` runs the blocks through ``torch.compile`` (about 1.4x faster on this
    project's CPU; cached under its own key)."""
    source, run = as_sae_source(sae), run or Execution()
    plan = plan_shards(loaded, source, texts, doc_ids, spec, run)
    plan.write_config(loaded)
    parts = read_shards(plan)
    hits = len(parts)
    missing = [s for s in plan.shards if s.index not in parts]
    computed_seconds = 0.0
    extra: dict[str, object] = {"backend": run.backend}
    if run.backend == "local":
        for shard in missing:
            fs = compute_shard(loaded, source, plan, shard, progress=run.progress)
            computed_seconds += fs.manifest.get("seconds", 0.0)
            parts[shard.index] = fs
    elif missing:
        stats = ray_compute_shards(loaded, source, plan, missing, workers=run.workers, address=run.address,
                                   progress=run.progress)
        computed_seconds = stats["seconds"]
        extra.update(workers=stats["workers"], wall_seconds=stats["wall_seconds"])
        for shard in missing:
            read = read_shard(shard, plan.spec.pooling)
            if read is None:
                raise DataError(f"shard {shard.path.name} was reported done by a Ray worker but is not "
                                "readable here: on a multi-node cluster the cache folder must be on a shared "
                                "file system ($FINSAE_CACHE_DIR)")
            parts[shard.index] = read
    return assemble(loaded, plan, [parts[s.index] for s in plan.shards], hits, computed_seconds, **extra)


def cached_extract_many(loaded: LoadedModel, requests: Sequence[tuple[SAESource | SAE, ExtractionSpec]],
                        texts: Sequence[object], doc_ids: Sequence[str], *, shard_size: int = 256,
                        progress: bool | None = None, label_stats: bool = False) -> list[FeatureSet]:
    """:func:`cached_extract` for several ``(sae, spec)`` requests over the same texts, with one
    language-model pass per shard for all the requests whose shard is missing (any hooks: the pass runs to the
    deepest and reads the others on the way). Every request keeps its own cache folder and shard files, the
    same keys and the same contents as :func:`cached_extract` with it alone, so existing caches stay valid and
    a request already cached costs nothing. Requests whose forward pass differs (another chunking, batch size
    or forward: :attr:`ExtractionSpec.forward_pass` after the SAE's context size fills in ``max_length``)
    share a pass only with their own kind. Local backend only.

    ``label_stats``: every shard this call encodes also gets each SAE's token statistics, from the same pass
    (:mod:`finsae.extract.tokenstats`), which :func:`finsae.explain.labels.latent_labels` then reads instead
    of running the model again; shards already cached are not encoded for them."""
    run = Execution(shard_size=shard_size, progress=progress)
    sources = [as_sae_source(sae) for sae, _ in requests]
    plans = [plan_shards(loaded, source, texts, doc_ids, spec, run)
             for source, (_, spec) in zip(sources, requests, strict=True)]
    unique: dict[str, int] = {}  # the same SAE and spec twice: one plan
    for n, plan in enumerate(plans):
        unique.setdefault(plan.key, n)
    parts: dict[str, dict[int, FeatureSet]] = {}
    hits: dict[str, int] = {}
    for n in unique.values():
        plan = plans[n]
        plan.write_config(loaded)
        parts[plan.key] = read_shards(plan)
        hits[plan.key] = len(parts[plan.key])
    groups: dict[tuple[int | None, int, int, bool], list[int]] = {}
    for n in unique.values():
        groups.setdefault(plans[n].spec.forward_pass, []).append(n)
    seconds: dict[str, float] = dict.fromkeys(parts, 0.0)
    n_shards = len(plans[0].shards) if plans else 0
    for members in groups.values():
        for index in range(n_shards):
            todo = [n for n in members if index not in parts[plans[n].key]]
            if not todo:
                continue
            if len(todo) > 1:
                logger.info("shard %d: one pass for %d SAE requests", index, len(todo))
            items = [(sources[n], plans[n]) for n in todo]
            done = compute_shard_many(loaded, items, index, progress=progress,
                                      stats_examples=LABEL_EXAMPLES if label_stats else None)
            for n, fs in zip(todo, done, strict=True):
                parts[plans[n].key][index] = fs
                seconds[plans[n].key] += fs.manifest.get("seconds", 0.0)
    out = []
    for plan in plans:
        extra: dict[str, object] = {"backend": "local"}
        if len(unique) > 1:
            extra["shared_pass_requests"] = len(unique)
        out.append(assemble(loaded, plan, [parts[plan.key][s.index] for s in plan.shards], hits[plan.key],
                            seconds[plan.key], **extra))
    return out
