"""Adjusted daily closes from Yahoo Finance (yfinance), cached on disk as parquet.

Each ticker is cached in ``<cache>/yahoo/<TICKER>.parquet`` (columns ``date, close``) with the range that was
requested for it in ``<cache>/yahoo/coverage.json``; a later request inside that range is served from the
cache without touching the network. Before downloading, the provider checks within ``timeout`` seconds that
Yahoo can be reached; where it cannot (no network, a firewall) it raises :class:`ProviderError` saying so and
how to pass a prices file instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from finsae._io import write_json, write_parquet
from finsae._paths import cache_dir
from finsae.data._net import check_tcp
from finsae.data.prices import Prices, prices_from_frame
from finsae.data.universe import normalize_tickers
from finsae.errors import ProviderError

logger = logging.getLogger(__name__)

YAHOO_HOST = ("query1.finance.yahoo.com", 443)
_NO_YAHOO_HINT = (
    "Pass a prices file instead (finsae ... --prices FILE, or load_prices(FILE)): CSV or parquet, either "
    "wide (a 'date' column and one column of adjusted closes per ticker) or long (columns date, ticker, "
    "close)."
)


def _yf_download(tickers: list[str], start: pd.Timestamp, end: pd.Timestamp, timeout: float) -> pd.DataFrame:
    try:
        import yfinance as yf
    except ImportError:
        raise ProviderError(
            "the Yahoo price provider needs yfinance: pip install 'finsae[yahoo]'. " + _NO_YAHOO_HINT
        ) from None
    frame = yf.download(
        tickers,
        start=start.strftime("%Y-%m-%d"),
        end=(end + pd.Timedelta(days=1)).strftime("%Y-%m-%d"),
        auto_adjust=True,
        progress=False,
        group_by="column",
        timeout=timeout,
        threads=True,
    )
    if frame is None or frame.empty:
        return pd.DataFrame()
    close = (
        frame["Close"]
        if isinstance(frame.columns, pd.MultiIndex)
        else frame[["Close"]].set_axis(tickers, axis=1)
    )
    return close


class YahooPriceProvider:
    """Download-and-cache provider of adjusted closes.

    Args:
        cache: folder of the cache (default ``<finsae cache>/yahoo``).
        timeout: seconds allowed for the reachability check and for each download request.
        download: the download function ``(tickers, start, end, timeout) -> wide frame of closes``; the
            default calls ``yfinance.download(..., auto_adjust=True)``.
        host: ``(host, port)`` probed before downloading (default :data:`YAHOO_HOST`).
    """

    def __init__(
        self,
        cache: str | Path | None = None,
        timeout: float = 5.0,
        download: Callable[[list[str], pd.Timestamp, pd.Timestamp, float], pd.DataFrame] | None = None,
        host: tuple[str, int] | None = None,
    ) -> None:
        self.cache = cache
        self.timeout = timeout
        self.download = download
        self.host = host

    def _dir(self) -> Path:
        path = Path(self.cache) if self.cache is not None else cache_dir() / "yahoo"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _coverage(self) -> dict[str, list[str]]:
        path = self._dir() / "coverage.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            logger.warning("Yahoo cache index %s is unreadable; ignoring the cache", path)
            return {}

    def check_reachable(self) -> None:
        """Raise :class:`ProviderError` unless a TCP connection to Yahoo opens within ``timeout`` seconds."""
        host, port = self.host or YAHOO_HOST
        check_tcp(host, port, self.timeout, "Yahoo Finance", _NO_YAHOO_HINT)

    def fetch(self, tickers: Sequence[str], start: str | pd.Timestamp, end: str | pd.Timestamp) -> Prices:
        """Adjusted closes of ``tickers`` from ``start`` to ``end`` (inclusive), from the cache where it
        covers the range, else downloaded and cached. Tickers Yahoo has no data for are logged and left
        out."""
        start, end = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
        wanted = list(dict.fromkeys(normalize_tickers(pd.Index(tickers))))
        if not wanted:
            raise ProviderError("no tickers asked for")
        folder = self._dir()
        coverage = self._coverage()

        def covered(t: str) -> bool:
            rng = coverage.get(t)
            return (
                rng is not None
                and len(rng) > 0
                and pd.Timestamp(rng[0]) <= start
                and pd.Timestamp(rng[1]) >= end
                and (folder / f"{t}.parquet").is_file()
            )

        missing = [t for t in wanted if not covered(t)]
        if missing:
            self.check_reachable()
            logger.info("downloading %d ticker(s) from Yahoo Finance", len(missing))
            download = self.download or _yf_download
            try:
                close = download(missing, start, end, self.timeout)
            except ProviderError:
                raise
            except Exception as exc:
                raise ProviderError(
                    f"Yahoo Finance download failed for {len(missing)} ticker(s): {exc}. " + _NO_YAHOO_HINT
                ) from exc
            close = close.copy()
            close.columns = normalize_tickers(close.columns.astype(str))
            for t in missing:
                series = close[t].dropna() if t in close else pd.Series(dtype="float64")
                if series.empty:
                    logger.warning("Yahoo Finance returned no prices for %s", t)
                    continue
                frame = pd.DataFrame(
                    {"date": pd.DatetimeIndex(series.index).tz_localize(None), "close": series.to_numpy()}
                )
                write_parquet(frame, folder / f"{t}.parquet")
                coverage[t] = [str(start.date()), str(end.date())]
            write_json(coverage, folder / "coverage.json")
        parts = {}
        for t in wanted:
            path = folder / f"{t}.parquet"
            if path.is_file() and t in coverage:
                frame = pd.read_parquet(path)
                parts[t] = frame.set_index("date")["close"]
        if not parts:
            raise ProviderError(f"Yahoo Finance has no prices for any of {wanted[:10]}. " + _NO_YAHOO_HINT)
        wide = pd.DataFrame(parts)
        wide = wide[(wide.index >= start) & (wide.index <= end)]
        # split-like jumps are listed and logged, not an error: a file of these prices is checked when loaded
        return prices_from_frame(wide.rename_axis("date"), source=f"yahoo ({folder})", splits="keep")
