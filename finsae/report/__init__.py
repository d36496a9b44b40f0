"""Report stage: human-readable renderings of result objects computed elsewhere: markdown tables
(:mod:`finsae.report.markdown`) and the self-contained HTML report (:mod:`finsae.report.html`). Nothing here
reads a file; :mod:`finsae.pipeline.report` loads what the HTML report shows."""

from finsae.report.markdown import backtest_markdown, benchmark_markdown, comovement_markdown

__all__ = ["backtest_markdown", "benchmark_markdown", "comovement_markdown"]
