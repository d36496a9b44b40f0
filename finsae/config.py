"""Validated configuration files (YAML) for ``finsae benchmark``.

Every model forbids unknown keys, so a typo is an error that names the key; paths in the ``data`` section are
relative to the config file's folder.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finsae.errors import ConfigError
from finsae.group.taxonomy import TAXONOMIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Input files; ``None`` means the bundled data."""

    companies: Path | None = None
    prices: Path | None = None
    nonpositive_prices: Literal["raise", "nan"] = "raise"
    bad_ticks: Literal["nan", "keep"] = "nan"


class DesignConfig(_Strict):
    """One evaluation design: a return window and the text vintage text methods would form peers from."""

    name: str = Field(min_length=1)
    text_vintage: str = Field(min_length=1)
    start: dt.date
    end: dt.date
    frequencies: list[Literal["monthly", "daily"]] = Field(default_factory=lambda: ["monthly"], min_length=1)
    note: str = ""

    @model_validator(mode="after")
    def _window(self) -> DesignConfig:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        if len(set(self.frequencies)) != len(self.frequencies):
            raise ValueError(f"duplicate frequencies {self.frequencies}")
        return self


class EvaluationConfig(_Strict):
    null_draws: int = Field(500, ge=0, le=100_000)
    bootstrap_draws: int = Field(2000, ge=0, le=1_000_000)
    seed: int = 0
    min_obs_share: float = Field(0.9, gt=0.0, le=1.0)
    max_drop_share: float = Field(0.25, ge=0.0, le=1.0)


class BenchmarkConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    designs: list[DesignConfig] = Field(min_length=1)
    taxonomies: list[str] = Field(min_length=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    output_dir: Path = Path("results")

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


class SelectionConfig(_Strict):
    """Formation-window pair selection: Engle-Granger test, BH-FDR within each method's candidates, half-life."""

    fdr: float = Field(0.05, gt=0.0, le=1.0)
    min_half_life: float = Field(1.0, ge=0.0)
    max_half_life: float = Field(63.0, gt=0.0)
    max_pairs: int | None = Field(20, ge=1)
    maxlag: int | None = Field(1, ge=0)
    autolag: Literal["aic", "bic"] | None = None
    both_orderings: bool = False

    @model_validator(mode="after")
    def _half_life(self) -> SelectionConfig:
        if self.max_half_life <= self.min_half_life:
            raise ValueError(f"max_half_life {self.max_half_life} must exceed min_half_life {self.min_half_life}")
        return self


class TradingConfig(_Strict):
    entry_z: float = Field(2.0, gt=0.0)
    exit_z: float = 0.5
    stop_z: float = 4.0
    borrow_bps: float = Field(50.0, ge=0.0)

    @model_validator(mode="after")
    def _thresholds(self) -> TradingConfig:
        from finsae.backtest.engine import TradingRules
        from finsae.errors import DataError

        try:  # one source of truth for the rules' validity
            TradingRules(self.entry_z, self.exit_z, self.stop_z, self.borrow_bps)
        except DataError as exc:
            raise ValueError(str(exc)) from None
        return self


class PlaceboConfig(_Strict):
    draws: int = Field(100, ge=0, le=10_000)
    seed: int = 0


class PairsBacktestConfig(_Strict):
    """``finsae backtest``: walk-forward pairs trading inside the peer groups of each method."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    start: dt.date
    end: dt.date
    methods: list[str] = Field(min_length=1)
    formation_days: int = Field(252, ge=20)
    trading_days: int = Field(126, ge=5)
    max_fill_days: int = Field(5, ge=0)
    max_abs_log_return: float | None = Field(1.0, gt=0.0)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    trading: TradingConfig = Field(default_factory=TradingConfig)
    costs_bps: list[float] = Field(default_factory=lambda: [0.0, 5.0, 10.0, 20.0], min_length=1)
    headline_cost_bps: float = 10.0
    placebo: PlaceboConfig = Field(default_factory=PlaceboConfig)
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
            raise ValueError(f"headline_cost_bps {self.headline_cost_bps} must be one of costs_bps {self.costs_bps}")
        return self


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _load(path: str | Path, model: type[_Strict]) -> _Strict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values, not {type(raw).__name__}")
    try:
        cfg = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config {path} is invalid:\n{_format_errors(exc)}") from None
    base = path.resolve().parent
    data = cfg.data.model_copy(update={
        key: (base / value if value is not None and not value.is_absolute() else value)
        for key, value in (("companies", cfg.data.companies), ("prices", cfg.data.prices))
    })
    return cfg.model_copy(update={"data": data})


def load_benchmark_config(path: str | Path) -> BenchmarkConfig:
    """Read and validate a benchmark config; data paths become absolute (relative to the config's folder)."""
    return _load(path, BenchmarkConfig)  # type: ignore[return-value]


def load_pairs_config(path: str | Path) -> PairsBacktestConfig:
    """Read and validate a pairs-backtest config; data paths become absolute (relative to the config's folder)."""
    return _load(path, PairsBacktestConfig)  # type: ignore[return-value]
