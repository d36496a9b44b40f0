"""Report stage: human-readable renderings (markdown tables) of results computed elsewhere."""

from finsae.report.markdown import backtest_markdown, benchmark_markdown, comovement_markdown

__all__ = ["backtest_markdown", "benchmark_markdown", "comovement_markdown"]
