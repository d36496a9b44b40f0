"""Extract stage: a language model (TransformerLens) + a sparse autoencoder (sae_lens) -> pooled features.

Modules, each importing only those above it:

* :mod:`~finsae.extract.identity`: every hash and cache key of the stage;
* :mod:`~finsae.extract.model`: language models; :mod:`~finsae.extract.sae`: SAE sources (one protocol for
  a folder or an SAE in memory);
* :mod:`~finsae.extract.features`: tokenize, chunk, encode, pool; :mod:`~finsae.extract.train`: train and
  evaluate SAEs;
* :mod:`~finsae.extract.spec`: an extraction as a value (:class:`ExtractionSpec`, with its cache key);
* :mod:`~finsae.extract.shards`, :mod:`~finsae.extract.distributed`, :mod:`~finsae.extract.cache`: the
  feature cache's shards, computed locally or on Ray;
* :mod:`~finsae.extract.featurizers` (scikit-learn featurizers) and :mod:`~finsae.extract.documents`
  (features of a universe's descriptions).
"""

from finsae.extract.cache import cached_extract, cached_extract_many
from finsae.extract.features import (
    POOLINGS,
    FeatureSet,
    chunk_tokens,
    extract_features,
    extract_features_many,
    hook_layer,
)
from finsae.extract.identity import config_key, sae_hash
from finsae.extract.model import DEFAULT_MODEL, LoadedModel, load_model
from finsae.extract.sae import (
    DEFAULT_SAE_DIR,
    LoadedSAE,
    SAEHandle,
    SAESource,
    as_sae_source,
    check_compatible,
    load_sae,
)
from finsae.extract.spec import Execution, ExtractionSpec

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SAE_DIR",
    "POOLINGS",
    "Execution",
    "ExtractionSpec",
    "FeatureSet",
    "LoadedModel",
    "LoadedSAE",
    "SAEHandle",
    "SAESource",
    "as_sae_source",
    "cached_extract",
    "cached_extract_many",
    "check_compatible",
    "chunk_tokens",
    "config_key",
    "extract_features",
    "extract_features_many",
    "hook_layer",
    "load_model",
    "load_sae",
    "sae_hash",
]
