"""Walk-forward pairs trading: windows, spread models fitted on the formation window only, daily simulation.

Time convention (rows of a trading window): row 0 is the last close of the formation window, rows ``1..R`` are
the trading days. For a pair ``(y, x)`` with hedge ratio ``b``, intercept ``a`` and residual standard
deviation ``s``, all three fitted by OLS of ``log y`` on ``log x`` **over the formation window only**, the
z-score at row ``t`` is ``z_t = (log y_t - a - b log x_t) / s``.

* The signal (target position) at row ``t`` uses ``z_t`` and the current target only: flat -> long spread (+1:
  long y, short x) when ``-stop < z_t <= -entry``, short spread (-1) when ``entry <= z_t < stop``; long ->
  flat when ``z_t >= -exit`` (exit) or ``z_t <= -stop`` (stop); short -> flat when ``z_t <= exit`` or ``z_t >=
  stop``. After a stop the pair is not traded again in that window. On a row where either price is missing the
  target does not change.
* A target set at the close of row ``t`` is executed at the close of row ``t + 1``: ``held[t + 1] =
  target[t]``. The return of row ``t`` (close ``t-1`` to close ``t``) is earned by ``held[t - 1]``.
* Legs follow the tested spread. A pair with hedge ratio ``b > 0`` (pairs with ``b <= 0`` are never traded)
  holds, per unit of capital, weights ``w_y = g / (1 + b)`` of y and ``w_x = g b / (1 + b)`` of x, long y and
  short x for a long spread (+1) and the reverse for a short spread (-1); ``g`` is the gross notional per unit
  of capital (``gross_notional``, default 2: one dollar long and one short when ``b = 1``, as in Gatev,
  Goetzmann and Rouwenhorst 2006). The weights are kept constant (legs rebalanced each day) and P&L is booked
  on log prices, so the pair's return on row ``t`` is exactly the change of the tested spread times its
  notional: ``held[t-1] * (w_y dlog y_t - w_x dlog x_t) = held[t-1] * g / (1 + b) * d(log y - b log x)_t``.
  (The simple return of the same daily-rebalanced legs, ``w_y r^y - w_x r^x``, differs from it only by
  second-order terms ``(w_y (r^y)^2 - w_x (r^x)^2) / 2``.)
* Every position is closed at the window's last close (``target[R-1] = 0``). Delisting without look-ahead: a
  stock whose prices stop inside the window (no later price in it) is closed on the **first row without a
  price**, at its last price, with the configurable ``delisting_return`` (simple return, default 0) as that
  leg's return on that row; the other leg closes at that row's close. Nothing up to and including the stock's
  last price row depends on whether later prices exist. A gap (prices resume later in the window) keeps the
  position: the missing row earns 0 on that leg and the next price catches up.
* Costs: ``cost_bps`` per unit of traded notional (both legs: ``g`` per unit change of the position), charged
  on the execution row; a short-borrow fee of ``borrow_bps`` a year on the short notional (``w_x`` for a long
  spread, ``w_y`` for a short one), charged per held row as ``borrow_bps / 1e4 / P``.
* Portfolios (:func:`portfolio_returns`), two capital bases: **employed** capital is split equally over the
  pairs active on a row (holding a position during it, or trading at its close), 0 when none is; **committed**
  capital gives each of the ``N`` pairs selected for the window ``1/N`` whether it trades or not, and idle
  capital earns the risk-free rate: ``R_t = (1/N) sum_k [r_k,t if active else rf]`` (Gatev et al. 2006).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import scipy.sparse as sp

from finsae.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TradingRules:
    """Entry/exit/stop thresholds (in z units) and costs. ``entry > exit``, ``stop > entry``, costs >= 0."""

    entry_z: float = 2.0
    exit_z: float = 0.5
    stop_z: float = 4.0
    borrow_bps: float = 0.0
    periods_per_year: float = 252.0

    def __post_init__(self) -> None:
        if not self.entry_z > self.exit_z:
            raise DataError(f"entry_z ({self.entry_z}) must be greater than exit_z ({self.exit_z})")
        if not self.exit_z > -self.entry_z:
            raise DataError(f"exit_z ({self.exit_z}) must be greater than -entry_z ({-self.entry_z})")
        if not self.stop_z > self.entry_z:
            raise DataError(f"stop_z ({self.stop_z}) must be greater than entry_z ({self.entry_z})")
        if self.borrow_bps < 0:
            raise DataError(f"borrow_bps must be >= 0, not {self.borrow_bps}")
        if self.periods_per_year <= 0:
            raise DataError(f"periods_per_year must be > 0, not {self.periods_per_year}")


@dataclass(frozen=True)
class Window:
    """A formation window and the trading window that follows it (row positions in a date index)."""

    formation: slice
    trading: slice
    dates: pd.DatetimeIndex = field(repr=False)
    formation_start: pd.Timestamp = field(init=False, repr=False)
    formation_end: pd.Timestamp = field(init=False, repr=False)
    trading_start: pd.Timestamp = field(init=False, repr=False)
    trading_end: pd.Timestamp = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """The first and last date of each part: ``dates[rows.start]`` and ``dates[rows.stop - 1]``."""
        for part in ("formation", "trading"):
            rows: slice = getattr(self, part)
            object.__setattr__(self, f"{part}_start", self.dates[rows.start])
            object.__setattr__(self, f"{part}_end", self.dates[rows.stop - 1])

    def label(self) -> str:
        return f"{self.trading_start:%Y-%m-%d}..{self.trading_end:%Y-%m-%d}"


def check_windows(windows: list[Window]) -> None:
    """Raise :class:`DataError` unless every formation window ends before its trading window starts and
    trading windows do not overlap each other."""
    for w in windows:
        if w.formation.stop > w.trading.start:
            raise DataError(
                f"formation window {w.formation_start.date()}..{w.formation_end.date()} overlaps its trading "
                f"window {w.trading_start.date()}..{w.trading_end.date()}"
            )
        if w.formation.stop - w.formation.start < 10 or w.trading.stop - w.trading.start < 2:
            raise DataError(f"window {w.label()}: formation needs >= 10 days and trading >= 2 days")
    for a, b in zip(windows, windows[1:], strict=False):
        if b.trading.start < a.trading.stop:
            raise DataError(f"trading windows {a.label()} and {b.label()} overlap")


def walk_forward_windows(dates: pd.DatetimeIndex, formation_days: int, trading_days: int,
                         start: str | pd.Timestamp | None = None,
                         end: str | pd.Timestamp | None = None) -> list[Window]:
    """Consecutive trading windows of ``trading_days`` rows inside ``[start, end]``, each preceded by the
    ``formation_days`` rows just before it. The last trading window may be shorter (it ends at ``end``)."""
    if formation_days < 10 or trading_days < 2:
        raise DataError(f"formation_days must be >= 10 and trading_days >= 2, got {formation_days}, "
                        f"{trading_days}")
    dates = pd.DatetimeIndex(dates)
    first = dates.searchsorted(pd.Timestamp(start)) if start is not None else 0
    last = dates.searchsorted(pd.Timestamp(end), side="right") if end is not None else len(dates)
    if first < formation_days and len(dates) > formation_days:  # not enough prices before start
        logger.warning("trading starts %s, not %s: the prices begin %s and each window needs %d formation "
                       "days before it", f"{dates[formation_days]:%Y-%m-%d}",
                       f"{pd.Timestamp(start):%Y-%m-%d}" if start is not None else "at the first price",
                       f"{dates[0]:%Y-%m-%d}", formation_days)
    first = max(first, formation_days)
    if end is not None and len(dates) and pd.Timestamp(end) - dates[-1] > pd.Timedelta(days=31):
        logger.warning("trading ends %s, not %s: the prices end there", f"{dates[-1]:%Y-%m-%d}",
                       f"{pd.Timestamp(end):%Y-%m-%d}")
    windows = []
    t0 = first
    while t0 + 2 <= last:
        t1 = min(t0 + trading_days, last)
        windows.append(Window(slice(t0 - formation_days, t0), slice(t0, t1), dates))
        t0 = t1
    if not windows:
        raise DataError(f"no trading window fits between {start} and {end} with {formation_days} formation "
                        f"days (prices cover {dates[0].date()}..{dates[-1].date()})")
    check_windows(windows)
    return windows


def fit_spreads(log_y: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OLS ``log y = a + b log x + e`` per column over the formation rows: ``(a, b, std(e, ddof=1))``; the sd
    is NaN when the residuals are (numerically) zero, so such a pair never trades."""
    xm, ym = log_x.mean(axis=0), log_y.mean(axis=0)
    xc, yc = log_x - xm, log_y - ym
    with np.errstate(invalid="ignore", divide="ignore"):
        b = (xc * yc).sum(axis=0) / (xc * xc).sum(axis=0)
        resid = yc - b * xc
        s = resid.std(axis=0, ddof=1)
    s = np.where(s > 1e-12, s, np.nan)  # no spread to trade (constant or identical series): z is undefined
    return ym - b * xm, b, s


def fit_distance(log_y: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spread model of the distance method (Gatev, Goetzmann and Rouwenhorst 2006) over the formation rows.

    The spread is ``log y - log x`` (``b = 1``: one dollar long, one short), re-normalised to 0 at the last
    formation close (``a = log y_F - log x_F``), so that in the trading window ``z_t`` measures the divergence
    of the two cumulative-return paths since trading started, in units of ``s``: the standard deviation (ddof
    1) of the normalised formation spread ``(log y_t - log y_0) - (log x_t - log x_0)``. Returns ``(a, b, s)``
    like :func:`fit_spreads`."""
    spread = log_y - log_x
    with np.errstate(invalid="ignore"):
        s = (spread - spread[0]).std(axis=0, ddof=1)
    s = np.where(s > 1e-12, s, np.nan)
    return spread[-1].copy(), np.ones(spread.shape[1]), s


def distance_ssd(norm_prices: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Sum of squared deviations between normalised price paths ``P_t / P_0`` (columns of ``norm_prices``) of
    the pairs ``(i[k], j[k])``: ``|p_i|^2 + |p_j|^2 - 2 p_i . p_j``, from one Gram matrix of the columns."""
    p = np.asarray(norm_prices, dtype=np.float64)
    gram = p.T @ p
    sq = np.diag(gram)
    return np.maximum(sq[i] + sq[j] - 2.0 * gram[i, j], 0.0)


@dataclass(frozen=True)
class PairPaths:
    """Daily paths of K simulated pairs over one trading window, rows ``0..R`` (row 0: formation end).

    Attributes:
        z: z-scores (NaN where a price is missing, row 0 included).
        target: target position decided at each row's close.
        held: position held after each row's close (executed targets).
        gross: pair return per row, before costs (per unit of capital).
        traded: notional traded at each row's close (both legs, per unit of capital).
        short_held: short notional held during each row (for the borrow fee).
        active: the pair takes part in the portfolio on that row.
    """

    z: np.ndarray
    target: np.ndarray
    held: np.ndarray
    gross: np.ndarray
    traded: np.ndarray
    short_held: np.ndarray
    active: np.ndarray

    def net(self, cost_bps: float, rules: TradingRules) -> np.ndarray:
        """Pair returns per row after trading costs of ``cost_bps`` and the borrow fee."""
        if cost_bps < 0:
            raise DataError(f"cost_bps must be >= 0, not {cost_bps}")
        return (self.gross - cost_bps / 1e4 * self.traded
                - rules.borrow_bps / 1e4 / rules.periods_per_year * self.short_held)

    def columns(self, cols: np.ndarray) -> PairPaths:
        """The paths of pair columns ``cols`` only."""
        return PairPaths(*(getattr(self, f.name)[:, cols] for f in fields(self)))


def _last_price_row(prices: np.ndarray) -> np.ndarray:
    return prices.shape[0] - 1 - np.argmax(~np.isnan(prices[::-1]), axis=0)


def simulate_pairs(prices_y: np.ndarray, prices_x: np.ndarray, intercept: np.ndarray, hedge: np.ndarray,
                   sigma: np.ndarray, rules: TradingRules, *, gross_notional: float = 2.0,
                   delisting_return: float = 0.0) -> PairPaths:
    """Simulate K pairs over one trading window (see the module docstring for every rule).

    ``prices_y``, ``prices_x``: (R+1, K) closes, row 0 the last formation close (must be present), NaN where a
    price is missing. ``intercept``, ``hedge``, ``sigma``: (K,) spread models fitted on the formation window;
    a pair with a finite ``sigma`` must have a finite hedge ratio ``> 0`` (a pair with ``sigma`` NaN never
    trades). ``gross_notional``: long plus short notional per unit of capital. ``delisting_return``: the
    simple return of a leg on the row its stock is closed after its prices stop (> -1).
    """
    py = np.asarray(prices_y, dtype=np.float64)
    px = np.asarray(prices_x, dtype=np.float64)
    if py.shape != px.shape or py.ndim != 2:
        raise DataError(f"prices_y and prices_x must be (R+1, K) arrays of one shape, got {py.shape} and "
                        f"{px.shape}")
    if np.isnan(py[0]).any() or np.isnan(px[0]).any():
        raise DataError("every pair needs both prices on the last formation day (row 0)")
    hedge = np.asarray(hedge, dtype=np.float64)
    tradable = np.isfinite(np.asarray(sigma, dtype=np.float64))
    bad = tradable & ~(np.isfinite(hedge) & (hedge > 0))
    if bad.any():
        raise DataError(f"{int(bad.sum())} pair(s) have a hedge ratio <= 0 or not finite (e.g. "
                        f"{hedge[bad][:3]}): such a spread is not a long-short position; do not select them")
    if not gross_notional > 0:
        raise DataError(f"gross_notional must be > 0, not {gross_notional}")
    if not delisting_return > -1:
        raise DataError(f"delisting_return must be > -1, not {delisting_return}")
    n_rows, k = py.shape
    observed = ~np.isnan(py) & ~np.isnan(px)
    # a stock whose prices stop inside the window is closed on its first row without a price
    last_y, last_x = _last_price_row(py), _last_price_row(px)
    close_row = np.minimum(last_y, last_x) + 1  # == n_rows when both trade to the end
    fy = pd.DataFrame(py).ffill().to_numpy()
    fx = pd.DataFrame(px).ffill().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (np.log(py) - intercept - hedge * np.log(px)) / sigma
    z[~observed] = np.nan

    target = np.zeros((n_rows, k))
    state = np.zeros(k)
    stopped = np.zeros(k, dtype=bool)
    for t in range(1, n_rows):
        zt = z[t]
        ok = observed[t] & np.isfinite(zt)
        new = state.copy()
        flat = ok & (state == 0) & ~stopped
        new[flat & (zt <= -rules.entry_z) & (zt > -rules.stop_z)] = 1.0
        new[flat & (zt >= rules.entry_z) & (zt < rules.stop_z)] = -1.0
        long_ = ok & (state == 1)
        stop_long = long_ & (zt <= -rules.stop_z)
        new[long_ & ((zt >= -rules.exit_z) | stop_long)] = 0.0
        short = ok & (state == -1)
        stop_short = short & (zt >= rules.stop_z)
        new[short & ((zt <= rules.exit_z) | stop_short)] = 0.0
        stopped |= stop_long | stop_short
        state = new
        target[t] = state
    target[n_rows - 2:] = 0.0  # flat at the window's last close
    held = np.zeros((n_rows, k))
    held[1:] = target[:-1]
    rows = np.arange(n_rows)[:, None]
    held[rows >= close_row[None, :]] = 0.0  # ended stock: closed on its first row without a price

    with np.errstate(invalid="ignore", divide="ignore"):
        ly = np.vstack([np.zeros((1, k)), np.diff(np.log(fy), axis=0)])
        lx = np.vstack([np.zeros((1, k)), np.diff(np.log(fx), axis=0)])
    delist = np.log1p(delisting_return)
    ly[(rows == last_y[None, :] + 1)] += delist
    lx[(rows == last_x[None, :] + 1)] += delist
    with np.errstate(invalid="ignore"):
        w_y = np.where(tradable, gross_notional / (1.0 + hedge), 0.0)
        w_x = np.where(tradable, gross_notional * hedge / (1.0 + hedge), 0.0)
    prev = np.vstack([np.zeros((1, k)), held[:-1]])
    gross = prev * (w_y * ly - w_x * lx)
    traded = gross_notional * np.abs(held - prev)
    short_held = np.where(prev > 0, w_x, np.where(prev < 0, w_y, 0.0)) * np.abs(prev)
    active = (prev != 0) | (traded > 0)
    return PairPaths(z, target, held, gross, traded, short_held, active)


def portfolio_returns(pair_returns: np.ndarray, active: np.ndarray, book: np.ndarray, n_books: int, *,
                      basis: str = "employed", n_selected: np.ndarray | None = None,
                      rf: float = 0.0) -> np.ndarray:
    """Portfolio returns of each book, (rows, n_books), on a capital basis (module docstring).

    ``book[k]`` is the book (method or placebo draw) that pair column ``k`` belongs to. ``basis="employed"``:
    the mean over the book's active pairs (``rf`` when none is active: idle capital sits in cash, so a book
    that never trades has zero excess return on both bases). ``basis="committed"``: each of the book's
    ``n_selected[b]`` pairs (default: its number of columns) holds ``1/N`` of the capital; inactive capital
    earns ``rf`` per row; a book without pairs earns ``rf``.
    """
    k = pair_returns.shape[1]
    member = sp.csr_matrix((np.ones(k), (book, np.arange(k))), shape=(n_books, k))  # books x pairs
    sums = np.asarray(member @ np.where(active, pair_returns, 0.0).T).T
    counts = np.asarray(member @ active.astype(np.float64).T).T
    if basis == "employed":
        return np.divide(sums, counts, out=np.full_like(sums, rf), where=counts > 0)
    if basis != "committed":
        raise DataError(f"basis must be 'employed' or 'committed', not {basis!r}")
    if n_selected is None:
        n = np.bincount(book, minlength=n_books).astype(np.float64)
    else:
        n = np.asarray(n_selected, float)
    out = np.full_like(sums, rf)
    has = n > 0
    out[:, has] = (sums[:, has] + (n[has] - counts[:, has]) * rf) / n[has]
    return out


def trade_list(paths: PairPaths, net: np.ndarray) -> pd.DataFrame:
    """One row per round trip: pair column, entry and exit rows (executions), direction, gross and net return
    (sums of the pair's daily returns from the row after entry to the exit row, costs of both ends
    included)."""
    rows = []
    held = paths.held
    n_rows, k = held.shape
    for col in np.flatnonzero((held != 0).any(axis=0)):
        h = held[:, col]
        t = 1
        while t < n_rows:
            if h[t] != 0 and h[t - 1] != h[t]:
                entry = t
                t += 1
                while t < n_rows and h[t] == h[entry]:
                    t += 1
                exit_row = min(t, n_rows - 1)
                rows.append((col, entry, exit_row, int(h[entry]), paths.gross[entry:exit_row + 1, col].sum(),
                             net[entry:exit_row + 1, col].sum()))
            else:
                t += 1
    return pd.DataFrame(rows, columns=["pair", "entry_row", "exit_row", "direction", "gross", "net"])
