"""Yahoo price provider: fails fast and clearly where Yahoo cannot be reached; caches and reuses downloads."""

from __future__ import annotations

import socket
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from finsae.cli import cli
from finsae.data.yahoo import YahooPriceProvider
from finsae.errors import ProviderError


def closed_port() -> tuple[str, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return ("127.0.0.1", s.getsockname()[1])  # closed once we leave: connections are refused


def fake_download(calls: list):
    def download(tickers, start, end, timeout):
        calls.append(list(tickers))
        dates = pd.bdate_range(start, end)
        data = {t: np.linspace(10, 20, len(dates)) for t in tickers if t != "NODATA"}
        return pd.DataFrame(data, index=dates)
    return download


def test_unreachable_yahoo_fails_fast_with_a_way_out(tmp_path):
    provider = YahooPriceProvider(cache=tmp_path, timeout=2.0, host=closed_port(), download=fake_download([]))
    t0 = time.perf_counter()
    with pytest.raises(ProviderError, match=r"Yahoo Finance cannot be reached.*Pass a prices file instead"):
        provider.fetch(["AAPL"], "2019-01-01", "2019-03-01")
    assert time.perf_counter() - t0 < 5


def test_unresolvable_host_fails_fast(tmp_path):
    provider = YahooPriceProvider(cache=tmp_path, timeout=2.0, host=("no-such-host.invalid", 443))
    t0 = time.perf_counter()
    with pytest.raises(ProviderError, match="cannot be reached"):
        provider.fetch(["AAPL"], "2019-01-01", "2019-03-01")
    assert time.perf_counter() - t0 < 5


def test_download_is_cached_and_reused(tmp_path, monkeypatch):
    calls: list = []
    provider = YahooPriceProvider(cache=tmp_path, download=fake_download(calls))
    monkeypatch.setattr(provider, "check_reachable", lambda: None)
    first = provider.fetch(["aapl", "msft", "NODATA"], "2019-01-01", "2019-03-01")
    assert calls == [["AAPL", "MSFT", "NODATA"]]
    assert list(first.tickers) == ["AAPL", "MSFT"]  # no data for NODATA: logged and left out
    assert (tmp_path / "AAPL.parquet").is_file()

    def offline():
        raise AssertionError("the cache should have served this request")

    monkeypatch.setattr(provider, "check_reachable", offline)
    again = provider.fetch(["AAPL", "MSFT"], "2019-01-15", "2019-02-15")  # inside the cached range
    assert calls == [["AAPL", "MSFT", "NODATA"]]
    pd.testing.assert_frame_equal(again.close, first.close.loc["2019-01-15":"2019-02-15"], check_freq=False)


def test_fetch_prices_command_reports_unreachable_yahoo(tmp_path, monkeypatch):
    monkeypatch.setattr("finsae.data.yahoo.YAHOO_HOST", closed_port())
    monkeypatch.setenv("FINSAE_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["data", "fetch-prices", "--tickers", "AAPL", "--start", "2019-01-01",
                                      "--end", "2019-02-01", "--out", str(tmp_path / "p.parquet")])
    assert result.exit_code == 2
    assert "error: Yahoo Finance cannot be reached" in result.output
