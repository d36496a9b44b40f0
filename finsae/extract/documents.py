"""Features of a universe's descriptions for one text vintage: SAE (cached), sentence embeddings (cached), TF-IDF.

One entry point, :func:`document_features`, used by the benchmark and the API. Companies without text in the
vintage get no row (``TextFeatures.tickers`` lists the rows).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from finsae.data.universe import Universe
from finsae.errors import DataError

logger = logging.getLogger(__name__)

FEATURE_KINDS = ("sae", "minilm", "tfidf")


@dataclass(frozen=True)
class TextFeatures:
    """Feature matrix (rows = ``tickers``) of one vintage's texts, with what produced it."""

    kind: str
    vintage: str
    tickers: pd.Index
    matrix: sp.csr_matrix | np.ndarray
    names: np.ndarray
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.matrix.shape[0] != len(self.tickers):
            raise DataError(f"{self.kind} features have {self.matrix.shape[0]} rows for {len(self.tickers)} tickers")

    def to_frame(self) -> pd.DataFrame:
        dense = self.matrix.toarray() if sp.issparse(self.matrix) else self.matrix
        return pd.DataFrame(dense, index=self.tickers, columns=self.names)


def document_features(universe: Universe, vintage: str, kind: str, *, model: str = "gemma-3-270m",
                      tl_name: str | None = None, sae: str | Path | None = None, pooling: str = "sum",
                      progress: bool | None = None) -> TextFeatures:
    """Features of ``universe``'s ``vintage`` descriptions: ``sae`` (pooled SAE latents through the feature
    cache; the language model is loaded only if some shard is missing), ``minilm`` (all-MiniLM-L6-v2 sentence
    embeddings, cached) or ``tfidf`` (fitted on these texts: formation-time only)."""
    if kind not in FEATURE_KINDS:
        raise DataError(f"unknown features {kind!r}; choose one of {list(FEATURE_KINDS)}")
    texts = universe.descriptions(vintage)
    if texts.empty:
        raise DataError(f"universe {universe.source} has no {vintage!r} descriptions")
    tickers = pd.Index(texts.index.to_numpy(), dtype=object, name="ticker")
    if kind == "sae":
        return document_features_many(universe, vintage, [{"model": model, "tl_name": tl_name, "sae": sae,
                                                           "pooling": pooling}], progress=progress)[0]
    if kind == "minilm":
        from finsae.extract.featurizers import EmbeddingFeaturizer

        emb = EmbeddingFeaturizer(cache=True)
        matrix = emb.fit_transform(list(texts))
        return TextFeatures(kind, vintage, tickers, matrix, emb.get_feature_names_out(),
                            {"model": emb.model, "cache": getattr(emb, "cache_path_", None)})
    from finsae.extract.featurizers import fit_tfidf

    matrix, vec = fit_tfidf(list(texts), list(tickers), what=f"{vintage} descriptions of universe {universe.source}")
    return TextFeatures(kind, vintage, tickers, matrix, vec.get_feature_names_out(),
                        {"max_df": vec.max_df, "min_df": vec.min_df, "vocabulary": len(vec.vocabulary_)})


def document_features_many(universe: Universe, vintage: str, specs: Sequence[dict], *,
                           progress: bool | None = None) -> list[TextFeatures]:
    """SAE features of ``universe``'s ``vintage`` descriptions for several SAE methods, each spec a dict of
    ``model``, ``tl_name``, ``sae`` (directory or None for the default) and ``pooling``: the methods on the same
    model share one language-model pass per shard (:func:`finsae.extract.cache.cached_extract_many`), and each
    one's features are cached under its own key, equal to :func:`document_features` of it alone."""
    from finsae.extract.cache import cached_extract_many
    from finsae.extract.model import load_model
    from finsae.extract.sae import DEFAULT_SAE_DIR, SAEHandle

    texts = universe.descriptions(vintage)
    if texts.empty:
        raise DataError(f"universe {universe.source} has no {vintage!r} descriptions")
    tickers = pd.Index(texts.index.to_numpy(), dtype=object, name="ticker")
    dirs = [Path(s["sae"]) if s.get("sae") is not None else DEFAULT_SAE_DIR for s in specs]
    handles: dict[str, SAEHandle] = {}
    for d in dirs:  # a wrong SAE path is an error before the model is prepared
        handles.setdefault(str(d), SAEHandle(d))
    by_model: dict[tuple, list[int]] = {}
    for n, s in enumerate(specs):
        by_model.setdefault((s.get("model", "gemma-3-270m"), s.get("tl_name")), []).append(n)
    out: list[TextFeatures | None] = [None] * len(specs)
    for (model, tl_name), members in by_model.items():
        loaded = load_model(model, tl_name=tl_name, lazy=True)
        requests = [(handles[str(dirs[n])], specs[n].get("pooling", "sum")) for n in members]
        results = cached_extract_many(loaded, requests, list(texts), list(tickers), progress=progress)
        for n, fs in zip(members, results, strict=True):
            if fs.skipped:
                raise DataError(f"{len(fs.skipped)} {vintage} descriptions could not be encoded: "
                                f"{dict(list(fs.skipped.items())[:5])}")
            rows = pd.Index(fs.doc_ids).get_indexer(tickers)
            names = np.array([f"sae_{i}" for i in range(fs.matrix.shape[1])], dtype=object)
            out[n] = TextFeatures("sae", vintage, tickers, fs.matrix[rows].tocsr(), names,
                                  {"model": loaded.model_id, "sae": str(dirs[n]), "pooling": fs.pooling,
                                   "hook": fs.manifest.get("hook"), "cache": fs.manifest.get("cache")})
    return [f for f in out if f is not None]
