"""Daily adjusted close prices and log returns over a window.

Price tables (CSV or parquet) come in two shapes:

* **wide**: a ``date`` column (or a date index) and one column per ticker;
* **long**: columns ``date``, ``ticker`` and one price column named ``close``, ``adj_close``, ``adjclose`` or
  ``price``.

Prices must be adjusted for splits and dividends (total-return style). Missing values are allowed and stay missing
(nothing is forward-filled); non-positive prices are an error unless ``nonpositive="nan"`` turns them into missing
values.

Bad ticks: a close that differs from *both* neighbouring closes by a factor of at least ``spike_factor`` (2), in the
same direction, while the two neighbours agree within 25%, is a data error (the bundled Stooq prices have 11 such
decimal slips, e.g. SLG at 0.842 on 2014-03-04 between 83.06 and 83.74). By default (``bad_ticks="nan"``) those
closes become missing, are logged, and are listed in :attr:`Prices.bad_ticks`; ``bad_ticks="keep"`` leaves them.
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
FREQUENCIES: tuple[str, ...] = ("monthly", "daily")
_PRICE_COLUMNS = ("close", "adj_close", "adjclose", "adj close", "price")


@dataclass(frozen=True)
class Prices:
    """Wide table of daily adjusted closes: ``DatetimeIndex`` named ``date`` (sorted, unique), one float64 column
    per ticker."""

    close: pd.DataFrame
    source: str = "<frame>"
    bad_ticks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["ticker", "date", "price"]))

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


def find_bad_ticks(close: pd.DataFrame, spike_factor: float = 2.0, revert_tolerance: float = 0.25) -> pd.DataFrame:
    """Boolean frame marking one-day spikes: ``|log P_t - log P_{t-1}| >= log(spike_factor)`` and
    ``|log P_{t+1} - log P_t| >= log(spike_factor)`` in opposite directions, with
    ``|log P_{t+1} - log P_{t-1}| < revert_tolerance * |log P_t - log P_{t-1}|`` (the neighbours agree)."""
    lp = np.log(close)
    up = lp.diff()
    down = lp.shift(-1) - lp
    jump = np.log(spike_factor)
    return (up.abs() >= jump) & (down.abs() >= jump) & (np.sign(up) != np.sign(down)) & (
        (up + down).abs() < revert_tolerance * up.abs())


def prices_from_frame(
    table: pd.DataFrame, source: str = "<frame>", *, nonpositive: Literal["raise", "nan"] = "raise",
    bad_ticks: Literal["nan", "keep"] = "nan",
) -> Prices:
    """Validate a wide or long price table and return :class:`Prices` (bad ticks removed unless ``"keep"``)."""
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
        dup = long.duplicated(["date", "ticker"], keep=False)
        if dup.any():
            ex = long.loc[dup, ["ticker", "date"]].head(5).to_records(index=False).tolist()
            raise DataError(f"{source}: duplicate (ticker, date) rows, e.g. {ex}")
        wide = long.pivot(index="date", columns="ticker", values="close")
    else:
        wide = table.copy()
        if "date" in cols:
            wide = wide.set_index(cols["date"])
        wide.columns = normalize_tickers(wide.columns.astype(str))
    try:
        wide.index = pd.DatetimeIndex(pd.to_datetime(wide.index), name="date").as_unit("ns")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: the date column/index cannot be parsed as dates: {exc}") from None
    if wide.index.has_duplicates:
        raise DataError(f"{source}: duplicate dates, e.g. {list(wide.index[wide.index.duplicated()][:5].date)}")
    if wide.columns.has_duplicates:
        raise DataError(f"{source}: duplicate ticker columns: {sorted(set(wide.columns[wide.columns.duplicated()]))[:10]}")
    try:
        wide = wide.apply(pd.to_numeric, errors="raise").astype("float64")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: non-numeric prices: {exc}") from None
    wide = wide.sort_index()
    wide.columns.name = "ticker"

    bad = (wide <= 0) | np.isinf(wide)
    if bad.to_numpy().any():
        counts = bad.sum()
        counts = counts[counts > 0].sort_values(ascending=False)
        desc = ", ".join(f"{t} ({n} day(s), first {wide.index[bad[t].to_numpy()][0].date()})" for t, n in counts.head(5).items())
        if nonpositive == "raise":
            raise DataError(
                f"{source}: non-positive or infinite prices for {len(counts)} ticker(s): {desc}. Adjusted closes "
                "must be > 0; pass nonpositive='nan' to treat them as missing."
            )
        logger.warning("%s: treating non-positive prices as missing for %d ticker(s): %s", source, len(counts), desc)
        wide = wide.mask(bad)
    spikes = find_bad_ticks(wide)
    found = spikes.stack()
    found = found[found]
    ticks = pd.DataFrame({"ticker": found.index.get_level_values("ticker"), "date": found.index.get_level_values(0),
                          "price": [wide.at[d, t] for d, t in found.index]})
    if len(ticks) and bad_ticks == "nan":
        logger.info("%s: %d bad tick(s) set missing (one-day spikes of 2x or more that revert): %s", source,
                    len(ticks), ", ".join(f"{r.ticker} {r.date:%Y-%m-%d}" for r in ticks.head(5).itertuples()))
        wide = wide.mask(spikes)
    return Prices(wide, source, ticks)


def load_prices(path: str | Path | None = None, *, nonpositive: Literal["raise", "nan"] = "raise",
                bad_ticks: Literal["nan", "keep"] = "nan") -> Prices:
    """Load the bundled daily prices (``path=None``) or a user's wide/long table (CSV or parquet)."""
    if path is None:
        path = bundled_data_dir() / "prices_daily.parquet"
    path = Path(path)
    table = _read_table(path, "prices")
    if isinstance(table.index, pd.DatetimeIndex) and "date" not in table.columns:
        table = table.reset_index(names="date")
    return prices_from_frame(table, str(path), nonpositive=nonpositive, bad_ticks=bad_ticks)


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
    returns of June 2017 ... January 2020, the last one ending at the last close in the data). Daily returns are
    ``log(P_t / P_{t-1})`` between consecutive trading days, for days ``t`` in the window; a missing close makes
    two returns missing. Nothing is filled.

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
            f"no {frequency} returns between {start.date()} and {end.date()}: prices in {prices.source} cover "
            f"{prices.start.date()} to {prices.end.date()}"
        )

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
        summary = dropped.value_counts().to_dict()
        raise WindowError(
            f"{len(dropped)} of {len(wanted)} tickers ({len(dropped) / len(wanted):.0%}) have no usable {frequency} "
            f"returns between {start.date()} and {end.date()} (more than max_drop_share={max_drop_share:.0%}): "
            f"{summary}; e.g. {dict(dropped.head(5))}"
        )
    if dropped.size:
        logger.info("%s window %s..%s: dropped %d ticker(s): %s", frequency, start.date(), end.date(),
                    len(dropped), dropped.value_counts().to_dict())
    rets = rets[kept]
    rets.columns.name = "ticker"
    return ReturnsPanel(rets, frequency, start, end, dropped)
