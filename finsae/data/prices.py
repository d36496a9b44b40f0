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


def prices_from_frame(
    table: pd.DataFrame, source: str = "<frame>", *, nonpositive: Literal["raise", "nan"] = "raise",
    bad_ticks: Literal["nan", "keep"] = "nan", splits: SplitHandling = "raise",
    known_jumps: frozenset[tuple[str, str]] = frozenset(),
) -> Prices:
    """Validate a wide or long price table and return :class:`Prices` (bad ticks removed unless ``"keep"``;
    split-like jumps an error unless ``splits`` is ``"repair"`` or ``"keep"``, or they are among the reviewed
    ``known_jumps``, ``(ticker, "YYYY-MM-DD")`` pairs; see the module docstring)."""
    if splits not in ("raise", "repair", "keep"):
        raise DataError(f"splits must be 'raise', 'repair' or 'keep', not {splits!r}")
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
    return Prices(wide, source, ticks, jumps)


def load_prices(path: str | Path | None = None, *, nonpositive: Literal["raise", "nan"] = "raise",
                bad_ticks: Literal["nan", "keep"] = "nan", splits: SplitHandling = "raise") -> Prices:
    """Load the bundled daily prices (``path=None``) or a user's wide/long table (CSV or parquet).

    ``splits``: what to do with moves that look like unadjusted splits (module docstring); the bundled prices'
    reviewed moves (:data:`BUNDLED_PRICE_JUMPS`) are kept unless ``splits="repair"``."""
    bundled = bundled_data_dir() / "prices_daily.parquet"
    if path is None:
        path = bundled
    path = Path(path)
    table = _read_table(path, "prices")
    if isinstance(table.index, pd.DatetimeIndex) and "date" not in table.columns:
        table = table.reset_index(names="date")
    known = BUNDLED_PRICE_JUMPS if path.resolve() == bundled.resolve() else frozenset()
    return prices_from_frame(table, str(path), nonpositive=nonpositive, bad_ticks=bad_ticks,
                             splits=splits, known_jumps=known)


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
            f"{len(dropped)} of {len(wanted)} tickers ({len(dropped) / len(wanted):.0%}) have no usable "
            f"{frequency} returns between {start.date()} and {end.date()} (more than "
            f"max_drop_share={max_drop_share:.0%}): {summary}; e.g. {dict(dropped.head(5))}"
        )
    if dropped.size:
        logger.info("%s window %s..%s: dropped %d ticker(s): %s", frequency, start.date(), end.date(),
                    len(dropped), dropped.value_counts().to_dict())
    rets = rets[kept]
    rets.columns.name = "ticker"
    return ReturnsPanel(rets, frequency, start, end, dropped)
