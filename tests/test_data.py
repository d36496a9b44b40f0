"""Universe, prices and returns: formats, bad inputs, and returns against hand computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finsae.data import (
    load_prices,
    load_universe,
    log_returns,
    normalize_gics,
    normalize_sic,
    prices_from_frame,
    universe_from_frame,
)
from finsae.errors import DataError, WindowError

from .conftest import synthetic_prices


def user_table(**extra) -> pd.DataFrame:
    table = pd.DataFrame({
        "ticker": ["aapl", "MSFT", "brk.b"],
        "description": ["Makes phones.", "Makes software.", "Holds insurers."],
        "sic": ["3571", "7372", "6331"],
        "gics": ["45202030", "45103020", "40101010"],
    })
    return table.assign(**extra)


# ---------------------------------------------------------------- universe


def test_bundled_universe(universe):
    assert len(universe) == 1542
    assert set(universe.vintages) == {"2017", "2020", "wikipedia_2020"}
    assert universe.vintage("2017").published == pd.Timestamp("2017-05-31")
    assert len(universe.descriptions("2017")) == 1542 - 58
    assert len(universe.descriptions("wikipedia_2020")) == 1542 - 196
    assert universe.companies["sic"].str.len().eq(4).all()  # 3-digit source codes are zero-padded
    assert universe.companies["gics"].str.len().eq(8).all()
    frame = universe.to_frame()
    assert frame.loc["AAPL", "gics_sector"] == "Information Technology"
    assert frame.loc["JPM", "gics_industry_group"] == "Banks"


def test_user_universe_csv(tmp_path):
    path = tmp_path / "u.csv"
    user_table().to_csv(path, index=False)
    u = load_universe(path)
    assert list(u.tickers) == ["AAPL", "MSFT", "BRK-B"]  # normalised
    assert u.vintage("description").published is None
    assert u.descriptions("description")["MSFT"] == "Makes software."


def test_user_universe_with_as_of_vintages():
    table = pd.concat([user_table(as_of="2018-03-01"), user_table(as_of="2019-03-01").iloc[:2]])
    u = universe_from_frame(table)
    assert set(u.vintages) == {"2018-03-01", "2019-03-01"}
    assert u.vintage("2019-03-01").published == pd.Timestamp("2019-03-01")
    assert len(u.descriptions("2019-03-01")) == 2 and len(u) == 3


def test_blank_descriptions_are_missing_not_empty_strings():
    u = universe_from_frame(user_table(description=["Phones.", "   ", None]))
    assert list(u.descriptions("description").index) == ["AAPL"]
    assert list(u.missing_text("description")) == ["MSFT", "BRK-B"]


def test_duplicate_tickers_are_an_error():
    table = user_table(ticker=["AAPL", "MSFT", "aapl"])
    with pytest.raises(DataError, match=r"duplicate tickers.*AAPL"):
        universe_from_frame(table, source="my.csv")


def test_missing_columns_are_named():
    with pytest.raises(DataError, match="needs 'ticker' and 'description'"):
        universe_from_frame(pd.DataFrame({"ticker": ["A"], "text": ["x"]}))
    with pytest.raises(DataError, match="no 'ticker' column"):
        universe_from_frame(pd.DataFrame({"symbol": ["A"], "description": ["x"]}))


@pytest.mark.parametrize(("column", "value", "pattern"), [
    ("gics", "45999999", r"unknown GICS sub-industry code .* BRK-B: 45999999"),
    ("gics", "4510", r"8-digit sub-industry codes.* BRK-B: 4510 \(4 digits\)"),
    ("sic", "0500", r"unknown SIC code .* BRK-B: 0500"),
    ("sic", "73A2", r"SIC codes must be up to 4 digits.*BRK-B"),
])
def test_unknown_codes_are_errors_naming_the_ticker(column, value, pattern):
    table = user_table()
    table.loc[2, column] = value
    with pytest.raises(DataError, match=pattern):
        universe_from_frame(table)


def test_code_normalisation():
    assert normalize_sic(pd.Series([100, "2834", None])).tolist()[:2] == ["0100", "2834"]
    assert normalize_gics(pd.Series(["45202030", 10101010.0])).tolist() == ["45202030", "10101010"]


# ---------------------------------------------------------------- prices


def test_bundled_prices(prices):
    assert prices.close.shape == (2553, 1542)
    assert prices.start == pd.Timestamp("2009-12-01") and prices.end == pd.Timestamp("2020-01-23")
    assert prices.close.dtypes.eq("float64").all()


def test_wide_and_long_formats_agree(tmp_path):
    p = synthetic_prices(n_tickers=4, n_days=30)
    wide = p.close.reset_index()
    long = p.close.stack().rename("close").reset_index()
    wide.to_csv(tmp_path / "wide.csv", index=False)
    long.to_parquet(tmp_path / "long.parquet")
    a = load_prices(tmp_path / "wide.csv")
    b = load_prices(tmp_path / "long.parquet")
    pd.testing.assert_frame_equal(a.close, b.close, check_freq=False)
    np.testing.assert_allclose(a.close.to_numpy(), p.close.to_numpy())


def test_duplicate_price_rows_and_columns_are_errors():
    long = pd.DataFrame({"date": ["2020-01-02"] * 2, "ticker": ["A", "A"], "close": [1.0, 2.0]})
    with pytest.raises(DataError, match=r"1 \(ticker, date\) pair\(s\) with two different closes, e.g. "
                                        r"\[\('A', '2020-01-02'\)\]"):
        prices_from_frame(long)
    same = pd.DataFrame({"date": ["2020-01-02", "2020-01-02", "2020-01-03"], "ticker": ["A", "A", "A"],
                         "close": [1.0, 1.0, 1.5]})  # a row repeated exactly: dropped
    assert prices_from_frame(same).close["A"].tolist() == [1.0, 1.5]
    wide = pd.DataFrame([[1.0, 2.0]], columns=["A", "a"], index=pd.to_datetime(["2020-01-02"]))
    with pytest.raises(DataError, match="duplicate ticker columns.*A"):
        prices_from_frame(wide)


def test_nonpositive_prices_raise_or_become_missing():
    p = synthetic_prices(n_tickers=3, n_days=20).close
    p.iloc[5, 1] = 0.0
    p.iloc[7, 1] = -3.0
    with pytest.raises(DataError, match=r"non-positive.*T01 \(2 day\(s\), first 2015-01-08\)"):
        prices_from_frame(p)
    ok = prices_from_frame(p, nonpositive="nan")
    assert ok.close["T01"].isna().sum() == 2


def test_missing_file_and_bad_format(tmp_path):
    with pytest.raises(DataError, match="prices file not found"):
        load_prices(tmp_path / "nope.parquet")
    (tmp_path / "p.xlsx").write_text("x")
    with pytest.raises(DataError, match="unsupported format"):
        load_prices(tmp_path / "p.xlsx")


# ---------------------------------------------------------------- returns


def test_monthly_returns_are_month_end_log_returns():
    p = synthetic_prices(n_tickers=2, n_days=200)
    panel = log_returns(p, "2015-03-01", "2015-06-30", "monthly")
    month_end = p.close.groupby(p.close.index.to_period("M")).last()
    expected = np.log(month_end).diff().loc["2015-03":"2015-06"]
    assert len(panel.returns) == 4
    np.testing.assert_allclose(panel.returns.to_numpy(), expected.to_numpy())


def test_daily_returns_inside_window():
    p = synthetic_prices(n_tickers=2, n_days=50)
    panel = log_returns(p, "2015-01-10", "2015-01-31", "daily")
    assert panel.returns.index[0] == pd.Timestamp("2015-01-12")  # first trading day in the window
    t = panel.returns.index[0]
    prev = p.close.index[p.close.index.get_loc(t) - 1]
    assert panel.returns.loc[t, "T00"] == pytest.approx(
        np.log(p.close.loc[t, "T00"] / p.close.loc[prev, "T00"])
    )


def test_bad_series_are_dropped_with_reasons():
    p = synthetic_prices(n_tickers=8, n_days=300).close
    p["T01"] = np.nan  # all-NaN
    p["T02"] = 12.5  # constant
    p.loc[p.index[100]:, "T03"] = np.nan  # stops trading early
    prices = prices_from_frame(p)
    panel = log_returns(
        prices, "2015-03-01", "2015-12-31", "daily", tickers=[*p.columns, "NOPX"], max_drop_share=0.6
    )
    assert dict(panel.dropped) == {
        "NOPX": "no prices", "T01": "no prices in window", "T02": "constant price",
        "T03": panel.dropped["T03"],
    }
    assert panel.dropped["T03"].startswith("too few observations")
    assert "T01" not in panel.returns.columns and panel.returns.shape[1] == 5


def test_too_many_dropped_is_an_error():
    p = synthetic_prices(n_tickers=4, n_days=100).close
    p[["T00", "T01"]] = np.nan
    with pytest.raises(WindowError, match=r"2 of 4 tickers \(50%\) have no usable"):
        log_returns(prices_from_frame(p), "2015-02-01", "2015-04-30", "daily", max_drop_share=0.25)


def test_window_without_data_is_an_error():
    p = synthetic_prices(n_days=50)
    with pytest.raises(WindowError, match="no monthly returns between 2030-01-01 and 2030-12-31: prices in "
                                          "synthetic cover 2015-01-01"):
        log_returns(p, "2030-01-01", "2030-12-31")
    with pytest.raises(WindowError, match="before its start"):
        log_returns(p, "2015-03-01", "2015-02-01")


def test_unknown_frequency():
    with pytest.raises(DataError, match="unknown return frequency 'weekly'"):
        log_returns(synthetic_prices(), "2015-01-01", "2015-06-01", "weekly")
