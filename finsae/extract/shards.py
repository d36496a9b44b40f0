"""The shards of a cached extraction: plan them, read them, compute them (one or several SAEs per pass) and
assemble them into one :class:`~finsae.extract.features.FeatureSet`.

A plan (:func:`plan_shards`) is the cache folder (:meth:`ExtractionSpec.key`) and the documents split into
shards of ``shard_size`` in input order; each shard's file name hashes the key and the shard's document ids
and texts (:func:`finsae.extract.identity.shard_key`). Files are written atomically, so a shard is either
whole or missing; an unreadable one is recomputed. Both backends (:mod:`finsae.extract.cache`,
:mod:`finsae.extract.distributed`) compute a shard with :func:`compute_shard`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import scipy.sparse as sp

from finsae._io import atomic_write, write_json
from finsae._paths import cache_dir
from finsae.errors import DataError
from finsae.extract.features import FeatureSet, clean_texts, extract_features_many, tokenizer_of
from finsae.extract.identity import ModelIdentity, shard_key
from finsae.extract.model import LoadedModel
from finsae.extract.sae import SAESource, as_sae_source, check_sae_model
from finsae.extract.spec import Execution, ExtractionSpec
from finsae.extract.tokenstats import (
    LABEL_EXAMPLES,
    LatentStats,
    StatsAccumulator,
    load_stats,
    save_stats,
    stats_path,
)

if TYPE_CHECKING:  # sae_lens loads lazily: planning through a folder handle never imports it
    from sae_lens import SAE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """One shard of a cached extraction: its file and its documents (in input order)."""

    index: int
    path: Path
    ids: tuple[str, ...]
    texts: tuple[object, ...]


@dataclass(frozen=True)
class ShardPlan:
    """Everything that decides an extraction's shards: the cache folder (``key``), the spec with its chunk
    length resolved, the SAE's width and the shards."""

    key: str
    folder: Path
    spec: ExtractionSpec
    d_sae: int
    shards: tuple[Shard, ...]

    def write_config(self, model: ModelIdentity) -> None:
        """Create the cache folder and describe it in ``config.json`` (for people; nothing reads it back)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        spec = self.spec
        write_json({"model": model.model_id, "weights": model.weight_hash, "pooling": spec.pooling,
                    "max_length": spec.max_length, "overlap": spec.overlap}, self.folder / "config.json")


def plan_shards(loaded: ModelIdentity, sae: SAESource | SAE, texts: Sequence[object], doc_ids: Sequence[str],
                spec: ExtractionSpec | None = None, run: Execution | None = None) -> ShardPlan:
    """The cache folder and shards of an extraction, without loading the model or (for a lazy source such as
    :class:`~finsae.extract.sae.SAEHandle`) the SAE. ``run`` gives ``shard_size`` and ``root``."""
    spec, run, sae = spec or ExtractionSpec(), run or Execution(), as_sae_source(sae)
    if len(doc_ids) != len(texts):
        raise DataError(f"doc_ids has {len(doc_ids)} entries but there are {len(texts)} texts")
    check_sae_model(loaded.model_id, sae.model_name, sae.location)
    key = spec.key(loaded, sae)
    folder = run.root if run.root is not None else cache_dir() / "features" / key
    size = run.shard_size
    shards = []
    for n, start in enumerate(range(0, len(texts), size)):
        ids = tuple(str(d) for d in doc_ids[start: start + size])
        chunk = tuple(texts[start: start + size])
        shards.append(Shard(n, folder / f"{shard_key(key, ids, chunk)}.npz", ids, chunk))
    return ShardPlan(key, folder, spec.resolved(sae), sae.d_sae, tuple(shards))


def _save_shard(path: Path, fs: FeatureSet) -> None:
    def write(tmp: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, data=fs.matrix.data, indices=fs.matrix.indices, indptr=fs.matrix.indptr,
                 shape=np.array(fs.matrix.shape), n_tokens=fs.n_tokens, n_chunks=fs.n_chunks,
                 doc_ids=np.array(fs.doc_ids, dtype=str),
                 skipped=np.array(json.dumps(fs.skipped)), manifest=np.array(json.dumps(fs.manifest)))
        tmp.write_bytes(buf.getvalue())

    atomic_write(path, write)


def _load_shard(path: Path, pooling: str) -> FeatureSet:
    with np.load(path, allow_pickle=False) as z:
        matrix = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        if not np.isfinite(matrix.data).all():  # e.g. from an SAE with NaN weights: recompute, never use
            raise ValueError("non-finite features")
        return FeatureSet(matrix, [str(d) for d in z["doc_ids"]], pooling, z["n_tokens"], z["n_chunks"],
                          json.loads(str(z["skipped"])), json.loads(str(z["manifest"])))


def read_shard(shard: Shard, pooling: str) -> FeatureSet | None:
    """The cached features of ``shard``, or None when its file is missing or unreadable (then it is
    recomputed)."""
    return _read_or_none(shard.path, lambda p: _load_shard(p, pooling), "feature shard")


T = TypeVar("T")


def _read_or_none(path: Path, load: Callable[[Path], T], what: str) -> T | None:
    """``load(path)``, or None when the file is missing or unreadable (truncated or foreign: it is then
    recomputed, never a crash)."""
    if not path.is_file():
        return None
    try:
        return load(path)
    except Exception as exc:
        logger.warning("%s %s is unreadable (%s): recomputing", what, path.name, exc)
        return None


def read_shards(plan: ShardPlan) -> dict[int, FeatureSet]:
    """Shard index -> cached features, for the shards of ``plan`` that are in the cache."""
    return {s.index: fs for s in plan.shards if (fs := read_shard(s, plan.spec.pooling)) is not None}


def compute_shard(loaded: LoadedModel, sae: SAESource | SAE, plan: ShardPlan, shard: Shard,
                  progress: bool | None = None) -> FeatureSet:
    """Encode one shard (compiled blocks if the plan's spec says so) and write it to the cache atomically."""
    return compute_shard_many(loaded, [(sae, plan)], shard.index, progress=progress)[0]


def _same_pass(plans: Sequence[ShardPlan]) -> None:
    first = plans[0]
    for p in plans[1:]:
        if p.spec.forward_pass != first.spec.forward_pass or \
                [s.ids for s in p.shards] != [s.ids for s in first.shards]:
            raise DataError("plans that share a pass need the same documents, shards, max_length, overlap, "
                            "batch_tokens and forward")


def compute_shard_many(loaded: LoadedModel, items: Sequence[tuple[SAESource | SAE, ShardPlan]], index: int,
                       progress: bool | None = None,
                       stats_examples: int | None = None) -> list[FeatureSet]:
    """Encode shard ``index`` of every ``(sae, plan)`` from one language-model pass
    (:func:`finsae.extract.features.extract_features_many`) and write each plan's shard file atomically. The
    plans must agree on documents and chunking (:func:`plan_shards` with the same texts and specs that share
    a forward pass); each file holds exactly what :func:`compute_shard` with that plan alone writes.

    ``stats_examples``: also gather each SAE's token statistics (:mod:`finsae.extract.tokenstats`, with that
    many strongest positions per latent) in the same pass and write them beside each shard file
    (:func:`~finsae.extract.tokenstats.stats_path`): what latent labels are made from."""
    plans = [plan for _, plan in items]
    _same_pass(plans)
    shard = plans[0].shards[index]
    keep, skipped_pos = clean_texts(list(shard.texts))
    accs: list[StatsAccumulator | None] = [None] * len(items)
    if keep:
        saes = [as_sae_source(sae).load() for sae, _ in items]
        requests = [(s, plan.spec.pooling) for s, plan in zip(saes, plans, strict=True)]
        first = plans[0].spec
        owner: dict[int, int] = {}  # an SAE asked for twice (two poolings) is counted once
        if stats_examples is not None:
            vocab = int(max(len(tokenizer_of(loaded.model)), loaded.model.cfg.d_vocab))
            for n, s in enumerate(saes):
                if id(s) not in owner:
                    owner[id(s)] = n
                    accs[n] = StatsAccumulator(int(s.cfg.d_sae), vocab, stats_examples)
        out = extract_features_many(loaded.model, requests, list(shard.texts), doc_ids=list(shard.ids),
                                    max_length=first.max_length, overlap=first.overlap,
                                    batch_tokens=first.batch_tokens, progress=progress, compile=first.compile,
                                    stats=accs if stats_examples is not None else None)
        if stats_examples is not None:
            results = {n: a.result(rows=len(keep)) for n, a in enumerate(accs) if a is not None}
            for n, s in enumerate(saes):
                save_stats(results[owner[id(s)]], stats_path(plans[n].shards[index].path, stats_examples))
    else:  # nothing to encode in this shard
        skipped = {shard.ids[k]: r for k, r in skipped_pos.items()}
        out = [FeatureSet(sp.csr_matrix((0, plan.d_sae), dtype=np.float32), [], plan.spec.pooling,
                          np.zeros(0, np.int64), np.zeros(0, np.int64), skipped)
               for plan in plans]
    for plan, fs in zip(plans, out, strict=True):
        _save_shard(plan.shards[index].path, fs)
    return out


def read_shard_stats(shard: Shard, n_examples: int = LABEL_EXAMPLES) -> LatentStats | None:
    """The token statistics stored beside ``shard`` (:func:`compute_shard_many` with ``stats_examples``), or
    None when they are missing or unreadable (then the shard is encoded again for them)."""
    return _read_or_none(stats_path(shard.path, n_examples), load_stats, "token statistics")


def assemble(loaded: ModelIdentity, plan: ShardPlan, parts: Sequence[FeatureSet], hits: int,
             compute_seconds: float, **extra: object) -> FeatureSet:
    """One :class:`FeatureSet` from the shards' features, in input order, with the extraction's manifest."""
    logger.info("features: %d shard(s), %d from cache, in %s", len(parts), hits, plan.folder)
    spec = plan.spec
    skipped: dict[str, str] = {}
    for p in parts:
        skipped.update(p.skipped)
    tokens = sum(p.manifest.get("tokens", 0) for p in parts)
    manifest = {"model": loaded.model_id, "weights": loaded.weight_hash, "cache": str(plan.folder),
                "compiled": spec.compile,
                "shards": len(parts), "shards_from_cache": hits, "pooling": spec.pooling,
                "max_length": spec.max_length, "overlap": spec.overlap,
                "documents": sum(len(p.doc_ids) for p in parts), "skipped": len(skipped), "tokens": tokens,
                "compute_seconds": round(compute_seconds, 3), **extra}
    hooks = [p.manifest["hook"] for p in parts if p.manifest.get("hook")]
    if hooks:
        manifest["hook"] = hooks[0]
    if not parts:
        return FeatureSet(sp.csr_matrix((0, plan.d_sae), dtype=np.float32), [], spec.pooling,
                          np.zeros(0, np.int64), np.zeros(0, np.int64), skipped, manifest)
    return FeatureSet(sp.vstack([p.matrix for p in parts], format="csr", dtype=np.float32),
                      [d for p in parts for d in p.doc_ids], spec.pooling,
                      np.concatenate([p.n_tokens for p in parts]),
                      np.concatenate([p.n_chunks for p in parts]), skipped, manifest)
