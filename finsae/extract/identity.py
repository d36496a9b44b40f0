"""What identifies the inputs of an extraction: every hash of the extract stage is computed here.

* the model: :func:`model_identity` (``model_id`` and ``weight_hash`` of a loaded model), from the hash of a
  Hugging Face directory's files (:func:`directory_hash`) or of a state dict (:func:`tensors_hash`);
* the SAE: :func:`sae_hash` of a loaded sae_lens SAE (its config and weights), and :func:`sae_files_digest` of
  a sae_lens folder's files (the key under which the folder's ``sae_hash`` is remembered);
* the feature cache: :func:`config_key` (the folder of an extraction's shards) and :func:`shard_key` (a
  shard's file name: the config key, the shard's document ids and texts);
* the other caches of the stage: :func:`hooked_key` (TransformerLens' processed weights) and
  :func:`embedding_key` (sentence embeddings of texts).

Every value is what earlier versions wrote, byte for byte: users' caches stay valid. Changing any of them
invalidates caches; ``tests/test_extract_identity.py`` pins the feature cache's keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from finsae._io import file_sha256
from finsae.errors import DataError

#: Files of a Hugging Face directory that count as weights (with ``config.json``, they make its identity).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: The batch size (tokens per batch) whose cache keys carry no batch field (the keys made before it was one).
DEFAULT_BATCH_TOKENS = 4096


class HasTensors(Protocol):
    """Anything with a torch ``state_dict()`` (a model or an SAE)."""

    def state_dict(self) -> Mapping[str, Any]: ...


class ModelIdentity(Protocol):
    """What names a language model's weights in cache keys (:class:`finsae.extract.model.LoadedModel`)."""

    @property
    def model_id(self) -> str: ...

    @property
    def weight_hash(self) -> str: ...


def _update_with_tensors(digest: Any, module: HasTensors) -> None:
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().float().numpy().tobytes())


def tensors_hash(module: HasTensors) -> str:
    """Hash of a module's state dict: tensor names and float32 values, in name order."""
    digest = hashlib.blake2b(digest_size=16)
    _update_with_tensors(digest, module)
    return digest.hexdigest()


def sae_hash(sae: Any) -> str:
    """Hash of a sae_lens SAE's config and weights: the SAE's identity in feature-cache keys."""
    digest = hashlib.blake2b(digest_size=16)
    cfg = sae.cfg.to_dict() if hasattr(sae.cfg, "to_dict") else vars(sae.cfg)
    digest.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    _update_with_tensors(digest, sae)
    return digest.hexdigest()


def sae_files_digest(folder: Path, dtype: str) -> str:
    """Hash of a sae_lens folder's ``cfg.json`` and ``sae_weights.safetensors`` and the dtype it is read in:
    the name under which the folder's :func:`sae_hash` is remembered (computing it needs the weights)."""
    parts = [file_sha256(folder / name) for name in ("cfg.json", "sae_weights.safetensors")]
    return hashlib.sha256(f"{parts[0]}|{parts[1]}|{dtype}".encode()).hexdigest()[:32]


def directory_hash(path: Path) -> str:
    """Hash of a Hugging Face directory's config and weight files (names and contents)."""
    digest = hashlib.blake2b(digest_size=16)
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and (p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES))
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise DataError(f"{path} has no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    for p in files:
        digest.update(p.name.encode() + b"\x00" + file_sha256(p).encode())
    return digest.hexdigest()


def model_identity(tl_name: str, where: str, source_hash: str, dtype: str) -> tuple[str, str]:
    """``(model_id, weight_hash)`` of a model: ``<tl_name>@<where>`` (``where`` is the source hash of the
    embedded default, the resolved directory of a local model, empty for a hub model, which is then named by
    ``tl_name`` alone) and ``<hash of the weights>:<dtype>``."""
    return (f"{tl_name}@{where}" if where else tl_name), f"{source_hash}:{dtype}"


def hooked_key(tl_name: str, source_hash: str, transformer_lens_version: str, layout: int) -> str:
    """Folder name of a model's processed TransformerLens weights."""
    payload = f"{tl_name}|{source_hash}|{transformer_lens_version}|{layout}"
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def config_key(model_id: str, weight_hash: str, sae_digest: str, pooling: str, max_length: int, overlap: int,
               sae_dtype: str = "float32", compiled: bool = False,
               batch_tokens: int = DEFAULT_BATCH_TOKENS) -> str:
    """The feature cache's folder name (normally reached through
    :meth:`finsae.extract.spec.ExtractionSpec.key`).

    Compiled blocks (``torch.compile``) reassociate float sums, and TopK turns some of those 1e-7 differences
    into a different active latent on near-tied tokens, so their features are cached apart (the eager key is
    unchanged). The batch size changes the padding of a batch and so the last bits too: other than
    :data:`DEFAULT_BATCH_TOKENS` it is part of the key (the default's key is unchanged)."""
    fields: dict[str, object] = {"model": model_id, "weights": weight_hash, "sae": sae_digest,
                                 "pooling": pooling, "max_length": max_length, "overlap": overlap,
                                 "sae_dtype": sae_dtype, "version": 1}
    if compiled:
        fields["forward"] = "torch.compile"
    if int(batch_tokens) != DEFAULT_BATCH_TOKENS:
        fields["batch_tokens"] = int(batch_tokens)
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def shard_key(key: str, ids: Sequence[str], texts: Sequence[object]) -> str:
    """A feature shard's file name: the config ``key`` and the shard's document ids and texts (``repr``: a
    missing text is part of the shard's identity too)."""
    digest = hashlib.sha256(key.encode())
    for doc_id, text in zip(ids, texts, strict=True):
        digest.update(b"\x00" + str(doc_id).encode() + b"\x01" + repr(text).encode())
    return digest.hexdigest()[:32]


def embedding_key(model: str, normalize: bool, version: str, model_root: Path, texts: Iterable[str]) -> str:
    """Name of a sentence-embedding cache file: the model name and every file under ``model_root``, the
    normalisation, the layout ``version`` and the texts."""
    digest = hashlib.sha256(f"{model}|{normalize}|{version}".encode())
    for f in sorted(p for p in model_root.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(model_root)).encode() + b"\x00" + file_sha256(f).encode())
    for t in texts:
        digest.update(b"\x00" + t.encode())
    return digest.hexdigest()[:32]
