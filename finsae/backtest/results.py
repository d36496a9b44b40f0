"""The result of a pairs backtest and the settings it was run with, as plain frozen dataclasses.

:class:`BacktestSettings` holds what the backtest's computations and its readers (the markdown report
reads ``result.config``) use of a run's configuration; it is built from any object with those attributes
(:meth:`BacktestSettings.of`, e.g. a ``finsae.config.PairsBacktestConfig``), so this stage never imports the
configuration layer. The per-period risk-free rate is ``rf = (1 + rf_annual)^(1 / P) - 1`` with ``P`` the
periods per year.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from finsae.backtest.engine import TradingRules

STRATEGIES = ("coint", "distance")
BASES = ("committed", "employed")

_T = TypeVar("_T")


def _pick(cls: type[_T], source: Any, **override: Any) -> _T:
    """An instance of the dataclass ``cls`` from the attributes of ``source`` of the same names."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    values = {name: getattr(source, name) for name in names if name not in override}
    return cls(**values, **override)


@dataclass(frozen=True)
class PairSelectionSettings:
    """Co-integration pair selection (see ``finsae.config.PairSelectionConfig`` for every field)."""

    fdr: float
    min_half_life: float
    max_half_life: float
    max_pairs: int | None
    maxlag: int | None
    autolag: str | None
    orderings: str
    i1_screen: bool
    i1_alpha: float
    i1_lags: int
    max_pairs_per_stock: int | None


@dataclass(frozen=True)
class TradingSettings:
    """Co-integration trading rules, leg notional and delisting return."""

    entry_z: float
    exit_z: float
    stop_z: float
    borrow_bps: float
    gross_notional: float
    delisting_return: float


@dataclass(frozen=True)
class DistanceSettings:
    """The distance method of Gatev, Goetzmann and Rouwenhorst (2006)."""

    enabled: bool
    entry_z: float
    exit_z: float
    max_pairs: int


@dataclass(frozen=True)
class PlaceboSettings:
    draws: int
    seed: int


@dataclass(frozen=True)
class BacktestSettings:
    """What a pairs backtest's computations and readers use of its configuration."""

    formation_days: int
    trading_days: int
    selection: PairSelectionSettings
    trading: TradingSettings
    distance: DistanceSettings
    placebo: PlaceboSettings
    headline_basis: str
    costs_bps: tuple[float, ...]
    headline_cost_bps: float
    bootstrap_draws: int
    periods_per_year: float
    rf_annual: float

    @classmethod
    def of(cls, config: Any) -> BacktestSettings:
        """The settings of ``config``: any object with attributes of these names (a
        ``PairsBacktestConfig``)."""
        return _pick(cls, config, selection=_pick(PairSelectionSettings, config.selection),
                     trading=_pick(TradingSettings, config.trading),
                     distance=_pick(DistanceSettings, config.distance),
                     placebo=_pick(PlaceboSettings, config.placebo), costs_bps=tuple(config.costs_bps))

    @property
    def strategies(self) -> tuple[str, ...]:
        """``coint``, then ``distance`` when it is enabled."""
        return STRATEGIES if self.distance.enabled else STRATEGIES[:1]

    @property
    def rf(self) -> float:
        """The risk-free rate per period, ``(1 + rf_annual)^(1 / P) - 1``."""
        return (1 + self.rf_annual) ** (1 / self.periods_per_year) - 1

    @property
    def headline_column(self) -> str:
        """The name of the headline net-return (and net-Sharpe suffix) column, e.g. ``net_10bp``."""
        return f"net_{self.headline_cost_bps:g}bp"

    def rules(self, strategy: str) -> TradingRules:
        """The trading rules of ``strategy``: the co-integration thresholds, or the distance method's (no
        stop)."""
        t = self.trading
        if strategy == "coint":
            return TradingRules(t.entry_z, t.exit_z, t.stop_z, t.borrow_bps, self.periods_per_year)
        d = self.distance
        return TradingRules(d.entry_z, d.exit_z, np.inf, t.borrow_bps, self.periods_per_year)


@dataclass(frozen=True)
class BacktestResult:
    """Tables of one pairs backtest (every table also written as parquet).

    Attributes:
        summary: one row per (method, strategy, basis): Sharpe gross and net at each cost level, CI, return,
            volatility, drawdown, mean monthly excess return in bp (gross and net), pairs, trades, turnover,
            hit rate, holding days, concentration (distinct stocks, top stock, its P&L share, figures without
            it), placebo medians and percentiles.
        daily: one row per (method, strategy, basis, date): portfolio returns gross and net at each cost
            level.
        windows: one row per (method, strategy, window): eligible stocks, candidates, selected pairs, trades,
            and the window's compounded return gross and net of the headline cost on each basis.
        placebo: one row per (method, strategy, placebo kind, draw, basis): gross and headline-net Sharpe.
        trades: one row per round trip of a method.
        selections: one row per (method, strategy, window, pair) selected, in the traded ordering: p-value or
            SSD, half-life, the spread model (intercept, hedge ratio, residual sd) fitted on the formation
            window, and each leg's ADF p-value (log price) in that window.
        config: the settings of the run.
        output_dir: the results folder, ``None`` when nothing was written.
    """

    name: str
    summary: pd.DataFrame
    daily: pd.DataFrame
    windows: pd.DataFrame
    placebo: pd.DataFrame
    trades: pd.DataFrame
    selections: pd.DataFrame
    config: BacktestSettings
    output_dir: Path | None

    def to_frame(self) -> pd.DataFrame:
        return self.summary.copy()

    def headline(self) -> pd.DataFrame:
        """The summary rows of the headline capital basis."""
        return self.summary[self.summary["basis"] == self.config.headline_basis].reset_index(drop=True)
