"""Shared fixtures: small synthetic panels for unit tests, the bundled real data for the sanity tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finsae.data import Prices, ReturnsPanel, load_prices, load_universe


def synthetic_prices(n_tickers: int = 12, n_days: int = 400, seed: int = 0, n_factors: int = 3) -> Prices:
    """Daily prices with a factor structure: ticker k loads on factor k % n_factors (so groups co-move)."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2015-01-01", periods=n_days, name="date")
    factors = rng.normal(0, 0.01, (n_days, n_factors))
    loads = np.zeros((n_factors, n_tickers))
    loads[np.arange(n_tickers) % n_factors, np.arange(n_tickers)] = 1.0
    rets = factors @ loads + rng.normal(0, 0.01, (n_days, n_tickers))
    close = 50 * np.exp(np.cumsum(rets, axis=0))
    cols = pd.Index([f"T{i:02d}" for i in range(n_tickers)], name="ticker")
    return Prices(pd.DataFrame(close, index=dates, columns=cols), "synthetic")


def synthetic_panel(n_periods: int = 60, n_tickers: int = 12, seed: int = 0, nan_share: float = 0.0) -> ReturnsPanel:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n_periods, 3))
    x = factors[:, np.arange(n_tickers) % 3] + rng.normal(size=(n_periods, n_tickers))
    if nan_share:
        x[rng.random(x.shape) < nan_share] = np.nan
    idx = pd.period_range("2015-01", periods=n_periods, freq="M").to_timestamp("M")
    cols = pd.Index([f"T{i:02d}" for i in range(n_tickers)], name="ticker")
    return ReturnsPanel(pd.DataFrame(x, index=idx, columns=cols), "monthly", idx[0], idx[-1],
                        pd.Series(dtype="string", name="reason"))


@pytest.fixture(scope="session")
def universe():
    return load_universe()


@pytest.fixture(scope="session")
def prices():
    return load_prices()
