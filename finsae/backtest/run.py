"""``finsae backtest``: walk-forward pairs trading inside the peer groups of every method, with placebos.

For each trading window:

1. Eligible stocks have a price on the first day of the formation window and no gap longer than
   ``max_fill_days`` inside it; shorter gaps are filled with the last close (past prices only). The bundled
   prices miss 2011-02-17 for 1,170 stocks and about 7 stocks on any given day, so this matters. A stock with a
   daily move above ``max_abs_log_return`` (in log terms) inside its formation window is screened out for that
   window: one such jump (an unadjusted split, a mis-scaled segment, or a real shock) dominates the co-integrating
   regression and produces p-values near 0 with a half-life of about 2 days.
2. Every pair of eligible stocks is tested once (Engle-Granger on formation-window log prices; cached on disk under
   a key hashing the prices, the tickers and the test settings). Nothing after the formation window is read.
3. Each method's candidates are its within-group pairs; selection is BH-FDR within those candidates, then the
   half-life range, then the ``max_pairs`` smallest p-values (:func:`finsae.backtest.pairs.select_pairs`).
4. Placebos, per method and window: ``random_pairs`` trades as many uniformly drawn pairs of eligible stocks as the
   method selected; ``random_groups`` relabels the stocks at random with the method's group sizes and runs the same
   selection. Each draw is a book traded with exactly the method's rules.
5. All books of a window are simulated together (:func:`finsae.backtest.engine.simulate_pairs`).

The daily returns of each book are concatenated over the windows; Sharpe ratios are annualised with
``periods_per_year`` and compared with the placebo distributions.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from finsae._io import run_manifest, write_json, write_parquet, write_text
from finsae._paths import cache_dir
from finsae.backtest.engine import (
    PairPaths,
    TradingRules,
    fit_spreads,
    portfolio_returns,
    simulate_pairs,
    trade_list,
    walk_forward_windows,
)
from finsae.backtest.metrics import annual_return, annual_volatility, max_drawdown, sharpe_ci, sharpe_ratio
from finsae.backtest.pairs import all_pairs, pair_position, pair_tests, select_pairs
from finsae.config import PairsBacktestConfig
from finsae.data import load_prices, load_universe
from finsae.errors import ConfigError, DataError
from finsae.evaluate.comovement import percentile_of, within_pairs
from finsae.group.taxonomy import taxonomy_labels
from finsae.parallel import get_backend

logger = logging.getLogger(__name__)

_TEST_VERSION = "eg-1"  # bump when the pair-test computation changes, to invalidate caches


@dataclass(frozen=True)
class BacktestResult:
    """Tables of one pairs backtest (every table also written as parquet).

    Attributes:
        summary: one row per method: Sharpe gross and net at each cost level, CI, return, volatility, drawdown,
            pairs, trades, turnover (traded notional per unit of capital, both legs, annualised), hit rate,
            holding days, placebo medians and percentiles.
        daily: one row per (method, date): portfolio returns gross and net at each cost level.
        windows: one row per (method, window): eligible stocks, candidates, selected pairs, trades, and the
            window's compounded return gross and net of the headline cost.
        placebo: one row per (method, placebo kind, draw): gross and headline-net Sharpe.
        trades: one row per round trip of a method.
        selections: one row per (method, window, pair) selected: p-value, half-life and the spread model
            (intercept, hedge ratio, residual sd) fitted on the formation window.
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


def _tests_key(logp: np.ndarray, tickers: list[str], cfg: PairsBacktestConfig) -> str:
    h = hashlib.sha256()
    h.update(_TEST_VERSION.encode())
    h.update(repr((cfg.selection.maxlag, cfg.selection.autolag, cfg.selection.both_orderings)).encode())
    h.update("\x00".join(tickers).encode())
    h.update(np.ascontiguousarray(logp).tobytes())
    return h.hexdigest()[:32]


def cached_all_pair_tests(logp: np.ndarray, tickers: list[str], cfg: PairsBacktestConfig, backend=None) -> pd.DataFrame:
    """p-value, half-life and usability of every pair of columns of ``logp`` (all-pairs order), from the cache
    when present. A corrupt cache file is recomputed."""
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
                     both_orderings=cfg.selection.both_orderings, backend=backend)
    table = pd.DataFrame({"pvalue": res.pvalue, "half_life": res.half_life.astype(np.float32),
                          "usable": res.valid & ~res.collinear})
    write_parquet(table, path)
    return table


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


def run_pairs_backtest(cfg: PairsBacktestConfig, output_dir: str | Path | None = None, *,
                       write: bool = True) -> BacktestResult:
    """Run the walk-forward pairs backtest of ``cfg``; write the results folder unless ``write=False``."""
    from finsae.report.markdown import backtest_markdown

    t_start = time.perf_counter()
    universe = load_universe(cfg.data.companies)
    prices = load_prices(cfg.data.prices, nonpositive=cfg.data.nonpositive_prices, bad_ticks=cfg.data.bad_ticks)
    tickers = universe.tickers.intersection(prices.tickers, sort=False)
    close = prices.close[tickers]
    windows = walk_forward_windows(close.index, cfg.formation_days, cfg.trading_days, cfg.start, cfg.end)
    rules = TradingRules(cfg.trading.entry_z, cfg.trading.exit_z, cfg.trading.stop_z, cfg.trading.borrow_bps,
                         cfg.periods_per_year)
    labels = {m: taxonomy_labels(universe, m) for m in cfg.methods}
    look_ahead: dict[str, bool] = dict.fromkeys(cfg.methods, False)
    if cfg.text_groups is not None:
        for name, (lab, ahead) in load_text_groups(cfg, universe, pd.Timestamp(cfg.start)).items():
            labels[name], look_ahead[name] = lab, ahead
    methods = cfg.all_methods
    rng = np.random.default_rng(cfg.placebo.seed)
    sel = cfg.selection
    costs = list(cfg.costs_bps)

    books: list[tuple[str, str, int]] = []  # (method, kind, draw)
    book_index: dict[tuple[str, str, int], int] = {}
    for m in methods:
        for kind, draws in (("method", 1), ("random_pairs", cfg.placebo.draws),
                            ("random_groups", 0 if m == "all_pairs" else cfg.placebo.draws)):
            for d in range(draws):
                book_index[(m, kind, d)] = len(books)
                books.append((m, kind, d))
    n_books = len(books)

    daily_parts: list[pd.DataFrame] = []
    window_rows: list[dict] = []
    trade_parts: list[pd.DataFrame] = []
    selection_parts: list[pd.DataFrame] = []
    gross_all: list[np.ndarray] = []
    turnover_all: list[np.ndarray] = []
    net_all: dict[float, list[np.ndarray]] = {c: [] for c in costs}
    dates_all: list[pd.DatetimeIndex] = []

    backend = get_backend(cfg.backend.kind, cfg.backend.workers, cfg.backend.address)
    try:
        for w in tqdm(windows, desc=f"backtest {cfg.name}", unit="window", disable=None):
            form = close.iloc[w.formation].ffill(limit=cfg.max_fill_days) if cfg.max_fill_days else close.iloc[w.formation]
            complete = form.notna().all(axis=0).to_numpy()
            jumps = np.abs(np.diff(np.log(form.to_numpy()), axis=0))
            calm = ~(np.nan_to_num(jumps) > cfg.max_abs_log_return).any(axis=0) if cfg.max_abs_log_return else complete
            eligible = np.flatnonzero(complete & calm)
            elig_tickers = list(tickers[eligible])
            n_e = len(eligible)
            logp = np.log(form.to_numpy()[:, eligible])
            tests = cached_all_pair_tests(logp, elig_tickers, cfg, backend)
            pvalue = tests["pvalue"].to_numpy()
            half_life = tests["half_life"].to_numpy().astype(np.float64)
            usable = tests["usable"].to_numpy()
            i_all, j_all = all_pairs(n_e)
            usable_pos = np.flatnonzero(usable)

            picked: list[tuple[int, np.ndarray]] = []  # (book, positions in all-pairs order)

            def choose(pos: np.ndarray, p=pvalue, hl=half_life, ok=usable) -> np.ndarray:
                keep = select_pairs(p[pos], hl[pos], ok[pos], fdr=sel.fdr, min_half_life=sel.min_half_life,
                                    max_half_life=sel.max_half_life, max_pairs=sel.max_pairs)
                return pos[keep]

            for m in methods:
                if m == "all_pairs":
                    cand = np.arange(len(pvalue))
                    wi = wj = None
                else:
                    codes = _method_codes(labels[m], pd.Index(elig_tickers))
                    wi, wj, _ = within_pairs(codes)
                    cand = pair_position(wi, wj, n_e)
                chosen = choose(cand)
                picked.append((book_index[(m, "method", 0)], chosen))
                window_rows.append({"method": m, "window": w.label(), "formation_start": w.formation_start,
                                    "formation_end": w.formation_end, "trading_start": w.trading_start,
                                    "trading_end": w.trading_end, "eligible": n_e, "screened_jumps": int((complete & ~calm).sum()),
                                    "candidates": len(cand),
                                    "candidates_significant_at_5pct": int(np.sum(pvalue[cand] < 0.05)),
                                    "selected": len(chosen)})
                for d in range(cfg.placebo.draws):
                    picked.append((book_index[(m, "random_pairs", d)], _random_pairs(rng, usable_pos, len(chosen))))
                    if wi is not None:
                        q = rng.permutation(n_e)  # company q[a] takes the label of company a: same group sizes
                        a, b = q[wi], q[wj]
                        picked.append((book_index[(m, "random_groups", d)],
                                       choose(pair_position(np.minimum(a, b), np.maximum(a, b), n_e))))

            trade_rows = close.iloc[w.formation.stop - 1: w.trading.stop].to_numpy()[:, eligible]
            trade_rows[0] = form.to_numpy()[-1, eligible]  # the last known formation close (gap-filled)
            shared = {"logp": logp, "trade_rows": trade_rows, "i_all": i_all, "j_all": j_all, "rules": rules,
                      "costs": costs}
            method_books = {book_index[(m, "method", 0)] for m in methods}
            own = simulate_books([bp for bp in picked if bp[0] in method_books], **shared)  # paths kept: trades
            placebo = [bp for bp in picked if bp[0] not in method_books]
            chunk = cfg.backend.placebo_chunk * 2 * max(1, len(methods))
            parts = backend.map(simulate_books, [placebo[k:k + chunk] for k in range(0, len(placebo), chunk)],
                                shared=shared)
            n_rows = len(trade_rows) - 1
            gross = np.zeros((n_rows, n_books))
            turnover = np.zeros((n_rows, n_books))
            net_w = {c: np.zeros((n_rows, n_books)) for c in costs}
            for part in [own, *parts]:
                gross[:, part["books"]] = part["gross"]
                turnover[:, part["books"]] = part["turnover"]
                for c in costs:
                    net_w[c][:, part["books"]] = part["net"][c]
            gross_all.append(gross)
            turnover_all.append(turnover)
            for c in costs:
                net_all[c].append(net_w[c])
            dates_all.append(close.index[w.trading])
            pos, ci, cj, cb = own["pos"], own["ci"], own["cj"], own["cb"]
            intercept, hedge, sigma, paths = own["intercept"], own["hedge"], own["sigma"], own["paths"]

            method_cols = np.flatnonzero(np.isin(cb, [book_index[(m, "method", 0)] for m in methods]))
            selection_parts.append(pd.DataFrame({
                "method": [books[b][0] for b in cb[method_cols]], "window": w.label(),
                "y": np.asarray(elig_tickers)[ci[method_cols]], "x": np.asarray(elig_tickers)[cj[method_cols]],
                "pvalue": pvalue[pos[method_cols]], "half_life": half_life[pos[method_cols]],
                "intercept": intercept[method_cols], "hedge_ratio": hedge[method_cols], "spread_sd": sigma[method_cols],
            }))
            trade_parts.append(_trades(paths, method_cols, cb, books, rules, cfg.headline_cost_bps, ci, cj,
                                       elig_tickers, close.index[w.formation.stop - 1: w.trading.stop], w.label()))
    finally:
        backend.close()

    dates = dates_all[0].append(dates_all[1:]) if len(dates_all) > 1 else dates_all[0]
    gross = np.vstack(gross_all)
    turnover = np.vstack(turnover_all)
    net = {c: np.vstack(v) for c, v in net_all.items()}
    trades = pd.concat(trade_parts, ignore_index=True)
    selections = pd.concat(selection_parts, ignore_index=True)
    rf = (1 + cfg.rf_annual) ** (1 / cfg.periods_per_year) - 1

    for m in methods:
        b = book_index[(m, "method", 0)]
        part = pd.DataFrame({"method": m, "date": dates, "gross": gross[:, b]})
        for c in costs:
            part[f"net_{c:g}bp"] = net[c][:, b]
        daily_parts.append(part)
    daily = pd.concat(daily_parts, ignore_index=True)
    windows_frame = pd.DataFrame(window_rows)
    trades_per_window = trades.groupby(["method", "window"]).size().rename("trades")
    windows_frame = windows_frame.join(trades_per_window, on=["method", "window"]).fillna({"trades": 0})
    labels_by_date = np.concatenate([np.full(len(d), w.label()) for d, w in zip(dates_all, windows, strict=True)])
    per_window = daily.assign(window=np.tile(labels_by_date, len(methods))).groupby(["method", "window"])
    head_col = f"net_{cfg.headline_cost_bps:g}bp"
    windows_frame = windows_frame.join(
        per_window[["gross", head_col]].agg(lambda r: float(np.prod(1 + r) - 1))
        .rename(columns={"gross": "return_gross", head_col: f"return_{head_col}"}), on=["method", "window"])

    head = cfg.headline_cost_bps
    placebo_rows = []
    for (m, kind, d), b in book_index.items():
        if kind == "method":
            continue
        placebo_rows.append({"method": m, "kind": kind, "draw": d,
                             "sharpe_gross": sharpe_ratio(gross[:, b], cfg.periods_per_year, rf),
                             f"sharpe_net_{head:g}bp": sharpe_ratio(net[head][:, b], cfg.periods_per_year, rf)})
    placebo = pd.DataFrame(placebo_rows, columns=["method", "kind", "draw", "sharpe_gross", f"sharpe_net_{head:g}bp"])

    summary = pd.DataFrame([
        _summary_row(m, book_index[(m, "method", 0)], gross, net, turnover, trades, windows_frame, placebo, cfg, rf)
        for m in methods
    ])
    summary["look_ahead"] = summary["method"].map(look_ahead).astype(bool)
    out = Path(output_dir) if output_dir is not None else cfg.output_dir / cfg.name
    result = BacktestResult(cfg.name, summary, daily, windows_frame, placebo, trades, selections, cfg,
                            out if write else None)
    if write:
        for name, frame in (("summary", summary), ("daily", daily), ("windows", windows_frame), ("placebo", placebo),
                            ("trades", trades), ("selections", selections)):
            write_parquet(frame, out / f"{name}.parquet")
        write_text(backtest_markdown(result), out / "table.md")
        write_json(run_manifest(cfg.model_dump(mode="json"), {"companies": universe.source, "prices": prices.source},
                                time.perf_counter() - t_start, windows=[w.label() for w in windows]),
                   out / "manifest.json")
        logger.info("backtest %s written to %s", cfg.name, out)
    return result


def simulate_books(picked: list[tuple[int, np.ndarray]], *, logp: np.ndarray, trade_rows: np.ndarray,
                   i_all: np.ndarray, j_all: np.ndarray, rules: TradingRules, costs: list[float]) -> dict:
    """Trade the pairs of some books (a method, or a chunk of placebo draws) over one window: each book's daily
    returns gross, net of each cost, and its turnover (rows x books, columns in ``books`` order).

    Every pair is simulated on its own and each book's returns sum only its own pairs, so a book's numbers do not
    depend on which other books share the call: chunks of placebo draws (e.g. as Ray tasks) give the same
    numbers as one call with everything."""
    books = np.array([b for b, _ in picked], dtype=np.int64)
    pos = np.concatenate([p for _, p in picked]) if picked else np.zeros(0, dtype=np.int64)
    ci, cj = i_all[pos], j_all[pos]
    local = np.concatenate([np.full(len(p), k) for k, (_, p) in enumerate(picked)]) if picked else np.zeros(0, int)
    cb = books[local] if len(local) else np.zeros(0, dtype=np.int64)
    intercept, hedge, sigma = fit_spreads(logp[:, ci], logp[:, cj])
    paths = simulate_pairs(trade_rows[:, ci], trade_rows[:, cj], intercept, hedge, sigma, rules)
    nb = len(books)
    out = {"books": books, "pos": pos, "ci": ci, "cj": cj, "cb": cb, "intercept": intercept, "hedge": hedge,
           "sigma": sigma, "paths": paths,
           "gross": portfolio_returns(paths.gross[1:], paths.active[1:], local, nb),
           "turnover": portfolio_returns(paths.traded[1:], paths.active[1:], local, nb),
           "net": {c: portfolio_returns(paths.net(c, rules)[1:], paths.active[1:], local, nb) for c in costs}}
    return out


def _trades(paths: PairPaths, cols: np.ndarray, book: np.ndarray, books: list, rules: TradingRules, head: float,
            ci: np.ndarray, cj: np.ndarray, tickers: list[str], dates: pd.DatetimeIndex, label: str) -> pd.DataFrame:
    sub = PairPaths(*(getattr(paths, f)[:, cols] for f in ("z", "target", "held", "gross", "traded", "short_held", "active")))
    tl = trade_list(sub, sub.net(head, rules))
    if tl.empty:
        return pd.DataFrame(columns=["method", "window", "y", "x", "entry_date", "exit_date", "direction",
                                     "holding_days", "gross", "net"])
    col = cols[tl["pair"].to_numpy()]
    return pd.DataFrame({
        "method": [books[b][0] for b in book[col]], "window": label,
        "y": np.asarray(tickers)[ci[col]], "x": np.asarray(tickers)[cj[col]],
        "entry_date": dates[tl["entry_row"].to_numpy()], "exit_date": dates[tl["exit_row"].to_numpy()],
        "direction": tl["direction"].to_numpy(), "holding_days": (tl["exit_row"] - tl["entry_row"]).to_numpy(),
        "gross": tl["gross"].to_numpy(), "net": tl["net"].to_numpy(),
    })


def _summary_row(m: str, b: int, gross: np.ndarray, net: dict[float, np.ndarray], turnover: np.ndarray, trades: pd.DataFrame,
                 windows: pd.DataFrame, placebo: pd.DataFrame, cfg: PairsBacktestConfig, rf: float) -> dict:
    ppy = cfg.periods_per_year
    head = cfg.headline_cost_bps
    r_head = net[head][:, b]
    row: dict[str, object] = {"method": m, "sharpe_gross": sharpe_ratio(gross[:, b], ppy, rf)}
    for c in cfg.costs_bps:
        row[f"sharpe_net_{c:g}bp"] = sharpe_ratio(net[c][:, b], ppy, rf)
    lo, hi = sharpe_ci(r_head, ppy, rf, draws=cfg.bootstrap_draws, seed=cfg.placebo.seed)
    mt = trades[trades["method"] == m]
    mw = windows[windows["method"] == m]
    row.update({
        "sharpe_net_ci_low": lo, "sharpe_net_ci_high": hi,
        "annual_return_net": annual_return(r_head, ppy), "annual_volatility": annual_volatility(r_head, ppy),
        "max_drawdown_net": max_drawdown(r_head),
        "pairs_traded": int(mw["selected"].sum()), "trades": len(mt),
        "days_invested_share": float(np.mean(gross[:, b] != 0)),
        "annual_turnover": float(turnover[:, b].mean() * ppy),
        "hit_rate_net": float((mt["net"] > 0).mean()) if len(mt) else np.nan,
        "avg_holding_days": float(mt["holding_days"].mean()) if len(mt) else np.nan,
    })
    col = f"sharpe_net_{head:g}bp"
    for kind in ("random_pairs", "random_groups"):
        dist = placebo.loc[(placebo["method"] == m) & (placebo["kind"] == kind), col].to_numpy()
        row[f"{kind}_median_sharpe"] = float(np.nanmedian(dist)) if len(dist) and not np.isnan(dist).all() else np.nan
        row[f"{kind}_percentile"] = percentile_of(float(row[col]), dist)
    return row
