"""Many filings at once: files and folders in, a per-file report and a universe table out.

:func:`read_filings` reads every file given (folders are searched recursively; hidden files are skipped),
optionally in worker processes, and never stops on a bad file: each gets its status. :class:`EdgarBatch` holds
the results; :meth:`EdgarBatch.to_frame` is the per-file report and :meth:`EdgarBatch.universe_frame` the
universe table that :func:`finsae.data.load_universe` reads (columns ``ticker, cik, name, sic, description,
as_of``; one row per usable filing, so a company with several years has one dated text vintage per filing).

Tickers: a ticker map passed by the user (by CIK, or by file name for documents without a CIK) wins, then the
filing's own ``dei:TradingSymbol`` (inline XBRL filings), then the one ticker that other filings of the same
CIK in the batch carry, else the placeholder ``CIK<number>`` (a universe key, not a ticker: prices will not
join on it). A filing with neither a ticker nor a CIK, without an ``as_of`` date, or whose status is not
``ok`` (optionally ``incorporated_by_reference`` too) is left out of the universe, with the reason in the
report's ``universe_note``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finsae.data.edgar.filing import STATUSES, FilingResult, read_filing
from finsae.data.edgar.item1 import ExecOfficers
from finsae.data.universe import normalize_tickers
from finsae.errors import DataError

logger = logging.getLogger(__name__)

REPORT_COLUMNS = (
    "path",
    "status",
    "detail",
    "n_words",
    "n_chars",
    "cik",
    "company",
    "ticker",
    "form",
    "period",
    "filed",
    "fiscal_year",
    "as_of",
    "as_of_source",
    "sic",
    "accession",
    "fmt",
    "encoding",
    "exec_officers_dropped",
    "seconds",
    "in_universe",
    "universe_note",
)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files given, and every non-hidden file under each folder given (sorted); a missing path is an error."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file()
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"no such file or folder: {p}")
    return out


def load_cik_map(path: str | Path) -> dict[int | str, str]:
    """A ticker map from a CSV or parquet table with a ``ticker`` column and a ``cik`` column (the bundled
    ``data/companies.parquet`` is one), a ``file`` column (file names, for documents that carry no CIK), or
    both (a row may fill either)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ticker map not found: {path}")
    try:
        table = (
            pd.read_parquet(path)
            if path.suffix.lower() in (".parquet", ".pq")
            else pd.read_csv(path, dtype=str)
        )
    except Exception as exc:
        raise DataError(f"cannot read ticker map {path}: {exc}") from exc
    cols = {str(c).lower(): c for c in table.columns}
    if "ticker" not in cols or not ({"cik", "file"} & set(cols)):
        raise DataError(f"ticker map {path} needs a 'ticker' column and a 'cik' or 'file' column; "
                        f"found {list(table.columns)}")
    tick = pd.Series(normalize_tickers(table[cols["ticker"]].fillna("")), index=table.index)
    mapping: dict[int | str, str] = {}
    keys = []
    if "cik" in cols:
        keys.append(
            pd.to_numeric(table[cols["cik"]], errors="coerce").map(lambda v: None if pd.isna(v) else int(v))
        )
    if "file" in cols:
        keys.append(
            table[cols["file"]].map(lambda v: None if pd.isna(v) or not str(v).strip() else Path(str(v)).name)
        )
    for key_col in keys:
        for key, t in zip(key_col, tick, strict=True):
            if key is None or not t:
                continue
            if key in mapping and mapping[key] != t:
                logger.warning(
                    "ticker map %s: %s has tickers %s and %s; keeping %s",
                    path,
                    key,
                    mapping[key],
                    t,
                    mapping[key],
                )
                continue
            mapping[key] = str(t)
    if not mapping:
        raise DataError(f"ticker map {path} has no usable rows")
    return mapping


@dataclass(frozen=True)
class EdgarBatch:
    """Results of :func:`read_filings`, one per file, in input order."""

    results: tuple[FilingResult, ...]
    include_incorporated: bool = False

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    def _universe_rows(self) -> tuple[list[dict[str, object]], list[str]]:
        usable = {"ok", "incorporated_by_reference"} if self.include_incorporated else {"ok"}
        rows: list[dict[str, object]] = []
        notes: list[str] = []
        seen: dict[tuple[str, object], int] = {}
        learned: dict[int, set[str]] = {}
        for r in self.results:  # a CIK whose other filings name a ticker (dei:TradingSymbol, map) gets it too
            if r.cik is not None and r.ticker:
                learned.setdefault(r.cik, set()).add(r.ticker)
        for r in self.results:
            note = ""
            if r.status not in usable:
                note = f"status {r.status}"
            elif r.as_of is None:
                note = "no filing date (no SEC header, no dated signature section)"
            elif r.ticker is None and r.cik is None:
                note = "no ticker and no CIK (pass a CIK map, or a full submission with its SEC header)"
            if note:
                notes.append(note)
                continue
            known = learned.get(r.cik, set()) if r.cik is not None else set()
            ticker = r.ticker or (next(iter(known)) if len(known) == 1 else f"CIK{r.cik}")
            key = (str(normalize_tickers(pd.Index([ticker]))[0]), r.as_of)
            if key in seen:
                notes.append(f"same ticker and as_of as {self.results[seen[key]].path}; kept the first")
                logger.warning(
                    "%s: ticker %s already has a filing dated %s (%s); skipped",
                    r.path,
                    key[0],
                    r.as_of,
                    self.results[seen[key]].path,
                )
                continue
            seen[key] = len(notes)
            notes.append("")
            rows.append(
                {
                    "ticker": ticker,
                    "cik": r.cik,
                    "name": r.company,
                    "sic": r.sic,
                    "description": r.text,
                    "as_of": pd.Timestamp(r.as_of),
                }
            )
        return rows, notes

    def to_frame(self) -> pd.DataFrame:
        """The per-file report: status, reason, extracted length, metadata, whether it entered the
        universe."""
        _, notes = self._universe_rows()
        recs = []
        for r, note in zip(self.results, notes, strict=True):
            d = r.to_dict()
            d.pop("text")
            d["in_universe"] = note == ""
            d["universe_note"] = note
            recs.append(d)
        frame = pd.DataFrame(recs, columns=list(REPORT_COLUMNS))
        for col in ("period", "filed", "as_of"):
            frame[col] = pd.to_datetime(frame[col])
        frame["cik"] = frame["cik"].astype("Int64")
        frame["fiscal_year"] = frame["fiscal_year"].astype("Int64")
        return frame

    def universe_frame(self) -> pd.DataFrame:
        """The universe table (see module docs); raises :class:`DataError` when no filing is usable."""
        rows, _ = self._universe_rows()
        if not rows:
            raise DataError(f"none of the {len(self.results)} filing(s) gave a usable Item 1 "
                            f"({self.counts()})")
        frame = pd.DataFrame(rows)
        frame["cik"] = frame["cik"].astype("Int64")
        return frame


def _read_one(args: tuple[str, ExecOfficers, dict[int | str, str]]) -> FilingResult:
    path, mode, tickers = args
    return read_filing(path, executive_officers=mode, tickers=tickers)


def read_filings(paths: Sequence[str | Path], *, executive_officers: ExecOfficers = "keep",
                 tickers: dict[int | str, str] | None = None, include_incorporated: bool = False,
                 workers: int | None = 1) -> EdgarBatch:
    """Read every filing under ``paths`` (files or folders); ``workers`` processes (None = one per CPU)."""
    files = expand_paths(paths)
    if not files:
        raise DataError(f"no files found under {[str(p) for p in paths]}")
    jobs = [(str(f), executive_officers, tickers or {}) for f in files]
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n <= 1 or len(jobs) < 4:
        results = [_read_one(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=min(n, len(jobs))) as pool:
            results = list(pool.map(_read_one, jobs, chunksize=max(1, len(jobs) // (4 * n))))
    for r in results:
        if r.status != "ok":
            logger.info("%s: %s (%s)", r.path, r.status, r.detail)
    return EdgarBatch(tuple(results), include_incorporated)
