"""``finsae backtest``: walk-forward pairs trading inside the peer groups of every method, with placebos.

For each trading window: plan (:func:`plan_window`) -> simulate (:func:`simulate_window`), then summarise
(:func:`summarise`):

1. Eligible stocks have a price on the first day of the formation window and no gap longer than
   ``max_fill_days`` inside it; shorter gaps are filled with the last close (past prices only). The bundled
   prices miss 2011-02-17 for 1,170 stocks and about 7 stocks on any given day, so this matters. A stock whose
   close stays unchanged for more than ``max_stale_days`` (21) days in a row inside its formation window (a
   halt or a vendor's forward fill: a tiny distance to anything, no real spread) is not eligible either (no
   window of the bundled backtests loses a stock to it: their tables are unchanged). A stock with
   a daily move above ``max_abs_log_return`` (in log terms) inside its formation window is screened out for
   that window: one such jump (an unadjusted split, a mis-scaled segment, or a real shock) dominates the
   co-integrating regression and produces p-values near 0 with a half-life of about 2 days.
2. Two strategies inside each method's groups, both with the same costs, capital bases and placebos:

   * ``coint`` (Engle-Granger): every pair of eligible stocks is tested (formation-window log prices; both
     orderings unless ``selection.orderings`` is ``first``; cached on disk under a key hashing the prices, the
     tickers and the test settings). With ``selection.i1_screen`` both legs must look I(1) in the formation
     window (:func:`finsae.backtest.unitroot.integrated_of_order_one`). A pair is a candidate when it is
     inside a group, its traded ordering's hedge ratio is positive, and the test is valid; selection is BH-FDR
     within the candidates, then the half-life range, then the smallest p-values with at most
     ``max_pairs_per_stock`` pairs per stock (:class:`finsae.backtest.pairs.PairChooser`). The legs trade the
     tested spread ``log y - b log x`` (:func:`finsae.backtest.engine.simulate_pairs`).
   * ``distance`` (Gatev, Goetzmann and Rouwenhorst 2006): the within-group pairs with the smallest sum of
     squared deviations of normalised prices over the formation window, opened at ``distance.entry_z``
     formation standard deviations and closed when the paths cross.

   Nothing after the formation window is read by any selection.
3. Placebos, per method, strategy and window: ``random_pairs`` trades as many uniformly drawn candidate pairs
   (any two eligible stocks) as the method selected; ``random_groups`` relabels the stocks at random with the
   method's group sizes and runs the same selection. Each draw is a book traded with exactly the method's
   rules. The draws of a method come from their own random stream (:func:`finsae.backtest.books.placebo_rng`):
   adding or reordering methods in a config leaves every other method's placebos unchanged.
4. Two capital bases for every book (:func:`finsae.backtest.engine.portfolio_returns`): ``committed`` (each
   selected pair holds ``1/N`` of the capital whether it trades or not; idle capital earns the risk-free rate)
   and ``employed`` (capital split over the pairs open on a day). ``headline_basis`` picks the one the placebo
   percentiles and the report lead with; both are reported.
5. Concentration (:func:`finsae.backtest.summary.concentration`): per method, the number of distinct stocks
   traded, the stock whose pairs contribute most to the P&L (sum of the daily contributions of the pairs it is
   in), its share of the total, and the headline figures with the pairs of that stock removed (their capital
   goes to the others).

The daily returns of each book are concatenated over the windows; Sharpe ratios are annualised with
``periods_per_year``; ``bp_month`` is the mean monthly excess return in basis points (the unit of the
pairs-trading literature: e.g. Do and Faff 2012, Rad, Low and Faff 2016).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from finsae import _io
from finsae._paths import cache_dir
from finsae.backtest.books import (
    BookReturns,
    BookSet,
    Pick,
    PlaceboMoments,
    WindowMarket,
    WindowPairs,
    placebo_rng,
    random_pairs,
    simulate_books,
)
from finsae.backtest.engine import Window, distance_ssd, walk_forward_windows
from finsae.backtest.pairs import PairChooser, all_pairs, pair_position, pair_tests, resolve_orderings
from finsae.backtest.results import BASES, BacktestResult, BacktestSettings
from finsae.backtest.summary import (
    BookSeries,
    daily_table,
    placebo_table,
    selection_table,
    summary_row,
    trade_table,
    window_table,
)
from finsae.backtest.unitroot import adf_test
from finsae.config import PairsBacktestConfig, PairSelectionConfig
from finsae.data import Universe, load_prices, load_universe, priced_tickers
from finsae.data.universe import _read_table, normalize_tickers
from finsae.errors import ConfigError, DataError
from finsae.evaluate.comovement import within_pairs
from finsae.group.taxonomy import taxonomy_labels
from finsae.parallel import get_backend
from finsae.pipeline.store import BenchmarkRun

__all__ = ["BacktestResult", "plan_window", "run_pairs_backtest", "simulate_window", "summarise"]

logger = logging.getLogger(__name__)

_TEST_VERSION = "eg-3-matrix"  # bump when the pair-test computation changes, to invalidate caches


# ------------------------------------------------------------------------------------------------- pair tests
def _both(sel: PairSelectionConfig) -> bool:
    return sel.orderings != "first"


def _tests_key(logp: np.ndarray, tickers: list[str], sel: PairSelectionConfig) -> str:
    """The cache key of a window's pair tests: SHA-256 of the test version, the test settings, the tickers and
    the log prices (32 hex digits)."""
    h = hashlib.sha256()
    h.update(_TEST_VERSION.encode())
    h.update(repr((sel.maxlag, sel.autolag, _both(sel))).encode())
    h.update("\x00".join(tickers).encode())
    h.update(np.ascontiguousarray(logp).tobytes())
    return h.hexdigest()[:32]


def cached_all_pair_tests(logp: np.ndarray, tickers: list[str], sel: PairSelectionConfig) -> pd.DataFrame:
    """p-value, half-life and hedge ratio of every pair of columns of ``logp`` (all-pairs order; ``_ij``: y =
    the first column, ``_ji``: the reverse, when both orderings are tested) and usability, from the cache when
    present. A corrupt cache file is recomputed. The tests come from matrix products of the panel in this
    process (all pairs of a window in about a second), whatever the backend: Ray distributes the placebo
    draws."""
    path = cache_dir() / "pairtests" / f"{_tests_key(logp, tickers, sel)}.parquet"
    n_pairs = len(tickers) * (len(tickers) - 1) // 2
    if path.is_file():
        try:
            table = pd.read_parquet(path)
            if len(table) == n_pairs:
                return table
            logger.warning("pair-test cache %s has %d rows, expected %d: recomputing", path, len(table),
                           n_pairs)
        except Exception as exc:  # a truncated or foreign file: recompute, never crash
            logger.warning("pair-test cache %s is unreadable (%s): recomputing", path, exc)
    i, j = all_pairs(len(tickers))
    res = pair_tests(logp, i, j, maxlag=sel.maxlag, autolag=sel.autolag, both_orderings=_both(sel),
                     method="matrix")
    table = pd.DataFrame({"pvalue_ij": res.pvalue_ij, "half_life_ij": res.half_life,
                          "hedge_ij": res.hedge_ratio, "usable": res.valid & ~res.collinear})
    if res.pvalue_ji is not None:
        table["pvalue_ji"], table["half_life_ji"] = res.pvalue_ji, res.half_life_ji
        table["hedge_ji"] = res.hedge_ratio_ji
    _io.write_parquet(table, path)
    return table


# ----------------------------------------------------------------------------------------------------- market
@dataclass(frozen=True)
class Market:
    """The prices and groupings a backtest trades: closes of the priced universe, each method's labels (ticker
    -> group) and whether trading it looks ahead, and the data sources (for the manifest)."""

    close: pd.DataFrame
    labels: dict[str, pd.Series]
    look_ahead: dict[str, bool]
    sources: dict[str, str]

    @property
    def tickers(self) -> pd.Index:
        return self.close.columns


def _check_look_ahead(name: str, vintage: str, published: pd.Timestamp | None, start: pd.Timestamp,
                      allowed: bool) -> bool:
    """Whether trading ``name`` from ``start`` looks ahead (its text was published on or after ``start``, or
    on an unknown date); refused unless ``allowed``."""
    ahead = published is None or published >= start
    if ahead and not allowed:
        when = published.date() if published is not None else "on an unknown date"
        raise ConfigError(f"text_groups: {name!r} comes from text vintage {vintage!r} (published "
                          f"{when}), not before the backtest start {start.date()}: trading it would look "
                          "ahead (set allow_look_ahead to run it anyway, marked)")
    return ahead


def load_text_groups(cfg: PairsBacktestConfig, universe: Universe,
                     start: pd.Timestamp) -> dict[str, tuple[pd.Series, bool]]:
    """Group labels (ticker -> group) of each ``cfg.text_groups.names`` entry, and whether trading them from
    ``start`` looks ahead (the text vintage was published on or after ``start``)."""
    tg = cfg.text_groups
    assert tg is not None
    if tg.results is not None:  # the benchmark's run store: the groupings as it formed them
        found = BenchmarkRun.load(tg.results).text_groups(tg.names, start, vintage=tg.vintage)
        for name, g in found.items():
            _check_look_ahead(name, g.vintage, g.published, start, tg.allow_look_ahead)
        return {name: (g.labels, bool(g.look_ahead)) for name, g in found.items()}
    assert tg.file is not None
    if not tg.file.is_file():
        raise ConfigError(f"text_groups.file {tg.file} not found: run the benchmark that writes it first "
                          "(e.g. finsae benchmark --config backtests/forward_2017.yaml)")
    table = _read_table(tg.file, "text_groups.file")  # parquet or CSV
    need = {"ticker", "group", "name", "vintage"}
    if not need <= set(table.columns):
        raise DataError(f"{tg.file}: not a groups file (needs columns {sorted(need)}, "
                        f"has {list(table.columns)})")
    table = table.assign(ticker=normalize_tickers(table["ticker"].astype(str)))  # the universe's ticker rule
    out = {}
    for name in tg.names:
        rows = table[table["name"] == name]
        if rows.empty:
            raise ConfigError(f"text_groups: no grouping {name!r} in {tg.file}; it has e.g. "
                              f"{sorted(table['name'].unique())[:8]}")
        twice = rows["ticker"][rows["ticker"].duplicated()]
        if len(twice):
            raise DataError(f"{tg.file}: grouping {name!r} lists {len(twice)} ticker(s) twice, e.g. "
                            f"{sorted(set(twice))[:5]}")
        vintage = str(rows["vintage"].iloc[0])
        ahead = _check_look_ahead(name, vintage, _published(universe, vintage), start, tg.allow_look_ahead)
        out[name] = (pd.Series(rows["group"].to_numpy(), index=pd.Index(rows["ticker"], name="ticker"),
                               name=name, dtype="string"), bool(ahead))
    return out


def _published(universe: Universe, vintage: str) -> pd.Timestamp | None:
    """When text vintage ``vintage`` of ``universe`` was published: a benchmark's ``asof_<date>`` snapshot
    (a ``text_as_of`` design) is made again; None for a vintage the universe does not know."""
    if vintage in universe.vintages:
        return universe.vintage(vintage).published
    m = re.fullmatch(r"asof_(\d{4}-\d{2}-\d{2})", vintage)
    if m:
        try:
            return universe.snapshot(pd.Timestamp(m.group(1)), name=vintage).vintage(vintage).published
        except DataError:
            return None
    return None


def _check_coverage(name: str, labels: pd.Series, tickers: pd.Index) -> None:
    """Warn when a text grouping names tickers the backtest does not trade, or leaves traded stocks without
    a group (a grouping from another universe, or tickers written differently); refuse one that shares no
    ticker with it."""
    inside = labels.index.intersection(tickers)
    if len(inside) == 0:
        raise DataError(f"text_groups: grouping {name!r} shares no ticker with the backtest's priced "
                        f"universe (e.g. {list(labels.index[:3])} against {list(tickers[:3])}): was it "
                        "formed on another universe?")
    outside = labels.index.difference(tickers)
    ungrouped = tickers.difference(labels.dropna().index)
    if len(outside) or len(ungrouped) > 0.25 * len(tickers):
        logger.warning(
            "text_groups: grouping %r: %d of its %d tickers are not in the backtest's priced universe (e.g. "
            "%s) and %d of the %d traded stocks have no group in it (e.g. %s): was it formed on another "
            "universe?", name, len(outside), len(labels), list(outside[:5]), len(ungrouped), len(tickers),
            list(ungrouped[:5]))


def load_market(cfg: PairsBacktestConfig) -> Market:
    """The universe's closes and every method's group labels (taxonomies, then text groupings)."""
    universe = load_universe(cfg.data.companies)
    data = cfg.data
    prices = load_prices(data.prices, nonpositive=data.nonpositive_prices, bad_ticks=data.bad_ticks,
                         splits=data.splits, sparse_dates=data.sparse_dates)
    tickers = priced_tickers(universe.tickers, prices, f"universe {universe.source}")
    if len(tickers) < 2:
        raise DataError(f"the prices ({prices.source}) share only {len(tickers)} ticker with the universe "
                        f"({universe.source}): no pair to trade")
    labels = {m: taxonomy_labels(universe, m) for m in cfg.methods}
    look_ahead: dict[str, bool] = dict.fromkeys(cfg.methods, False)
    if cfg.text_groups is not None:
        for name, (lab, ahead) in load_text_groups(cfg, universe, pd.Timestamp(cfg.start)).items():
            _check_coverage(name, lab, tickers)
            labels[name], look_ahead[name] = lab, ahead
    sources = {"companies": universe.source, "prices": prices.source}
    return Market(prices.close[tickers], labels, look_ahead, sources)


# ------------------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Formation:
    """The eligible stocks of one window, from formation-window prices only.

    Attributes:
        logp: formation log prices of the eligible stocks (gap-filled).
        trade_rows: the last formation close, then the trading closes (NaN where missing).
        adf_pvalue: ADF p-value of each eligible stock's log price.
        i1: the stock passes the I(1) screen (ADF does not reject a unit root in the log price at ``i1_alpha``
            and rejects it in the first difference), or every stock without the screen.
        screened_jumps: complete stocks screened out for a daily move above ``max_abs_log_return``.
    """

    tickers: list[str]
    logp: np.ndarray
    trade_rows: np.ndarray
    adf_pvalue: np.ndarray
    i1: np.ndarray
    screened_jumps: int


def longest_unchanged(prices: np.ndarray) -> np.ndarray:
    """Per column of ``prices`` (rows: days), the longest run of days on which the close did not change
    (``k`` days: ``k + 1`` equal closes in a row); missing closes break a run."""
    if len(prices) < 2:
        return np.zeros(prices.shape[1], dtype=np.int64)
    same = np.diff(prices, axis=0) == 0
    idx = np.arange(1, len(same) + 1)[:, None]
    last_change = np.maximum.accumulate(np.where(same, 0, idx), axis=0)  # last row where it changed
    return (idx - last_change).max(axis=0)


def _formation(w: Window, close: pd.DataFrame, cfg: PairsBacktestConfig) -> Formation:
    form = close.iloc[w.formation]
    if cfg.max_fill_days:
        form = form.ffill(limit=cfg.max_fill_days)
    complete = form.notna().all(axis=0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        jumps = np.abs(np.diff(np.log(form.to_numpy()), axis=0))
    limit = cfg.max_abs_log_return
    calm = ~(np.nan_to_num(jumps) > limit).any(axis=0) if limit else complete
    if cfg.max_stale_days:  # a frozen close (halt, vendor fill) has a tiny SSD and no real spread
        fresh = longest_unchanged(form.to_numpy()) <= cfg.max_stale_days
        stale = complete & calm & ~fresh
        if stale.any():
            logger.info("formation from %s: %d stock(s) with a close unchanged for more than %d days "
                        "screened out: %s", f"{w.formation_start:%Y-%m-%d}", int(stale.sum()),
                        cfg.max_stale_days, list(close.columns[stale][:5]))
        calm = calm & fresh
    eligible = np.flatnonzero(complete & calm)
    n_e = len(eligible)
    logp = np.log(form.to_numpy()[:, eligible])
    trade_rows = close.iloc[w.formation.stop - 1: w.trading.stop].to_numpy()[:, eligible]
    trade_rows[0] = form.to_numpy()[-1, eligible]  # the last known formation close (gap-filled)
    sel = cfg.selection
    if n_e and len(logp) > 2 * sel.i1_lags + 6:
        _, adf_level = adf_test(logp, sel.i1_lags)
        _, adf_diff = adf_test(np.diff(logp, axis=0), sel.i1_lags)
    else:
        adf_level = adf_diff = np.full(n_e, np.nan)
    if sel.i1_screen:
        i1 = (adf_level >= sel.i1_alpha) & (adf_diff < sel.i1_alpha)
    else:
        i1 = np.ones(n_e, dtype=bool)
    return Formation(list(close.columns[eligible]), logp, trade_rows, adf_level, i1,
                     int((complete & ~calm).sum()))


@dataclass(frozen=True)
class WindowPlan:
    """What one window trades: every book's pairs (positions in all-pairs order of the eligible stocks), each
    strategy's legs of every pair, each pair's score (p-value or SSD) and the per-method diagnostics."""

    number: int
    window: Window
    formation: Formation
    pair_y: dict[str, np.ndarray]  # strategy -> y column of every pair (all-pairs order)
    pair_x: dict[str, np.ndarray]
    picks: dict[str, list[Pick]]  # strategy -> the pairs of every book
    rows: list[dict[str, Any]]
    scores: dict[str, np.ndarray]  # strategy -> p-value or SSD per pair
    half_life: np.ndarray


def _method_codes(labels: pd.Series, tickers: pd.Index) -> np.ndarray:
    codes, _ = pd.factorize(labels.reindex(tickers), use_na_sentinel=True)
    return codes.astype(np.int64)


def _placebo_picks(chooser: PairChooser, books: BookSet, method: str, strategy: str, n_pairs: int,
                   within: tuple[np.ndarray, np.ndarray] | None, n_stocks: int,
                   rng: np.random.Generator, draws: int) -> list[Pick]:
    """Each draw: ``n_pairs`` random usable pairs, and (for a grouping) the method's selection inside a random
    relabelling of the stocks with the method's group sizes (company ``q[a]`` takes the label of company
    ``a``)."""
    picks = []
    usable = chooser.usable(strategy)
    for d in range(draws):
        picks.append(Pick(books.id(method, strategy, "random_pairs", d), random_pairs(rng, usable, n_pairs)))
        if within is not None:
            q = rng.permutation(n_stocks)
            a, b = q[within[0]], q[within[1]]
            pos = pair_position(np.minimum(a, b), np.maximum(a, b), n_stocks)
            picks.append(Pick(books.id(method, strategy, "random_groups", d), chooser.choose(strategy, pos)))
    return picks


def _window_row(w: Window, f: Formation, chooser: PairChooser, method: str, strategy: str,
                cand: np.ndarray, n_selected: int) -> dict[str, Any]:
    """The diagnostics of one method and strategy in a window: eligible stocks, candidates, selected pairs."""
    coint = strategy == "coint"
    n_e = len(f.tickers)
    row: dict[str, Any] = {
        "method": method, "strategy": strategy, "window": w.label(),
        "formation_start": w.formation_start, "formation_end": w.formation_end,
        "trading_start": w.trading_start, "trading_end": w.trading_end, "eligible": n_e,
        "screened_jumps": f.screened_jumps,
        "i1_eligible": int(f.i1.sum()) if coint else n_e, "candidates": len(cand),
        "candidates_usable": int(chooser.coint_usable[cand].sum()) if coint else len(cand),
        "selected": n_selected}
    if coint:
        row["candidates_significant_at_5pct"] = int(np.sum(chooser.tests.pvalue[cand] < 0.05))
    return row


def plan_window(w: Window, number: int, market: Market, cfg: PairsBacktestConfig, settings: BacktestSettings,
                books: BookSet) -> WindowPlan:
    """Eligible stocks, pair tests, and every book's pairs in window ``w`` (number ``number``)."""
    f = _formation(w, market.close, cfg)
    n_e = len(f.tickers)
    i_all, j_all = all_pairs(n_e)
    sel = cfg.selection
    tests = resolve_orderings(cached_all_pair_tests(f.logp, f.tickers, sel), sel.orderings)
    scores = {"coint": tests.pvalue}
    if "distance" in settings.strategies:  # SSD of the normalised prices P_t / P_0
        norm = np.exp(f.logp - f.logp[0])
        scores["distance"] = distance_ssd(norm, i_all, j_all) if n_e > 1 else np.zeros(0)
    usable = tests.usable & f.i1[i_all] & f.i1[j_all]
    chooser = PairChooser(tests, usable, scores.get("distance"), i_all, j_all, settings.selection,
                          settings.distance.max_pairs)
    picks: dict[str, list[Pick]] = {}
    rows = []
    for strategy in settings.strategies:
        picks[strategy] = []
        for m in cfg.all_methods:
            within = None if m == "all_pairs" else within_pairs(_method_codes(market.labels[m],
                                                                              pd.Index(f.tickers)))[:2]
            cand = np.arange(len(i_all)) if within is None else pair_position(*within, n_e)
            chosen = chooser.choose(strategy, cand)
            picks[strategy].append(Pick(books.id(m, strategy), chosen))
            rows.append(_window_row(w, f, chooser, m, strategy, cand, len(chosen)))
            rng = placebo_rng(settings.placebo.seed, m, strategy, number)
            picks[strategy] += _placebo_picks(chooser, books, m, strategy, len(chosen), within, n_e, rng,
                                              settings.placebo.draws)
    return WindowPlan(number, w, f, {"coint": np.where(tests.flip, j_all, i_all), "distance": i_all},
                      {"coint": np.where(tests.flip, i_all, j_all), "distance": j_all}, picks, rows, scores,
                      tests.half_life)


# --------------------------------------------------------------------------------------------------- simulate
@dataclass(frozen=True)
class WindowOutcome:
    """One simulated window: the method books' daily returns per strategy (without their pairs), each method
    book's pairs, the placebo books' running moments, and the window's trades and selections."""

    label: str
    dates: pd.DatetimeIndex
    rows: list[dict[str, Any]]
    own: dict[str, BookReturns]
    pairs: dict[int, WindowPairs]
    placebo: PlaceboMoments
    trades: list[pd.DataFrame]
    selections: list[pd.DataFrame]


def simulate_window(plan: WindowPlan, market: Market, settings: BacktestSettings, books: BookSet,
                    backend: Any, chunk: int) -> WindowOutcome:
    """Trade every book of ``plan``: the method books here, the placebo draws on ``backend`` in chunks of
    ``chunk`` books (net of the headline cost only: placebos report Sharpe ratios)."""
    w, f, head = plan.window, plan.formation, settings.headline_cost_bps
    own: dict[str, BookReturns] = {}
    pairs: dict[int, WindowPairs] = {}
    placebo = PlaceboMoments.zeros(len(books))
    trades, selections = [], []
    for st in settings.strategies:
        trading = settings.trading
        wm = WindowMarket(st, f.logp, f.trade_rows, plan.pair_y[st], plan.pair_x[st], settings.rules(st),
                          settings.costs_bps, trading.gross_notional, trading.delisting_return, settings.rf)
        own_picks = [p for p in plan.picks[st] if books.books[p.book].kind == "method"]
        placebo_picks = [p for p in plan.picks[st] if books.books[p.book].kind != "method"]
        returns = simulate_books(own_picks, market=wm, keep_pairs=True)
        chunks = [placebo_picks[k:k + chunk] for k in range(0, len(placebo_picks), chunk)]
        for part in backend.map(simulate_books, chunks, shared={"market": replace(wm, costs=(head,))}):
            placebo.add(part, head, settings.rf)
        assert returns.pairs is not None
        pairs.update(returns.window_pairs(plan.number, f.tickers))
        trades.append(trade_table(returns.pairs, books, wm.rules, head, f.tickers,
                                  market.close.index[w.formation.stop - 1: w.trading.stop], w.label()))
        selections.append(selection_table(returns.pairs, books, st, f.tickers, w.label(), plan.scores[st],
                                          plan.half_life, f.adf_pvalue))
        own[st] = replace(returns, pairs=None)
    return WindowOutcome(w.label(), market.close.index[w.trading], plan.rows, own, pairs, placebo, trades,
                         selections)


# -------------------------------------------------------------------------------------------------- summarise
def _book_series(k: int, basis: str, outcomes: list[WindowOutcome], dates: pd.DatetimeIndex,
                 settings: BacktestSettings, books: BookSet) -> BookSeries:
    """Method book number ``k`` on ``basis``, its daily returns concatenated over the windows."""
    book = books.books[k]
    parts = [(o.own[book.strategy], o.own[book.strategy].column(k)) for o in outcomes]
    returns = {"gross": np.concatenate([r.gross[basis][:, c] for r, c in parts])}
    for cost in settings.costs_bps:
        returns[f"net_{cost:g}bp"] = np.concatenate([r.net[basis][cost][:, c] for r, c in parts])
    turnover = np.concatenate([r.turnover[basis][:, c] for r, c in parts])
    return BookSeries(book, basis, dates, returns, turnover, [o.pairs[k] for o in outcomes if k in o.pairs],
                      [len(o.dates) for o in outcomes])


def summarise(name: str, outcomes: list[WindowOutcome], books: BookSet, settings: BacktestSettings,
              look_ahead: dict[str, bool], output_dir: Path | None) -> BacktestResult:
    """The tables of the backtest from its simulated windows (see :class:`BacktestResult`)."""
    dates = outcomes[0].dates
    if len(outcomes) > 1:
        dates = dates.append([o.dates for o in outcomes[1:]])
    trades = pd.concat([t for o in outcomes for t in o.trades], ignore_index=True)
    selections = pd.concat([s for o in outcomes for s in o.selections], ignore_index=True)
    series = [_book_series(books.index[b], basis, outcomes, dates, settings, books)
              for b in books.method_books for basis in BASES]
    daily = daily_table(series, settings.costs_bps)
    window_of_day = np.concatenate([np.full(len(o.dates), o.label) for o in outcomes])
    windows = window_table([r for o in outcomes for r in o.rows], trades, daily, window_of_day,
                           settings.headline_column)
    moments = PlaceboMoments.zeros(len(books))
    for o in outcomes:
        moments.merge(o.placebo)
    placebo = placebo_table(books, moments, settings)
    summary = pd.DataFrame([summary_row(s, trades, windows, placebo, settings) for s in series])
    summary["look_ahead"] = summary["method"].map(look_ahead).astype(bool)
    return BacktestResult(name, summary, daily, windows, placebo, trades, selections, settings, output_dir)


def _write(result: BacktestResult, cfg: PairsBacktestConfig, market: Market, windows: list[Window],
           seconds_since: float) -> None:
    """The results folder: every table as parquet, ``table.md`` and the manifest, whole or not at all."""
    from finsae.report.markdown import backtest_markdown

    assert result.output_dir is not None
    with _io.staged_results(result.output_dir) as (folder, run_id):
        for name in ("summary", "daily", "windows", "placebo", "trades", "selections"):
            _io.write_parquet(getattr(result, name), folder / f"{name}.parquet", run_id)
        _io.write_text(backtest_markdown(result), folder / "table.md")
        manifest = _io.run_manifest(cfg.model_dump(mode="json"), market.sources,
                                    time.perf_counter() - seconds_since, windows=[w.label() for w in windows],
                                    run_id=run_id)
        _io.write_json(manifest, folder / "manifest.json")
    logger.info("backtest %s written to %s", cfg.name, result.output_dir)


def run_pairs_backtest(cfg: PairsBacktestConfig, output_dir: str | Path | None = None, *,
                       write: bool = True) -> BacktestResult:
    """Run the walk-forward pairs backtest of ``cfg``; write the results folder unless ``write=False``.

    The folder is written whole or not at all (:func:`finsae._io.staged_results`)."""
    t_start = time.perf_counter()
    out = Path(output_dir) if output_dir is not None else cfg.output_dir / cfg.name
    if write:
        _io.check_results_target(out)  # before any work: never write over a folder that is not results
    market = load_market(cfg)
    settings = BacktestSettings.of(cfg)
    windows = walk_forward_windows(market.close.index, cfg.formation_days, cfg.trading_days, cfg.start,
                                   cfg.end)
    books = BookSet.build(settings.strategies, cfg.all_methods, cfg.placebo.draws)
    chunk = cfg.backend.placebo_chunk * 2 * max(1, len(cfg.all_methods))
    backend = get_backend(cfg.backend.kind, cfg.backend.workers, cfg.backend.address)
    try:
        progress = tqdm(windows, desc=f"backtest {cfg.name}", unit="window", disable=None)
        outcomes = [simulate_window(plan_window(w, wn, market, cfg, settings, books), market, settings, books,
                                    backend, chunk)
                    for wn, w in enumerate(progress)]
    finally:
        backend.close()
    result = summarise(cfg.name, outcomes, books, settings, market.look_ahead, out if write else None)
    if write:
        _write(result, cfg, market, windows, t_start)
    return result
