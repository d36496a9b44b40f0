"""Backtest stage: co-integration tests and the walk-forward pairs-trading backtest."""

from finsae.backtest.coint import (
    EngleGranger,
    default_maxlag,
    engle_granger,
    mackinnon_crit,
    mackinnon_pvalue,
)

__all__ = ["EngleGranger", "default_maxlag", "engle_granger", "mackinnon_crit", "mackinnon_pvalue"]
