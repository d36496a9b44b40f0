"""The HTML report of a benchmark: load its run store, a pairs backtest folder and an explanation folder into
result objects (:class:`finsae.report.html.ReportInputs`), render, write.

The headline method and vintage come from the run store; the groupings the sizes and lookup sections show are
every method's groupings of that vintage at one level (GICS industry where the benchmark has it, else its
first level) and one matching rule (pair density where it has it); the pairs section uses the backtest's own
headline capital basis and cost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from finsae._io import check_run_tables, write_text
from finsae.backtest.results import BacktestSettings
from finsae.config import PairsBacktestConfig
from finsae.errors import DataError
from finsae.explain.results import ExplanationResult
from finsae.pipeline.explain import load_explanation
from finsae.pipeline.store import BenchmarkRun, check_same_companies
from finsae.report.html import ReportInputs, render_report

logger = logging.getLogger(__name__)

#: The level the sizes and lookup sections prefer, and the matching rule.
REPORT_LEVEL = "gics_industry"
REPORT_MATCH = "density"


@dataclass(frozen=True)
class LoadedBacktest:
    """The tables of a pairs backtest folder the report shows (a ``BacktestResult``-like object)."""

    name: str
    summary: pd.DataFrame
    daily: pd.DataFrame
    placebo: pd.DataFrame
    config: BacktestSettings
    output_dir: Path


def load_backtest(folder: str | Path) -> LoadedBacktest:
    """The summary, daily and placebo tables and the headline basis and cost of a pairs backtest folder;
    refused when it is not one, mixes runs or was written by a finsae without capital bases or a headline
    cost."""
    folder = Path(folder)
    if not (folder / "summary.parquet").is_file():
        raise DataError(f"{folder} is not a finsae backtest results folder (no summary.parquet)")
    manifest_path = folder / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if manifest.get("run_id"):
        check_run_tables(folder, manifest)
    cfg = manifest.get("config", {})
    summary = pd.read_parquet(folder / "summary.parquet")
    if "basis" not in summary.columns or "headline_cost_bps" not in cfg:
        raise DataError(
            f"{folder} was written by an older finsae backtest (no capital basis or headline cost): "
            "rerun finsae backtest"
        )
    for name in ("daily", "placebo"):
        if not (folder / f"{name}.parquet").is_file():
            raise DataError(f"{folder} has no {name}.parquet: rerun finsae backtest")
    try:  # the settings the backtest ran with, as its result object carries them
        settings = BacktestSettings.of(PairsBacktestConfig.model_validate(cfg))
    except ValidationError as exc:
        raise DataError(
            f"{manifest_path}: its config is not a valid pairs-backtest config ({exc.error_count()} "
            "errors): rerun finsae backtest"
        ) from None
    return LoadedBacktest(
        str(cfg.get("name", folder.name)),
        summary,
        pd.read_parquet(folder / "daily.parquet"),
        pd.read_parquet(folder / "placebo.parquet"),
        settings,
        folder,
    )


def _explanation(run: BenchmarkRun, folder: Path) -> ExplanationResult:
    expl = load_explanation(folder)
    if expl.results_run_id and run.run_id and expl.results_run_id != run.run_id:
        raise DataError(
            f"explanations {folder} were made from another benchmark run ({expl.results_run_id}) than "
            f"the results being reported ({run.run_id}): rerun finsae explain, or leave them out"
        )
    return expl


def load_report_inputs(
    results: str | Path, *, pairs: str | Path | None = None,
    explanations: Sequence[str | Path] | str | Path | None = None
) -> ReportInputs:
    """The report's inputs from a benchmark results folder (its run store), a pairs backtest folder and
    explanation folders (the first one's labels also serve the company lookup)."""
    results = Path(results)
    run = BenchmarkRun.load(results)
    groups, neighbours = pd.DataFrame(), pd.DataFrame()
    names: tuple[str, ...] = ()
    level = REPORT_LEVEL if REPORT_LEVEL in run.levels else (run.levels[0] if run.levels else REPORT_LEVEL)
    if run.vintages:
        vintage = run.pick_vintage()
        match = REPORT_MATCH if REPORT_MATCH in run.matches else run.matches[0]
        groups = run.groups[vintage]
        neighbours = run.neighbours.get(vintage, pd.DataFrame())
        names = tuple(
            g.name for g in run.groupings if g.vintage == vintage and g.level == level and g.match == match
        )
    pairs_dir = Path(pairs) if pairs is not None else None
    if pairs_dir is not None:
        check_same_companies(results, pairs_dir)
    folders = [explanations] if isinstance(explanations, str | Path) else list(explanations or [])
    expls = [_explanation(run, Path(f)) for f in folders]
    return ReportInputs(
        run.result,
        run.headline_method,
        groups,
        names,
        level,
        neighbours,
        load_backtest(pairs_dir) if pairs_dir is not None else None,
        expls[0] if expls else None,
        str(results),
        str(pairs_dir) if pairs_dir is not None else None,
        tuple(expls[1:]),
        _headline_registered(results),
    )


def _headline_registered(results: Path) -> bool:
    """Whether the benchmark's config named its headline method (its manifest's config)."""
    try:
        config = json.loads((results / "manifest.json").read_text()).get("config") or {}
    except (OSError, ValueError):
        return False
    return config.get("headline_method") is not None


def build_report(
    results: str | Path,
    *,
    pairs: str | Path | None = None,
    explanations: Sequence[str | Path] | str | Path | None = None,
    title: str = "finsae report",
) -> str:
    """The report's HTML (see :mod:`finsae.report.html`) for the results folders given."""
    return render_report(load_report_inputs(results, pairs=pairs, explanations=explanations), title)


def write_report(
    results: str | Path,
    out: str | Path,
    *,
    pairs: str | Path | None = None,
    explanations: Sequence[str | Path] | str | Path | None = None,
    title: str = "finsae report",
) -> Path:
    """Build the report and write it atomically to ``out``."""
    out = Path(out)
    write_text(build_report(results, pairs=pairs, explanations=explanations, title=title), out)
    logger.info("report written to %s", out)
    return out
