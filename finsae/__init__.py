"""finsae: company peer groups from sparse-autoencoder features of business descriptions, proven with returns.

The tree is the pipeline. Stage packages are libraries of pure, typed pieces, each importing only lower
stages: ``finsae.data`` (universe, prices, returns, EDGAR) -> ``finsae.extract`` (language model + SAE ->
pooled features; TF-IDF, MiniLM) -> ``finsae.group`` (transforms, similarities, clusterers, peer groups) ->
``finsae.evaluate`` (co-movement, ranking, inference) -> ``finsae.backtest`` (co-integration, pairs engine) ->
``finsae.explain`` (latent labels, group explanations, faithfulness) -> ``finsae.report`` (markdown, HTML) ->
``finsae.export`` (versioned export, its reader) -> ``finsae.serve`` (HTTP service). ``finsae.pipeline`` runs
them in order from a config (``finsae.config``) and writes one results folder per run; ``finsae.cli`` and
``finsae.api`` are thin layers over it. The layering is checked by ``make lint`` (import-linter).
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
