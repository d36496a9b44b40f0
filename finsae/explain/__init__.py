"""Explain stage: words for SAE latents, and why companies are grouped or paired."""

from finsae.explain.labels import LatentLabels, latent_labels, save_labels

__all__ = ["LatentLabels", "latent_labels", "save_labels"]
