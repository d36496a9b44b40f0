"""All-pairs Engle-Granger tests from a few matrix products of the price panel, equal to the per-pair path.

:func:`finsae.backtest.coint.engle_granger` forms every pair's residual series and its lagged inner products
(``O(maxlag T)`` work per pair). For a panel without gaps, every one of those inner products is a bilinear
form in the two columns, so matrix products of the whole panel give them for all pairs at once, and for both
orderings of each pair. Notation: ``Z`` is the panel centred and scaled column-wise over the window
(``Z_c = (X_c - mean_c) / ||X_c - mean_c||``), ``D = diff(X) / scale`` its first differences (``L = T - 1``
rows), and for the test of ``y = column i`` on ``x = column j``:

1. Co-integrating regression: ``b = C_ij / C_jj`` with ``C = Z'Z`` (after centring the constant drops out);
   the residual is ``e = Z_i - b Z_j`` and ``d = diff(e) = D_i - b D_j``; hedge ratio ``b scale_i / scale_j``,
   intercept ``mean_i - hedge mean_j``; ``SSR = C_ii - b C_ij`` and ``R^2 = 1 - SSR / C_ii``.
2. A sum ``sum_s (U_i - b U_j)[s] (V_i - b V_j)[s']`` is ``F_ii - b (F_ij + F_ji) + b^2 F_jj`` with
   ``F = U'V``: only the symmetric part ``F + F'`` is needed (so ``(i, j)`` and ``(j, i)`` share it) and the
   diagonal ``F_cc``. The products taken are ``C`` and, for ``delta = 0..maxlag``,
   ``DD_delta = D[delta:]' D[:L-delta]`` (``sum_{u=delta}^{L-1} d[u] d[u-delta]``). Everything else is
   exact identities plus the pair's own residuals at the first and last ``maxlag + 1`` positions (computed
   directly, no cancellation):

   * ``sum_{s=0}^{L-1} e[s]^2 = SSR - e[L]^2``;
   * ``ED_0 = sum_{s=0}^{L-1} e[s] d[s] = (e[L]^2 - e[0]^2 - DD_0) / 2`` (telescoping ``e[s+1]^2 - e[s]^2``);
   * ``ED_l = sum_{s=l}^{L-1} e[s] d[s-l] = ED_0 - sum_{u=L-l}^{L-1} e[u] d[u]
     + sum_{r<l} (DD_r - sum_{w=L-l+r}^{L-1} d[w] d[w-r])`` (``e[u+l] = e[u] + d[u] + ... + d[u+l-1]``);
   * sums over a sample ``s = lo..L-1`` subtract the head terms ``s < lo`` and tail terms as in
     :class:`finsae.backtest.coint._LagSums`.

3. The ADF Gram matrices, the Cholesky solve, the nested SSRs of AIC/BIC lag choice, the t-value, the
   MacKinnon p-value and the half-life are then exactly those of :mod:`finsae.backtest.coint` (see its
   docstring), on stacks of small matrices laid out pairs-last so every step is a vector operation over pairs.

Cancellation. The bilinear form of step 2 loses ``log10(kappa)`` digits, with
``kappa = max over levels and differences of (||U_i|| + |b| ||U_j||)^2 / ||U_i - b U_j||^2``, largest when the
pair is nearly collinear (``kappa ~ 4 / (1 - R^2)`` for the levels). Centring and scaling keep ``kappa`` a
property of the pair rather than of the price level; everything runs in float64. Each pair's ``kappa`` is
computed, and a pair whose estimated error of the statistic ``eps kappa (1 + |stat|)`` exceeds ``tol``
(default ``1e-11``) takes the per-pair path, as does every pair with ``R^2`` past the collinearity threshold,
pairs whose ADF Gram matrix is not positive definite and pairs whose AIC/BIC comparison is a near-tie.
Measured against an 80-bit reference on near-collinear synthetic pairs (T = 30..1260, lags 0..5), the actual
error is at most ~30 times that estimate, so the statistics computed from the products are within a few 1e-10
of the exact value (observed: at most 7e-11, the per-pair path's own accuracy); ``statsmodels`` (which does
not centre) is itself off by up to ~1e-9 on such pairs. Pairs with a column that has a gap (a non-finite
value) or is constant in the window also take the per-pair path (which reports them untestable); fallback
results are bit-for-bit those of :func:`engle_granger`. On the bundled stocks (T = 504) ``kappa`` stays below
~1e3 and no pair needs the fallback.

Work: ``2 + 2 maxlag`` products of size ``B x T`` by ``T x K`` per block of ``B`` rows of the pair matrix
(only the columns ``K`` that the block's pairs use, and only ``j >= i``), plus ``O(maxlag^2)`` vector
operations per pair (``O(maxlag^3)`` with a lag choice). Blocks are independent: ``n_jobs`` threads each run
single-threaded BLAS.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from finsae.backtest.coint import (
    _SQRTEPS,
    Autolag,
    EngleGranger,
    check_test_settings,
    engle_granger,
    mackinnon_crit,
    mackinnon_pvalue,
)
from finsae.errors import DataError

logger = logging.getLogger(__name__)

ROUTE_MATRIX = 0
"""The pair was tested from the matrix products."""
ROUTE_GAP = 1
"""A column of the pair has a missing value or is constant in the window: per-pair path (untestable)."""
ROUTE_ILL = 2
"""Ill-conditioned for the bilinear sums (near-collinear, kappa too large, a Gram matrix not positive
definite, or an AIC/BIC near-tie): per-pair path."""

_EPS = np.finfo(np.float64).eps


@functools.cache
def _threadpool_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None
    return ThreadpoolController()  # scanning the loaded libraries takes milliseconds: once


def _single_threaded_blas():
    """Context manager limiting BLAS to one thread (a no-op without ``threadpoolctl``)."""
    controller = _threadpool_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


def _cholesky_last(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper Cholesky factors ``R'R = G`` of a pairs-last stack ``(k, k, P)``; ``ok`` is False where a pivot
    is not positive (as LAPACK's ``potrf`` reports), and those factors hold NaN."""
    k, _, n = g.shape
    r = np.zeros_like(g)
    ok = np.ones(n, dtype=bool)
    for c in range(k):
        piv = g[c, c] - np.einsum("lp,lp->p", r[:c, c], r[:c, c]) if c else g[c, c].copy()
        ok &= piv > 0
        rcc = np.sqrt(np.where(piv > 0, piv, np.nan))
        r[c, c] = rcc
        if c + 1 < k:
            rest = g[c, c + 1:] - (np.einsum("lp,ljp->jp", r[:c, c], r[:c, c + 1:]) if c else 0.0)
            r[c, c + 1:] = rest / rcc
    return r, ok


@dataclass
class _PairSums:
    """Lagged inner products of the ADF regressors of many pairs' residuals, pairs-last (see module
    docstring).

    ``dd[delta] = sum_{u=delta}^{L-1} d[u] d[u-delta]``, ``ed[l] = sum_{s=l}^{L-1} e[s] d[s-l]``,
    ``ee = sum_{s=0}^{L-1} e[s]^2``; ``eh[s] = e[s]`` for ``s < m``; ``dh[u] = d[u]`` for ``u < m``;
    ``dt[q] = d[L - m + q]`` for ``q < m``.
    """

    dd: np.ndarray  # (m+1, P)
    ed: np.ndarray  # (m+1, P)
    ee: np.ndarray  # (P,)
    eh: np.ndarray  # (m, P)
    dh: np.ndarray  # (m, P)
    dt: np.ndarray  # (m, P)
    m: int
    length: int

    def take(self, rows: np.ndarray) -> _PairSums:
        return _PairSums(self.dd[:, rows], self.ed[:, rows], self.ee[rows], self.eh[:, rows],
                         self.dh[:, rows], self.dt[:, rows], self.m, self.length)

    def _ee(self, lo: int) -> np.ndarray:
        return self.ee - np.einsum("sp,sp->p", self.eh[:lo], self.eh[:lo])

    def _ed(self, lag: int, lo: int) -> np.ndarray:  # sum_{s=lo}^{L-1} e[s] d[s-lag]
        return self.ed[lag] - np.einsum("sp,sp->p", self.eh[lag:lo], self.dh[: max(lo - lag, 0)])

    def _dd(self, la: int, lb: int, lo: int) -> np.ndarray:  # sum_{s=lo}^{L-1} d[s-la] d[s-lb], la <= lb
        delta, m = lb - la, self.m
        head = np.einsum("up,up->p", self.dh[delta: lo - la], self.dh[: max(lo - la - delta, 0)])
        tail = np.einsum("up,up->p", self.dt[m - la:], self.dt[m - lb: m - delta])
        return self.dd[delta] - head - tail

    def gram(self, lo: int, lags: list[int], level_at: int) -> np.ndarray:
        """Gram matrices ``(k, k, P)`` over ``s = lo..L-1`` of the lagged differences ``lags`` (lag 0 is the
        dependent variable) with the level inserted at position ``level_at`` (as ``_LagSums.gram``)."""
        cols: list[int | None] = list(lags)
        cols.insert(level_at, None)  # None marks the level e[s]
        k = len(cols)
        g = np.empty((k, k, len(self.ee)))
        for a in range(k):
            for b in range(a, k):
                u, v = cols[a], cols[b]
                if u is None:
                    val = self._ee(lo) if v is None else self._ed(v, lo)
                elif v is None:
                    val = self._ed(u, lo)
                else:
                    val = self._dd(min(u, v), max(u, v), lo)
                g[a, b] = val
                g[b, a] = val
        return g


def _adf_stat_at_lag(sums: _PairSums, p: int) -> tuple[np.ndarray, np.ndarray]:
    """t-value of ``rho`` at lag ``p`` on ``s = p..T-2`` (as ``coint._adf_stat_at_lag``) and the Cholesky
    ``ok``."""
    n = sums.length - p
    k = p + 1
    if n - k <= 0:  # saturated: NaN, as the per-pair path
        return np.full(len(sums.ee), np.nan), np.ones(len(sums.ee), dtype=bool)
    r, ok = _cholesky_last(sums.gram(p, list(range(1, p + 1)) + [0], level_at=p))
    ssr = r[k, k] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = r[k - 1, k] / np.sqrt(ssr / (n - k))
    return np.where(ok, stat, np.nan), ok


def _choose_lag(sums: _PairSums, autolag: str,
                crit_margin: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AIC/BIC lag choice on ``s = maxlag..T-2`` (as ``coint._choose_lag``); ``ok`` is False where the Gram
    matrix is not positive definite or the best two criteria are within ``crit_margin``."""
    m = sums.m
    n = sums.length - m
    r, ok = _cholesky_last(sums.gram(m, list(range(1, m + 1)) + [0], level_at=0))
    k = m + 1
    proj = r[:k, k] ** 2
    tail = np.cumsum(proj[::-1], axis=0)[::-1]
    ssr = r[k, k][None] ** 2 + np.concatenate([tail[1:], np.zeros((1, proj.shape[1]))], axis=0)
    penalty = 2.0 if autolag == "aic" else np.log(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        crit = n * np.log(ssr / n) + penalty * np.arange(1, k + 1)[:, None]
    crit = np.where(np.isnan(crit), np.inf, crit)
    chosen = np.argmin(crit, axis=0)
    if k > 1:
        two = np.partition(crit, 1, axis=0)[:2]
        with np.errstate(invalid="ignore"):  # inf - inf where no lag could be fitted: not a near-tie
            ok &= ~(two[1] - two[0] <= crit_margin)
    return np.where(ok, chosen, m), ok


class EngleGrangerPanel:
    """Engle-Granger tests of any pairs of columns of one (T x N) log-price panel from matrix products.

    ``test(i, j)`` tests ``y = column i[k]`` on ``x = column j[k]``; ``test_both(i, j)`` also the reverse
    orderings, from the same products. Results equal :func:`finsae.backtest.coint.engle_granger` on the pairs'
    columns (same :class:`EngleGranger` contract), which equals ``statsmodels.tsa.stattools.coint``; see the
    module docstring for the formulas and when a pair takes the per-pair path instead.

    Args:
        log_prices: (T, N) array; NaN marks a gap.
        maxlag, autolag: as :func:`engle_granger` (``maxlag=None``: Schwert's rule).
        block: rows of the pair matrix per block of products.
        chunk_bytes: bound on the per-pair temporaries of one step.
        n_jobs: threads (default: all cores); each runs single-threaded BLAS on its own blocks (BLAS is
            limited to one thread process-wide while they run, through ``threadpoolctl``).
        tol: pairs whose estimated error of the statistic, ``eps kappa (1 + |stat|)``, exceeds this take the
            per-pair path (see the module docstring).
        crit_margin: AIC/BIC near-ties closer than ``crit_margin + 100 n eps kappa`` take the per-pair path.
    """

    def __init__(self, log_prices: np.ndarray, *, maxlag: int | None = None, autolag: Autolag = "aic",
                 block: int = 128, chunk_bytes: int = 32 << 20, n_jobs: int | None = None,
                 tol: float = 1e-11, crit_margin: float = 1e-6) -> None:
        x = np.asarray(log_prices, dtype=np.float64)
        if x.ndim != 2:
            raise DataError(f"log_prices must be a (T, N) array, got shape {x.shape}")
        t_len, n_cols = x.shape
        maxlag = check_test_settings(t_len, maxlag, autolag)
        self.x, self.t_len, self.n_cols = x, t_len, n_cols
        self.maxlag, self.autolag = int(maxlag), autolag
        self.block, self.chunk_bytes = int(block), int(chunk_bytes)
        self.n_jobs = n_jobs or os.cpu_count() or 1
        self.tol, self.crit_margin = float(tol), float(crit_margin)

        finite = np.asarray(np.isfinite(x).all(axis=0))
        xf = np.where(finite[None, :], x, 0.0)
        self.clean = finite & (np.ptp(xf, axis=0) > 0)
        self.mean = xf.mean(axis=0)
        zc = np.where(self.clean[None, :], xf - self.mean, 0.0)
        norm = np.sqrt(np.einsum("tc,tc->c", zc, zc))
        self.scale = np.where(self.clean, norm, 1.0)
        self.z = zc / self.scale
        self.d = np.where(self.clean[None, :], np.diff(xf, axis=0), 0.0) / self.scale
        m, length = self.maxlag, t_len - 1
        self.diag_c = np.einsum("tc,tc->c", self.z, self.z)
        self.diag_dd = np.stack([np.einsum("uc,uc->c", self.d[lag:], self.d[: length - lag])
                                 for lag in range(m + 1)])
        self.norm_d = np.sqrt(self.diag_dd[0])
        # rows of Z and D the per-pair boundary terms use
        self.z_head = self.z[: max(m, 1)]
        self.z_tail = self.z[length - m:]  # e[L-m..L]
        self.d_head = self.d[:m]
        self.d_tail = self.d[length - m: length]

    # ------------------------------------------------------------------ public

    def test(self, i: np.ndarray, j: np.ndarray) -> EngleGranger:
        """Engle-Granger tests of ``y = column i[k]`` on ``x = column j[k]``."""
        return self.test_with_route(i, j)[0]

    def test_both(self, i: np.ndarray, j: np.ndarray) -> tuple[EngleGranger, EngleGranger]:
        """Both orderings, ``(test(i, j), test(j, i))``, from one set of products."""
        i = np.asarray(i, dtype=np.int64).ravel()
        j = np.asarray(j, dtype=np.int64).ravel()
        if i.shape != j.shape:
            raise DataError(f"i and j must have the same length, got {i.shape} and {j.shape}")
        # interleaved, so a request sorted by its smaller column stays sorted
        res, _ = self.test_with_route(np.column_stack([i, j]).ravel(), np.column_stack([j, i]).ravel())
        return _take(res, slice(0, None, 2)), _take(res, slice(1, None, 2))

    def test_with_route(self, i: np.ndarray, j: np.ndarray) -> tuple[EngleGranger, np.ndarray]:
        """:meth:`test` and, per pair, how it was computed (``ROUTE_MATRIX``, ``ROUTE_GAP``,
        ``ROUTE_ILL``)."""
        iy = np.asarray(i, dtype=np.int64).ravel()
        ix = np.asarray(j, dtype=np.int64).ravel()
        if iy.shape != ix.shape:
            raise DataError(f"i and j must have the same length, got {iy.shape} and {ix.shape}")
        if len(iy) and (min(iy.min(), ix.min()) < 0 or max(iy.max(), ix.max()) >= self.n_cols):
            raise DataError(f"pair indices must lie in 0..{self.n_cols - 1}")
        n_pairs = len(iy)
        out = {name: np.full(n_pairs, np.nan) for name in ("stat", "hedge", "intercept", "half_life")}
        lags = np.full(n_pairs, -1, dtype=np.int64)
        route = np.where(self.clean[iy] & self.clean[ix], ROUTE_MATRIX, ROUTE_GAP).astype(np.int8)
        route[(iy == ix) & (route == ROUTE_MATRIX)] = ROUTE_ILL

        todo = np.flatnonzero(route == ROUTE_MATRIX)
        lo_col, hi_col = np.minimum(iy[todo], ix[todo]), np.maximum(iy[todo], ix[todo])
        if np.any(lo_col[1:] < lo_col[:-1]):  # e.g. all_pairs order is sorted already
            order = np.argsort(lo_col, kind="stable")
            todo, lo_col, hi_col = todo[order], lo_col[order], hi_col[order]
        edges = np.searchsorted(lo_col, np.arange(0, self.n_cols + self.block, self.block))
        tasks = [(r0, edges[b], edges[b + 1]) for b, r0 in enumerate(range(0, self.n_cols, self.block))
                 if edges[b + 1] > edges[b]]
        # biggest blocks first, so the threads finish together
        tasks.sort(key=lambda t: -(t[2] - t[1]) * (self.n_cols - t[0]))

        def run(task: tuple[int, int, int]) -> None:
            r0, s0, s1 = task
            self._block(r0, todo[s0:s1], lo_col[s0:s1], hi_col[s0:s1], iy, ix, out, lags, route)

        workers = min(len(tasks), self.n_jobs)
        if workers > 1:  # each thread runs its blocks with single-threaded BLAS
            with _single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
                list(pool.map(run, tasks))
        else:
            for task in tasks:
                run(task)

        fallback = np.flatnonzero(route != ROUTE_MATRIX)
        collinear = np.zeros(n_pairs, dtype=bool)
        valid = np.zeros(n_pairs, dtype=bool)
        valid[route == ROUTE_MATRIX] = True
        if len(fallback):
            cols = self.x.T
            fb = engle_granger(cols[iy[fallback]], cols[ix[fallback]], maxlag=self.maxlag,
                               autolag=self.autolag, n_jobs=self.n_jobs)
            out["stat"][fallback], out["hedge"][fallback] = fb.stat, fb.hedge_ratio
            out["intercept"][fallback], out["half_life"][fallback] = fb.intercept, fb.half_life
            lags[fallback], collinear[fallback], valid[fallback] = fb.lags, fb.collinear, fb.valid
        stat = out["stat"]
        valid &= ~np.isnan(stat)
        logger.debug("matrix Engle-Granger: %d pairs, %d by products, %d with gaps, %d ill-conditioned",
                     n_pairs, int(np.sum(route == ROUTE_MATRIX)), int(np.sum(route == ROUTE_GAP)),
                     int(np.sum(route == ROUTE_ILL)))
        res = EngleGranger(stat, mackinnon_pvalue(stat), mackinnon_crit(self.t_len), out["hedge"],
                           out["intercept"], out["half_life"], lags, self.t_len, collinear, valid)
        return res, route

    # ------------------------------------------------------------------ internals

    def _block(self, r0: int, pos: np.ndarray, lo_col: np.ndarray, hi_col: np.ndarray, iy: np.ndarray,
               ix: np.ndarray, out: dict[str, np.ndarray], lags: np.ndarray, route: np.ndarray) -> None:
        """Products for rows ``r0..r0+block`` of the pair matrix and the pairs ``pos`` whose smaller column
        lies there; fills the outputs at ``pos`` (disjoint between blocks)."""
        m, length = self.maxlag, self.t_len - 1
        r1 = min(r0 + self.block, self.n_cols)
        first, last = int(hi_col.min()), int(hi_col.max())
        present = np.zeros(last - first + 1, dtype=bool)
        present[hi_col - first] = True
        if present.all():  # a contiguous range of columns (all pairs): views, no copies
            sel: slice | np.ndarray = slice(first, last + 1)
            n_sel = last - first + 1
            col_pos = hi_col - first
        else:
            sel = np.flatnonzero(present) + first
            n_sel = len(sel)
            col_pos = np.searchsorted(sel, hi_col)
        zb, db = self.z[:, r0:r1], self.d[:, r0:r1]
        zk, dk = self.z[:, sel], self.d[:, sel]
        flat = (lo_col - r0) * n_sel + col_pos
        c_ab = (zb.T @ zk).ravel()[flat]
        dd_ab = [2.0 * (db.T @ dk).ravel()[flat]]
        for lag in range(1, m + 1):
            prod = db[lag:].T @ dk[: length - lag]
            prod += db[: length - lag].T @ dk[lag:]
            dd_ab.append(prod.ravel()[flat])
        del zb, db, zk, dk

        per_pair = 8 * (6 * (m + 2) ** 2 + 12 * (m + 1) + 40)
        step = max(256, self.chunk_bytes // per_pair)
        for s in range(0, len(pos), step):
            sl = slice(s, s + step)
            self._pairs(pos[sl], c_ab[sl], [v[sl] for v in dd_ab], iy, ix, out, lags, route)

    def _pairs(self, pos: np.ndarray, c_ab: np.ndarray, dd_ab: list[np.ndarray], iy_all: np.ndarray,
               ix_all: np.ndarray, out: dict[str, np.ndarray], lags: np.ndarray, route: np.ndarray) -> None:
        m, length = self.maxlag, self.t_len - 1
        iy, ix = iy_all[pos], ix_all[pos]
        cyy, cxx = self.diag_c[iy], self.diag_c[ix]
        b = c_ab / cxx
        ssr = cyy - b * c_ab
        ab = np.abs(b)
        # residuals at the boundary positions, computed directly
        eh = self.z_head[:, iy] - b * self.z_head[:, ix]  # e[0..max(m,1)-1]
        et = self.z_tail[:, iy] - b * self.z_tail[:, ix]  # e[L-m..L]
        dh = self.d_head[:, iy] - b * self.d_head[:, ix]
        dt = self.d_tail[:, iy] - b * self.d_tail[:, ix]
        dd = np.stack([self.diag_dd[lag, iy] - b * dd_ab[lag] + b * b * self.diag_dd[lag, ix]
                       for lag in range(m + 1)])
        e_last, e_first = et[-1], eh[0]
        ee = ssr - e_last * e_last
        ed = np.empty((m + 1, len(pos)))
        ed[0] = 0.5 * (e_last * e_last - e_first * e_first - dd[0])
        for lag in range(1, m + 1):  # ED_l from ED_0, DD_r and the tail (module docstring)
            acc = ed[0] - np.einsum("up,up->p", et[m - lag: m], dt[m - lag:])
            for r in range(lag):
                acc += dd[r] - np.einsum("up,up->p", dt[m - lag + r:], dt[m - lag: m - r])
            ed[lag] = acc

        with np.errstate(divide="ignore", invalid="ignore"):
            kappa = np.fmax((np.sqrt(cyy) + ab * np.sqrt(cxx)) ** 2 / ssr,
                            (self.norm_d[iy] + ab * self.norm_d[ix]) ** 2 / dd[0])
            kappa = np.where((ssr > 0) & (dd[0] > 0), kappa, np.inf)
            rsq = 1.0 - ssr / cyy
        good = _EPS * kappa <= self.tol
        good &= rsq < 1 - 100 * _SQRTEPS  # always true below tol; kept so the flag can never differ

        sums = _PairSums(dd, ed, ee, eh[:m], dh, dt, m, length)
        if self.autolag:
            margin = self.crit_margin + 100.0 * (length - m) * _EPS * np.where(good, kappa, 0.0)
            chosen, ok = _choose_lag(sums, self.autolag, margin)
            good &= ok
        else:
            chosen = np.full(len(pos), m)
        stat = np.full(len(pos), np.nan)
        for p in np.flatnonzero(np.bincount(chosen[good], minlength=m + 1)):
            rows = np.flatnonzero(good & (chosen == p))
            st, ok = _adf_stat_at_lag(sums if len(rows) == len(pos) else sums.take(rows), int(p))
            stat[rows] = st
            good[rows[~ok]] = False
        with np.errstate(invalid="ignore"):  # NaN statistics (saturated regressions) are NaN on both paths
            good &= ~(_EPS * kappa * (1.0 + np.abs(stat)) > self.tol)

        with np.errstate(divide="ignore", invalid="ignore"):
            lam = ed[0] / ee
            hl = np.where(lam >= 0, np.inf, np.log(0.5) / np.log1p(lam))
        hedge = b * self.scale[iy] / self.scale[ix]
        gp = pos[good]
        out["stat"][gp] = stat[good]
        out["hedge"][gp] = hedge[good]
        out["intercept"][gp] = self.mean[iy[good]] - hedge[good] * self.mean[ix[good]]
        out["half_life"][gp] = np.where(lam <= -1, np.nan, hl)[good]
        lags[gp] = chosen[good]
        route[pos[~good]] = ROUTE_ILL


def _take(res: EngleGranger, sl: slice) -> EngleGranger:
    return EngleGranger(res.stat[sl], res.pvalue[sl], res.crit, res.hedge_ratio[sl], res.intercept[sl],
                        res.half_life[sl], res.lags[sl], res.nobs, res.collinear[sl], res.valid[sl])


def engle_granger_matrix(log_prices: np.ndarray, i: np.ndarray, j: np.ndarray, *, maxlag: int | None = None,
                         autolag: Autolag = "aic", n_jobs: int | None = None, **options) -> EngleGranger:
    """Engle-Granger tests of ``y = column i[k]`` on ``x = column j[k]`` of ``log_prices`` (T x N, NaN = gap)
    from matrix products; equal to ``engle_granger(log_prices.T[i], log_prices.T[j], maxlag=maxlag,
    autolag=autolag)``. Only the columns the pairs use enter the products. ``options`` go to
    :class:`EngleGrangerPanel`; use it directly to test several pair lists, or both orderings, on one
    panel."""
    x = np.asarray(log_prices, dtype=np.float64)
    i = np.asarray(i, dtype=np.int64).ravel()
    j = np.asarray(j, dtype=np.int64).ravel()
    if x.ndim == 2 and len(i) and len(np.unique(np.r_[i, j])) < x.shape[1] // 2:  # a small subset of columns
        used, inverse = np.unique(np.r_[i, j], return_inverse=True)
        x, i, j = x[:, used], inverse[: len(i)], inverse[len(i):]
    return EngleGrangerPanel(x, maxlag=maxlag, autolag=autolag, n_jobs=n_jobs, **options).test(i, j)
