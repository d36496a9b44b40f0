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


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_benchmark_config(path: str | Path) -> BenchmarkConfig:
    """Read and validate a benchmark config; data paths become absolute (relative to the config's folder)."""
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
        cfg = BenchmarkConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config {path} is invalid:\n{_format_errors(exc)}") from None
    base = path.resolve().parent
    data = cfg.data.model_copy(update={
        key: (base / value if value is not None and not value.is_absolute() else value)
        for key, value in (("companies", cfg.data.companies), ("prices", cfg.data.prices))
    })
    return cfg.model_copy(update={"data": data})
