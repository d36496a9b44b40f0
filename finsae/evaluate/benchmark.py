"""The co-movement benchmark: every grouping of a config, in every design window and return frequency.

One correlation matrix per (design, frequency); every grouping is scored on it by
:func:`finsae.evaluate.comovement.comovement`. Results are written after each window so nothing computed is lost
if a later window fails.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from finsae._io import run_manifest, write_json, write_parquet, write_text
from finsae.config import BenchmarkConfig, DesignConfig
from finsae.data import Prices, Universe, load_prices, load_universe, log_returns
from finsae.evaluate.comovement import comovement, correlation_matrix
from finsae.group.taxonomy import taxonomy_labels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DesignInfo:
    """What a design's window means for text methods: is the text vintage published before the window?"""

    name: str
    text_vintage: str
    text_published: pd.Timestamp | None
    start: pd.Timestamp
    end: pd.Timestamp
    text_look_ahead: bool
    note: str

    @classmethod
    def from_config(cls, design: DesignConfig, universe: Universe) -> DesignInfo:
        vintage = universe.vintage(design.text_vintage)
        start = pd.Timestamp(design.start)
        look_ahead = vintage.published is None or vintage.published >= start
        return cls(design.name, design.text_vintage, vintage.published, start, pd.Timestamp(design.end),
                   look_ahead, design.note)


@dataclass(frozen=True)
class BenchmarkResult:
    """Tables of one benchmark run.

    Attributes:
        table: one row per (design, frequency, method) with every :class:`CoMovement` field plus the design's
            look-ahead flag.
        strata: size-stratified means, same keys plus ``stratum``.
        dropped: tickers left out of each window, with the reason.
        designs: the designs, with their look-ahead status.
        output_dir: the results folder, if written.
    """

    name: str
    table: pd.DataFrame
    strata: pd.DataFrame
    dropped: pd.DataFrame
    designs: tuple[DesignInfo, ...]
    output_dir: Path | None

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


def _run_window(universe: Universe, prices: Prices, info: DesignInfo, frequency: str, cfg: BenchmarkConfig,
                progress: tqdm) -> tuple[list[dict], list[pd.DataFrame], pd.DataFrame]:
    ev = cfg.evaluation
    panel = log_returns(prices, info.start, info.end, frequency, tickers=universe.tickers,
                        min_obs_share=ev.min_obs_share, max_drop_share=ev.max_drop_share)
    corr = correlation_matrix(panel)
    keys = {"design": info.name, "frequency": frequency}
    rows, strata = [], []
    for name in cfg.taxonomies:
        progress.set_postfix_str(f"{info.name}/{frequency}/{name}")
        result = comovement(corr, taxonomy_labels(universe, name), null_draws=ev.null_draws,
                            bootstrap_draws=ev.bootstrap_draws, seed=ev.seed, method=name)
        rows.append({**keys, "method_kind": "taxonomy", "text_look_ahead": False, "n_periods": panel.n_periods,
                     **result.to_dict()})
        strata.append(result.strata.assign(**keys, method=name))
        progress.update()
    dropped = panel.dropped.rename("reason").reset_index().assign(**keys)
    return rows, strata, dropped


def run_benchmark(cfg: BenchmarkConfig, output_dir: str | Path | None = None, *, write: bool = True) -> BenchmarkResult:
    """Run ``cfg``; write ``comovement.parquet``, ``size_strata.parquet``, ``dropped.parquet``, ``table.md``
    and ``manifest.json`` into ``output_dir`` (default ``cfg.output_dir / cfg.name``) unless ``write=False``."""
    from finsae.report.markdown import benchmark_markdown

    t0 = time.perf_counter()
    universe = load_universe(cfg.data.companies)
    prices = load_prices(cfg.data.prices, nonpositive=cfg.data.nonpositive_prices, bad_ticks=cfg.data.bad_ticks)
    designs = tuple(DesignInfo.from_config(d, universe) for d in cfg.designs)
    out = Path(output_dir) if output_dir is not None else cfg.output_dir / cfg.name
    rows: list[dict] = []
    strata: list[pd.DataFrame] = []
    dropped: list[pd.DataFrame] = []
    total = sum(len(d.frequencies) for d in cfg.designs) * len(cfg.taxonomies)

    def result() -> BenchmarkResult:
        return BenchmarkResult(cfg.name, pd.DataFrame(rows),
                               pd.concat(strata, ignore_index=True) if strata else pd.DataFrame(),
                               pd.concat(dropped, ignore_index=True) if dropped else pd.DataFrame(),
                               designs, out if write else None)

    with tqdm(total=total, desc=f"benchmark {cfg.name}", unit="grouping", disable=None) as progress:
        for design, info in zip(cfg.designs, designs, strict=True):
            for frequency in design.frequencies:
                r, s, d = _run_window(universe, prices, info, frequency, cfg, progress)
                rows += r
                strata += s
                dropped.append(d)
                if write:  # after every window: a later failure loses nothing already computed
                    res = result()
                    write_parquet(res.table, out / "comovement.parquet")
                    write_parquet(res.strata, out / "size_strata.parquet")
                    write_parquet(res.dropped, out / "dropped.parquet")
    res = result()
    if write:
        write_text(benchmark_markdown(res), out / "table.md")
        write_json(run_manifest(cfg.model_dump(mode="json"), {"companies": universe.source, "prices": prices.source},
                                time.perf_counter() - t0, n_companies=len(universe),
                                prices_window=[str(prices.start.date()), str(prices.end.date())]),
                   out / "manifest.json")
        logger.info("benchmark %s written to %s", cfg.name, out)
    return res
