"""Batched Engle-Granger co-integration tests of many pairs, equal to ``statsmodels.tsa.stattools.coint``.

For a pair ``(y, x)`` of series of length ``T`` (log prices):

1. Co-integrating regression with a constant (OLS): ``y_t = a + b x_t + e_t``; ``b`` is the hedge ratio.
   If its ``R^2 >= 1 - 100 sqrt(eps)`` the pair is (almost) collinear: statsmodels then returns a statistic of
   ``-inf`` and p-value 0; so does this module, and it flags the pair ``collinear`` so no one trades it.
2. Augmented Dickey-Fuller regression on the residuals, without deterministic terms (MacKinnon 2010, Stata's
   ``egranger``): ``De_s = rho e_s + sum_{l=1..p} g_l De_{s-l} + u_s``. The statistic is the t-value of
   ``rho``. With ``autolag`` ("aic" or "bic"), every ``p = 0..maxlag`` is fitted on the common sample
   ``s = maxlag..T-2`` and the lag with the smallest criterion ``n log(SSR/n) + c(n) (p + 1)`` is kept
   (``c = 2`` for AIC, ``log n`` for BIC; ties go to the shorter lag); the chosen lag is then re-fitted on its
   own, longer sample ``s = p..T-2``. Without ``autolag`` ``p = maxlag``. The default ``maxlag`` is
   ``min(ceil(12 (T/100)^(1/4)), T//2 - 1)`` (Schwert 1989), as in ``adfuller``.
3. p-value: MacKinnon's (1994) approximate distribution for ``N = 2`` I(1) series with a constant, evaluated
   on arrays with the coefficient tables statsmodels ships; critical values from MacKinnon (2010) at ``T - 1``
   observations (as statsmodels and Stata do).

Gram matrices are assembled from lagged inner products of the residual series (see :class:`_LagSums`), and
all regressions of a lag order come from one Cholesky factor of the augmented Gram matrix ``[X y]'[X y]``:
``R[:k, k] = R_X^{-T} X'y``, so the SSR of the regression on the first ``j`` columns is
``R[k, k]^2 + sum_{i >= j} R[i, k]^2`` (all nested lag orders at once), and with the tested regressor placed
last its t-value is ``R[k-1, k] / sigma``.

Half-life: from the AR(1) fit ``De_s = lambda e_s`` over the whole sample, ``ln(1/2) / ln(1 + lambda)``
(``inf`` when ``lambda >= 0``: no mean reversion; NaN when ``lambda <= -1``).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.special import ndtr

from finsae.errors import DataError

logger = logging.getLogger(__name__)

Autolag = Literal["aic", "bic"] | None
_SQRTEPS = np.sqrt(np.finfo(np.float64).eps)


def _mackinnon_tables() -> dict[str, Any]:
    try:
        from statsmodels.tsa import adfvalues as av

        return {"max": av._tau_maxs["c"][1], "min": av._tau_mins["c"][1], "star": av._tau_stars["c"][1],
                "small": np.asarray(av._tau_smallps["c"][1]), "large": np.asarray(av._tau_largeps["c"][1])}
    except (ImportError, AttributeError, KeyError) as exc:  # pragma: no cover - statsmodels internals
        raise DataError(f"cannot read MacKinnon's tables from statsmodels.tsa.adfvalues: {exc}") from exc


def mackinnon_pvalue(stat: np.ndarray) -> np.ndarray:
    """MacKinnon (1994) approximate p-values of Engle-Granger statistics (N=2, constant), elementwise.

    Equals ``statsmodels.tsa.adfvalues.mackinnonp(stat, regression="c", N=2)`` for every element; NaN stays
    NaN.
    """
    t = _mackinnon_tables()
    stat = np.asarray(stat, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # +-inf statistics are mapped to 0 / 1 below
        # ndtr is what norm.cdf evaluates; each branch only where it is used (a million pairs at a time)
        is_small = stat <= t["star"]
        p = np.empty(stat.shape)
        p[is_small] = ndtr(np.polyval(t["small"][::-1], stat[is_small]))
        p[~is_small] = ndtr(np.polyval(t["large"][::-1], stat[~is_small]))
        p = np.where(stat > t["max"], 1.0, p)
        p = np.where(stat < t["min"], 0.0, p)
    return np.where(np.isnan(stat), np.nan, p)


def mackinnon_crit(nobs: int) -> np.ndarray:
    """1%, 5%, 10% critical values of the Engle-Granger test (N=2, constant) at ``nobs - 1`` observations."""
    from statsmodels.tsa.adfvalues import mackinnoncrit

    return np.asarray(mackinnoncrit(N=2, regression="c", nobs=nobs - 1))


def default_maxlag(nobs: int) -> int:
    """Schwert's rule as in ``adfuller`` (no deterministic terms):
    ``min(ceil(12 (T/100)^(1/4)), T//2 - 1)``."""
    return int(min(np.ceil(12.0 * np.power(nobs / 100.0, 0.25)), nobs // 2 - 1))


def check_test_settings(t_len: int, maxlag: int | None, autolag: object) -> int:
    """Validate an Engle-Granger test's settings for series of length ``t_len``; the lag order to use
    (:func:`default_maxlag` when ``maxlag`` is None)."""
    if autolag not in ("aic", "bic", None):
        raise DataError(f"autolag must be 'aic', 'bic' or None, not {autolag!r}")
    if t_len < 6:
        raise DataError(f"series of length {t_len} are too short for an Engle-Granger test (need at least 6)")
    if maxlag is None:
        return default_maxlag(t_len)
    if not 0 <= maxlag <= t_len // 2 - 1:
        raise DataError(f"maxlag must be between 0 and T//2 - 1 = {t_len // 2 - 1} for series of length "
                        f"{t_len}, not {maxlag}")
    return int(maxlag)


def _upper_cholesky(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper Cholesky factors of a stack of Gram matrices; stacks that are not positive definite get NaN.

    Returns ``(R, ok)``.
    """
    try:
        lower = np.linalg.cholesky(gram)
        ok = np.ones(len(gram), dtype=bool)
    except np.linalg.LinAlgError:
        lower = np.full_like(gram, np.nan)
        ok = np.zeros(len(gram), dtype=bool)
        for i in range(len(gram)):
            try:
                lower[i] = np.linalg.cholesky(gram[i])
                ok[i] = True
            except np.linalg.LinAlgError:
                pass
    return lower.transpose(0, 2, 1), ok


class _LagSums:
    """Inner products of the ADF regressors of residual series ``e`` (rows), for any sample ``s = lo..L-1``.

    With ``d = diff(e)`` of length ``L = T - 1``, the regressors of the ADF regression are the level ``e[s]``
    and the lagged differences ``d[s - l]`` (``l = 0`` is the dependent variable). Every Gram entry is a
    lagged inner product over the sample, e.g. for lags ``a <= b``, ``delta = b - a``:
    ``sum_{s=lo}^{L-1} d[s-a] d[s-b] = DD[delta] - head[delta, lo - a] - tail[delta, a]`` where
    ``DD[delta] = sum_{u=delta}^{L-1} d[u] d[u-delta]`` is computed once (one dot product per lag) and the
    head and tail corrections are short cumulative sums. This costs O(maxlag * T) per pair instead of
    O(maxlag^2 * T) for forming the regressor matrix, and gives the Gram matrix of every sample start and lag
    order.
    """

    def __init__(self, e: np.ndarray, d: np.ndarray, maxlag: int) -> None:
        m = maxlag
        length = d.shape[1]
        rows = len(e)
        self.m, self.length = m, length
        self.dd = np.empty((rows, m + 1))
        self.ed = np.empty((rows, m + 1))
        for lag in range(m + 1):
            self.dd[:, lag] = np.einsum("ij,ij->i", d[:, lag:], d[:, : length - lag])
            self.ed[:, lag] = np.einsum("ij,ij->i", e[:, lag:length], d[:, : length - lag])
        self.ee = np.einsum("ij,ij->i", e[:, :length], e[:, :length])
        # head[delta, h] = sum_{u=delta}^{h-1} d[u] d[u-delta]
        # tail[delta, a] = sum_{u=L-a}^{L-1} d[u] d[u-delta]
        # head_ed[l, h] = sum_{s=l}^{h-1} e[s] d[s-l];  head_ee[h] = sum_{s<h} e[s]^2      (h, a = 0..m)
        self.head = np.zeros((rows, m + 1, m + 1))
        self.tail = np.zeros((rows, m + 1, m + 1))
        self.head_ed = np.zeros((rows, m + 1, m + 1))
        if m > 0:
            delta = np.arange(m + 1)[:, None]
            u = np.arange(m)[None, :]  # head positions 0..m-1, used where u >= delta
            inside = u >= delta
            lagged = d[:, np.clip(u - delta, 0, None)]  # (rows, m+1, m)
            self.head[:, :, 1:] = np.cumsum(np.where(inside, d[:, None, :m] * lagged, 0.0), axis=2)
            self.head_ed[:, :, 1:] = np.cumsum(np.where(inside, e[:, None, :m] * lagged, 0.0), axis=2)
            v = length - 1 - np.arange(m)[None, :]  # tail positions L-1, L-2, ..., L-m
            self.tail[:, :, 1:] = np.cumsum(d[:, None, v[0]] * d[:, v - delta], axis=2)
        self.head_ee = np.concatenate([np.zeros((rows, 1)), np.cumsum(e[:, :m] ** 2, axis=1)], axis=1)

    def gram(self, rows: np.ndarray | slice, lo: int, lags: np.ndarray, level_at: int) -> np.ndarray:
        """Gram matrices over ``s = lo..L-1`` of the lagged differences ``lags`` (in this order) with the
        level series inserted at position ``level_at``."""
        a = np.minimum.outer(lags, lags)
        delta = np.abs(np.subtract.outer(lags, lags))
        dd = self.dd[rows][:, delta] - self.head[rows][:, delta, lo - a] - self.tail[rows][:, delta, a]
        ed = self.ed[rows][:, lags] - self.head_ed[rows][:, lags, lo]
        ee = self.ee[rows] - self.head_ee[rows][:, lo]
        k = len(lags) + 1
        order = np.insert(np.arange(len(lags)), level_at, -1)  # -1 marks the level column
        g = np.empty((len(ee), k, k))
        is_lvl = order < 0
        pos = np.where(is_lvl, 0, order)
        g[:] = dd[:, pos[:, None], pos[None, :]]
        g[:, is_lvl, :] = ed[:, pos][:, None, :]
        g[:, :, is_lvl] = ed[:, pos][:, :, None]
        g[:, is_lvl[:, None] & is_lvl[None, :]] = ee[:, None]
        return g


def _adf_stat_at_lag(sums: _LagSums, rows: np.ndarray, p: int) -> np.ndarray:
    """t-value of ``rho`` in ``De_s = rho e_s + sum_{l<=p} g_l De_{s-l}``, ``s = p..T-2``, for the given
    rows."""
    n = sums.length - p
    k = p + 1
    if n - k <= 0:  # saturated: no residual degrees of freedom (statsmodels returns a meaningless 0)
        return np.full(len(rows), np.nan)
    # order: lags 1..p, the level (tested, last regressor), then the dependent variable (lag 0)
    lags = np.r_[np.arange(1, p + 1), 0]
    r, ok = _upper_cholesky(sums.gram(rows, p, lags, level_at=p))
    ssr = r[:, k, k] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = r[:, k - 1, k] / np.sqrt(ssr / (n - k))
    return np.where(ok, stat, np.nan)


def _choose_lag(sums: _LagSums, autolag: str) -> np.ndarray:
    """Lag order minimising AIC/BIC on the common sample ``s = maxlag..T-2``, per row."""
    m = sums.m
    n = sums.length - m
    # order: level, lags 1..m (nested), dependent variable
    r, ok = _upper_cholesky(sums.gram(slice(None), m, np.r_[np.arange(1, m + 1), 0], level_at=0))
    k = m + 1
    proj = r[:, :k, k] ** 2  # squared projections of y on each successive regressor
    # SSR with j regressors (j = 1..k): R[k,k]^2 + sum_{i >= j} R[i,k]^2
    tail = np.cumsum(proj[:, ::-1], axis=1)[:, ::-1]
    ssr = r[:, k, k][:, None] ** 2 + np.concatenate([tail[:, 1:], np.zeros((len(r), 1))], axis=1)
    penalty = 2.0 if autolag == "aic" else np.log(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        crit = n * np.log(ssr / n) + penalty * np.arange(1, k + 1)
    crit = np.where(np.isnan(crit), np.inf, crit)
    return np.where(ok, np.argmin(crit, axis=1), m)


@dataclass(frozen=True)
class EngleGranger:
    """Engle-Granger results for many pairs: arrays aligned with the pairs tested.

    Attributes:
        stat: ADF t-value of the residuals (``-inf`` for collinear pairs, NaN where untestable).
        pvalue: MacKinnon approximate p-value.
        crit: 1%, 5%, 10% critical values (same for every pair of one length).
        hedge_ratio, intercept: the co-integrating regression ``y = a + b x``.
        half_life: of the residual spread, in periods.
        lags: ADF lag order used.
        nobs: series length.
        collinear: R^2 of the co-integrating regression is (almost) 1.
        valid: the pair could be tested: no missing values, neither series constant, and residual degrees of
            freedom left in the ADF regression (a saturated regression, where statsmodels reports a
            meaningless statistic of 0, is NaN here).
    """

    stat: np.ndarray
    pvalue: np.ndarray
    crit: np.ndarray
    hedge_ratio: np.ndarray
    intercept: np.ndarray
    half_life: np.ndarray
    lags: np.ndarray
    nobs: int
    collinear: np.ndarray
    valid: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "stat": self.stat, "pvalue": self.pvalue, "crit_1": self.crit[0], "crit_5": self.crit[1],
            "crit_10": self.crit[2], "hedge_ratio": self.hedge_ratio, "intercept": self.intercept,
            "half_life": self.half_life, "lags": self.lags, "nobs": self.nobs, "collinear": self.collinear,
            "valid": self.valid,
        })


def engle_granger(y: np.ndarray, x: np.ndarray, *, maxlag: int | None = None, autolag: Autolag = "aic",
                  chunk_bytes: int = 32 << 20, n_jobs: int | None = None) -> EngleGranger:
    """Engle-Granger test of ``y[i]`` on ``x[i]`` for every row ``i`` of two (P, T) arrays.

    Rows with a missing value or a constant series are not tested (``valid=False``, NaN results). See the
    module docstring for the formulas; results equal ``statsmodels.tsa.stattools.coint(y[i], x[i],
    maxlag=maxlag, autolag=autolag)`` (statistic, p-value, critical values). Rows are processed in chunks
    whose largest temporary array stays near ``chunk_bytes``, so memory is bounded whatever the number of
    pairs; ``n_jobs`` threads (default: all cores) work on chunks in parallel.
    """
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if y.shape != x.shape:
        raise DataError(f"y and x must have the same shape, got {y.shape} and {x.shape}")
    n_pairs, t_len = y.shape
    maxlag = check_test_settings(t_len, maxlag, autolag)

    out = {name: np.full(n_pairs, np.nan) for name in ("stat", "hedge", "intercept", "half_life")}
    lags = np.full(n_pairs, -1, dtype=np.int64)
    collinear = np.zeros(n_pairs, dtype=bool)

    finite = np.isfinite(y).all(axis=1) & np.isfinite(x).all(axis=1)
    valid = (finite & (np.ptp(np.where(finite[:, None], y, 0), axis=1) > 0)
             & (np.ptp(np.where(finite[:, None], x, 0), axis=1) > 0))

    def run(idx: np.ndarray) -> None:  # fills the output arrays at rows idx (disjoint between chunks)
        yv, xv = y[idx], x[idx]
        xc = xv - xv.mean(axis=1, keepdims=True)
        yc = yv - yv.mean(axis=1, keepdims=True)
        b = np.einsum("ij,ij->i", xc, yc) / np.einsum("ij,ij->i", xc, xc)
        e = yc - b[:, None] * xc
        rsq = 1.0 - np.einsum("ij,ij->i", e, e) / np.einsum("ij,ij->i", yc, yc)
        out["hedge"][idx] = b
        out["intercept"][idx] = yv.mean(axis=1) - b * xv.mean(axis=1)
        is_col = ~(rsq < 1 - 100 * _SQRTEPS)
        collinear[idx] = is_col
        out["stat"][idx[is_col]] = -np.inf

        e, idx = e[~is_col], idx[~is_col]
        d = np.diff(e, axis=1)
        lam = np.einsum("ij,ij->i", e[:, :-1], d) / np.einsum("ij,ij->i", e[:, :-1], e[:, :-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            hl = np.where(lam >= 0, np.inf, np.log(0.5) / np.log1p(lam))
        out["half_life"][idx] = np.where(lam <= -1, np.nan, hl)
        sums = _LagSums(e, d, maxlag)
        chosen = _choose_lag(sums, autolag) if autolag else np.full(len(e), maxlag)
        lags[idx] = chosen
        for p in np.unique(chosen):
            rows = np.flatnonzero(chosen == p)
            out["stat"][idx[rows]] = _adf_stat_at_lag(sums, rows, int(p))

    rows_per_chunk = max(1, int(chunk_bytes // (8 * 8 * t_len)))  # about 8 float64 series per pair in flight
    all_idx = np.flatnonzero(valid)
    chunks = [all_idx[i: i + rows_per_chunk] for i in range(0, len(all_idx), rows_per_chunk)]
    workers = min(len(chunks), n_jobs or os.cpu_count() or 1)
    if workers > 1:  # numpy releases the GIL in the heavy loops: threads use every core
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, chunks))
    else:
        for chunk in chunks:
            run(chunk)
    stat = out["stat"]
    valid &= ~np.isnan(stat)
    pvalue = mackinnon_pvalue(stat)
    return EngleGranger(stat, pvalue, mackinnon_crit(t_len), out["hedge"], out["intercept"], out["half_life"],
                        lags, t_len, collinear, valid)
