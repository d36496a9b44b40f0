"""Report stage: human-readable renderings (markdown tables) of results computed elsewhere."""

from finsae.report.markdown import benchmark_markdown, comovement_markdown

__all__ = ["benchmark_markdown", "comovement_markdown"]
