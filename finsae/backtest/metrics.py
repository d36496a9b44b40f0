"""Performance metrics of a periodic return series: pure functions, explicit annualisation.

``returns`` are simple returns per period; ``periods_per_year`` annualises (252 for daily); ``rf`` is the
risk-free rate **per period** (a daily rate for daily returns).

* Sharpe ratio: ``sqrt(P) * mean(r - rf) / std(r - rf)`` with the sample standard deviation (``ddof=1``).
* Annual return: geometric, ``prod(1 + r)^(P / n) - 1``; annual volatility ``sqrt(P) * std(r)``.
* Maximum drawdown: ``min_t (NAV_t / max_{s<=t} NAV_s - 1)`` with ``NAV_t = prod_{s<=t} (1 + r_s)`` and a
  starting NAV of 1 (so a loss on the first day counts).
* Mean monthly excess return in basis points: daily returns compounded within each calendar month,
  ``prod(1 + r) - prod(1 + rf)`` per month, averaged over months, times 1e4 (the unit of the pairs-trading
  literature, e.g. Gatev, Goetzmann and Rouwenhorst 2006; Do and Faff 2012).
* Stationary bootstrap (Politis & Romano 1994): resampled series are concatenated blocks starting at uniformly
  random positions with geometric lengths of mean ``block`` (wrapping around the end); the CI is the
  percentile interval of the statistic over the resamples.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from finsae.errors import DataError


def _clean(returns: np.ndarray) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise DataError(f"returns must be one-dimensional, got shape {r.shape}")
    if np.isnan(r).any():
        raise DataError(f"returns contain {int(np.isnan(r).sum())} missing value(s)")
    return r


def sharpe_ratio(returns: np.ndarray, periods_per_year: float = 252.0, rf: float = 0.0) -> float:
    """Annualised Sharpe ratio ``sqrt(P) * mean(r - rf) / std(r - rf, ddof=1)``; NaN if undefined."""
    r = _clean(returns) - rf
    if len(r) < 2:
        return np.nan
    sd = r.std(ddof=1)
    return float(np.sqrt(periods_per_year) * r.mean() / sd) if sd > 0 else np.nan


def annual_return(returns: np.ndarray, periods_per_year: float = 252.0) -> float:
    """Geometric annualised return ``prod(1 + r)^(P / n) - 1``."""
    r = _clean(returns)
    if len(r) == 0:
        return np.nan
    growth = np.prod(1.0 + r)
    return float(growth ** (periods_per_year / len(r)) - 1.0) if growth > 0 else -1.0


def annual_volatility(returns: np.ndarray, periods_per_year: float = 252.0) -> float:
    r = _clean(returns)
    return float(np.sqrt(periods_per_year) * r.std(ddof=1)) if len(r) > 1 else np.nan


def max_drawdown(returns: np.ndarray) -> float:
    """Largest peak-to-trough loss of the NAV (a number <= 0), the NAV starting at 1."""
    r = _clean(returns)
    if len(r) == 0:
        return 0.0
    nav = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    return float(np.min(nav / np.maximum.accumulate(nav) - 1.0))


def monthly_excess_bps(returns: np.ndarray, dates: pd.DatetimeIndex, rf: float = 0.0) -> float:
    """Mean over calendar months of ``prod(1 + r) - prod(1 + rf)`` (daily ``r``, ``rf`` per day), in basis
    points."""
    r = _clean(returns)
    dates = pd.DatetimeIndex(dates)
    if len(dates) != len(r):
        raise DataError(f"{len(r)} returns but {len(dates)} dates")
    if len(r) == 0:
        return np.nan
    months = dates.to_period("M")
    growth = pd.Series(1.0 + r, index=dates).groupby(months).prod().to_numpy()
    days = pd.Series(1.0, index=dates).groupby(months).sum().to_numpy()
    excess = (growth - 1.0) - ((1.0 + rf) ** days - 1.0)
    return float(excess.mean() * 1e4)


def stationary_bootstrap_indices(n: int, block: float, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, n) index arrays of the stationary bootstrap with mean block length ``block``."""
    if n < 1 or block < 1:
        raise DataError(f"stationary bootstrap needs n >= 1 and block >= 1, got n={n}, block={block}")
    p = 1.0 / block
    starts = rng.integers(0, n, size=(draws, n))
    new_block = rng.random((draws, n)) < p
    new_block[:, 0] = True
    # position within the current block: steps since the last block start
    pos = np.arange(n)[None, :]
    last_start = np.maximum.accumulate(np.where(new_block, pos, 0), axis=1)
    block_start_value = np.take_along_axis(starts, last_start, axis=1)
    return (block_start_value + (pos - last_start)) % n


def bootstrap_ci(returns: np.ndarray, statistic: Callable[[np.ndarray], float], *, draws: int = 2000,
                 block: float | None = None, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of ``statistic`` under the stationary bootstrap; ``block`` defaults to ``n^(1/3)``."""
    r = _clean(returns)
    if len(r) < 2 or draws < 1:
        return (np.nan, np.nan)
    block = block or max(1.0, len(r) ** (1.0 / 3.0))
    idx = stationary_bootstrap_indices(len(r), block, draws, np.random.default_rng(seed))
    stats = np.array([statistic(r[i]) for i in idx])
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return (np.nan, np.nan)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def sharpe_ci(returns: np.ndarray, periods_per_year: float = 252.0, rf: float = 0.0, *, draws: int = 2000,
              block: float | None = None, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Stationary-bootstrap percentile CI of the annualised Sharpe ratio (vectorised over resamples)."""
    r = _clean(returns) - rf
    if len(r) < 2 or draws < 1:
        return (np.nan, np.nan)
    block = block or max(1.0, len(r) ** (1.0 / 3.0))
    idx = stationary_bootstrap_indices(len(r), block, draws, np.random.default_rng(seed))
    sample = r[idx]
    sd = sample.std(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = np.sqrt(periods_per_year) * sample.mean(axis=1) / sd
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return (np.nan, np.nan)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)
