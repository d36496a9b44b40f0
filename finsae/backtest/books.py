"""Books of a pairs backtest: a method's own pairs or one placebo draw, simulated window by window.

A book is the portfolio of the pairs one method (``kind="method"``) or one placebo draw (``random_pairs``,
``random_groups``) selects for a strategy in a window. :func:`simulate_books` trades the pairs of some books
over one window and returns each book's daily portfolio returns on both capital bases
(:func:`finsae.backtest.engine.portfolio_returns`). Placebo books keep only the running sums of their daily
excess returns (:class:`Moments`), from which their Sharpe ratios follow exactly as
:func:`finsae.backtest.metrics.sharpe_ratio` computes them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np

from finsae.backtest.engine import (
    PairPaths,
    TradingRules,
    fit_distance,
    fit_spreads,
    portfolio_returns,
    simulate_pairs,
)
from finsae.backtest.results import BASES


@dataclass(frozen=True)
class Book:
    """One simulated portfolio: a method's own pairs (``kind="method"``) or one placebo draw."""

    method: str
    strategy: str
    kind: str
    draw: int


@dataclass(frozen=True)
class BookSet:
    """Every book of a backtest, numbered: strategies, then methods, then the method's own book, its
    ``random_pairs`` draws and its ``random_groups`` draws (none for ``all_pairs``, which has no groups)."""

    books: tuple[Book, ...]
    index: dict[Book, int]

    @classmethod
    def build(cls, strategies: Sequence[str], methods: Sequence[str], draws: int) -> BookSet:
        books = [Book(m, st, kind, d)
                 for st in strategies for m in methods
                 for kind, n in (("method", 1), ("random_pairs", draws),
                                 ("random_groups", 0 if m == "all_pairs" else draws))
                 for d in range(n)]
        return cls(tuple(books), {b: k for k, b in enumerate(books)})

    def __len__(self) -> int:
        return len(self.books)

    def id(self, method: str, strategy: str, kind: str = "method", draw: int = 0) -> int:
        """The number of a book."""
        return self.index[Book(method, strategy, kind, draw)]

    @property
    def method_books(self) -> list[Book]:
        return [b for b in self.books if b.kind == "method"]


class Pick(NamedTuple):
    """The pairs one book trades in a window: positions in the all-pairs order of the window's stocks."""

    book: int
    pos: np.ndarray


@dataclass(frozen=True)
class PairBlock:
    """Pair-level results of method books in one window: column ``k`` is pair ``pos[k]`` of book
    ``book[k]``."""

    pos: np.ndarray
    y: np.ndarray
    x: np.ndarray
    book: np.ndarray
    intercept: np.ndarray
    hedge: np.ndarray
    sigma: np.ndarray
    paths: PairPaths

    def columns(self, cols: np.ndarray) -> PairBlock:
        """The pairs of columns ``cols`` only."""
        picked: dict[str, Any] = {
            f.name: getattr(self, f.name)[cols] for f in fields(self) if f.name != "paths"
        }
        return replace(self, **picked, paths=self.paths.columns(cols))


@dataclass(frozen=True)
class WindowPairs:
    """The pairs of one method book in one window, with the window's tickers and the book's number of
    pairs."""

    window: int
    block: PairBlock
    tickers: list[str]
    n_selected: int


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

    def column(self, book: int) -> int:
        """The column of book number ``book``."""
        return int(np.flatnonzero(self.books == book)[0])

    def window_pairs(self, window: int, tickers: list[str]) -> dict[int, WindowPairs]:
        """The pairs of each book that has any (method books: needs ``pairs``)."""
        blk = self.pairs
        assert blk is not None, "only method books keep their pairs"
        out = {}
        for b, n in zip(self.books, self.n_selected, strict=True):
            cols = np.flatnonzero(blk.book == b)
            if len(cols):
                out[int(b)] = WindowPairs(window, blk.columns(cols), tickers, int(n))
        return out


@dataclass(frozen=True)
class WindowMarket:
    """What a strategy trades in one window: the formation log prices and the trading closes of its stocks,
    each pair's legs (all-pairs order), the rules, cost levels, leg notional, delisting return and risk-free
    rate."""

    strategy: str
    logp: np.ndarray
    trade_rows: np.ndarray
    pair_y: np.ndarray
    pair_x: np.ndarray
    rules: TradingRules
    costs: tuple[float, ...]
    gross_notional: float
    delisting_return: float
    rf: float


def simulate_books(picked: Sequence[Pick], *, market: WindowMarket, keep_pairs: bool = False) -> BookReturns:
    """Trade the pairs of some books (a strategy's method books, or a chunk of placebo draws) over one window.

    Every pair is simulated on its own and each book's returns sum only its own pairs, so a book's numbers do
    not depend on which other books share the call: chunks of placebo draws (e.g. as Ray tasks) give the same
    numbers as one call with everything."""
    m = market
    books = np.array([b for b, _ in picked], dtype=np.int64)
    pos = np.concatenate([p for _, p in picked]).astype(np.int64) if picked else np.zeros(0, dtype=np.int64)
    cy, cx = m.pair_y[pos], m.pair_x[pos]
    local = (np.concatenate([np.full(len(p), k) for k, (_, p) in enumerate(picked)]).astype(np.int64)
             if picked else np.zeros(0, dtype=np.int64))
    n_sel = np.bincount(local, minlength=len(books)).astype(np.int64)
    fit = fit_spreads if m.strategy == "coint" else fit_distance
    intercept, hedge, sigma = fit(m.logp[:, cy], m.logp[:, cx])
    paths = simulate_pairs(m.trade_rows[:, cy], m.trade_rows[:, cx], intercept, hedge, sigma, m.rules,
                           gross_notional=m.gross_notional, delisting_return=m.delisting_return)
    nb = len(books)
    active = paths.active[1:]
    gross: dict[str, np.ndarray] = {}
    net: dict[str, dict[float, np.ndarray]] = {}
    turnover: dict[str, np.ndarray] = {}
    nets = {c: paths.net(c, m.rules)[1:] for c in m.costs}
    for basis in BASES:
        def book_returns(r: np.ndarray, rf: float = m.rf, basis: str = basis) -> np.ndarray:
            return portfolio_returns(r, active, local, nb, basis=basis, n_selected=n_sel, rf=rf)

        gross[basis] = book_returns(paths.gross[1:])
        net[basis] = {c: book_returns(nets[c]) for c in m.costs}
        if keep_pairs:  # method books only: placebo books report Sharpe ratios, not turnover
            turnover[basis] = book_returns(paths.traded[1:], rf=0.0)
    block = PairBlock(pos, cy, cx, books[local], intercept, hedge, sigma, paths) if keep_pairs else None
    return BookReturns(books, n_sel, gross, net, turnover, block)


@dataclass
class Moments:
    """Running sums of per-book daily excess returns ``e = r - rf``: count ``n``, sum ``s`` and sum of squares
    ``q``, for placebo Sharpe ratios without keeping every series (mutable: it accumulates)."""

    n: np.ndarray
    s: np.ndarray
    q: np.ndarray

    @classmethod
    def zeros(cls, n_books: int) -> Moments:
        return cls(np.zeros(n_books, dtype=np.int64), np.zeros(n_books), np.zeros(n_books))

    def add(self, books: np.ndarray, r: np.ndarray, rf: float) -> None:
        e = r - rf
        self.n[books] += len(e)
        self.s[books] += e.sum(axis=0)
        self.q[books] += (e * e).sum(axis=0)

    def merge(self, other: Moments) -> None:
        """Add the sums of ``other`` (the same books)."""
        self.n += other.n
        self.s += other.s
        self.q += other.q

    def sharpe(self, periods_per_year: float) -> np.ndarray:
        """``sqrt(P) mean / sd`` of each book's daily excess returns, with ``mean = s / n`` and
        ``sd^2 = (q - n mean^2) / (n - 1)`` (ddof 1), as :func:`finsae.backtest.metrics.sharpe_ratio`."""
        n = np.maximum(self.n, 1)
        mean = self.s / n
        var = np.maximum(self.q - n * mean**2, 0.0) / np.maximum(n - 1, 1)
        sd = np.sqrt(var)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.sqrt(periods_per_year) * mean / sd
        return np.where((self.n >= 2) & (sd > 1e-14 * np.maximum(np.abs(mean), 1e-300)), out, np.nan)


@dataclass(frozen=True)
class PlaceboMoments:
    """The :class:`Moments` of every book's gross and headline-net daily returns on each capital basis."""

    gross: dict[str, Moments]
    net: dict[str, Moments]

    @classmethod
    def zeros(cls, n_books: int) -> PlaceboMoments:
        return cls({b: Moments.zeros(n_books) for b in BASES}, {b: Moments.zeros(n_books) for b in BASES})

    def add(self, part: BookReturns, cost: float, rf: float) -> None:
        """Add one window's returns of some books (net of ``cost``)."""
        for basis in BASES:
            self.gross[basis].add(part.books, part.gross[basis], rf)
            self.net[basis].add(part.books, part.net[basis][cost], rf)

    def merge(self, other: PlaceboMoments) -> None:
        for basis in BASES:
            self.gross[basis].merge(other.gross[basis])
            self.net[basis].merge(other.net[basis])


def random_pairs(rng: np.random.Generator, usable_pos: np.ndarray, k: int) -> np.ndarray:
    """``min(k, len(usable_pos))`` distinct positions drawn uniformly from ``usable_pos`` (sorted)."""
    if k == 0 or len(usable_pos) == 0:
        return np.empty(0, dtype=np.int64)
    k = min(k, len(usable_pos))
    chosen = np.unique(usable_pos[rng.integers(0, len(usable_pos), size=k)])
    while len(chosen) < k:  # collisions are rare: top up
        extra = usable_pos[rng.integers(0, len(usable_pos), size=k - len(chosen))]
        chosen = np.unique(np.concatenate([chosen, extra]))
    return chosen


def placebo_rng(seed: int, method: str, strategy: str, window_number: int) -> np.random.Generator:
    """The random stream of one method's placebo draws in one window: seeded by the config's seed, the
    method's name (CRC-32 of ``method \\0 strategy``), the strategy and the window, so a method's placebos do
    not depend on which other methods a config runs or in what order."""
    key = zlib.crc32(f"{method}\x00{strategy}".encode())
    return np.random.default_rng([seed, key, window_number])
