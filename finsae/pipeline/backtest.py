"""``finsae backtest``: walk-forward pairs trading inside the peer groups of every method, with placebos.

For each trading window (plan -> simulate -> summarise):

1. Eligible stocks have a price on the first day of the formation window and no gap longer than
   ``max_fill_days`` inside it; shorter gaps are filled with the last close (past prices only). The bundled
   prices miss 2011-02-17 for 1,170 stocks and about 7 stocks on any given day, so this matters. A stock with a
   daily move above ``max_abs_log_return`` (in log terms) inside its formation window is screened out for that
   window: one such jump (an unadjusted split, a mis-scaled segment, or a real shock) dominates the co-integrating
   regression and produces p-values near 0 with a half-life of about 2 days.
2. Two strategies inside each method's groups, both with the same costs, capital bases and placebos:

   * ``coint`` (Engle-Granger): every pair of eligible stocks is tested (formation-window log prices; both
     orderings unless ``selection.orderings`` is ``first``; cached on disk under a key hashing the prices, the
     tickers and the test settings). With ``selection.i1_screen`` both legs must look I(1) in the formation window
     (:func:`finsae.backtest.unitroot.integrated_of_order_one`). A pair is a candidate when it is inside a group,
     its traded ordering's hedge ratio is positive, and the test is valid; selection is BH-FDR within the
     candidates, then the half-life range, then the smallest p-values with at most ``max_pairs_per_stock`` pairs
     per stock (:func:`finsae.backtest.pairs.select_pairs`). The legs trade the tested spread
     ``log y - b log x`` (:func:`finsae.backtest.engine.simulate_pairs`).
   * ``distance`` (Gatev, Goetzmann and Rouwenhorst 2006): the within-group pairs with the smallest sum of squared
     deviations of normalised prices over the formation window, opened at ``distance.entry_z`` formation standard
     deviations and closed when the paths cross.

   Nothing after the formation window is read by any selection.
3. Placebos, per method, strategy and window: ``random_pairs`` trades as many uniformly drawn candidate pairs
   (any two eligible stocks) as the method selected; ``random_groups`` relabels the stocks at random with the
   method's group sizes and runs the same selection. Each draw is a book traded with exactly the method's rules.
   The draws of a method come from their own random stream (:func:`placebo_rng`): adding or reordering methods
   in a config leaves every other method's placebos unchanged.
4. Two capital bases for every book (:func:`finsae.backtest.engine.portfolio_returns`): ``committed`` (each selected
   pair holds ``1/N`` of the capital whether it trades or not; idle capital earns the risk-free rate) and
   ``employed`` (capital split over the pairs open on a day). ``headline_basis`` picks the one the placebo
   percentiles and the report lead with; both are reported.
5. Concentration: per method, the number of distinct stocks traded, the stock whose pairs contribute most to the
   P&L (sum of the daily contributions of the pairs it is in), its share of the total, and the headline figures
   with the pairs of that stock removed (their capital goes to the others).

The daily returns of each book are concatenated over the windows; Sharpe ratios are annualised with
``periods_per_year``; ``bp_month`` is the mean monthly excess return in basis points (the unit of the pairs-trading
literature: e.g. Do and Faff 2012, Rad, Low and Faff 2016).
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from finsae._io import (
    check_results_target,
    run_manifest,
    staged_results,
    write_json,
    write_parquet,
    write_text,
)
from finsae._paths import cache_dir
from finsae.backtest.engine import (
    PairPaths,
    TradingRules,
    Window,
    distance_ssd,
    fit_distance,
    fit_spreads,
    portfolio_returns,
    simulate_pairs,
    trade_list,
    walk_forward_windows,
)
from finsae.backtest.metrics import (
    annual_return,
    annual_volatility,
    max_drawdown,
    monthly_excess_bps,
    sharpe_ci,
    sharpe_ratio,
)
from finsae.backtest.pairs import all_pairs, pair_position, pair_tests, select_distance, select_pairs
from finsae.backtest.unitroot import adf_test
from finsae.config import PairsBacktestConfig
from finsae.data import load_prices, load_universe, priced_tickers
from finsae.errors import ConfigError, DataError
from finsae.evaluate.comovement import percentile_of, within_pairs
from finsae.group.taxonomy import taxonomy_labels
from finsae.parallel import get_backend

logger = logging.getLogger(__name__)

_TEST_VERSION = "eg-3-matrix"  # bump when the pair-test computation changes, to invalidate caches
STRATEGIES = ("coint", "distance")
BASES = ("committed", "employed")
KINDS = ("method", "random_pairs", "random_groups")


@dataclass(frozen=True)
class BacktestResult:
    """Tables of one pairs backtest (every table also written as parquet).

    Attributes:
        summary: one row per (method, strategy, basis): Sharpe gross and net at each cost level, CI, return,
            volatility, drawdown, mean monthly excess return in bp (gross and net), pairs, trades, turnover,
            hit rate, holding days, concentration (distinct stocks, top stock, its P&L share, figures without it),
            placebo medians and percentiles.
        daily: one row per (method, strategy, basis, date): portfolio returns gross and net at each cost level.
        windows: one row per (method, strategy, window): eligible stocks, candidates, selected pairs, trades, and
            the window's compounded return gross and net of the headline cost on each basis.
        placebo: one row per (method, strategy, placebo kind, draw, basis): gross and headline-net Sharpe.
        trades: one row per round trip of a method.
        selections: one row per (method, strategy, window, pair) selected, in the traded ordering: p-value or
            SSD, half-life, the spread model (intercept, hedge ratio, residual sd) fitted on the formation window,
            and each leg's ADF p-value (log price) in that window.
    """

    name: str
    summary: pd.DataFrame
    daily: pd.DataFrame
    windows: pd.DataFrame
    placebo: pd.DataFrame
    trades: pd.DataFrame
    selections: pd.DataFrame
    config: PairsBacktestConfig
    output_dir: Path | None

    def to_frame(self) -> pd.DataFrame:
        return self.summary.copy()

    def headline(self) -> pd.DataFrame:
        """The summary rows of the headline capital basis."""
        return self.summary[self.summary["basis"] == self.config.headline_basis].reset_index(drop=True)


@dataclass(frozen=True)
class Book:
    """One simulated portfolio: a method's own pairs (``kind="method"``) or one placebo draw."""

    method: str
    strategy: str
    kind: str
    draw: int


def _tests_key(logp: np.ndarray, tickers: list[str], cfg: PairsBacktestConfig) -> str:
    h = hashlib.sha256()
    h.update(_TEST_VERSION.encode())
    h.update(repr((cfg.selection.maxlag, cfg.selection.autolag, _both(cfg))).encode())
    h.update("\x00".join(tickers).encode())
    h.update(np.ascontiguousarray(logp).tobytes())
    return h.hexdigest()[:32]


def _both(cfg: PairsBacktestConfig) -> bool:
    return cfg.selection.orderings != "first"


def cached_all_pair_tests(logp: np.ndarray, tickers: list[str], cfg: PairsBacktestConfig) -> pd.DataFrame:
    """p-value, half-life and hedge ratio of every pair of columns of ``logp`` (all-pairs order; ``_ij``: y = the
    first column, ``_ji``: the reverse, when both orderings are tested) and usability, from the cache when present.
    A corrupt cache file is recomputed. The tests come from matrix products of the panel in this process (all
    pairs of a window in about a second), whatever the backend: Ray distributes the placebo draws."""
    path = cache_dir() / "pairtests" / f"{_tests_key(logp, tickers, cfg)}.parquet"
    n_pairs = len(tickers) * (len(tickers) - 1) // 2
    if path.is_file():
        try:
            table = pd.read_parquet(path)
            if len(table) == n_pairs:
                return table
            logger.warning("pair-test cache %s has %d rows, expected %d: recomputing", path, len(table), n_pairs)
        except Exception as exc:  # a truncated or foreign file: recompute, never crash
            logger.warning("pair-test cache %s is unreadable (%s): recomputing", path, exc)
    i, j = all_pairs(len(tickers))
    res = pair_tests(logp, i, j, maxlag=cfg.selection.maxlag, autolag=cfg.selection.autolag,
                     both_orderings=_both(cfg), method="matrix")
    table = pd.DataFrame({"pvalue_ij": res.pvalue_ij, "half_life_ij": res.half_life,
                          "hedge_ij": res.hedge_ratio, "usable": res.valid & ~res.collinear})
    if res.pvalue_ji is not None:
        table["pvalue_ji"], table["half_life_ji"], table["hedge_ji"] = res.pvalue_ji, res.half_life_ji, res.hedge_ratio_ji
    write_parquet(table, path)
    return table


@dataclass(frozen=True)
class ResolvedTests:
    """Pair tests in the ordering each pair would be traded in (``flip``: y is the second stock of the pair)."""

    pvalue: np.ndarray
    half_life: np.ndarray
    hedge: np.ndarray
    flip: np.ndarray
    usable: np.ndarray


def resolve_orderings(tests: pd.DataFrame, rule: str) -> ResolvedTests:
    """Apply the ``selection.orderings`` rule (see :class:`finsae.config.SelectionConfig`) to a pair-test table:
    the p-value that decides, the traded ordering and its half-life and hedge ratio. A pair whose traded hedge
    ratio is not positive is not usable."""
    p_ij = tests["pvalue_ij"].to_numpy()
    hl_ij = tests["half_life_ij"].to_numpy().astype(np.float64)
    b_ij = tests["hedge_ij"].to_numpy()
    usable = tests["usable"].to_numpy().copy()
    if rule == "first":
        p, flip, hl, b = p_ij, np.zeros(len(p_ij), dtype=bool), hl_ij, b_ij
    else:
        if "pvalue_ji" not in tests:
            raise DataError(f"orderings {rule!r} needs pair tests of both orderings")
        p_ji = tests["pvalue_ji"].to_numpy()
        flip = np.nan_to_num(p_ji, nan=np.inf) < np.nan_to_num(p_ij, nan=np.inf)  # trade the smaller p-value
        p = np.fmax(p_ij, p_ji) if rule == "both" else np.fmin(p_ij, p_ji)
        hl = np.where(flip, tests["half_life_ji"].to_numpy().astype(np.float64), hl_ij)
        b = np.where(flip, tests["hedge_ji"].to_numpy(), b_ij)
    usable &= np.isfinite(b) & (b > 0)
    return ResolvedTests(p, hl, b, flip, usable)


def _method_codes(labels: pd.Series, tickers: pd.Index) -> np.ndarray:
    codes, _ = pd.factorize(labels.reindex(tickers), use_na_sentinel=True)
    return codes.astype(np.int64)


def _random_pairs(rng: np.random.Generator, usable_pos: np.ndarray, k: int) -> np.ndarray:
    if k == 0 or len(usable_pos) == 0:
        return np.empty(0, dtype=np.int64)
    k = min(k, len(usable_pos))
    chosen = np.unique(usable_pos[rng.integers(0, len(usable_pos), size=k)])
    while len(chosen) < k:  # collisions are rare: top up
        extra = usable_pos[rng.integers(0, len(usable_pos), size=k - len(chosen))]
        chosen = np.unique(np.concatenate([chosen, extra]))
    return chosen


def placebo_rng(seed: int, method: str, strategy: str, window_number: int) -> np.random.Generator:
    """The random stream of one method's placebo draws in one window: seeded by the config's seed, the method's
    name, the strategy and the window, so a method's placebos do not depend on which other methods a config runs
    or in what order."""
    key = zlib.crc32(f"{method}\x00{strategy}".encode())
    return np.random.default_rng([seed, key, window_number])


def load_text_groups(cfg: PairsBacktestConfig, universe, start: pd.Timestamp) -> dict[str, tuple[pd.Series, bool]]:
    """Group labels (ticker -> group) of each ``cfg.text_groups.names`` entry, and whether trading them from
    ``start`` looks ahead (the text vintage was published on or after ``start``)."""
    tg = cfg.text_groups
    assert tg is not None
    if not tg.file.is_file():
        raise ConfigError(f"text_groups.file {tg.file} not found: run the benchmark that writes it first "
                          "(e.g. finsae benchmark --config backtests/forward_2017.yaml)")
    table = pd.read_parquet(tg.file)
    need = {"ticker", "group", "name", "vintage"}
    if not need <= set(table.columns):
        raise DataError(f"{tg.file}: not a groups file (needs columns {sorted(need)}, has {list(table.columns)})")
    out = {}
    for name in tg.names:
        rows = table[table["name"] == name]
        if rows.empty:
            raise ConfigError(f"text_groups: no grouping {name!r} in {tg.file}; it has e.g. "
                              f"{sorted(table['name'].unique())[:8]}")
        vintage = str(rows["vintage"].iloc[0])
        published = universe.vintage(vintage).published if vintage in universe.vintages else None
        ahead = published is None or published >= start
        if ahead and not tg.allow_look_ahead:
            raise ConfigError(f"text_groups: {name!r} comes from text vintage {vintage!r} (published "
                              f"{published.date() if published is not None else 'on an unknown date'}), not before the "
                              f"backtest start {start.date()}: trading it would look ahead (set allow_look_ahead to "
                              "run it anyway, marked)")
        out[name] = (pd.Series(rows["group"].to_numpy(), index=pd.Index(rows["ticker"], name="ticker"),
                               name=name, dtype="string"), bool(ahead))
    return out


# ----------------------------------------------------------------------------------------------------------- plan
@dataclass
class WindowPlan:
    """What one window trades: every book's pairs (positions in all-pairs order of the eligible stocks), and the
    per-method diagnostics. Built from formation-window prices only."""

    window: Window
    tickers: list[str]
    logp: np.ndarray  # formation log prices of the eligible stocks (gap-filled)
    trade_rows: np.ndarray  # last formation close, then the trading closes (NaN where missing)
    pair_y: dict[str, np.ndarray]  # strategy -> y column of every pair (all-pairs order)
    pair_x: dict[str, np.ndarray]
    adf_pvalue: np.ndarray  # ADF p-value of each eligible stock's log price
    picks: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)  # strategy -> (book, positions)
    rows: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # strategy -> p-value or SSD per pair
    half_life: np.ndarray | None = None


def _plan_window(w: Window, close: pd.DataFrame, tickers: pd.Index, labels: dict[str, pd.Series],
                 cfg: PairsBacktestConfig, book_index: dict[Book, int], window_number: int) -> WindowPlan:
    form = close.iloc[w.formation].ffill(limit=cfg.max_fill_days) if cfg.max_fill_days else close.iloc[w.formation]
    complete = form.notna().all(axis=0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        jumps = np.abs(np.diff(np.log(form.to_numpy()), axis=0))
    calm = ~(np.nan_to_num(jumps) > cfg.max_abs_log_return).any(axis=0) if cfg.max_abs_log_return else complete
    eligible = np.flatnonzero(complete & calm)
    elig = list(tickers[eligible])
    n_e = len(eligible)
    logp = np.log(form.to_numpy()[:, eligible])
    trade_rows = close.iloc[w.formation.stop - 1: w.trading.stop].to_numpy()[:, eligible]
    trade_rows[0] = form.to_numpy()[-1, eligible]  # the last known formation close (gap-filled)
    sel = cfg.selection
    i_all, j_all = all_pairs(n_e)
    lags = sel.i1_lags
    if n_e and len(logp) > 2 * lags + 6:
        _, adf_level = adf_test(logp, lags)
        _, adf_diff = adf_test(np.diff(logp, axis=0), lags)
    else:
        adf_level = adf_diff = np.full(n_e, np.nan)
    i1 = (adf_level >= sel.i1_alpha) & (adf_diff < sel.i1_alpha) if sel.i1_screen else np.ones(n_e, dtype=bool)

    tests = resolve_orderings(cached_all_pair_tests(logp, elig, cfg), sel.orderings)
    coint_usable = tests.usable & i1[i_all] & i1[j_all]
    plan = WindowPlan(w, elig, logp, trade_rows,
                      {"coint": np.where(tests.flip, j_all, i_all), "distance": i_all},
                      {"coint": np.where(tests.flip, i_all, j_all), "distance": j_all}, adf_level,
                      scores={"coint": tests.pvalue}, half_life=tests.half_life)
    strategies = ["coint"] + (["distance"] if cfg.distance.enabled else [])
    if "distance" in strategies:
        norm = np.exp(logp - logp[0])  # normalised prices P_t / P_0
        plan.scores["distance"] = distance_ssd(norm, i_all, j_all) if n_e > 1 else np.zeros(0)

    p_usable = np.where(coint_usable, tests.pvalue, np.nan)  # NaN: not a test of the family

    def choose(strategy: str, pos: np.ndarray) -> np.ndarray:
        if strategy == "coint":
            p = p_usable[pos]
            small = pos[p <= sel.fdr]  # only these can pass BH; the family is every usable candidate
            keep = select_pairs(tests.pvalue[small], tests.half_life[small], np.ones(len(small), dtype=bool),
                                fdr=sel.fdr, min_half_life=sel.min_half_life, max_half_life=sel.max_half_life,
                                max_pairs=sel.max_pairs, i=i_all[small], j=j_all[small],
                                max_per_stock=sel.max_pairs_per_stock, n_tests=len(p) - int(np.isnan(p).sum()))
            return small[keep]
        keep = select_distance(plan.scores["distance"][pos], np.ones(len(pos), dtype=bool), i_all[pos], j_all[pos],
                               max_pairs=cfg.distance.max_pairs, max_per_stock=sel.max_pairs_per_stock)
        return pos[keep]

    usable_pos = {"coint": np.flatnonzero(coint_usable), "distance": np.arange(len(i_all))}
    for strategy in strategies:
        picks: list[tuple[int, np.ndarray]] = []
        for m in cfg.all_methods:
            if m == "all_pairs":
                cand = np.arange(len(i_all))
                wi = wj = None
            else:
                wi, wj, _ = within_pairs(_method_codes(labels[m], pd.Index(elig)))
                cand = pair_position(wi, wj, n_e)
            chosen = choose(strategy, cand)
            picks.append((book_index[Book(m, strategy, "method", 0)], chosen))
            row: dict[str, Any] = {
                "method": m, "strategy": strategy, "window": w.label(), "formation_start": w.formation_start,
                "formation_end": w.formation_end, "trading_start": w.trading_start, "trading_end": w.trading_end,
                "eligible": n_e, "screened_jumps": int((complete & ~calm).sum()),
                "i1_eligible": int(i1.sum()) if strategy == "coint" else n_e, "candidates": len(cand),
                "candidates_usable": int(coint_usable[cand].sum()) if strategy == "coint" else len(cand),
                "selected": len(chosen)}
            if strategy == "coint":
                row["candidates_significant_at_5pct"] = int(np.sum(tests.pvalue[cand] < 0.05))
            plan.rows.append(row)
            rng = placebo_rng(cfg.placebo.seed, m, strategy, window_number)
            for d in range(cfg.placebo.draws):
                picks.append((book_index[Book(m, strategy, "random_pairs", d)],
                              _random_pairs(rng, usable_pos[strategy], len(chosen))))
                if wi is not None:
                    q = rng.permutation(n_e)  # company q[a] takes the label of company a: same group sizes
                    a, b = q[wi], q[wj]
                    picks.append((book_index[Book(m, strategy, "random_groups", d)],
                                  choose(strategy, pair_position(np.minimum(a, b), np.maximum(a, b), n_e))))
        plan.picks[strategy] = picks
    return plan


# ------------------------------------------------------------------------------------------------------- simulate
@dataclass(frozen=True)
class BookReturns:
    """Daily returns (rows x books, in ``books`` order) of some books over one window, on each capital basis.

    ``pairs`` keeps the pair-level detail of method books (for trades, selections and concentration), and
    ``turnover`` is only computed for them (empty for placebo chunks)."""

    books: np.ndarray
    n_selected: np.ndarray
    gross: dict[str, np.ndarray]
    net: dict[str, dict[float, np.ndarray]]
    turnover: dict[str, np.ndarray]
    pairs: PairBlock | None = None


@dataclass(frozen=True)
class PairBlock:
    """Pair-level results of method books in one window: column ``k`` is pair ``pos[k]`` of book ``book[k]``."""

    pos: np.ndarray
    y: np.ndarray
    x: np.ndarray
    book: np.ndarray
    intercept: np.ndarray
    hedge: np.ndarray
    sigma: np.ndarray
    paths: PairPaths


def simulate_books(picked: list[tuple[int, np.ndarray]], *, strategy: str, logp: np.ndarray, trade_rows: np.ndarray,
                   pair_y: np.ndarray, pair_x: np.ndarray, rules: TradingRules, costs: list[float],
                   gross_notional: float, delisting_return: float, rf: float,
                   keep_pairs: bool = False) -> BookReturns:
    """Trade the pairs of some books (a strategy's method books, or a chunk of placebo draws) over one window.

    Every pair is simulated on its own and each book's returns sum only its own pairs, so a book's numbers do not
    depend on which other books share the call: chunks of placebo draws (e.g. as Ray tasks) give the same
    numbers as one call with everything."""
    books = np.array([b for b, _ in picked], dtype=np.int64)
    pos = np.concatenate([p for _, p in picked]).astype(np.int64) if picked else np.zeros(0, dtype=np.int64)
    cy, cx = pair_y[pos], pair_x[pos]
    local = (np.concatenate([np.full(len(p), k) for k, (_, p) in enumerate(picked)]).astype(np.int64)
             if picked else np.zeros(0, dtype=np.int64))
    n_sel = np.bincount(local, minlength=len(books)).astype(np.int64)
    fit = fit_spreads if strategy == "coint" else fit_distance
    intercept, hedge, sigma = fit(logp[:, cy], logp[:, cx])
    paths = simulate_pairs(trade_rows[:, cy], trade_rows[:, cx], intercept, hedge, sigma, rules,
                           gross_notional=gross_notional, delisting_return=delisting_return)
    nb = len(books)
    active = paths.active[1:]
    gross: dict[str, np.ndarray] = {}
    net: dict[str, dict[float, np.ndarray]] = {}
    turnover: dict[str, np.ndarray] = {}
    nets = {c: paths.net(c, rules)[1:] for c in costs}
    for basis in BASES:
        agg = {"basis": basis, "n_selected": n_sel, "rf": rf}
        gross[basis] = portfolio_returns(paths.gross[1:], active, local, nb, **agg)
        net[basis] = {c: portfolio_returns(nets[c], active, local, nb, **agg) for c in costs}
        if keep_pairs:  # method books only: placebo books report Sharpe ratios, not turnover
            turnover[basis] = portfolio_returns(paths.traded[1:], active, local, nb, **{**agg, "rf": 0.0})
    block = PairBlock(pos, cy, cx, books[local], intercept, hedge, sigma, paths) if keep_pairs else None
    return BookReturns(books, n_sel, gross, net, turnover, block)


@dataclass
class _Moments:
    """Running sums of per-book daily excess returns, for placebo Sharpe ratios without keeping every series."""

    n: np.ndarray
    s: np.ndarray
    q: np.ndarray

    @classmethod
    def zeros(cls, n_books: int) -> _Moments:
        return cls(np.zeros(n_books, dtype=np.int64), np.zeros(n_books), np.zeros(n_books))

    def add(self, books: np.ndarray, r: np.ndarray, rf: float) -> None:
        e = r - rf
        self.n[books] += len(e)
        self.s[books] += e.sum(axis=0)
        self.q[books] += (e * e).sum(axis=0)

    def sharpe(self, periods_per_year: float) -> np.ndarray:
        """``sqrt(P) mean / sd`` (ddof 1) of each book's daily excess returns, as :func:`sharpe_ratio`."""
        n = np.maximum(self.n, 1)
        mean = self.s / n
        var = np.maximum(self.q - n * mean**2, 0.0) / np.maximum(n - 1, 1)
        sd = np.sqrt(var)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.sqrt(periods_per_year) * mean / sd
        return np.where((self.n >= 2) & (sd > 1e-14 * np.maximum(np.abs(mean), 1e-300)), out, np.nan)


# ------------------------------------------------------------------------------------------------------ summarise
@dataclass(frozen=True)
class MethodPairs:
    """All pair-level results of one method book over the windows (for trades and concentration)."""

    blocks: list[tuple[int, PairBlock, list[str], int]]  # (window number, block of this book, tickers, N selected)


def _book_series(blocks: list[tuple[int, PairBlock, list[str], int]], n_rows: list[int], basis: str,
                 cost: float, rules: TradingRules, rf: float, exclude: str | None = None) -> np.ndarray:
    """A method book's daily returns over all windows recomputed from its pairs, optionally without the pairs of
    stock ``exclude`` (their capital goes to the remaining pairs)."""
    parts = []
    by_window = {wn: (blk, tk) for wn, blk, tk, _ in blocks}
    for wn, rows in enumerate(n_rows):
        if wn not in by_window:
            parts.append(np.full(rows, rf if basis == "committed" else 0.0))
            continue
        blk, tk = by_window[wn]
        keep = np.ones(len(blk.pos), dtype=bool)
        if exclude is not None:
            names = np.asarray(tk)
            keep = (names[blk.y] != exclude) & (names[blk.x] != exclude)
        sub = blk.paths.columns(np.flatnonzero(keep))
        zeros = np.zeros(int(keep.sum()), dtype=np.int64)
        parts.append(portfolio_returns(sub.net(cost, rules)[1:], sub.active[1:], zeros, 1, basis=basis,
                                       n_selected=np.array([keep.sum()]), rf=rf)[:, 0])
    return np.concatenate(parts) if parts else np.zeros(0)


def _stock_pnl(blocks: list[tuple[int, PairBlock, list[str], int]], basis: str, cost: float,
               rules: TradingRules) -> pd.Series:
    """Each stock's share of a book's P&L: the sum over days of the contributions of the pairs it is in
    (committed: ``r / N``; employed: ``r / open pairs``)."""
    contrib: dict[str, float] = {}
    for _, blk, tk, n in blocks:
        net = blk.paths.net(cost, rules)[1:]
        active = blk.paths.active[1:]
        r = np.where(active, net, 0.0)
        if basis == "committed":
            w = np.full(r.shape[0], 1.0 / max(n, 1))[:, None]
        else:
            cnt = active.sum(axis=1, keepdims=True)
            w = np.divide(1.0, cnt, out=np.zeros(cnt.shape), where=cnt > 0)
        per_pair = (r * w).sum(axis=0)
        names = np.asarray(tk)
        for k in range(len(blk.pos)):
            for s in (names[blk.y[k]], names[blk.x[k]]):
                contrib[s] = contrib.get(s, 0.0) + float(per_pair[k])
    return pd.Series(contrib, dtype=np.float64)


def _summary_row(book: Book, basis: str, series: dict[str, np.ndarray], turnover: np.ndarray, dates: pd.DatetimeIndex,
                 trades: pd.DataFrame, windows: pd.DataFrame, placebo: pd.DataFrame, mp: MethodPairs,
                 n_rows: list[int], cfg: PairsBacktestConfig, rules: TradingRules, rf: float) -> dict[str, Any]:
    ppy = cfg.periods_per_year
    head = cfg.headline_cost_bps
    r_head = series[f"net_{head:g}bp"]
    row: dict[str, Any] = {"method": book.method, "strategy": book.strategy, "basis": basis,
                           "sharpe_gross": sharpe_ratio(series["gross"], ppy, rf)}
    for c in cfg.costs_bps:
        row[f"sharpe_net_{c:g}bp"] = sharpe_ratio(series[f"net_{c:g}bp"], ppy, rf)
    lo, hi = sharpe_ci(r_head, ppy, rf, draws=cfg.bootstrap_draws, seed=cfg.placebo.seed)
    mt = trades[(trades["method"] == book.method) & (trades["strategy"] == book.strategy)]
    mw = windows[(windows["method"] == book.method) & (windows["strategy"] == book.strategy)]
    traded_stocks = set(mt["y"]) | set(mt["x"])
    row.update({
        "sharpe_net_ci_low": lo, "sharpe_net_ci_high": hi,
        "annual_return_net": annual_return(r_head, ppy), "annual_volatility": annual_volatility(r_head, ppy),
        "max_drawdown_net": max_drawdown(r_head),
        "bp_month_gross": monthly_excess_bps(series["gross"], dates, rf),
        "bp_month_net": monthly_excess_bps(r_head, dates, rf),
        "pairs_traded": int(mw["selected"].sum()), "trades": len(mt),
        "distinct_stocks": len(traded_stocks),
        "days_invested_share": float(np.mean(series["gross"] != (rf if basis == "committed" else 0.0))),
        "annual_turnover": float(turnover.mean() * ppy),
        "hit_rate_net": float((mt["net"] > 0).mean()) if len(mt) else np.nan,
        "avg_holding_days": float(mt["holding_days"].mean()) if len(mt) else np.nan,
    })
    pnl = _stock_pnl(mp.blocks, basis, head, rules)
    total = float(pnl.sum()) / 2.0  # every pair's contribution is counted for both of its stocks
    if len(pnl) and total != 0.0 and pnl.abs().max() > 0:
        top = str(pnl.abs().idxmax())
        ex = _book_series(mp.blocks, n_rows, basis, head, rules, rf, exclude=top)
        row.update({"top_stock": top, "top_stock_pnl_share": float(pnl[top] / total),
                    "ex_top_sharpe_net": sharpe_ratio(ex, ppy, rf), "ex_top_annual_return_net": annual_return(ex, ppy),
                    "ex_top_bp_month_net": monthly_excess_bps(ex, dates, rf)})
    else:
        row.update({"top_stock": None, "top_stock_pnl_share": np.nan, "ex_top_sharpe_net": row[f"sharpe_net_{head:g}bp"],
                    "ex_top_annual_return_net": row["annual_return_net"], "ex_top_bp_month_net": row["bp_month_net"]})
    col = f"sharpe_net_{head:g}bp"
    for kind in ("random_pairs", "random_groups"):
        dist = placebo.loc[(placebo["method"] == book.method) & (placebo["strategy"] == book.strategy)
                           & (placebo["kind"] == kind) & (placebo["basis"] == basis), col].to_numpy()
        row[f"{kind}_median_sharpe"] = float(np.nanmedian(dist)) if len(dist) and not np.isnan(dist).all() else np.nan
        row[f"{kind}_percentile"] = percentile_of(float(row[col]), dist)
    return row


def _trades(blk: PairBlock, books: list[Book], rules: TradingRules, head: float, tickers: list[str],
            dates: pd.DatetimeIndex, label: str) -> pd.DataFrame:
    tl = trade_list(blk.paths, blk.paths.net(head, rules))
    cols = ["method", "strategy", "window", "y", "x", "hedge_ratio", "entry_date", "exit_date", "direction",
            "holding_days", "gross", "net"]
    if tl.empty:
        return pd.DataFrame(columns=cols)
    col = tl["pair"].to_numpy()
    names = np.asarray(tickers)
    return pd.DataFrame({
        "method": [books[b].method for b in blk.book[col]], "strategy": [books[b].strategy for b in blk.book[col]],
        "window": label, "y": names[blk.y[col]], "x": names[blk.x[col]], "hedge_ratio": blk.hedge[col],
        "entry_date": dates[tl["entry_row"].to_numpy()], "exit_date": dates[tl["exit_row"].to_numpy()],
        "direction": tl["direction"].to_numpy(), "holding_days": (tl["exit_row"] - tl["entry_row"]).to_numpy(),
        "gross": tl["gross"].to_numpy(), "net": tl["net"].to_numpy(),
    })[cols]


def _selections(blk: PairBlock, plan: WindowPlan, strategy: str, books: list[Book]) -> pd.DataFrame:
    names = np.asarray(plan.tickers)
    score = plan.scores[strategy][blk.pos]
    return pd.DataFrame({
        "method": [books[b].method for b in blk.book], "strategy": strategy, "window": plan.window.label(),
        "y": names[blk.y], "x": names[blk.x],
        "pvalue": score if strategy == "coint" else np.nan, "ssd": score if strategy == "distance" else np.nan,
        "half_life": plan.half_life[blk.pos] if strategy == "coint" and plan.half_life is not None else np.nan,
        "intercept": blk.intercept, "hedge_ratio": blk.hedge, "spread_sd": blk.sigma,
        "y_adf_pvalue": plan.adf_pvalue[blk.y], "x_adf_pvalue": plan.adf_pvalue[blk.x],
    })


def run_pairs_backtest(cfg: PairsBacktestConfig, output_dir: str | Path | None = None, *,
                       write: bool = True) -> BacktestResult:
    """Run the walk-forward pairs backtest of ``cfg``; write the results folder unless ``write=False``.

    The folder is written whole or not at all (:func:`finsae._io.staged_results`)."""
    from finsae.report.markdown import backtest_markdown

    t_start = time.perf_counter()
    out = Path(output_dir) if output_dir is not None else cfg.output_dir / cfg.name
    if write:
        check_results_target(out)  # before any work: never write over a folder that is not a results folder
    universe = load_universe(cfg.data.companies)
    prices = load_prices(cfg.data.prices, nonpositive=cfg.data.nonpositive_prices, bad_ticks=cfg.data.bad_ticks,
                         splits=cfg.data.splits)
    tickers = priced_tickers(universe.tickers, prices, f"universe {universe.source}")
    if len(tickers) < 2:
        raise DataError(f"the prices ({prices.source}) share only {len(tickers)} ticker with the universe "
                        f"({universe.source}): no pair to trade")
    close = prices.close[tickers]
    windows = walk_forward_windows(close.index, cfg.formation_days, cfg.trading_days, cfg.start, cfg.end)
    rules = {"coint": TradingRules(cfg.trading.entry_z, cfg.trading.exit_z, cfg.trading.stop_z, cfg.trading.borrow_bps,
                                   cfg.periods_per_year),
             "distance": TradingRules(cfg.distance.entry_z, cfg.distance.exit_z, np.inf, cfg.trading.borrow_bps,
                                      cfg.periods_per_year)}
    labels = {m: taxonomy_labels(universe, m) for m in cfg.methods}
    look_ahead: dict[str, bool] = dict.fromkeys(cfg.methods, False)
    if cfg.text_groups is not None:
        for name, (lab, ahead) in load_text_groups(cfg, universe, pd.Timestamp(cfg.start)).items():
            labels[name], look_ahead[name] = lab, ahead
    methods = cfg.all_methods
    strategies = ["coint"] + (["distance"] if cfg.distance.enabled else [])
    costs = list(cfg.costs_bps)
    head = cfg.headline_cost_bps
    rf = (1 + cfg.rf_annual) ** (1 / cfg.periods_per_year) - 1

    books: list[Book] = []
    for st in strategies:
        for m in methods:
            for kind, draws in (("method", 1), ("random_pairs", cfg.placebo.draws),
                                ("random_groups", 0 if m == "all_pairs" else cfg.placebo.draws)):
                books.extend(Book(m, st, kind, d) for d in range(draws))
    book_index = {b: k for k, b in enumerate(books)}
    method_books = [b for b in books if b.kind == "method"]
    n_books = len(books)
    moments = {(basis, s): _Moments.zeros(n_books) for basis in BASES for s in ("gross", "net")}
    own_series: dict[tuple[int, str], list[pd.DataFrame]] = {}
    own_turnover: dict[tuple[int, str], list[np.ndarray]] = {}
    method_pairs: dict[int, MethodPairs] = {book_index[b]: MethodPairs([]) for b in method_books}
    window_rows: list[dict[str, Any]] = []
    trade_parts: list[pd.DataFrame] = []
    selection_parts: list[pd.DataFrame] = []
    dates_all: list[pd.DatetimeIndex] = []
    n_rows_all: list[int] = []
    sim_args = {"costs": costs, "gross_notional": cfg.trading.gross_notional,
                "delisting_return": cfg.trading.delisting_return, "rf": rf}

    backend = get_backend(cfg.backend.kind, cfg.backend.workers, cfg.backend.address)
    try:
        for wn, w in enumerate(tqdm(windows, desc=f"backtest {cfg.name}", unit="window", disable=None)):
            plan = _plan_window(w, close, tickers, labels, cfg, book_index, wn)
            window_rows.extend(plan.rows)
            wdates = close.index[w.trading]
            dates_all.append(wdates)
            n_rows_all.append(len(wdates))
            for st in strategies:
                shared = {"strategy": st, "logp": plan.logp, "trade_rows": plan.trade_rows, "pair_y": plan.pair_y[st],
                          "pair_x": plan.pair_x[st], "rules": rules[st], **sim_args}
                own_ids = {book_index[Book(m, st, "method", 0)] for m in methods}
                own_picks = [bp for bp in plan.picks[st] if bp[0] in own_ids]
                placebo_picks = [bp for bp in plan.picks[st] if bp[0] not in own_ids]
                own = simulate_books(own_picks, keep_pairs=True, **shared)
                chunk = cfg.backend.placebo_chunk * 2 * max(1, len(methods))
                parts = backend.map(simulate_books, [placebo_picks[k:k + chunk]
                                                     for k in range(0, len(placebo_picks), chunk)],
                                    shared={**shared, "costs": [head]})
                for part in parts:
                    for basis in BASES:
                        moments[(basis, "gross")].add(part.books, part.gross[basis], rf)
                        moments[(basis, "net")].add(part.books, part.net[basis][head], rf)
                for col, b in enumerate(own.books):
                    for basis in BASES:
                        frame = pd.DataFrame({"date": wdates, "gross": own.gross[basis][:, col]})
                        for c in costs:
                            frame[f"net_{c:g}bp"] = own.net[basis][c][:, col]
                        own_series.setdefault((int(b), basis), []).append(frame)
                        own_turnover.setdefault((int(b), basis), []).append(own.turnover[basis][:, col])
                blk = own.pairs
                assert blk is not None
                for b, n in zip(own.books, own.n_selected, strict=True):
                    cols = np.flatnonzero(blk.book == b)
                    if len(cols):
                        sub = PairBlock(blk.pos[cols], blk.y[cols], blk.x[cols], blk.book[cols], blk.intercept[cols],
                                        blk.hedge[cols], blk.sigma[cols], blk.paths.columns(cols))
                        method_pairs[int(b)].blocks.append((wn, sub, plan.tickers, int(n)))
                trade_parts.append(_trades(blk, books, rules[st], head, plan.tickers,
                                           close.index[w.formation.stop - 1: w.trading.stop], w.label()))
                selection_parts.append(_selections(blk, plan, st, books))
    finally:
        backend.close()

    dates = dates_all[0].append(dates_all[1:]) if len(dates_all) > 1 else dates_all[0]
    trades = pd.concat(trade_parts, ignore_index=True)
    selections = pd.concat(selection_parts, ignore_index=True)

    daily_parts = []
    series: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for b in method_books:
        k = book_index[b]
        for basis in BASES:
            frame = pd.concat(own_series[(k, basis)], ignore_index=True)
            series[(k, basis)] = {c: frame[c].to_numpy() for c in frame.columns if c != "date"}
            daily_parts.append(frame.assign(method=b.method, strategy=b.strategy, basis=basis))
    daily = pd.concat(daily_parts, ignore_index=True)
    daily = daily[["method", "strategy", "basis", "date", "gross", *[f"net_{c:g}bp" for c in costs]]]

    windows_frame = pd.DataFrame(window_rows)
    trades_per_window = trades.groupby(["method", "strategy", "window"]).size().rename("trades")
    windows_frame = windows_frame.join(trades_per_window, on=["method", "strategy", "window"]).fillna({"trades": 0})
    window_of_day = np.concatenate([np.full(len(d), w.label()) for d, w in zip(dates_all, windows, strict=True)])
    head_col = f"net_{head:g}bp"
    for basis in BASES:
        per = (daily[daily["basis"] == basis].assign(window=lambda f: np.tile(window_of_day, len(f) // len(dates)))
               .groupby(["method", "strategy", "window"])[["gross", head_col]]
               .agg(lambda r: float(np.prod(1 + r) - 1))
               .rename(columns={"gross": f"return_gross_{basis}", head_col: f"return_{head_col}_{basis}"}))
        windows_frame = windows_frame.join(per, on=["method", "strategy", "window"])

    ppy = cfg.periods_per_year
    sharpes = {key: m.sharpe(ppy) for key, m in moments.items()}
    placebo_rows = []
    for b, k in book_index.items():
        if b.kind == "method":
            continue
        for basis in BASES:
            placebo_rows.append({"method": b.method, "strategy": b.strategy, "kind": b.kind, "draw": b.draw,
                                 "basis": basis, "sharpe_gross": sharpes[(basis, "gross")][k],
                                 f"sharpe_net_{head:g}bp": sharpes[(basis, "net")][k]})
    placebo = pd.DataFrame(placebo_rows, columns=["method", "strategy", "kind", "draw", "basis", "sharpe_gross",
                                                  f"sharpe_net_{head:g}bp"])
    summary = pd.DataFrame([
        _summary_row(b, basis, series[(book_index[b], basis)],
                     np.concatenate(own_turnover[(book_index[b], basis)]), dates, trades, windows_frame, placebo,
                     method_pairs[book_index[b]], n_rows_all, cfg, rules[b.strategy], rf)
        for b in method_books for basis in BASES
    ])
    summary["look_ahead"] = summary["method"].map(look_ahead).astype(bool)
    result = BacktestResult(cfg.name, summary, daily, windows_frame, placebo, trades, selections, cfg,
                            out if write else None)
    if write:
        with staged_results(out) as (folder, run_id):
            for name, frame in (("summary", summary), ("daily", daily), ("windows", windows_frame),
                                ("placebo", placebo), ("trades", trades), ("selections", selections)):
                write_parquet(frame, folder / f"{name}.parquet", run_id)
            write_text(backtest_markdown(result), folder / "table.md")
            write_json(run_manifest(cfg.model_dump(mode="json"), {"companies": universe.source,
                                                                  "prices": prices.source},
                                    time.perf_counter() - t_start, windows=[w.label() for w in windows],
                                    run_id=run_id), folder / "manifest.json")
        logger.info("backtest %s written to %s", cfg.name, out)
    return result
