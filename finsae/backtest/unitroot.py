"""Augmented Dickey-Fuller tests of many series at once, equal to ``statsmodels.tsa.stattools.adfuller``.

Used to screen pairs-trading legs: Engle-Granger co-integration presumes both legs are I(1); a leg that is
stationary on its own makes any hedge "co-integrate" with it (the spread is then that stock alone plus noise).

For a series ``y`` of length ``T`` and a fixed lag order ``p`` the test regression (with a constant,
``regression="c"``) is ``Dy_t = c + rho y_{t-1} + sum_{l=1..p} g_l Dy_{t-l} + u_t`` for ``t = p+1..T-1`` (``n
= T - p - 1`` observations), fitted by OLS; the statistic is the t-value of ``rho``. The p-value is
MacKinnon's (1994) approximate distribution for one series with a constant (``mackinnonp(stat, regression="c",
N=1)``), evaluated on arrays with the coefficient tables statsmodels ships. Each series is centred first (the
constant absorbs the level, so the statistic is unchanged) and every regression is solved by a batched QR
decomposition.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from finsae.errors import DataError


def mackinnon_pvalue_n(stat: np.ndarray, n_series: int = 1) -> np.ndarray:
    """MacKinnon (1994) p-values for ``n_series`` I(1) series with a constant, elementwise; NaN stays NaN.

    Equals ``statsmodels.tsa.adfvalues.mackinnonp(stat, regression="c", N=n_series)``."""
    try:
        from statsmodels.tsa import adfvalues as av

        k = n_series - 1
        tmax, tmin, star = av._tau_maxs["c"][k], av._tau_mins["c"][k], av._tau_stars["c"][k]
        small, large = np.asarray(av._tau_smallps["c"][k]), np.asarray(av._tau_largeps["c"][k])
    except (ImportError, AttributeError, KeyError, IndexError) as exc:  # pragma: no cover - statsmodels
        raise DataError(f"cannot read MacKinnon's tables from statsmodels.tsa.adfvalues: {exc}") from exc
    stat = np.asarray(stat, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.where(stat <= star, norm.cdf(np.polyval(small[::-1], stat)),
                     norm.cdf(np.polyval(large[::-1], stat)))
        p = np.where(stat > tmax, 1.0, p)
        p = np.where(stat < tmin, 0.0, p)
    return np.where(np.isnan(stat), np.nan, p)


def adf_test(series: np.ndarray, lags: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """ADF statistic and p-value (constant, fixed ``lags``) of every column of ``series`` (T x N, no NaN).

    Equals ``adfuller(series[:, k], maxlag=lags, regression="c", autolag=None)[:2]``. A constant column gets
    NaN.
    """
    y = np.asarray(series, dtype=np.float64)
    if y.ndim != 2:
        raise DataError(f"series must be a (T, N) array, got shape {y.shape}")
    if lags < 0:
        raise DataError(f"lags must be >= 0, not {lags}")
    t_len, n = y.shape
    nobs = t_len - lags - 1
    if nobs < lags + 4:
        raise DataError(f"{t_len} observations are too few for an ADF test with {lags} lag(s)")
    if np.isnan(y).any():
        raise DataError("series for the ADF test must have no missing values")
    y = y - y.mean(axis=0)
    dy = np.diff(y, axis=0)  # dy[s] = y[s+1] - y[s]
    dep = dy[lags:]  # Dy_t for t = lags+1..T-1
    cols = [np.ones((nobs, n)), y[lags:-1]]
    cols += [dy[lags - g: len(dy) - g] for g in range(1, lags + 1)]
    x = np.stack(cols, axis=-1).transpose(1, 0, 2)  # (N, nobs, k)
    q, r = np.linalg.qr(x)
    qty = np.einsum("nsk,sn->nk", q, dep)
    diag = np.abs(np.diagonal(r, axis1=1, axis2=2))
    ok = diag.min(axis=1) > 1e-10 * np.maximum(diag.max(axis=1), 1e-300)
    stat = np.full(n, np.nan)
    if ok.any():
        r_ok, qty_ok = r[ok], qty[ok]
        beta = np.linalg.solve(r_ok, qty_ok[..., None])[..., 0]
        resid = dep[:, ok].T - np.einsum("nsk,nk->ns", x[ok], beta)
        sigma2 = (resid**2).sum(axis=1) / (nobs - x.shape[2])
        rinv = np.linalg.inv(r_ok)
        var_rho = sigma2 * (rinv[:, 1, :] ** 2).sum(axis=1)  # (R'R)^-1 = R^-1 R^-T
        with np.errstate(invalid="ignore", divide="ignore"):
            stat[ok] = beta[:, 1] / np.sqrt(var_rho)
    return stat, mackinnon_pvalue_n(stat, 1)


def integrated_of_order_one(log_prices: np.ndarray, *, lags: int = 1, alpha: float = 0.05) -> np.ndarray:
    """Boolean mask of the columns that look I(1) in this window: the ADF test on the level does **not**
    reject a unit root at ``alpha`` (p >= alpha) and the test on the first difference does (p < alpha)."""
    if not 0 < alpha < 1:
        raise DataError(f"alpha must be in (0, 1), not {alpha}")
    _, p_level = adf_test(log_prices, lags)
    _, p_diff = adf_test(np.diff(np.asarray(log_prices, dtype=np.float64), axis=0), lags)
    return (p_level >= alpha) & (p_diff < alpha)
