"""Validated configuration files (YAML) for ``finsae benchmark``.

Every model forbids unknown keys, so a typo is an error that names the key; paths in the ``data`` section are
relative to the config file's folder.
"""

from __future__ import annotations

import datetime as dt
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finsae.errors import ConfigError
from finsae.group.peers import ClustererName
from finsae.group.similarity import TransformName
from finsae.group.taxonomy import TAXONOMIES

Frequency = Literal["monthly", "daily"]
Match = Literal["count", "density"]
Transform = TransformName
Clusterer = ClustererName
Prior = Literal["zero", "cosine"]


def _numeric_fields(model: type[BaseModel]) -> set[str]:
    """Names of the fields of ``model`` typed int or float (optionally None), where a YAML boolean is a
    mistake."""
    out = set()
    for name, info in model.model_fields.items():
        ann = info.annotation
        args = set(get_args(ann)) - {type(None)} if get_origin(ann) in (Union, types.UnionType) else {ann}
        if len(args) == 1 and get_origin(next(iter(args))) is list:  # list[int] / list[float]: each item
            args = set(get_args(next(iter(args))))
        if args and args <= {int, float}:
            out.add(name)
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """``null_draws: true`` would be read as 1: a YAML boolean where a number belongs is an error."""
        if isinstance(data, dict):
            for name in _numeric_fields(cls):
                value = data.get(name)
                if isinstance(value, bool):
                    raise ValueError(f"{name} must be a number, not the boolean {str(value).lower()}")
                if isinstance(value, list) and any(isinstance(v, bool) for v in value):
                    shown = [str(v).lower() if isinstance(v, bool) else v for v in value]
                    raise ValueError(f"{name} must be numbers, not booleans: {shown}")
        return data


class DataConfig(_Strict):
    """Input files; ``None`` means the bundled data."""

    companies: Path | None = None
    prices: Path | None = None
    nonpositive_prices: Literal["raise", "nan"] = "raise"
    bad_ticks: Literal["nan", "keep"] = "nan"
    splits: Literal["raise", "repair", "keep"] = "raise"  # split-like jumps: error, adjust, or real moves
    sparse_dates: Literal["drop", "keep", "raise"] = "drop"  # dates fewer than half of the tickers priced


class DesignConfig(_Strict):
    """One evaluation design: a return window, and the texts its text methods form peers from: one text
    vintage (``text_vintage``), or every company's latest text published on or before a date
    (``text_as_of``: the snapshot vintage ``asof_<date>``, e.g. each company's latest 10-K filed by then)."""

    name: str = Field(min_length=1)
    text_vintage: str | None = Field(None, min_length=1)
    text_as_of: dt.date | None = None
    start: dt.date
    end: dt.date
    frequencies: list[Frequency] = Field(default_factory=lambda: list[Frequency](["monthly"]), min_length=1)
    note: str = ""

    @model_validator(mode="after")
    def _window(self) -> DesignConfig:
        if (self.text_vintage is None) == (self.text_as_of is None):
            raise ValueError("give exactly one of text_vintage (a vintage's name) and text_as_of (a date: "
                             "each company's latest text published by then)")
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        if len(set(self.frequencies)) != len(self.frequencies):
            raise ValueError(f"duplicate frequencies {self.frequencies}")
        return self


class RollingConfig(_Strict):
    """Rolling design: at each formation date, peers from every company's latest text published by then,
    tested on the window that follows.

    Formation dates: every ``every_months`` months from the first publication date, or (default) each
    publication date of ``vintages``. A window starts the day after its formation date and ends
    ``horizon_months`` later, at the next formation date, or when the prices end, whichever is first."""

    name: str = Field(min_length=1)
    vintages: list[str] | None = None  # None = every vintage with a publication date
    every_months: int | None = Field(None, ge=1)
    horizon_months: int | None = Field(12, ge=1)  # None = until the next formation date
    min_months: int = Field(6, ge=1)  # shorter windows are skipped
    frequencies: list[Frequency] = Field(default_factory=lambda: list[Frequency](["monthly"]), min_length=1)

    @model_validator(mode="after")
    def _windows_can_be_long_enough(self) -> RollingConfig:
        # a window ends at the next formation date or after horizon_months: shorter than min_months, every
        # window would be skipped
        for key in ("every_months", "horizon_months"):
            months = getattr(self, key)
            if months is not None and months < self.min_months:
                raise ValueError(f"{key} {months} is less than min_months {self.min_months}: every window "
                                 f"would be shorter than min_months and skipped; lower min_months or raise "
                                 f"{key}")
        return self


class EvaluationConfig(_Strict):
    null_draws: int = Field(500, ge=0, le=100_000)
    bootstrap_draws: int = Field(2000, ge=0, le=1_000_000)
    seed: int = 0
    min_obs_share: float = Field(0.9, gt=0.0, le=1.0)
    max_drop_share: float = Field(0.25, ge=0.0, le=1.0)
    null_for_count_matched: bool = False


class TextMethodConfig(_Strict):
    """A text method: features of each design's text vintage, a transform, and a clusterer.

    ``transform`` / ``clusterer`` = ``"select"`` lets the benchmark choose them among ``selection.transforms``
    / ``selection.clusterers`` on returns of the selection window only (before the text is used)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    features: Literal["sae", "minilm", "tfidf"]
    model: str = "gemma-3-270m"
    tl_name: str | None = None
    sae: Path | None = None          # None = the shipped default SAE
    pooling: Literal["sum", "mean", "max", "binary", "count"] = "sum"
    transform: Transform | Literal["select"] = "log1p"
    n_components: int | None = Field(None, ge=1)
    clusterer: Clusterer | Literal["select"] = "average"
    # candidates for transform: select (default: selection.transforms)
    transforms: list[Transform] | None = Field(None, min_length=1)


class GranularityConfig(_Strict):
    """Taxonomy levels whose granularity text groups are matched to (on the formation-time universe)."""

    levels: list[str] = Field(
        default_factory=lambda: [
            "gics_sector",
            "gics_industry_group",
            "gics_industry",
            "gics_sub_industry",
            "sic2",
            "sic3",
            "sic4",
        ],
        min_length=1,
    )
    match: list[Match] = Field(default_factory=lambda: list[Match](["count", "density"]), min_length=1)

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in TAXONOMIES or v in ("all_pairs",)]
        if bad:
            raise ValueError(f"levels {bad} are not taxonomy levels; choose from "
                             f"{[t for t in TAXONOMIES if t != 'all_pairs']}")
        return value


class HybridConfig(_Strict):
    """Text sub-groups of ``method`` inside each group of ``parent`` (a coarse taxonomy level)."""

    method: str
    parent: str = "gics_sector"


class ChoiceConfig(_Strict):
    """The key `selection` of a benchmark config: where `transform: select` / `clusterer: select` are decided
    (the pre-period choice; not the pairs backtest's `selection`, :class:`PairSelectionConfig`): groups
    matched to ``level`` by ``match``, scored by pair-weighted correlation of ``frequency`` returns from
    ``start`` to ``end`` only."""

    start: dt.date = dt.date(2010, 1, 1)
    end: dt.date = dt.date(2017, 5, 31)
    frequency: Literal["monthly", "daily"] = "monthly"
    level: str = "gics_industry"
    match: Literal["count", "density"] = "density"
    transforms: list[Transform] = Field(
        default_factory=lambda: list[Transform](get_args(TransformName)), min_length=1)
    clusterers: list[Clusterer] = Field(
        default_factory=lambda: list[Clusterer](["average", "mst"]), min_length=1)

    @model_validator(mode="after")
    def _window(self) -> ChoiceConfig:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        if self.level not in TAXONOMIES or self.level == "all_pairs":
            raise ValueError(f"level {self.level!r} is not a taxonomy level")
        return self


class RankingConfig(_Strict):
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    difference_draws: int = Field(1000, ge=0, le=100_000)

    @field_validator("ks")
    @classmethod
    def _ks(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError(f"every k must be at least 1, got {value}")
        return sorted(set(value))


class LearnedConfig(_Strict):
    """Similarities learned from, or made of, pre-formation returns (``finsae.pipeline.learned``).

    ``methods``: text methods that also get a supervised variant ``<name>_sup`` (weights per feature fitted to
    pair correlations, :mod:`finsae.group.supervised`); ``price_peers``: the price-peer baseline
    ``price_peers``; ``blend_with``: methods (text or ``<name>_sup``) blended with price peers as
    ``<name>_price``; ``nonnegative``: text methods that also get ``<name>_nn``, the supervised fit with
    every weight ``>= 0``. Every choice (``alpha`` x ``prior`` or the unsupervised cosine; the blend weight
    ``beta``) is made by a time split of the selection window: fitted on ``selection.start..split``, scored on
    ``split..selection.end`` (groups: pair-weighted correlation at ``selection.level`` density; neighbours:
    top-``rank_k`` correlation), then refitted on the whole selection window. ``folds``: cold start, weights
    fitted without any pair of the held-out fold. ``vintages``: the text vintages to do this for (None:
    all)."""

    methods: list[str] = Field(default_factory=list)
    nonnegative: list[str] = Field(default_factory=list)
    price_peers: bool = True
    blend_with: list[str] = Field(default_factory=list)
    split: dt.date = dt.date(2013, 12, 31)
    alphas: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0], min_length=1)
    priors: list[Prior] = Field(default_factory=lambda: list[Prior](["zero", "cosine"]), min_length=1)
    betas: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], min_length=1)
    max_features: int = Field(2048, ge=1)
    rank_k: int = Field(10, ge=1)
    folds: int = Field(5, ge=0)
    vintages: list[str] | None = None
    two_way_draws: int = Field(500, ge=0, le=100_000)   # paired differences: companies x blocks of months
    block_months: int = Field(6, ge=1)

    @field_validator("folds")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("folds must be 0 (no cold start) or at least 2: one fold holds every company "
                             "out")
        return value

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, value: list[float]) -> list[float]:
        if any(a <= 0 for a in value):
            raise ValueError(f"every alpha must be > 0, got {value}")
        return value

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: list[float]) -> list[float]:
        if any(not 0.0 <= b <= 1.0 for b in value):
            raise ValueError(f"every beta must be in [0, 1], got {value}")
        return value

    @property
    def names(self) -> list[str]:
        """Names of the learned methods, in the order they are built."""
        out = [f"{m}_sup" for m in self.methods] + [f"{m}_nn" for m in self.nonnegative]
        if self.price_peers:
            out.append("price_peers")
        return out + [f"{m}_price" for m in self.blend_with]

    def base_method(self, name: str) -> str | None:
        """The text method whose features a learned method ``name`` is built on (``sae_sup`` and
        ``sae_sup_price`` -> ``sae``); None for price peers or a name that is not a learned method."""
        for m in self.methods:
            if name == f"{m}_sup" or (f"{m}_sup" in self.blend_with and name == f"{m}_sup_price"):
                return m
        for m in self.nonnegative:
            if name == f"{m}_nn" or (f"{m}_nn" in self.blend_with and name == f"{m}_nn_price"):
                return m
        return None


class BenchmarkConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    designs: list[DesignConfig] = Field(default_factory=list)
    rolling: list[RollingConfig] = Field(default_factory=list)
    taxonomies: list[str] = Field(min_length=1)
    text_methods: list[TextMethodConfig] = Field(default_factory=list)
    granularity: GranularityConfig = Field(default_factory=GranularityConfig)
    hybrid: HybridConfig | None = None
    headline_method: str | None = None  # the text method each verdict reports on (default: the first)
    learned: LearnedConfig | None = None
    random_groups: bool = True
    selection: ChoiceConfig = Field(default_factory=ChoiceConfig)
    ranking: RankingConfig = Field(default_factory=RankingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    output_dir: Path = Path("results")

    @field_validator("text_methods")
    @classmethod
    def _unique_methods(cls, value: list[TextMethodConfig]) -> list[TextMethodConfig]:
        names = [m.name for m in value]
        clash = sorted({n for n in names if names.count(n) > 1 or n in TAXONOMIES})
        if clash:
            raise ValueError(f"text method names {clash} are duplicated or clash with taxonomy names")
        return value

    @model_validator(mode="after")
    def _consistent_text(self) -> BenchmarkConfig:
        if not self.designs and not self.rolling:
            raise ValueError("give at least one design (designs) or rolling design (rolling)")
        names = [d.name for d in self.designs] + [r.name for r in self.rolling]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate design names {names}")
        names = [m.name for m in self.text_methods]
        if self.learned is not None:
            for key in ("methods", "nonnegative"):
                bad = [m for m in getattr(self.learned, key) if m not in names]
                if bad:
                    raise ValueError(f"learned.{key} {bad} are not text_methods {names}")
            fitted = [f"{m}_sup" for m in self.learned.methods]
            fitted += [f"{m}_nn" for m in self.learned.nonnegative]
            bad = [m for m in self.learned.blend_with if m not in names + fitted]
            if bad or (self.learned.blend_with and not self.learned.price_peers):
                raise ValueError(f"learned.blend_with {bad or self.learned.blend_with} must name text "
                                 "methods or their _sup / _nn variants, with price_peers on")
            names = names + self.learned.names
        if self.headline_method is not None and self.headline_method not in names:
            raise ValueError(f"headline_method {self.headline_method!r} is not one of the text_methods "
                             f"{names}")
        if self.hybrid is not None:
            if self.hybrid.method not in names:
                raise ValueError(f"hybrid.method {self.hybrid.method!r} is not one of the text_methods "
                                 f"{names}")
            if self.hybrid.parent not in TAXONOMIES or self.hybrid.parent == "all_pairs":
                raise ValueError(f"hybrid.parent {self.hybrid.parent!r} is not a taxonomy level")
        return self

    @field_validator("taxonomies")
    @classmethod
    def _known_taxonomies(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in TAXONOMIES]
        if unknown:
            raise ValueError(f"unknown taxonomies {unknown}; choose from {list(TAXONOMIES)}")
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate taxonomies in {value}")
        return value

    @field_validator("designs")
    @classmethod
    def _unique_designs(cls, value: list[DesignConfig]) -> list[DesignConfig]:
        names = [d.name for d in value]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate design names {names}")
        return value


class PairSelectionConfig(_Strict):
    """The key `selection` of a pairs-backtest config: formation-window pair selection (Engle-Granger test,
    BH-FDR within each method's candidates, half-life).

    ``orderings``: which Engle-Granger orderings decide a pair: ``first`` tests ``y`` = the first stock in
    universe order only; ``both`` tests both and requires both to pass (the larger p-value goes into the FDR
    control; the ordering with the smaller p-value is traded); ``best`` takes the smaller p-value and its
    ordering (about twice the false positives of one test). ``i1_screen``: both legs must look I(1) in the
    formation window (ADF with ``i1_lags`` lags does not reject a unit root in the log price at ``i1_alpha``
    and rejects it in the first difference). ``max_pairs_per_stock``: a stock takes part in at most that many
    of a window's selected pairs (best first). Pairs whose hedge ratio is not positive are never selected.
    """

    fdr: float = Field(0.05, gt=0.0, le=1.0)
    min_half_life: float = Field(1.0, ge=0.0)
    max_half_life: float = Field(63.0, gt=0.0)
    max_pairs: int | None = Field(20, ge=1)
    maxlag: int | None = Field(1, ge=0)
    autolag: Literal["aic", "bic"] | None = None
    orderings: Literal["first", "both", "best"] = "both"
    i1_screen: bool = True
    i1_alpha: float = Field(0.05, gt=0.0, lt=1.0)
    i1_lags: int = Field(1, ge=0)
    max_pairs_per_stock: int | None = Field(2, ge=1)

    @model_validator(mode="after")
    def _half_life(self) -> PairSelectionConfig:
        if self.max_half_life <= self.min_half_life:
            raise ValueError(f"max_half_life {self.max_half_life} must exceed min_half_life "
                             f"{self.min_half_life}")
        return self


class TradingConfig(_Strict):
    """Co-integration trading rules (z-scores of the tested spread), leg notional and delisting."""

    entry_z: float = Field(2.0, gt=0.0)
    exit_z: float = 0.5
    stop_z: float = 4.0
    borrow_bps: float = Field(50.0, ge=0.0)
    gross_notional: float = Field(2.0, gt=0.0)  # long + short notional per unit of capital
    # a leg's simple return on the day it is closed after delisting
    delisting_return: float = Field(0.0, gt=-1.0)

    @model_validator(mode="after")
    def _thresholds(self) -> TradingConfig:
        from finsae.backtest.engine import TradingRules
        from finsae.errors import DataError

        try:  # one source of truth for the rules' validity
            TradingRules(self.entry_z, self.exit_z, self.stop_z, self.borrow_bps)
        except DataError as exc:
            raise ValueError(str(exc)) from None
        return self


class DistanceConfig(_Strict):
    """The distance method of Gatev, Goetzmann and Rouwenhorst (2006) inside the same groups: the
    ``max_pairs`` pairs with the smallest sum of squared deviations of normalised prices over the formation
    window (at most ``selection.max_pairs_per_stock`` per stock), opened at ``entry_z`` formation standard
    deviations of the normalised spread, closed when the paths cross (``exit_z`` 0), no stop; same costs
    and capital bases."""

    enabled: bool = True
    entry_z: float = Field(2.0, gt=0.0)
    exit_z: float = 0.0
    max_pairs: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _thresholds(self) -> DistanceConfig:
        from finsae.backtest.engine import TradingRules
        from finsae.errors import DataError

        try:  # the rules the distance books trade with (no stop): checked when the config is read
            TradingRules(self.entry_z, self.exit_z, float("inf"))
        except DataError as exc:
            raise ValueError(str(exc)) from None
        return self


class PlaceboConfig(_Strict):
    draws: int = Field(100, ge=0, le=10_000)
    seed: int = 0


class TextGroupsConfig(_Strict):
    """Peer groups to trade inside: from a ``finsae benchmark`` results folder (``results``: its run store,
    the groupings exactly as the benchmark formed them) or from a groups table (``file``: columns ticker,
    group, name, vintage, e.g. one's own groups or a benchmark's ``groups_<vintage>.parquet``). Give one of
    the two.

    A grouping formed from text may only be traded after the text was published: the backtest refuses a start
    on or before the vintage's publication date unless ``allow_look_ahead`` (then every output is marked)."""

    results: Path | None = None
    file: Path | None = None
    names: list[str] = Field(min_length=1)
    vintage: str | None = None  # with results: the vintage of the groupings (default: the headline design's)
    allow_look_ahead: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> TextGroupsConfig:
        if (self.results is None) == (self.file is None):
            raise ValueError("give one of results (a benchmark results folder) and file (a groups table)")
        if self.vintage is not None and self.results is None:
            raise ValueError("vintage goes with results; a groups table names each grouping's vintage")
        return self


class BackendConfig(_Strict):
    """Where the pair tests and placebo draws run: ``local`` (this process) or ``ray`` (Ray tasks; ``address``
    joins a cluster, default a local one). Results are identical either way."""

    kind: Literal["local", "ray"] = "local"
    workers: int | None = Field(None, ge=1)
    address: str | None = None
    placebo_chunk: int = Field(25, ge=1)  # placebo draws per task


class PairsBacktestConfig(_Strict):
    """``finsae backtest``: walk-forward pairs trading inside the peer groups of each method."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    start: dt.date
    end: dt.date
    methods: list[str] = Field(default_factory=list)
    text_groups: TextGroupsConfig | None = None
    formation_days: int = Field(252, ge=20)
    trading_days: int = Field(126, ge=5)
    max_fill_days: int = Field(5, ge=0)
    max_stale_days: int | None = Field(21, ge=1)  # a close unchanged longer: a halt or a vendor's fill
    max_abs_log_return: float | None = Field(1.0, gt=0.0)
    selection: PairSelectionConfig = Field(default_factory=PairSelectionConfig)
    trading: TradingConfig = Field(default_factory=TradingConfig)
    distance: DistanceConfig = Field(default_factory=DistanceConfig)
    headline_basis: Literal["committed", "employed"] = "committed"
    costs_bps: list[float] = Field(default_factory=lambda: [0.0, 5.0, 10.0, 20.0], min_length=1)
    headline_cost_bps: float = 10.0
    placebo: PlaceboConfig = Field(default_factory=PlaceboConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    bootstrap_draws: int = Field(2000, ge=0)
    periods_per_year: float = Field(252.0, gt=0.0)
    rf_annual: float = 0.0
    output_dir: Path = Path("results")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        return BenchmarkConfig._known_taxonomies(value)

    @field_validator("costs_bps")
    @classmethod
    def _costs(cls, value: list[float]) -> list[float]:
        if any(c < 0 for c in value):
            raise ValueError(f"costs must be >= 0 basis points, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PairsBacktestConfig:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        if self.headline_cost_bps not in self.costs_bps:
            raise ValueError(f"headline_cost_bps {self.headline_cost_bps} must be one of costs_bps "
                             f"{self.costs_bps}")
        if not self.methods and self.text_groups is None:
            raise ValueError("give taxonomy methods, text_groups, or both")
        if self.text_groups is not None:
            clash = set(self.methods) & set(self.text_groups.names)
            if clash or len(set(self.text_groups.names)) != len(self.text_groups.names):
                raise ValueError("text_groups.names repeat or clash with methods: "
                                 f"{sorted(clash) or self.text_groups.names}")
        return self

    @property
    def all_methods(self) -> list[str]:
        """Taxonomy methods, then text groupings, in config order."""
        return [*self.methods, *(self.text_groups.names if self.text_groups else [])]


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader for which a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1}); a key may be given "
                                "once",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _load(path: str | Path, model: type[_Strict]) -> _Strict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values, not {type(raw).__name__}")
    try:
        cfg: Any = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config {path} is invalid:\n{_format_errors(exc)}") from None
    base = path.resolve().parent
    data = cfg.data.model_copy(update={
        key: (base / value if value is not None and not value.is_absolute() else value)
        for key, value in (("companies", cfg.data.companies), ("prices", cfg.data.prices))
    })
    update: dict = {"data": data}
    groups = getattr(cfg, "text_groups", None)
    if groups is not None:  # like data files, relative to the config's folder
        update["text_groups"] = groups.model_copy(update={
            key: base / value for key, value in (("results", groups.results), ("file", groups.file))
            if value is not None and not value.is_absolute()})
    methods = getattr(cfg, "text_methods", None)
    if methods:  # SAE folders, like data files, are relative to the config's folder
        update["text_methods"] = [m.model_copy(update={"sae": base / m.sae}) if m.sae is not None
                                  and not m.sae.is_absolute() else m for m in methods]
    return cfg.model_copy(update=update)


def load_benchmark_config(path: str | Path) -> BenchmarkConfig:
    """Read and validate a benchmark config; data paths and SAE folders become absolute (relative to the
    config's folder)."""
    return _load(path, BenchmarkConfig)  # type: ignore[return-value]


def load_pairs_config(path: str | Path) -> PairsBacktestConfig:
    """Read and validate a pairs-backtest config; data paths become absolute (relative to the config's
    folder)."""
    return _load(path, PairsBacktestConfig)  # type: ignore[return-value]
