"""The stable Python API of finsae: the only names a partner integration should import.

Everything else in the package is internal and may change between versions; the names below (listed in
``__all__``) and their parameters are covered by tests, so renaming one breaks the build.

Typical use::

    from finsae import api

    run = api.load_run("exports/forward_2017")  # an export folder (finsae export / api.export_run)
    run.peers("JPM", k=5)                       # PeerList: rank, ticker, name, similarity
    run.similarity("JPM", "BAC")                # Similarity (cosine, headline method)
    run.explain_pair("JPM", "BAC")              # PairExplanation: shared SAE latents, ranked by excess
    run.groups("sae", "gics_industry")          # Grouping: ticker -> group id
    run.explain_group("sae:12")                 # Group: members, latents, rule, faithfulness

    result = api.benchmark("backtests/forward_2017.yaml")   # BenchmarkResult (writes a results folder)
    bt = api.backtest("backtests/pairs_forward.yaml")       # BacktestResult
    run = api.build_run("backtests/forward_2017.yaml", "exports/forward_2017")  # benchmark + explain + export
"""

from __future__ import annotations

import logging
from pathlib import Path

from finsae.errors import ConfigError, DataError, FinsaeError, ProviderError
from finsae.evaluate.results import BenchmarkResult
from finsae.export.layout import SCHEMA_VERSION, ExportResult
from finsae.export.schema import ExportError, validate_export
from finsae.export.store import (
    Company,
    ExportedRun,
    Group,
    Grouping,
    GroupLatent,
    NoVectorError,
    PairExplanation,
    Peer,
    PeerList,
    SharedLatent,
    Similarity,
    UnknownNameError,
    UnknownTickerError,
)
from finsae.pipeline.backtest import BacktestResult
from finsae.pipeline.export import export_run as _export_run

logger = logging.getLogger(__name__)

#: A loaded model run (an export folder in memory): ``peers``, ``similarity``, ``explain_pair``,
#: ``explain_group``, ``groups``, ``grouping``, ``company``, ``companies``.
Run = ExportedRun

__all__ = [
    "SCHEMA_VERSION",
    "BacktestResult",
    "BenchmarkResult",
    "Company",
    "ConfigError",
    "DataError",
    "ExportError",
    "ExportResult",
    "FinsaeError",
    "Group",
    "GroupLatent",
    "Grouping",
    "NoVectorError",
    "PairExplanation",
    "Peer",
    "PeerList",
    "ProviderError",
    "Run",
    "SharedLatent",
    "Similarity",
    "UnknownNameError",
    "UnknownTickerError",
    "backtest",
    "benchmark",
    "build_run",
    "export_run",
    "load_run",
    "validate_export",
]


def load_run(path: str | Path) -> Run:
    """Load an export folder (validated against the shipped JSON Schema) as a :class:`Run`."""
    return ExportedRun(path)


def benchmark(config: str | Path, output: str | Path | None = None) -> BenchmarkResult:
    """Run a benchmark config (YAML path); writes its results folder (default: the config's
    ``output_dir/name``)."""
    from finsae.config import load_benchmark_config
    from finsae.pipeline.benchmark import run_benchmark

    return run_benchmark(load_benchmark_config(config), output)


def backtest(config: str | Path, output: str | Path | None = None) -> BacktestResult:
    """Run a pairs backtest config (YAML path); writes its results folder."""
    from finsae.config import load_pairs_config
    from finsae.pipeline.backtest import run_pairs_backtest

    return run_pairs_backtest(load_pairs_config(config), output)


def export_run(results: str | Path, out: str | Path, *, pairs: str | Path | None = None,
               explanations: list[str | Path] | str | Path | None = None, k: int = 20,
               overwrite: bool = False) -> ExportResult:
    """Export a benchmark results folder (plus a backtest folder and explanation folders) to ``out``."""
    return _export_run(results, out, pairs=pairs, explanations=explanations, k=k, overwrite=overwrite)


def build_run(config: str | Path, out: str | Path, *, pairs: str | Path | None = None,
              explain_level: str = "gics_industry", companies: str | Path | None = None) -> Run:
    """Build a model run end to end: run the benchmark ``config`` (universe, model, SAE and settings come from
    it), explain the headline method's groups at ``explain_level`` (pair-density matched), export everything
    (with the backtest folder ``pairs`` if given) to ``out`` and load it."""
    from finsae.config import load_benchmark_config
    from finsae.pipeline.benchmark import run_benchmark
    from finsae.pipeline.explain import explain_grouping
    from finsae.pipeline.store import BenchmarkRun

    cfg = load_benchmark_config(config)
    if not cfg.text_methods:
        raise ConfigError(f"{config}: a model run needs text methods (text_methods is empty)")
    result = run_benchmark(cfg)
    assert result.output_dir is not None  # written
    run = BenchmarkRun.load(result.output_dir)
    grouping = run.grouping(f"{run.headline_method}@{explain_level}:density")
    formed_by = run.features_of(grouping) if grouping.feature_method is not None else None
    explanations = None
    if formed_by is not None and formed_by.extraction is not None and formed_by.extraction.features == "sae":
        # its SAE, model and features: from the run store
        expl = explain_grouping(result.output_dir, grouping.name, companies=companies)
        explanations = [expl.output_dir] if expl.output_dir is not None else None
    _export_run(
        result.output_dir, out, pairs=pairs, explanations=explanations, companies=companies, overwrite=True
    )
    return load_run(out)
