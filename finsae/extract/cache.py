"""On-disk cache of pooled features, in shards written atomically.

The cache folder is ``<finsae cache>/features/<config key>/`` where the config key hashes the model identity and
weight hash, the SAE's config and weights, the pooling, the chunking (``max_length``, ``overlap``) and the dtype.
Documents are split into shards of ``shard_size`` in input order; each shard's file name hashes the config key and
the shard's document ids and texts. A shard is computed only if its file is missing or unreadable, so a second run
is a cache hit, a killed run resumes with the shards it had not written, and a corrupted shard is recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from finsae._io import atomic_write, write_json
from finsae._paths import cache_dir
from finsae.errors import DataError
from finsae.extract.features import (
    FeatureSet,
    check_pooling,
    clean_texts,
    extract_features_many,
)

logger = logging.getLogger(__name__)


def sae_hash(sae) -> str:
    """Hash of a sae_lens SAE's config and weights."""
    digest = hashlib.blake2b(digest_size=16)
    cfg = sae.cfg.to_dict() if hasattr(sae.cfg, "to_dict") else vars(sae.cfg)
    digest.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().float().numpy().tobytes())
    return digest.hexdigest()


#: The batch size (tokens per batch) whose cache keys carry no batch field (the keys made before it was one).
DEFAULT_BATCH_TOKENS = 4096


def config_key(model_id: str, weight_hash: str, sae_digest: str, pooling: str, max_length: int, overlap: int,
               sae_dtype: str = "float32", compiled: bool = False, batch_tokens: int = DEFAULT_BATCH_TOKENS) -> str:
    """The feature cache's folder name. Compiled blocks (``torch.compile``) reassociate float sums, and TopK turns
    some of those 1e-7 differences into a different active latent on near-tied tokens, so their features are
    cached apart (the eager key is unchanged). The batch size changes the padding of a batch and so the last bits
    too: other than :data:`DEFAULT_BATCH_TOKENS` it is part of the key (the default's key is unchanged)."""
    fields = {"model": model_id, "weights": weight_hash, "sae": sae_digest, "pooling": pooling,
              "max_length": max_length, "overlap": overlap, "sae_dtype": sae_dtype, "version": 1}
    if compiled:
        fields["forward"] = "torch.compile"
    if int(batch_tokens) != DEFAULT_BATCH_TOKENS:
        fields["batch_tokens"] = int(batch_tokens)
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _shard_key(key: str, ids: Sequence[str], texts: Sequence[object]) -> str:
    digest = hashlib.sha256(key.encode())
    for doc_id, text in zip(ids, texts, strict=True):
        digest.update(b"\x00" + str(doc_id).encode() + b"\x01" + repr(text).encode())
    return digest.hexdigest()[:32]


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
        if not np.isfinite(matrix.data).all():  # e.g. written by an SAE with NaN weights: recompute, never use
            raise ValueError("non-finite features")
        return FeatureSet(matrix, [str(d) for d in z["doc_ids"]], pooling, z["n_tokens"], z["n_chunks"],
                          json.loads(str(z["skipped"])), json.loads(str(z["manifest"])))


@dataclass(frozen=True)
class Shard:
    """One shard of a cached extraction: its file and its documents (in input order)."""

    index: int
    path: Path
    ids: tuple[str, ...]
    texts: tuple[object, ...]


@dataclass(frozen=True)
class ShardPlan:
    """Everything that decides an extraction's shards: the cache folder (config key) and the shards."""

    key: str
    folder: Path
    pooling: str
    max_length: int
    overlap: int
    batch_tokens: int
    d_sae: int
    shards: tuple[Shard, ...]
    compile: bool = False


def plan_shards(loaded, sae, texts: Sequence[object], doc_ids: Sequence[str], *, pooling: str = "sum",
                max_length: int | None = None, overlap: int = 0, batch_tokens: int = 4096, shard_size: int = 256,
                root: str | Path | None = None, compile: bool = False) -> ShardPlan:
    """The cache folder and shards of an extraction, without loading the model or (for an
    :class:`~finsae.extract.sae.SAEHandle`) the SAE."""
    from finsae.extract.sae import SAEHandle, check_sae_model

    check_pooling(pooling)
    if len(doc_ids) != len(texts):
        raise DataError(f"doc_ids has {len(doc_ids)} entries but there are {len(texts)} texts")
    if shard_size < 1:
        raise DataError(f"shard_size must be at least 1, got {shard_size}")
    if not isinstance(batch_tokens, int) or isinstance(batch_tokens, bool) or batch_tokens < 1:
        raise DataError(f"batch_tokens must be a positive integer, got {batch_tokens!r}")
    if isinstance(sae, SAEHandle):  # identity from files: sae_lens and the weights are loaded only on a miss
        check_sae_model(loaded.model_id, sae.model_name, str(sae.path))
        context, d_sae, digest, dtype = sae.context_size, sae.d_sae, sae.digest, f"torch.{sae.dtype}"
    else:
        check_sae_model(loaded.model_id, getattr(sae.cfg.metadata, "model_name", None), "given")
        context, d_sae = getattr(sae.cfg.metadata, "context_size", None), int(sae.cfg.d_sae)
        digest, dtype = sae_hash(sae), str(next(sae.parameters()).dtype)
    if max_length is None:
        max_length = int(context or 512)
    key = config_key(loaded.model_id, loaded.weight_hash, digest, pooling, max_length, overlap, dtype, bool(compile),
                     batch_tokens)
    folder = Path(root) if root is not None else cache_dir() / "features" / key
    shards = []
    for n, start in enumerate(range(0, len(texts), shard_size)):
        ids = tuple(str(d) for d in doc_ids[start: start + shard_size])
        chunk = tuple(texts[start: start + shard_size])
        shards.append(Shard(n, folder / f"{_shard_key(key, ids, chunk)}.npz", ids, chunk))
    return ShardPlan(key, folder, pooling, max_length, overlap, batch_tokens, d_sae, tuple(shards), bool(compile))


def read_shard(shard: Shard, pooling: str) -> FeatureSet | None:
    """The cached features of ``shard``, or None when its file is missing or unreadable (then it is recomputed)."""
    if not shard.path.is_file():
        return None
    try:
        return _load_shard(shard.path, pooling)
    except Exception as exc:  # truncated or foreign file: recompute it, never crash
        logger.warning("feature shard %s is unreadable (%s): recomputing", shard.path.name, exc)
        return None


def compute_shard(loaded, sae, plan: ShardPlan, shard: Shard, progress: bool | None = None) -> FeatureSet:
    """Encode one shard (compiled blocks if ``plan.compile``) and write it to the cache atomically."""
    return compute_shard_many(loaded, [(sae, plan)], shard.index, progress=progress)[0]


def _same_pass(plans: Sequence[ShardPlan]) -> None:
    first = plans[0]
    for p in plans[1:]:
        if (p.max_length, p.overlap, p.batch_tokens, p.compile) != (first.max_length, first.overlap,
                                                                    first.batch_tokens, first.compile) or \
                [s.ids for s in p.shards] != [s.ids for s in first.shards]:
            raise DataError("plans that share a pass need the same documents, shards, max_length, overlap, "
                            "batch_tokens and forward")


def compute_shard_many(loaded, items: Sequence[tuple[object, ShardPlan]], index: int,
                       progress: bool | None = None) -> list[FeatureSet]:
    """Encode shard ``index`` of every ``(sae, plan)`` from one language-model pass
    (:func:`finsae.extract.features.extract_features_many`) and write each plan's shard file atomically. The
    plans must agree on documents and chunking (:func:`plan_shards` with the same texts and arguments); each
    file holds exactly what :func:`compute_shard` with that plan alone writes."""
    from finsae.extract.sae import SAEHandle

    plans = [plan for _, plan in items]
    _same_pass(plans)
    shard = plans[0].shards[index]
    keep, skipped_pos = clean_texts(list(shard.texts))
    if keep:
        requests = [(sae.sae if isinstance(sae, SAEHandle) else sae, plan.pooling) for sae, plan in items]
        first = plans[0]
        out = extract_features_many(loaded.model, requests, list(shard.texts), doc_ids=list(shard.ids),
                                    max_length=first.max_length, overlap=first.overlap,
                                    batch_tokens=first.batch_tokens, progress=progress, compile=first.compile)
    else:  # nothing to encode in this shard
        out = [FeatureSet(sp.csr_matrix((0, plan.d_sae), dtype=np.float32), [], plan.pooling,
                          np.zeros(0, np.int64), np.zeros(0, np.int64), {shard.ids[k]: r for k, r in skipped_pos.items()})
               for plan in plans]
    for plan, fs in zip(plans, out, strict=True):
        _save_shard(plan.shards[index].path, fs)
    return out


def assemble(loaded, plan: ShardPlan, parts: Sequence[FeatureSet], hits: int, compute_seconds: float,
             **extra: object) -> FeatureSet:
    """One :class:`FeatureSet` from the shards' features, in input order, with the extraction's manifest."""
    logger.info("features: %d shard(s), %d from cache, in %s", len(parts), hits, plan.folder)
    skipped: dict[str, str] = {}
    for p in parts:
        skipped.update(p.skipped)
    tokens = sum(p.manifest.get("tokens", 0) for p in parts)
    manifest = {"model": loaded.model_id, "weights": loaded.weight_hash, "cache": str(plan.folder),
                "compiled": plan.compile,
                "shards": len(parts), "shards_from_cache": hits, "pooling": plan.pooling,
                "max_length": plan.max_length, "overlap": plan.overlap,
                "documents": sum(len(p.doc_ids) for p in parts), "skipped": len(skipped), "tokens": tokens,
                "compute_seconds": round(compute_seconds, 3), **extra}
    hooks = [p.manifest["hook"] for p in parts if p.manifest.get("hook")]
    if hooks:
        manifest["hook"] = hooks[0]
    d_sae = plan.d_sae
    return FeatureSet(sp.vstack([p.matrix for p in parts], format="csr", dtype=np.float32) if parts else
                      sp.csr_matrix((0, d_sae), dtype=np.float32),
                      [d for p in parts for d in p.doc_ids], plan.pooling,
                      np.concatenate([p.n_tokens for p in parts]) if parts else np.zeros(0, np.int64),
                      np.concatenate([p.n_chunks for p in parts]) if parts else np.zeros(0, np.int64),
                      skipped, manifest)


def cached_extract(loaded, sae, texts: Sequence[object], doc_ids: Sequence[str], *, pooling: str = "sum",
                   max_length: int | None = None, overlap: int = 0, batch_tokens: int = 4096,
                   shard_size: int = 256, root: str | Path | None = None, progress: bool | None = None,
                   backend: str = "local", workers: int | None = None, address: str | None = None,
                   compile: bool = False) -> FeatureSet:
    """:func:`finsae.extract.features.extract_features` through the shard cache (see the module docstring).

    ``sae`` is a sae_lens SAE or a :class:`finsae.extract.sae.SAEHandle` (then nothing is loaded on a full hit).
    ``backend="ray"`` computes the missing shards on a Ray cluster (:mod:`finsae.extract.distributed`: one model
    replica per worker, ``workers`` of them, the cluster at ``address`` or a local one); the features are the
    same as with the local backend. ``compile=True`` runs the blocks through ``torch.compile`` (about 1.4x faster
    on this project's CPU; cached under its own key, see :func:`config_key`)."""
    plan = plan_shards(loaded, sae, texts, doc_ids, pooling=pooling, max_length=max_length, overlap=overlap,
                       batch_tokens=batch_tokens, shard_size=shard_size, root=root, compile=compile)
    plan.folder.mkdir(parents=True, exist_ok=True)
    write_json({"model": loaded.model_id, "weights": loaded.weight_hash, "pooling": plan.pooling,
                "max_length": plan.max_length, "overlap": plan.overlap}, plan.folder / "config.json")
    parts: dict[int, FeatureSet] = {}
    for shard in plan.shards:
        fs = read_shard(shard, plan.pooling)
        if fs is not None:
            parts[shard.index] = fs
    hits = len(parts)
    missing = [s for s in plan.shards if s.index not in parts]
    computed_seconds = 0.0
    extra: dict[str, object] = {"backend": backend}
    if backend == "local":
        for shard in missing:
            fs = compute_shard(loaded, sae, plan, shard, progress=progress)
            computed_seconds += fs.manifest.get("seconds", 0.0)
            parts[shard.index] = fs
    elif backend == "ray":
        from finsae.extract.distributed import ray_compute_shards

        if missing:
            stats = ray_compute_shards(loaded, sae, plan, missing, workers=workers, address=address, progress=progress)
            computed_seconds = stats["seconds"]
            extra.update(workers=stats["workers"], wall_seconds=stats["wall_seconds"])
        for shard in missing:
            fs = read_shard(shard, plan.pooling)
            if fs is None:
                raise DataError(f"shard {shard.path.name} was reported done by a Ray worker but is not readable here: "
                                "on a multi-node cluster the cache folder must be on a shared file system "
                                "($FINSAE_CACHE_DIR)")
            parts[shard.index] = fs
    else:
        raise DataError(f"unknown backend {backend!r}; choose 'local' or 'ray'")
    return assemble(loaded, plan, [parts[s.index] for s in plan.shards], hits, computed_seconds, **extra)


def cached_extract_many(loaded, requests: Sequence[tuple[object, str]], texts: Sequence[object],
                        doc_ids: Sequence[str], *, max_length: int | None = None, overlap: int = 0,
                        batch_tokens: int = 4096, shard_size: int = 256, progress: bool | None = None,
                        compile: bool = False) -> list[FeatureSet]:
    """:func:`cached_extract` for several ``(sae, pooling)`` requests over the same texts, with one
    language-model pass per shard for all the requests whose shard is missing (any hooks: the pass runs to the
    deepest and reads the others on the way). Every request keeps its own cache folder and shard files, the
    same keys and the same contents as :func:`cached_extract` with it alone, so existing caches stay valid and
    a request already cached costs nothing. Requests whose chunking differs (another ``max_length`` from the
    SAE's context size) share a pass only with their own kind. Local backend only."""
    plans = [plan_shards(loaded, sae, texts, doc_ids, pooling=pooling, max_length=max_length, overlap=overlap,
                         batch_tokens=batch_tokens, shard_size=shard_size, compile=compile)
             for sae, pooling in requests]
    unique: dict[str, int] = {}  # the same SAE and pooling twice: one plan
    for n, plan in enumerate(plans):
        unique.setdefault(plan.key, n)
    parts: dict[str, dict[int, FeatureSet]] = {}
    hits: dict[str, int] = {}
    for n in unique.values():
        plan = plans[n]
        plan.folder.mkdir(parents=True, exist_ok=True)
        write_json({"model": loaded.model_id, "weights": loaded.weight_hash, "pooling": plan.pooling,
                    "max_length": plan.max_length, "overlap": plan.overlap}, plan.folder / "config.json")
        found = {s.index: fs for s in plan.shards if (fs := read_shard(s, plan.pooling)) is not None}
        parts[plan.key], hits[plan.key] = found, len(found)
    groups: dict[tuple, list[int]] = {}
    for n in unique.values():
        groups.setdefault((plans[n].max_length, plans[n].overlap, plans[n].batch_tokens, plans[n].compile), []).append(n)
    seconds: dict[str, float] = dict.fromkeys(parts, 0.0)
    n_shards = len(plans[0].shards)
    for members in groups.values():
        for index in range(n_shards):
            todo = [n for n in members if index not in parts[plans[n].key]]
            if not todo:
                continue
            if len(todo) > 1:
                logger.info("shard %d: one pass for %d SAE requests", index, len(todo))
            done = compute_shard_many(loaded, [(requests[n][0], plans[n]) for n in todo], index, progress=progress)
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
