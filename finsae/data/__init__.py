"""Data stage: the company universe, daily prices, and log returns over a window."""

from finsae.data.codes import GICS_LEVELS, GICS_VERSION, gics_name, normalize_gics, normalize_sic
from finsae.data.prices import (
    FREQUENCIES,
    Prices,
    ReturnsPanel,
    find_split_jumps,
    load_prices,
    log_returns,
    priced_tickers,
    prices_from_frame,
)
from finsae.data.universe import (
    BUNDLED_DATA_LIMITS,
    BUNDLED_VINTAGES,
    TextVintage,
    Universe,
    load_universe,
    normalize_tickers,
    universe_from_frame,
)

__all__ = [
    "BUNDLED_DATA_LIMITS",
    "BUNDLED_VINTAGES",
    "FREQUENCIES",
    "GICS_LEVELS",
    "GICS_VERSION",
    "Prices",
    "ReturnsPanel",
    "TextVintage",
    "Universe",
    "find_split_jumps",
    "gics_name",
    "load_prices",
    "load_universe",
    "log_returns",
    "normalize_gics",
    "normalize_sic",
    "normalize_tickers",
    "priced_tickers",
    "prices_from_frame",
    "universe_from_frame",
]
