"""The tables of a pairs backtest from its books: summary statistics, concentration, placebos, trades.

Every statistic of a method book comes from its daily portfolio returns concatenated over the windows
(:class:`BookSeries`), with the formulas of :mod:`finsae.backtest.metrics` (Sharpe ratio
``sqrt(P) mean(r - rf) / sd(r - rf)``, its stationary-bootstrap CI, geometric annual return, drawdown, mean
monthly excess return in bp). Concentration: each stock's share of the P&L is the sum over days of the
contributions of the pairs it is in (committed capital: ``r / N``; employed: ``r / open pairs``); the top
stock is the one with the largest absolute share, and the book is recomputed without its pairs (their capital
goes to the others). Placebo standing: the median placebo Sharpe ratio and the percentile of the method's
among them (:func:`finsae.evaluate.comovement.percentile_of`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from finsae.backtest.books import Book, BookSet, PairBlock, PlaceboMoments, WindowPairs
from finsae.backtest.engine import TradingRules, portfolio_returns, trade_list
from finsae.backtest.metrics import (
    annual_return,
    annual_volatility,
    max_drawdown,
    monthly_excess_bps,
    sharpe_ci,
    sharpe_ratio,
)
from finsae.backtest.results import BASES, BacktestSettings
from finsae.evaluate.comovement import percentile_of

TRADE_COLUMNS = ["method", "strategy", "window", "y", "x", "hedge_ratio", "entry_date", "exit_date",
                 "direction", "holding_days", "gross", "net"]


def _idle(basis: str, rf: float) -> float:
    """The return of a book without open pairs: ``rf`` on either basis (idle capital sits in cash)."""
    return rf


def book_series(blocks: Sequence[WindowPairs], n_rows: Sequence[int], basis: str, cost: float,
                rules: TradingRules, rf: float, exclude: str | None = None) -> np.ndarray:
    """A method book's daily returns over all windows recomputed from its pairs, optionally without the pairs
    of stock ``exclude`` (their capital goes to the remaining pairs)."""
    parts = []
    by_window = {wp.window: wp for wp in blocks}
    for wn, rows in enumerate(n_rows):
        if wn not in by_window:
            parts.append(np.full(rows, _idle(basis, rf)))
            continue
        blk, tk = by_window[wn].block, by_window[wn].tickers
        keep = np.ones(len(blk.pos), dtype=bool)
        if exclude is not None:
            names = np.asarray(tk)
            keep = (names[blk.y] != exclude) & (names[blk.x] != exclude)
        sub = blk.paths.columns(np.flatnonzero(keep))
        zeros = np.zeros(int(keep.sum()), dtype=np.int64)
        parts.append(portfolio_returns(sub.net(cost, rules)[1:], sub.active[1:], zeros, 1, basis=basis,
                                       n_selected=np.array([keep.sum()]), rf=rf)[:, 0])
    return np.concatenate(parts) if parts else np.zeros(0)


def stock_pnl(blocks: Sequence[WindowPairs], basis: str, cost: float, rules: TradingRules) -> pd.Series:
    """Each stock's share of a book's P&L: the sum over days of the contributions of the pairs it is in
    (committed: ``r / N``; employed: ``r / open pairs``)."""
    contrib: dict[str, float] = {}
    for wp in blocks:
        blk = wp.block
        net = blk.paths.net(cost, rules)[1:]
        active = blk.paths.active[1:]
        r = np.where(active, net, 0.0)
        if basis == "committed":
            w = np.full(r.shape[0], 1.0 / max(wp.n_selected, 1))[:, None]
        else:
            cnt = active.sum(axis=1, keepdims=True)
            w = np.divide(1.0, cnt, out=np.zeros(cnt.shape), where=cnt > 0)
        per_pair = (r * w).sum(axis=0)
        names = np.asarray(wp.tickers)
        for k in range(len(blk.pos)):
            for s in (names[blk.y[k]], names[blk.x[k]]):
                contrib[s] = contrib.get(s, 0.0) + float(per_pair[k])
    return pd.Series(contrib, dtype=np.float64)


@dataclass(frozen=True)
class BookSeries:
    """One method book on one capital basis over all windows.

    Attributes:
        returns: ``gross`` and ``net_{c}bp`` for every cost level, one value per trading day.
        turnover: traded notional per unit of capital, per day.
        pairs: the book's pairs, window by window.
        n_rows: the number of trading days of every window (``sum(n_rows) == len(dates)``).
    """

    book: Book
    basis: str
    dates: pd.DatetimeIndex
    returns: dict[str, np.ndarray]
    turnover: np.ndarray
    pairs: list[WindowPairs]
    n_rows: list[int]

    def frame(self) -> pd.DataFrame:
        """The daily returns as a table: date, gross and net columns."""
        return pd.DataFrame({"date": self.dates, **self.returns})

    def of(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``table`` of this book's method and strategy."""
        return table[(table["method"] == self.book.method) & (table["strategy"] == self.book.strategy)]


def _performance(s: BookSeries, st: BacktestSettings) -> dict[str, Any]:
    ppy, rf = st.periods_per_year, st.rf
    r, r_head = s.returns, s.returns[st.headline_column]
    row = {"sharpe_gross": sharpe_ratio(r["gross"], ppy, rf)}
    for c in st.costs_bps:
        row[f"sharpe_net_{c:g}bp"] = sharpe_ratio(r[f"net_{c:g}bp"], ppy, rf)
    lo, hi = sharpe_ci(r_head, ppy, rf, draws=st.bootstrap_draws, seed=st.placebo.seed)
    return {**row, "sharpe_net_ci_low": lo, "sharpe_net_ci_high": hi,
            "annual_return_net": annual_return(r_head, ppy),
            "annual_volatility": annual_volatility(r_head, ppy),
            "max_drawdown_net": max_drawdown(r_head),
            "bp_month_gross": monthly_excess_bps(r["gross"], s.dates, rf),
            "bp_month_net": monthly_excess_bps(r_head, s.dates, rf)}


def _activity(s: BookSeries, trades: pd.DataFrame, windows: pd.DataFrame,
              st: BacktestSettings) -> dict[str, Any]:
    """Pairs, trades, distinct stocks traded, share of days invested, annual turnover, hit rate, holding
    days."""
    mt, mw = s.of(trades), s.of(windows)
    return {"pairs_traded": int(mw["selected"].sum()), "trades": len(mt),
            "distinct_stocks": len(set(mt["y"]) | set(mt["x"])),
            "days_invested_share": float(np.mean(s.returns["gross"] != _idle(s.basis, st.rf))),
            "annual_turnover": float(s.turnover.mean() * st.periods_per_year),
            "hit_rate_net": float((mt["net"] > 0).mean()) if len(mt) else np.nan,
            "avg_holding_days": float(mt["holding_days"].mean()) if len(mt) else np.nan}


def concentration(s: BookSeries, st: BacktestSettings, performance: dict[str, Any]) -> dict[str, Any]:
    """The top stock of the book's headline-net P&L, its share of the total (pairs count for both their
    stocks, so the total is half the sum of the stock shares), and the headline figures of the book without
    its pairs; without a top stock, the book's own figures (``performance``)."""
    ppy, rf, head = st.periods_per_year, st.rf, st.headline_cost_bps
    rules = st.rules(s.book.strategy)
    pnl = stock_pnl(s.pairs, s.basis, head, rules)
    total = float(pnl.sum()) / 2.0  # every pair's contribution is counted for both of its stocks
    if len(pnl) and total != 0.0 and pnl.abs().max() > 0:
        top = str(pnl.abs().idxmax())
        ex = book_series(s.pairs, s.n_rows, s.basis, head, rules, rf, exclude=top)
        return {"top_stock": top, "top_stock_pnl_share": float(pnl[top] / total),
                "ex_top_sharpe_net": sharpe_ratio(ex, ppy, rf),
                "ex_top_annual_return_net": annual_return(ex, ppy),
                "ex_top_bp_month_net": monthly_excess_bps(ex, s.dates, rf)}
    return {"top_stock": None, "top_stock_pnl_share": np.nan,
            "ex_top_sharpe_net": performance[f"sharpe_{st.headline_column}"],
            "ex_top_annual_return_net": performance["annual_return_net"],
            "ex_top_bp_month_net": performance["bp_month_net"]}


def placebo_standing(s: BookSeries, sharpe: float, placebo: pd.DataFrame, column: str) -> dict[str, float]:
    """Median of each placebo kind's Sharpe ratios (``column``, same basis) and the percentile of
    ``sharpe``."""
    row = {}
    mine = (placebo["method"] == s.book.method) & (placebo["strategy"] == s.book.strategy)
    for kind in ("random_pairs", "random_groups"):
        dist = placebo.loc[mine & (placebo["kind"] == kind) & (placebo["basis"] == s.basis), column]
        dist = dist.to_numpy()
        some = len(dist) and not np.isnan(dist).all()
        row[f"{kind}_median_sharpe"] = float(np.nanmedian(dist)) if some else np.nan
        row[f"{kind}_percentile"] = percentile_of(float(sharpe), dist)
    return row


def summary_row(s: BookSeries, trades: pd.DataFrame, windows: pd.DataFrame, placebo: pd.DataFrame,
                st: BacktestSettings) -> dict[str, Any]:
    """One row of the summary table: performance, activity, concentration and placebo standing of a book."""
    perf = _performance(s, st)
    col = f"sharpe_{st.headline_column}"
    return {"method": s.book.method, "strategy": s.book.strategy, "basis": s.basis, **perf,
            **_activity(s, trades, windows, st), **concentration(s, st, perf),
            **placebo_standing(s, perf[col], placebo, col)}


def daily_table(series: Sequence[BookSeries], costs: Sequence[float]) -> pd.DataFrame:
    """One row per (method, strategy, basis, date): the book's gross and net returns."""
    daily = pd.concat([s.frame().assign(method=s.book.method, strategy=s.book.strategy, basis=s.basis)
                       for s in series], ignore_index=True)
    return daily[["method", "strategy", "basis", "date", "gross", *[f"net_{c:g}bp" for c in costs]]]


def window_table(rows: Sequence[dict[str, Any]], trades: pd.DataFrame, daily: pd.DataFrame,
                 window_of_day: np.ndarray, head_col: str) -> pd.DataFrame:
    """The per-window diagnostics ``rows`` with each (method, strategy, window)'s number of trades and its
    compounded returns ``prod(1 + r) - 1`` gross and net of the headline cost (column ``head_col``) on each
    basis. ``window_of_day``: the window label of every trading day, in date order."""
    keys = ["method", "strategy", "window"]
    frame = pd.DataFrame(rows)
    frame = frame.join(trades.groupby(keys).size().rename("trades"), on=keys).fillna({"trades": 0})
    for basis in BASES:
        per = (daily[daily["basis"] == basis]
               .assign(window=lambda f: np.tile(window_of_day, len(f) // len(window_of_day)))
               .groupby(keys)[["gross", head_col]]
               .agg(lambda r: float(np.prod(1 + r) - 1))
               .rename(columns={"gross": f"return_gross_{basis}", head_col: f"return_{head_col}_{basis}"}))
        frame = frame.join(per, on=keys)
    return frame


def placebo_table(books: BookSet, moments: PlaceboMoments, st: BacktestSettings) -> pd.DataFrame:
    """One row per (placebo book, basis): Sharpe ratio of its gross and headline-net daily returns."""
    col = f"sharpe_{st.headline_column}"
    gross = {basis: m.sharpe(st.periods_per_year) for basis, m in moments.gross.items()}
    net = {basis: m.sharpe(st.periods_per_year) for basis, m in moments.net.items()}
    rows = [{"method": b.method, "strategy": b.strategy, "kind": b.kind, "draw": b.draw, "basis": basis,
             "sharpe_gross": gross[basis][k], col: net[basis][k]}
            for k, b in enumerate(books.books) if b.kind != "method" for basis in BASES]
    return pd.DataFrame(rows, columns=["method", "strategy", "kind", "draw", "basis", "sharpe_gross", col])


def trade_table(blk: PairBlock, books: BookSet, rules: TradingRules, cost: float, tickers: Sequence[str],
                dates: pd.DatetimeIndex, label: str) -> pd.DataFrame:
    """One row per round trip of the pairs of ``blk`` (net of ``cost``); ``dates``: the window's rows (row 0
    the last formation day)."""
    tl = trade_list(blk.paths, blk.paths.net(cost, rules))
    if tl.empty:
        return pd.DataFrame(columns=TRADE_COLUMNS)
    col = tl["pair"].to_numpy()
    names = np.asarray(tickers)
    owners = [books.books[b] for b in blk.book[col]]
    return pd.DataFrame({
        "method": [b.method for b in owners], "strategy": [b.strategy for b in owners],
        "window": label, "y": names[blk.y[col]], "x": names[blk.x[col]], "hedge_ratio": blk.hedge[col],
        "entry_date": dates[tl["entry_row"].to_numpy()], "exit_date": dates[tl["exit_row"].to_numpy()],
        "direction": tl["direction"].to_numpy(),
        "holding_days": (tl["exit_row"] - tl["entry_row"]).to_numpy(),
        "gross": tl["gross"].to_numpy(), "net": tl["net"].to_numpy(),
    })[TRADE_COLUMNS]


def selection_table(blk: PairBlock, books: BookSet, strategy: str, tickers: Sequence[str], label: str,
                    score: np.ndarray, half_life: np.ndarray | None, adf_pvalue: np.ndarray) -> pd.DataFrame:
    """One row per selected pair of ``blk`` in the traded ordering: its score (p-value for ``coint``, SSD for
    ``distance``, per pair in all-pairs order), half-life, spread model and the legs' ADF p-values."""
    names = np.asarray(tickers)
    sc = score[blk.pos]
    return pd.DataFrame({
        "method": [books.books[b].method for b in blk.book], "strategy": strategy, "window": label,
        "y": names[blk.y], "x": names[blk.x],
        "pvalue": sc if strategy == "coint" else np.nan, "ssd": sc if strategy == "distance" else np.nan,
        "half_life": half_life[blk.pos] if strategy == "coint" and half_life is not None else np.nan,
        "intercept": blk.intercept, "hedge_ratio": blk.hedge, "spread_sd": blk.sigma,
        "y_adf_pvalue": adf_pvalue[blk.y], "x_adf_pvalue": adf_pvalue[blk.x],
    })
