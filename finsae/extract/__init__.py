"""Extract stage: a language model (TransformerLens) + a sparse autoencoder (sae_lens) -> pooled features."""

from finsae.extract.cache import cached_extract, cached_extract_many, config_key, sae_hash
from finsae.extract.features import (
    POOLINGS,
    FeatureSet,
    chunk_tokens,
    extract_features,
    extract_features_many,
    hook_layer,
)
from finsae.extract.model import DEFAULT_MODEL, LoadedModel, load_model
from finsae.extract.sae import DEFAULT_SAE_DIR, SAEHandle, check_compatible, load_sae

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SAE_DIR",
    "POOLINGS",
    "FeatureSet",
    "LoadedModel",
    "SAEHandle",
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
