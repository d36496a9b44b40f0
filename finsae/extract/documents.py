"""Features of a universe's descriptions for one text vintage: SAE and sentence embeddings (cached), TF-IDF.

One entry point, :func:`document_features`, used by the benchmark and the API. Companies without text in the
vintage get no row (``TextFeatures.tickers`` lists the rows).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from finsae.data.universe import Universe
from finsae.errors import DataError
from finsae.extract.cache import cached_extract_many
from finsae.extract.featurizers import EmbeddingFeaturizer, fit_tfidf
from finsae.extract.model import DEFAULT_MODEL
from finsae.extract.sae import SAEHandle
from finsae.extract.spec import ExtractionSpec

logger = logging.getLogger(__name__)

#: The kinds of document features: pooled SAE latents, sentence embeddings, TF-IDF.
FEATURE_KINDS = ("sae", "minilm", "tfidf")


@dataclass(frozen=True)
class TextFeatures:
    """Feature matrix (rows = ``tickers``) of one vintage's texts, with what produced it: ``source`` (model,
    SAE, pooling, hook, cache folder ...) and, for SAE features, the :class:`ExtractionSpec` behind them."""

    kind: str
    vintage: str
    tickers: pd.Index
    matrix: sp.csr_matrix | np.ndarray
    names: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)
    spec: ExtractionSpec | None = None

    def __post_init__(self) -> None:
        if self.matrix.shape[0] != len(self.tickers):
            raise DataError(f"{self.kind} features have {self.matrix.shape[0]} rows for {len(self.tickers)} "
                            "tickers")

    def to_frame(self) -> pd.DataFrame:
        dense = self.matrix if isinstance(self.matrix, np.ndarray) else self.matrix.toarray()
        return pd.DataFrame(dense, index=self.tickers, columns=self.names)


def _vintage_texts(universe: Universe, vintage: str) -> tuple[pd.Series, pd.Index]:
    """The ``vintage`` descriptions of ``universe`` and their tickers; none at all is an error."""
    texts = universe.descriptions(vintage)
    if texts.empty:
        raise DataError(f"universe {universe.source} has no {vintage!r} descriptions")
    return texts, pd.Index(texts.index.to_numpy(), dtype=object, name="ticker")


def document_features(universe: Universe, vintage: str, kind: str, *, model: str = DEFAULT_MODEL,
                      tl_name: str | None = None, sae: str | Path | None = None, pooling: str = "sum",
                      progress: bool | None = None, spec: ExtractionSpec | None = None) -> TextFeatures:
    """Features of ``universe``'s ``vintage`` descriptions: ``sae`` (pooled SAE latents through the feature
    cache; the language model is loaded only if some shard is missing), ``minilm`` (all-MiniLM-L6-v2 sentence
    embeddings, cached) or ``tfidf`` (fitted on these texts: formation-time only).

    SAE features are those of ``spec``, or where it is None of ``ExtractionSpec(model=model, tl_name=tl_name,
    sae=sae, pooling=pooling)``."""
    if kind not in FEATURE_KINDS:
        raise DataError(f"unknown features {kind!r}; choose one of {list(FEATURE_KINDS)}")
    texts, tickers = _vintage_texts(universe, vintage)
    if kind == "sae":
        spec = spec or ExtractionSpec(model=model, tl_name=tl_name, sae=None if sae is None else str(sae),
                                      pooling=pooling)
        return document_features_many(universe, vintage, [spec], progress=progress)[0]
    if kind == "minilm":
        emb = EmbeddingFeaturizer(cache=True)
        matrix = emb.fit_transform(list(texts))
        return TextFeatures(kind, vintage, tickers, matrix, emb.get_feature_names_out(),
                            {"model": emb.model, "cache": getattr(emb, "cache_path_", None)})
    what = f"{vintage} descriptions of universe {universe.source}"
    matrix, vec = fit_tfidf(list(texts), list(tickers), what=what)
    return TextFeatures(kind, vintage, tickers, matrix, vec.get_feature_names_out(),
                        {"max_df": vec.max_df, "min_df": vec.min_df, "vocabulary": len(vec.vocabulary_)})


def document_features_many(universe: Universe, vintage: str, specs: Sequence[ExtractionSpec | dict[str, Any]],
                           *, progress: bool | None = None,
                           label_stats: bool = False) -> list[TextFeatures]:
    """SAE features of ``universe``'s ``vintage`` descriptions for several SAE methods, each an
    :class:`ExtractionSpec` or a dict of some of its fields (``model``, ``tl_name``, ``sae``: a folder or None
    for the shipped SAE, ``pooling``, ...): the methods on the same model share one language-model pass per
    shard (:func:`finsae.extract.cache.cached_extract_many`), and each one's features are cached under its own
    key, equal to :func:`document_features` of it alone. ``label_stats``: shards encoded now also store the
    SAEs' token statistics for latent labels (:func:`finsae.extract.cache.cached_extract_many`)."""
    texts, tickers = _vintage_texts(universe, vintage)
    resolved = [s if isinstance(s, ExtractionSpec) else ExtractionSpec.from_fields(s) for s in specs]
    handles: dict[tuple[Path, str], SAEHandle] = {}
    for s in resolved:  # a wrong SAE path is an error before the model is prepared
        if (s.sae_dir, s.dtype) not in handles:
            handles[s.sae_dir, s.dtype] = s.sae_source()
    by_model: dict[tuple[str, str | None, str], list[int]] = {}
    for n, s in enumerate(resolved):
        by_model.setdefault((s.model, s.tl_name, s.dtype), []).append(n)
    out: dict[int, TextFeatures] = {}
    for members in by_model.values():
        loaded = resolved[members[0]].load_model()
        requests = [(handles[resolved[n].sae_dir, resolved[n].dtype], resolved[n]) for n in members]
        results = cached_extract_many(loaded, requests, list(texts), list(tickers), progress=progress,
                                      label_stats=label_stats)
        for n, fs in zip(members, results, strict=True):
            if fs.skipped:
                raise DataError(f"{len(fs.skipped)} {vintage} descriptions could not be encoded: "
                                f"{dict(list(fs.skipped.items())[:5])}")
            rows = pd.Index(fs.doc_ids).get_indexer(tickers)
            names = np.array([f"sae_{i}" for i in range(fs.matrix.shape[1])], dtype=object)
            source = {"model": loaded.model_id, "sae": str(resolved[n].sae_dir), "pooling": fs.pooling,
                      "hook": fs.manifest.get("hook"), "cache": fs.manifest.get("cache")}
            matrix = fs.matrix[rows].tocsr()
            out[n] = TextFeatures("sae", vintage, tickers, matrix, names, source, resolved[n])
    return [out[n] for n in range(len(resolved))]
