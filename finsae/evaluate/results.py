"""The result types of a co-movement benchmark: its designs (windows and their look-ahead status) and its
tables.

They live in the evaluate stage so that renderers (:mod:`finsae.report`) and the run store
(:mod:`finsae.pipeline.store`) can take them without importing the pipeline that computes them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from finsae.data import Universe
from finsae.errors import ConfigError


class _Design(Protocol):
    """What :meth:`DesignInfo.from_config` reads of a design (a ``finsae.config.DesignConfig``)."""

    @property
    def name(self) -> str: ...
    @property
    def text_vintage(self) -> str | None: ...
    @property
    def start(self) -> dt.date: ...
    @property
    def end(self) -> dt.date: ...
    @property
    def note(self) -> str: ...


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
    def from_config(cls, design: _Design, universe: Universe) -> DesignInfo:
        """The design ``design`` (a ``DesignConfig``) on ``universe``: look-ahead when its text vintage has no
        publication date or is published on or after the window starts."""
        if design.text_vintage is None:  # a text_as_of design not yet resolved to its snapshot vintage
            raise ConfigError(f"design {design.name!r} names no text vintage (resolve text_as_of first)")
        vintage = universe.vintage(design.text_vintage)
        start = pd.Timestamp(design.start)
        look_ahead = vintage.published is None or vintage.published >= start
        return cls(
            design.name,
            design.text_vintage,
            vintage.published,
            start,
            pd.Timestamp(design.end),
            look_ahead,
            design.note,
        )


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
        ranking: top-k neighbour correlation and similarity-correlation Spearman per method (text configs).
        verdict: per matched granularity, the leader and the paired difference of the best text method to the
            taxonomy defining the granularity.
        selection: every candidate transform/clusterer of text methods set to ``select``, with its score.
        cold_start: neighbours and groups of companies held out of the weight fits
            (``finsae.pipeline.learned``).
        two_way: paired differences with a companies x blocks-of-months bootstrap
            (``finsae.evaluate.inference``).
        ranking_two_way: paired differences of top-k neighbour correlation with the same two-way bootstrap
            (focal companies x blocks of months).
    """

    name: str
    table: pd.DataFrame
    strata: pd.DataFrame
    dropped: pd.DataFrame
    designs: tuple[DesignInfo, ...]
    output_dir: Path | None
    ranking: pd.DataFrame = field(default_factory=pd.DataFrame)
    verdict: pd.DataFrame = field(default_factory=pd.DataFrame)
    selection: pd.DataFrame = field(default_factory=pd.DataFrame)
    cold_start: pd.DataFrame = field(default_factory=pd.DataFrame)
    two_way: pd.DataFrame = field(default_factory=pd.DataFrame)
    ranking_two_way: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


#: The tables of a :class:`BenchmarkResult` and the parquet file each is written to in a results folder
#: (``table``, ``strata``, ``dropped`` always; the others only by benchmarks with text methods).
RESULT_FILES: dict[str, str] = {
    "table": "comovement.parquet",
    "strata": "size_strata.parquet",
    "dropped": "dropped.parquet",
    "ranking": "ranking.parquet",
    "verdict": "verdict.parquet",
    "selection": "selection.parquet",
    "cold_start": "cold_start.parquet",
    "two_way": "two_way.parquet",
    "ranking_two_way": "ranking_two_way.parquet",
}
