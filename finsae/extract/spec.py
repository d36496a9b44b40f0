"""How features are made, as values: :class:`ExtractionSpec` (what decides the features, and so the cache key)
and :class:`Execution` (where the missing shards are computed, which decides nothing about them).

An extraction spec names its model (``model``, ``tl_name``) and SAE (``sae``: a sae_lens folder, None for the
shipped one) and says how they are read: pooling, chunking (``max_length``, ``overlap``), ``batch_tokens``,
``dtype`` and ``compile``. :meth:`ExtractionSpec.key` is the feature cache's folder name for the spec with a
resolved model and SAE; it is the only place the key is made.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from finsae.errors import DataError
from finsae.extract.features import FALLBACK_CONTEXT, check_pooling
from finsae.extract.identity import DEFAULT_BATCH_TOKENS, ModelIdentity, config_key
from finsae.extract.model import DEFAULT_MODEL, LoadedModel, load_model
from finsae.extract.sae import DEFAULT_SAE_DIR, SAEHandle, SAESource

BACKENDS: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class ExtractionSpec:
    """What decides an extraction's features (see the module docstring).

    ``max_length=None`` reads chunks of the SAE's training context size (512 where it names none);
    :meth:`resolved` fills it in. Functions that are given a loaded model and SAE (:func:`cached_extract`)
    take them from their arguments and everything else from the spec; :meth:`load_model` and
    :meth:`sae_source` resolve the spec's own ``model``, ``tl_name``, ``sae`` and ``dtype``.
    """

    model: str = DEFAULT_MODEL
    tl_name: str | None = None
    sae: str | None = None
    pooling: str = "sum"
    max_length: int | None = None
    overlap: int = 0
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    dtype: str = "float32"
    compile: bool = False

    def __post_init__(self) -> None:
        check_pooling(self.pooling)
        batch = self.batch_tokens
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise DataError(f"batch_tokens must be a positive integer, got {batch!r}")
        if self.sae is not None and not isinstance(self.sae, str):
            object.__setattr__(self, "sae", str(self.sae))  # a Path: specs compare and hash as text
        object.__setattr__(self, "compile", bool(self.compile))

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> ExtractionSpec:
        """A spec from a dict of some of its fields (missing and None-valued ones take the defaults, except
        ``tl_name``, ``sae`` and ``max_length``, whose default is None)."""
        known = {k: v for k, v in fields.items() if k in cls.__dataclass_fields__ and v is not None}
        return cls(**known)

    @property
    def sae_dir(self) -> Path:
        """The SAE folder: ``sae`` or the shipped SAE."""
        return Path(self.sae) if self.sae is not None else DEFAULT_SAE_DIR

    def sae_source(self, device: str = "cpu") -> SAEHandle:
        """The spec's SAE folder as a source (read lazily: nothing is loaded yet)."""
        return SAEHandle(self.sae_dir, dtype=self.dtype, device=device)

    def load_model(self, *, lazy: bool = True) -> LoadedModel:
        """The spec's model (lazily: weights are read on first use where its identity is known without)."""
        return load_model(self.model, tl_name=self.tl_name, dtype=self.dtype, lazy=lazy)

    def chunk_length(self, sae: SAESource) -> int:
        """Tokens per chunk (BOS included) with ``sae``: ``max_length``, else the SAE's context size."""
        if self.max_length is not None:
            return int(self.max_length)
        return int(sae.context_size or FALLBACK_CONTEXT)

    def resolved(self, sae: SAESource) -> ExtractionSpec:
        """This spec with ``max_length`` filled in for ``sae``."""
        return replace(self, max_length=self.chunk_length(sae))

    @property
    def forward_pass(self) -> tuple[int | None, int, int, bool]:
        """What specs must agree on to be encoded in one language-model pass: chunking, batching, forward."""
        return self.max_length, self.overlap, self.batch_tokens, bool(self.compile)

    def key(self, model: ModelIdentity, sae: SAESource) -> str:
        """The feature cache's folder name of this spec read through ``model`` and ``sae``: their identities
        (model id, weight hash, SAE digest and dtype), the pooling, the chunking, the forward and the batch
        size (:func:`finsae.extract.identity.config_key`; the same values as every earlier version)."""
        return config_key(model.model_id, model.weight_hash, sae.digest, self.pooling, self.chunk_length(sae),
                          self.overlap, sae.dtype_name, bool(self.compile), self.batch_tokens)


@dataclass(frozen=True)
class Execution:
    """Where and how the missing shards of an extraction are computed and stored; the features are the same
    whatever these are.

    ``backend="ray"`` computes missing shards on a Ray cluster (:mod:`finsae.extract.distributed`: one model
    replica per worker, ``workers`` of them, the cluster at ``address`` or a local one). ``shard_size``
    documents per shard file; ``root`` a cache folder instead of ``<finsae cache>/features/<key>``;
    ``progress`` shows progress bars (None: where the output is a terminal)."""

    backend: str = "local"
    workers: int | None = None
    address: str | None = None
    shard_size: int = 256
    root: Path | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise DataError(f"unknown backend {self.backend!r}; choose 'local' or 'ray'")
        if self.shard_size < 1:
            raise DataError(f"shard_size must be at least 1, got {self.shard_size}")
        if self.root is not None and not isinstance(self.root, Path):
            object.__setattr__(self, "root", Path(self.root))
