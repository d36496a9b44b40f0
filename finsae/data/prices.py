"""Daily adjusted close prices and log returns over a window.

Price tables (CSV or parquet) come in two shapes:

* **wide**: a ``date`` column (or a date index) and one column per ticker;
* **long**: columns ``date``, ``ticker`` and one price column named ``close``, ``adj_close``, ``adjclose`` or
  ``price``.

Prices must be adjusted for splits and dividends (total-return style). Missing values are allowed and stay
missing (nothing is forward-filled); non-positive prices are an error unless ``nonpositive="nan"`` turns them
into missing values.

Bad ticks: a close that differs from *both* neighbouring closes by a factor of at least ``spike_factor`` (2),
in the same direction, while the two neighbours agree within 25%, is a data error (the bundled Stooq prices
have 11 such decimal slips, e.g. SLG at 0.842 on 2014-03-04 between 83.06 and 83.74). By default
(``bad_ticks="nan"``) those closes become missing, are logged, and are listed in :attr:`Prices.bad_ticks`;
``bad_ticks="keep"`` leaves them.

Unadjusted splits: a one-day move by a common split ratio (2, 3, 4, 5, ... 100 or its inverse, within 2%)
after which the price stays at the new level (the median of the next 10 closes against the previous 10, within
10%) looks like a split the prices were not adjusted for; it would enter every return and correlation as a
real move. By default (``splits="raise"``) it is an error naming the ticker and the date; ``splits="repair"``
adjusts the closes before it by the ratio (as a split adjustment would), ``splits="keep"`` keeps them (a real
move). Both are listed in :attr:`Prices.jumps`. The bundled prices have :data:`BUNDLED_PRICE_JUMPS` such
moves, reviewed and kept as they are (most are real one-day halvings; see the list), so the bundled results do
not change.

Dates: a timezone-aware date column (vendors often stamp closes ``America/New_York``) is read as the local
trading date (the timezone dropped, times of day removed). A **sparse date** is one on which fewer than half
of the live tickers (those whose first and last price bracket it; at least 4) have a price: a stray row such
as one ticker's close on a Saturday, which would otherwise cost every other ticker the next day's daily
return. By default (``sparse_dates="drop"``) such dates are removed and logged with their coverage, and listed
in :attr:`Prices.sparse_dates`; ``"keep"`` keeps them, ``"raise"`` makes them an error. The bundled prices'
one such date, 2011-02-17 (24% of the tickers priced, a gap in the source), is reviewed and kept
(:data:`BUNDLED_SPARSE_DATES`), so the bundled results do not change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from finsae._paths import bundled_data_dir
from finsae.data.universe import _read_table, normalize_tickers
from finsae.errors import DataError, WindowError

logger = logging.getLogger(__name__)

Frequency = Literal["monthly", "daily"]
SplitHandling = Literal["raise", "repair", "keep"]
#: Split ratios (new shares per old share) whose price move :func:`find_split_jumps` looks for, and inverses.
SPLIT_RATIOS: tuple[float, ...] = (2, 3, 4, 5, 6, 8, 10, 15, 20, 25, 30, 40, 50, 100)
#: The moves of the bundled prices that look like unadjusted splits, reviewed and kept (ticker, date): mostly
#: real one-day halvings (CORT, CPRX, CYH), ERII's tripling of 2015-10-20, TXMD's penny ticks of 2011, and two
#: mis-scaled stretches of Stooq data (CPF and UFI from 2010-08-23, already in the published results).
BUNDLED_PRICE_JUMPS: frozenset[tuple[str, str]] = frozenset({
    ("CPF", "2010-08-23"), ("UFI", "2010-08-23"), ("TXMD", "2011-07-21"), ("TXMD", "2011-08-04"),
    ("TXMD", "2011-08-25"), ("TXMD", "2011-09-01"), ("TXMD", "2011-09-08"), ("TXMD", "2011-09-30"),
    ("CORT", "2014-05-07"), ("ERII", "2015-10-20"), ("CPRX", "2016-04-26"), ("CYH", "2016-10-27"),
})
#: The bundled prices' sparse dates (module docstring), reviewed and kept: 2011-02-17, a Thursday on which the
#: source priced 24% of the tickers.
BUNDLED_SPARSE_DATES: frozenset[str] = frozenset({"2011-02-17"})
#: A date is sparse when fewer than this share of its live tickers have a price (and at least
#: :data:`SPARSE_MIN_LIVE` tickers are live).
SPARSE_SHARE = 0.5
SPARSE_MIN_LIVE = 4
SparseHandling = Literal["drop", "keep", "raise"]
FREQUENCIES: tuple[str, ...] = ("monthly", "daily")
_PRICE_COLUMNS = ("close", "adj_close", "adjclose", "adj close", "price")


_JUMP_COLUMNS = ["ticker", "date", "ratio", "before", "after", "action"]


@dataclass(frozen=True)
class Prices:
    """Wide table of daily adjusted closes: ``DatetimeIndex`` named ``date`` (sorted, unique), one float64
    column per ticker."""

    close: pd.DataFrame
    source: str = "<frame>"
    bad_ticks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["ticker", "date", "price"]))
    jumps: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_JUMP_COLUMNS))
    sparse_dates: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["date", "priced", "live", "action"])
    )

    @property
    def tickers(self) -> pd.Index:
        return self.close.columns

    @property
    def start(self) -> pd.Timestamp:
        return self.close.index[0]

    @property
    def end(self) -> pd.Timestamp:
        return self.close.index[-1]

    def to_frame(self) -> pd.DataFrame:
        return self.close.copy()


def find_bad_ticks(
    close: pd.DataFrame, spike_factor: float = 2.0, revert_tolerance: float = 0.25
) -> pd.DataFrame:
    """Boolean frame marking one-day spikes: ``|log P_t - log P_{t-1}| >= log(spike_factor)`` and
    ``|log P_{t+1} - log P_t| >= log(spike_factor)`` in opposite directions, with
    ``|log P_{t+1} - log P_{t-1}| < revert_tolerance * |log P_t - log P_{t-1}|`` (the neighbours agree)."""
    lp = np.log(close)
    up = lp.diff()
    down = lp.shift(-1) - lp
    jump = np.log(spike_factor)
    return (up.abs() >= jump) & (down.abs() >= jump) & (np.sign(up) != np.sign(down)) & (
        (up + down).abs() < revert_tolerance * up.abs())




def find_split_jumps(close: pd.DataFrame, ratios: tuple[float, ...] = SPLIT_RATIOS, tolerance: float = 0.02,
                     window: int = 10, persistence: float = 0.1) -> pd.DataFrame:
    """Moves that look like unadjusted splits: from one available close to the next, ``log P`` changes by
    ``log r`` (``r`` a split ratio or its inverse) within ``tolerance``, and the median log close of the next
    ``window`` closes differs from that of the previous ``window`` by ``log r`` within ``persistence`` (the
    price stays at the new level). Columns ``ticker, date, ratio`` (after / before, the split ratio matched),
    ``before, after`` (the two closes)."""
    logs = np.log(np.asarray(ratios, dtype=np.float64))
    logs = np.concatenate([logs, -logs])
    lp = np.log(close.where(close > 0))
    ff = lp.ffill()
    move = np.nan_to_num((ff - ff.shift(1)).where(lp.notna()).to_numpy(), nan=0.0)
    rows = []
    for i, j in np.argwhere(np.abs(move) >= np.abs(logs).min() - tolerance):  # big moves only: few
        dist = np.abs(move[i, j] - logs)
        if dist.min() >= tolerance:
            continue
        s = lp.iloc[:, j].dropna()
        date = lp.index[i]
        k = s.index.get_loc(date)
        target = logs[int(np.argmin(dist))]
        shift = float(s.iloc[k:k + window].median() - s.iloc[max(0, k - window):k].median())
        if abs(shift - target) < persistence:
            rows.append(
                {
                    "ticker": lp.columns[j],
                    "date": date,
                    "ratio": float(np.exp(target)),
                    "before": float(np.exp(s.iloc[k - 1])),
                    "after": float(np.exp(s.iloc[k])),
                    "action": "",
                }
            )
    return pd.DataFrame(rows, columns=_JUMP_COLUMNS)


def _ratio_text(ratio: float) -> str:
    return f"{ratio:.0f}:1" if ratio >= 1 else f"1:{1 / ratio:.0f}"


def _handle_jumps(wide: pd.DataFrame, source: str, splits: str,
                  known: frozenset[tuple[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    jumps = find_split_jumps(wide)
    if jumps.empty:
        return wide, jumps
    keys = [(str(t), f"{d:%Y-%m-%d}") for t, d in zip(jumps["ticker"], jumps["date"], strict=True)]
    reviewed = np.array([k in known for k in keys], dtype=bool)
    if splits == "raise" and not reviewed.all():
        new = jumps[~reviewed]
        first = new.iloc[0]
        more = (
            f" (and {len(new) - 1} more: "
            f"{', '.join(f'{r.ticker} {r.date:%Y-%m-%d}' for r in new.iloc[1:6].itertuples())})"
            if len(new) > 1
            else ""
        )
        raise DataError(f"{source}: {first.ticker} on {first.date:%Y-%m-%d} moves from {first.before:.4g} to "
                        f"{first.after:.4g} and stays there, like an unadjusted "
                        f"{_ratio_text(1 / first.ratio)} split{more}; give split-adjusted prices, or set "
                        "splits='repair' (data.splits: repair) to adjust the earlier closes, or "
                        "splits='keep' if the move is real")
    if splits == "repair":
        wide = wide.copy()
        for r in jumps.sort_values("date", ascending=False).itertuples():  # latest first: ratios compound
            earlier = wide.index < r.date
            wide.loc[earlier, r.ticker] = wide.loc[earlier, r.ticker] * r.ratio
        jumps["action"] = "repaired"
        logger.warning(
            "%s: %d split-like jump(s) repaired (earlier closes scaled by the ratio): %s",
            source,
            len(jumps),
            ", ".join(f"{r.ticker} {r.date:%Y-%m-%d} x{r.ratio:g}" for r in jumps.itertuples()),
        )
    else:
        jumps["action"] = np.where(reviewed, "kept (reviewed)", "kept")
        log = logger.info if reviewed.all() else logger.warning
        log("%s: %d split-like jump(s) kept as real moves: %s", source, len(jumps),
            ", ".join(f"{t} {d}" for t, d in keys[:10]))
    return wide, jumps


def find_sparse_dates(close: pd.DataFrame, share: float = SPARSE_SHARE,
                      min_live: int = SPARSE_MIN_LIVE) -> pd.DataFrame:
    """Dates on which fewer than ``share`` of the live tickers (first price <= date <= last price) have a
    price, where at least ``min_live`` are live: columns ``date``, ``priced``, ``live``."""
    v = close.notna().to_numpy()
    if v.size == 0:
        return pd.DataFrame({"date": pd.DatetimeIndex([]), "priced": [], "live": []})
    has = v.any(axis=0)
    first = v.argmax(axis=0)
    last = len(v) - 1 - v[::-1].argmax(axis=0)
    rows = np.arange(len(v))[:, None]
    live = ((rows >= first) & (rows <= last) & has).sum(axis=1)
    priced = v.sum(axis=1)
    hit = (live >= min_live) & (priced < share * live)
    return pd.DataFrame({"date": close.index[hit], "priced": priced[hit], "live": live[hit]})


def _handle_sparse(wide: pd.DataFrame, source: str, sparse_dates: str,
                   known: frozenset[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop, keep or refuse the sparse dates of ``wide`` (module docstring); reviewed ``known`` dates are
    kept."""
    found = find_sparse_dates(wide)
    if found.empty:
        return wide, found.assign(action=pd.Series(dtype="string"))
    reviewed = found["date"].dt.strftime("%Y-%m-%d").isin(known).to_numpy()
    action = np.where(reviewed, "kept (reviewed)", "dropped" if sparse_dates == "drop" else "kept")
    found = found.assign(action=action)
    new = found[~reviewed]
    if len(new):
        desc = ", ".join(f"{r.date:%Y-%m-%d} ({r.priced} of {r.live} tickers)"
                         for r in new.head(5).itertuples())
        more = f" and {len(new) - 5} more" if len(new) > 5 else ""
        if sparse_dates == "raise":
            raise DataError(
                f"{source}: {len(new)} date(s) on which fewer than half of the listed tickers have a price: "
                f"{desc}{more} (a stray row, e.g. a weekend close, costs every other ticker a daily return); "
                "set data.sparse_dates to 'drop' (or load_prices(..., sparse_dates='drop')) to remove them, "
                "or 'keep'"
            )
        if sparse_dates == "drop":
            logger.warning("%s: dropped %d sparse date(s) (fewer than half of the listed tickers "
                           "priced): %s%s", source, len(new), desc, more)
            wide = wide.drop(index=pd.DatetimeIndex(new["date"]))
        else:
            logger.warning("%s: kept %d sparse date(s) (fewer than half of the listed tickers priced): %s%s",
                           source, len(new), desc, more)
    return wide, found


def prices_from_frame(
    table: pd.DataFrame, source: str = "<frame>", *, nonpositive: Literal["raise", "nan"] = "raise",
    bad_ticks: Literal["nan", "keep"] = "nan", splits: SplitHandling = "raise",
    known_jumps: frozenset[tuple[str, str]] = frozenset(), sparse_dates: SparseHandling = "drop",
    known_sparse: frozenset[str] = frozenset(),
) -> Prices:
    """Validate a wide or long price table and return :class:`Prices` (bad ticks removed unless ``"keep"``;
    split-like jumps an error unless ``splits`` is ``"repair"`` or ``"keep"``, or they are among the reviewed
    ``known_jumps``, ``(ticker, "YYYY-MM-DD")`` pairs; timezone-aware dates read as local dates; sparse dates
    dropped unless ``sparse_dates`` is ``"keep"`` or ``"raise"``, or they are among the reviewed
    ``known_sparse``, ``"YYYY-MM-DD"``; see the module docstring)."""
    if splits not in ("raise", "repair", "keep"):
        raise DataError(f"splits must be 'raise', 'repair' or 'keep', not {splits!r}")
    if sparse_dates not in ("drop", "keep", "raise"):
        raise DataError(f"sparse_dates must be 'drop', 'keep' or 'raise', not {sparse_dates!r}")
    if nonpositive not in ("raise", "nan"):
        raise DataError(f"nonpositive must be 'raise' or 'nan', not {nonpositive!r}")
    if bad_ticks not in ("nan", "keep"):
        raise DataError(f"bad_ticks must be 'nan' or 'keep', not {bad_ticks!r}")
    cols = {str(c).lower(): c for c in table.columns}
    if "ticker" in cols:  # long
        price_col = next((cols[c] for c in _PRICE_COLUMNS if c in cols), None)
        if "date" not in cols or price_col is None:
            raise DataError(
                f"{source}: a long price table needs columns date, ticker and one of {list(_PRICE_COLUMNS)}; "
                f"found {list(table.columns)}"
            )
        long = table[[cols["date"], cols["ticker"], price_col]].copy()
        long.columns = ["date", "ticker", "close"]
        long["ticker"] = normalize_tickers(long["ticker"])
        copies = long.duplicated()  # the same close twice: harmless, dropped
        if copies.any():
            logger.info("%s: %d repeated (date, ticker, close) row(s) dropped", source, int(copies.sum()))
            long = long[~copies]
        dup = long.duplicated(["date", "ticker"], keep="first")
        if dup.any():
            ex = long.loc[dup, ["ticker", "date"]].head(5).to_records(index=False).tolist()
            raise DataError(f"{source}: {int(dup.sum())} (ticker, date) pair(s) with two different closes, "
                            f"e.g. {ex}")
        wide = long.pivot(index="date", columns="ticker", values="close")
    else:
        wide = table.copy()
        if "date" in cols:
            wide = wide.set_index(cols["date"])
        wide.columns = normalize_tickers(wide.columns.astype(str))
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(wide.index))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: the date column/index cannot be parsed as dates: {exc}") from None
    if dates.tz is not None:  # a close stamped in the exchange's zone: its local trading date
        logger.info("%s: dates in time zone %s read as local dates", source, dates.tz)
        dates = dates.tz_localize(None)
    if len(dates) and (dates != dates.normalize()).any():  # closes stamped with a time of day
        dates = dates.normalize()
    wide.index = pd.DatetimeIndex(dates, name="date").as_unit("ns")
    if wide.index.has_duplicates:
        raise DataError(f"{source}: duplicate dates, e.g. "
                        f"{list(wide.index[wide.index.duplicated()][:5].date)}")
    if wide.columns.has_duplicates:
        raise DataError(f"{source}: duplicate ticker columns: "
                        f"{sorted(set(wide.columns[wide.columns.duplicated()]))[:10]}")
    numeric = wide.apply(pd.to_numeric, errors="coerce").astype("float64")
    bad = numeric.isna() & wide.notna()
    if bad.to_numpy().any():
        i, j = np.argwhere(bad.to_numpy())[0]
        raise DataError(f"{source}: non-numeric price {wide.iat[i, j]!r} for {wide.columns[j]} on "
                        f"{wide.index[i]:%Y-%m-%d} ({int(bad.to_numpy().sum())} such cell(s) in all)")
    wide = numeric
    wide = wide.sort_index()
    wide.columns.name = "ticker"

    bad = (wide <= 0) | np.isinf(wide)
    if bad.to_numpy().any():
        counts = bad.sum()
        counts = counts[counts > 0].sort_values(ascending=False)
        desc = ", ".join(
            f"{t} ({n} day(s), first {wide.index[bad[t].to_numpy()][0].date()})"
            for t, n in counts.head(5).items()
        )
        if nonpositive == "raise":
            raise DataError(
                f"{source}: non-positive or infinite prices for {len(counts)} ticker(s): {desc}. Adjusted "
                "closes must be > 0; pass nonpositive='nan' to treat them as missing."
            )
        logger.warning(
            "%s: treating non-positive prices as missing for %d ticker(s): %s", source, len(counts), desc
        )
        wide = wide.mask(bad)
    spikes = find_bad_ticks(wide)
    found = spikes.stack()
    found = found[found]
    ticks = pd.DataFrame(
        {
            "ticker": found.index.get_level_values("ticker"),
            "date": found.index.get_level_values(0),
            "price": [wide.at[d, t] for d, t in found.index],
        }
    )
    if len(ticks) and bad_ticks == "nan":
        logger.info(
            "%s: %d bad tick(s) set missing (one-day spikes of 2x or more that revert): %s",
            source,
            len(ticks),
            ", ".join(f"{r.ticker} {r.date:%Y-%m-%d}" for r in ticks.head(5).itertuples()),
        )
        wide = wide.mask(spikes)
    wide, jumps = _handle_jumps(wide, source, splits, known_jumps)
    wide, sparse = _handle_sparse(wide, source, sparse_dates, known_sparse)
    return Prices(wide, source, ticks, jumps, sparse)


def load_prices(path: str | Path | None = None, *, nonpositive: Literal["raise", "nan"] = "raise",
                bad_ticks: Literal["nan", "keep"] = "nan", splits: SplitHandling = "raise",
                sparse_dates: SparseHandling = "drop") -> Prices:
    """Load the bundled daily prices (``path=None``) or a user's wide/long table (CSV or parquet).

    ``splits``: what to do with moves that look like unadjusted splits (module docstring); the bundled prices'
    reviewed moves (:data:`BUNDLED_PRICE_JUMPS`) are kept unless ``splits="repair"``. ``sparse_dates``: what
    to do with dates on which fewer than half of the listed tickers have a price; the bundled prices' reviewed
    one (:data:`BUNDLED_SPARSE_DATES`) is kept."""
    bundled = bundled_data_dir() / "prices_daily.parquet"
    if path is None:
        path = bundled
    path = Path(path)
    table = _read_table(path, "prices")
    if isinstance(table.index, pd.DatetimeIndex) and "date" not in table.columns:
        table = table.reset_index(names="date")
    is_bundled = path.resolve() == bundled.resolve()
    known = BUNDLED_PRICE_JUMPS if is_bundled else frozenset()
    return prices_from_frame(table, str(path), nonpositive=nonpositive, bad_ticks=bad_ticks,
                             splits=splits, known_jumps=known, sparse_dates=sparse_dates,
                             known_sparse=BUNDLED_SPARSE_DATES if is_bundled else frozenset())


def priced_tickers(tickers: pd.Index | list[str], prices: Prices, what: str = "the universe",
                   min_share: float = 0.0) -> pd.Index:
    """The ``tickers`` that have a price column in ``prices``. Raises :class:`DataError` when none has (the
    prices are for another universe, or tickers are spelled differently) or fewer than ``min_share`` of them,
    naming examples of both sides; a run on such prices would only report empty windows or empty tables."""
    wanted = pd.Index(tickers)
    if wanted.empty:
        raise DataError(f"{what} has no tickers")
    common = wanted.intersection(prices.tickers, sort=False)
    if len(common) == 0 or len(common) < min_share * len(wanted):
        raise DataError(f"prices {prices.source} share {len(common)} of the {len(wanted)} tickers of {what} "
                        f"(e.g. {list(wanted[:3])}; the prices have e.g. {list(prices.tickers[:3])}): prices "
                        "for another universe, or tickers spelled differently")
    return common


@dataclass(frozen=True)
class ReturnsPanel:
    """Log returns of one window.

    Attributes:
        returns: periods x tickers (float64, NaN where a return is missing).
        frequency: ``"monthly"`` (month-end to month-end) or ``"daily"`` (close to close).
        start, end: the window asked for (inclusive).
        dropped: ticker -> reason, for tickers asked for but left out (no prices, too few observations,
            constant prices).
    """

    returns: pd.DataFrame
    frequency: str
    start: pd.Timestamp
    end: pd.Timestamp
    dropped: pd.Series = field(default_factory=lambda: pd.Series(dtype="string"))

    @property
    def tickers(self) -> pd.Index:
        return self.returns.columns

    @property
    def n_periods(self) -> int:
        return len(self.returns)

    def to_frame(self) -> pd.DataFrame:
        return self.returns.copy()


def _warn_if_cut(prices: Prices, start: pd.Timestamp, end: pd.Timestamp, frequency: str,
                 periods: pd.DatetimeIndex) -> None:
    """Log a warning when the prices cover materially less of the window ``start..end`` than asked for (more
    than a month, or 5% of the window, missing at either end): its returns, and every figure made of them,
    then span less than the window's name says."""
    slack = max(pd.Timedelta(days=31), 0.05 * (end - start))
    short = []
    if prices.start > start + slack:
        short.append(f"start {prices.start:%Y-%m-%d}")
    if prices.end < end - slack:
        short.append(f"end {prices.end:%Y-%m-%d}")
    if short:
        logger.warning(
            "%s window %s..%s: the prices (%s) %s, so its %d returns run only from %s to %s",
            frequency, start.date(), end.date(), prices.source, " and ".join(short), len(periods),
            f"{periods[0]:%Y-%m-%d}", f"{periods[-1]:%Y-%m-%d}",
        )


def log_returns(
    prices: Prices,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    frequency: Frequency = "monthly",
    *,
    tickers: pd.Index | list[str] | None = None,
    min_obs_share: float = 0.9,
    max_drop_share: float = 0.25,
) -> ReturnsPanel:
    """Log returns of ``tickers`` (default: all priced tickers) between ``start`` and ``end``, inclusive.

    Monthly returns are ``log(P_m / P_{m-1})`` with ``P_m`` the last available close of calendar month ``m``;
    a month belongs to the window when it overlaps it (so ``start=2017-06-01, end=2020-01-31`` gives the 32
    returns of June 2017 ... January 2020, the last one ending at the last close in the data). Daily returns
    are ``log(P_t / P_{t-1})`` between consecutive trading days, for days ``t`` in the window; a missing close
    makes two returns missing. Nothing is filled.

    A ticker is dropped (and reported in ``dropped``) when it has no price column, fewer than
    ``min_obs_share`` of the window's periods with a return (and never fewer than 3), or a return standard
    deviation of zero (constant price). If more than ``max_drop_share`` of the tickers are dropped a
    :class:`WindowError` says which and why.
    """
    if frequency not in FREQUENCIES:
        raise DataError(f"unknown return frequency {frequency!r}; choose one of {list(FREQUENCIES)}")
    if not 0.0 < min_obs_share <= 1.0:
        raise DataError(f"min_obs_share must be in (0, 1], not {min_obs_share}")
    if not 0.0 <= max_drop_share <= 1.0:
        raise DataError(f"max_drop_share must be in [0, 1], not {max_drop_share}")
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    if end < start:
        raise WindowError(f"window end {end.date()} is before its start {start.date()}")
    wanted = prices.tickers if tickers is None else pd.Index(tickers)
    if wanted.has_duplicates:
        raise DataError(f"duplicate tickers asked for: {sorted(set(wanted[wanted.duplicated()]))[:10]}")
    present = wanted.intersection(prices.tickers, sort=False)
    reasons: dict[str, str] = {t: "no prices" for t in wanted.difference(prices.tickers, sort=False)}

    close = prices.close[present]
    if frequency == "monthly":
        month_end = close.resample("ME").last()
        rets = np.log(month_end).diff()
        periods = month_end.index.to_period("M")
        keep = (periods >= start.to_period("M")) & (periods <= end.to_period("M"))
        keep &= np.arange(len(periods)) > 0
        rets = rets[keep]
    else:
        rets = np.log(close).diff()
        rets = rets[(rets.index >= start) & (rets.index <= end) & (np.arange(len(rets)) > 0)]
    if rets.empty:
        raise WindowError(
            f"no {frequency} returns between {start.date()} and {end.date()}: prices in {prices.source} "
            f"cover {prices.start.date()} to {prices.end.date()}"
        )

    _warn_if_cut(prices, start, end, frequency, rets.index)
    n = len(rets)
    obs = rets.notna().sum()
    need = max(3, int(np.ceil(min_obs_share * n)))
    for t in obs.index[obs < need]:
        reasons[t] = "no prices in window" if obs[t] == 0 else f"too few observations ({obs[t]} of {n})"
    enough = obs.index[obs >= need]
    std = rets[enough].std()
    for t in std.index[~(std > 0)]:
        reasons[t] = "constant price"
    kept = [t for t in present if t not in reasons]
    dropped = pd.Series(reasons, dtype="string", name="reason")
    dropped.index.name = "ticker"
    if len(wanted) and len(dropped) / len(wanted) > max_drop_share:
        kinds = dropped.str.replace(r" \(\d+ of \d+\)$", "", regex=True).value_counts()  # one count per kind
        summary = ", ".join(f"{kind}: {count}" for kind, count in kinds.items())
        raise WindowError(
            f"{len(dropped)} of {len(wanted)} tickers ({len(dropped) / len(wanted):.0%}) have no usable "
            f"{frequency} returns between {start.date()} and {end.date()} (more than "
            f"max_drop_share={max_drop_share:.0%}; prices {prices.start:%Y-%m-%d} to {prices.end:%Y-%m-%d}): "
            f"{summary} (at least {need} of {n} periods needed); e.g. {dict(dropped.head(5))}. Fix: a window "
            "the tickers' prices cover, or a higher evaluation.max_drop_share"
        )
    if dropped.size:
        logger.info("%s window %s..%s: dropped %d ticker(s): %s", frequency, start.date(), end.date(),
                    len(dropped), dropped.value_counts().to_dict())
    rets = rets[kept]
    rets.columns.name = "ticker"
    return ReturnsPanel(rets, frequency, start, end, dropped)
