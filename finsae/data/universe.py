"""The company universe: identifiers, industry codes and business descriptions by dated vintage.

Two table formats are read (CSV or parquet):

* **bundled** (``data/companies.parquet``): one row per company with ``ticker, name, cik, sic, gics,
  yahoo_sector, yahoo_industry, description_2017, description_2020, wikipedia_2020``.
* **user**: ``ticker`` and ``description`` columns, optionally ``name``, ``cik``, ``sic``, ``gics``,
  ``yahoo_sector``, ``yahoo_industry`` and ``as_of`` (the date the description was published). Without
  ``as_of`` there is one row per ticker. With ``as_of`` a ticker may have several rows, one per dated
  description; each distinct date becomes a text vintage named by its ISO date.

Tickers are normalised to upper case with ``.`` and ``/`` written as ``-`` (``BRK.B`` -> ``BRK-B``), the
convention of the bundled data; price tables get the same treatment so the two always join.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finsae._paths import bundled_data_dir
from finsae.data.codes import gics_name, normalize_gics, normalize_sic
from finsae.errors import DataError

logger = logging.getLogger(__name__)

COMPANY_COLUMNS = ("name", "cik", "sic", "gics", "yahoo_sector", "yahoo_industry")
#: What a ticker may look like after normalisation (upper case, ``.``/``/`` as ``-``): ASCII letters and
#: digits, ``-``, ``.``, ``^``, ``=``; 1-16 characters, starting with a letter or digit. One rule for the
#: universe, the export and the HTTP service: every company a universe accepts can be asked for by its ticker.
TICKER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.\-^=]{0,15}$"
_TICKER_RE = re.compile(TICKER_PATTERN)


@dataclass(frozen=True)
class TextVintage:
    """One dated set of descriptions.

    ``published`` is the last date on which the texts could have been written: a text may be used to form
    peers for returns strictly after it. ``None`` means the date is unknown, and forward-dated designs refuse
    it.
    """

    name: str
    published: pd.Timestamp | None
    source: str


BUNDLED_VINTAGES: dict[str, TextVintage] = {
    "2017": TextVintage("2017", pd.Timestamp("2017-05-31"), "Yahoo profile as published in May 2017"),
    "2020": TextVintage("2020", pd.Timestamp("2020-10-31"), "Yahoo profile as published around Oct 2020"),
    "wikipedia_2020": TextVintage(
        "wikipedia_2020", pd.Timestamp("2020-12-31"), "lead section of the Wikipedia article, 2020"
    ),
}
#: Known limits of the bundled data, to be stated wherever results are reported (from data/README.md).
BUNDLED_DATA_LIMITS: tuple[str, ...] = (
    "Survivorship: every company was still listed in January 2020; delisted companies are absent.",
    "Look-ahead in text: description_2020 describes each company as of 2020; evaluating it on 2010-2019 "
    "returns flatters any text method. The clean design forms peers from description_2017 and tests on June "
    "2017 - January 2020.",
    "Codes are snapshots: SIC about 2018, GICS about 2020 (GICS 2018 structure).",
    "Ticker reuse: the join was name-validated, but a ticker is not a durable key across decades; CIK is.",
    "Pretraining: the language model (Gemma-3-270M, knowledge cutoff August 2024) and MiniLM (2021) were "
    "trained on text written after the forward window opens; no date in the pipeline controls that.",
    "wikipedia_2020 is partly mismatched: some pages are off-topic and several companies share one article "
    "(finsae data info lists them); no shipped config uses it.",
    "Licences: descriptions from Yahoo and Wikipedia (CC BY-SA), GICS is an MSCI/S&P product, Stooq prices "
    "state no licence: research data only.",
)
_BUNDLED_TEXT_COLUMNS = {
    "2017": "description_2017",
    "2020": "description_2020",
    "wikipedia_2020": "wikipedia_2020",
}


def normalize_tickers(tickers: pd.Series | pd.Index) -> pd.Index:
    """Upper-case, stripped tickers with ``.`` and ``/`` as ``-``."""
    idx = pd.Index(tickers).astype("string").str.strip().str.upper().str.replace(r"[./]", "-", regex=True)
    return pd.Index(idx, dtype=object)


@dataclass(frozen=True)
class Universe:
    """Companies and their descriptions.

    Attributes:
        companies: one row per ticker (index ``ticker``); columns ``name, cik, sic, gics, yahoo_sector,
            yahoo_industry`` (missing values allowed). ``sic`` is a 4-digit and ``gics`` an 8-digit string.
        texts: long table ``ticker, vintage, text``; only non-empty texts are kept.
        vintages: the text vintages, by name.
        source: where the universe was read from.
    """

    companies: pd.DataFrame
    texts: pd.DataFrame
    vintages: dict[str, TextVintage]
    source: str

    def __len__(self) -> int:
        return len(self.companies)

    @property
    def tickers(self) -> pd.Index:
        return self.companies.index

    def vintage(self, name: str) -> TextVintage:
        try:
            return self.vintages[name]
        except KeyError:
            raise DataError(
                f"unknown text vintage {name!r} in universe {self.source}; available: {sorted(self.vintages)}"
            ) from None

    def descriptions(self, vintage: str) -> pd.Series:
        """Non-empty texts of one vintage, indexed by ticker (companies without text are absent)."""
        self.vintage(vintage)
        rows = self.texts[self.texts["vintage"] == vintage]
        return pd.Series(
            rows["text"].to_numpy(),
            index=pd.Index(rows["ticker"].to_numpy(), dtype=object, name="ticker"),
            name=vintage,
        )

    def shared_descriptions(self, vintage: str) -> dict[str, list[str]]:
        """Texts of ``vintage`` that several companies share (a placeholder such as "description not
        available", or one page mapped to several tickers), each with its tickers; such companies are
        identical to every text method."""
        d = self.descriptions(vintage)
        key = d.str.strip().str.lower()
        groups = d.index.to_series().groupby(key.to_numpy(), sort=False).agg(list)
        return {str(d[t[0]]): list(t) for t in groups if len(t) > 1}

    def missing_text(self, vintage: str) -> pd.Index:
        """Tickers with no (or only blank) text in ``vintage``."""
        return self.tickers.difference(self.descriptions(vintage).index, sort=False)

    def to_frame(self) -> pd.DataFrame:
        """Companies with GICS names of every level and the number of texts per vintage."""
        out = self.companies.copy()
        if out["gics"].notna().any():
            for level in ("sector", "industry_group", "industry", "sub_industry"):
                out[f"gics_{level}"] = gics_name(out["gics"], level)
        for name in self.vintages:
            out[f"has_text_{name}"] = out.index.isin(self.descriptions(name).index)
        return out

    def snapshot(
        self, date: pd.Timestamp, vintages: list[str] | None = None, name: str | None = None
    ) -> Universe:
        """The universe plus one vintage holding, for every company, its latest text among ``vintages``
        (default: all dated vintages) published on or before ``date``. The new vintage (named ``name``,
        default ``asof_<date>``) is dated by the latest publication it uses, so it never looks past
        ``date``."""
        date = pd.Timestamp(date)
        names = (
            vintages
            if vintages is not None
            else [v for v, tv in self.vintages.items() if tv.published is not None]
        )
        usable = {v: self.vintage(v).published for v in names}
        usable = {v: p for v, p in usable.items() if p is not None and p <= date}
        name = name or f"asof_{date:%Y-%m-%d}"
        if not usable:
            raise DataError(f"universe {self.source}: no dated text vintage published on or before "
                            f"{date.date()}")
        rows = self.texts[self.texts["vintage"].isin(list(usable))].copy()
        rows["published"] = rows["vintage"].map(usable)
        latest = rows.sort_values(["ticker", "published"]).drop_duplicates("ticker", keep="last")
        new = latest[["ticker", "text"]].assign(vintage=name)[["ticker", "vintage", "text"]]
        texts = pd.concat([self.texts[self.texts["vintage"] != name], new], ignore_index=True)
        vintage = TextVintage(name, latest["published"].max(), f"latest text per company as of {date.date()} "
                              f"from {sorted(usable)}")
        return Universe(self.companies, texts, {**self.vintages, name: vintage}, self.source)

    def subset(self, tickers: pd.Index | list[str]) -> Universe:
        """The universe restricted to ``tickers`` (all of which must be present)."""
        tickers = pd.Index(tickers)
        unknown = tickers.difference(self.tickers)
        if len(unknown):
            raise DataError(f"{len(unknown)} ticker(s) not in universe {self.source}: {list(unknown[:10])}")
        texts = self.texts[self.texts["ticker"].isin(tickers)].reset_index(drop=True)
        return Universe(self.companies.loc[tickers], texts, dict(self.vintages), self.source)


def _read_table(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".gz"):
            return pd.read_csv(path, dtype={"ticker": str, "sic": str, "gics": str})
    except Exception as exc:  # pyarrow / parser errors: re-raise with the file named
        raise DataError(f"cannot read {what} file {path}: {exc}") from exc
    raise DataError(f"{what} file {path}: unsupported format {suffix!r} (use .csv or .parquet)")


def _clean_text(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    return text.mask(text.fillna("").str.len() == 0)


def _companies_frame(table: pd.DataFrame, source: str) -> pd.DataFrame:
    companies = pd.DataFrame(index=pd.Index(table["ticker"], name="ticker"))
    for col in COMPANY_COLUMNS:
        companies[col] = table[col].to_numpy() if col in table else pd.NA
    companies["name"] = companies["name"].astype("string")
    companies["cik"] = pd.to_numeric(companies["cik"], errors="coerce").astype("Int64")
    for col in ("yahoo_sector", "yahoo_industry"):
        companies[col] = _clean_text(companies[col])
    try:
        companies["sic"] = normalize_sic(companies["sic"])
        companies["gics"] = normalize_gics(companies["gics"])
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
    return companies


def _check_tickers(table: pd.DataFrame, source: str, keys: list[str]) -> pd.DataFrame:
    if "ticker" not in table:
        raise DataError(f"{source}: no 'ticker' column (columns: {list(table.columns)})")
    table = table.copy()
    blank = table["ticker"].isna() | (table["ticker"].astype(str).str.strip() == "")
    if blank.any():
        raise DataError(f"{source}: {int(blank.sum())} row(s) with an empty ticker (rows "
                        f"{list(table.index[blank][:5])})")
    table["ticker"] = normalize_tickers(table["ticker"])
    odd = [t for t in table["ticker"] if not _TICKER_RE.match(str(t))]
    if odd:
        raise DataError(f"{source}: {len(odd)} ticker(s) that are not tickers (1-16 ASCII letters, digits, "
                        f"'-', '.', '^', '='): {[t[:40] for t in odd[:5]]}")
    dup = table.duplicated(keys, keep=False)
    if dup.any():
        names = sorted(set(table.loc[dup, "ticker"]))
        raise DataError(f"{source}: duplicate tickers{' and as_of' if len(keys) > 1 else ''}: {names[:10]}")
    return table


def universe_from_frame(table: pd.DataFrame, source: str = "<frame>") -> Universe:
    """Build a :class:`Universe` from a table in the bundled or the user format (see module docs)."""
    if "description" not in table and "description_2017" in table:
        table = _check_tickers(table, source, ["ticker"])
        companies = _companies_frame(table, source)
        parts = []
        for vintage, col in _BUNDLED_TEXT_COLUMNS.items():
            if col in table:
                parts.append(pd.DataFrame({"ticker": table["ticker"].to_numpy(), "vintage": vintage,
                                           "text": _clean_text(table[col]).to_numpy()}))
        texts = pd.concat(parts, ignore_index=True).dropna(subset=["text"]).reset_index(drop=True)
        vintages = {v: BUNDLED_VINTAGES[v] for v, c in _BUNDLED_TEXT_COLUMNS.items() if c in table}
        return Universe(companies, texts, vintages, source)

    if "description" not in table:
        raise DataError(
            f"{source}: a universe table needs 'ticker' and 'description' columns "
            "(optional: name, cik, sic, gics, yahoo_sector, yahoo_industry, as_of); found "
            f"{list(table.columns)}"
        )
    known = {"ticker", "description", "as_of", *COMPANY_COLUMNS}
    extra = [c for c in table.columns if c not in known]
    if extra:
        logger.warning("%s: ignoring unknown column(s) %s", source, extra)
    has_as_of = "as_of" in table
    table = _check_tickers(table, source, ["ticker", "as_of"] if has_as_of else ["ticker"])
    if has_as_of:
        as_of = pd.to_datetime(table["as_of"], errors="coerce")
        bad = as_of.isna()
        if bad.any():
            raise DataError(f"{source}: unparseable or missing as_of dates for tickers "
                            f"{list(table.loc[bad, 'ticker'][:10])}")
        table["as_of"] = as_of.dt.normalize()
        table = table.sort_values(["ticker", "as_of"])
        latest = table.drop_duplicates("ticker", keep="last")
        companies = _companies_frame(latest, source)
        vintage_names = table["as_of"].dt.strftime("%Y-%m-%d")
        vintages = {
            name: TextVintage(name, pd.Timestamp(name), f"{source} (as_of {name})")
            for name in sorted(set(vintage_names))
        }
    else:
        companies = _companies_frame(table, source)
        vintage_names = pd.Series("description", index=table.index)
        vintages = {"description": TextVintage("description", None, f"{source} (no as_of: date unknown)")}
    texts = pd.DataFrame({"ticker": table["ticker"].to_numpy(), "vintage": vintage_names.to_numpy(),
                          "text": _clean_text(table["description"]).to_numpy()})
    texts = texts.dropna(subset=["text"]).reset_index(drop=True)
    return Universe(companies, texts, vintages, source)


def load_universe(path: str | Path | None = None) -> Universe:
    """Load the bundled universe (``path=None``) or a user's table (CSV or parquet)."""
    if path is None:
        path = bundled_data_dir() / "companies.parquet"
    path = Path(path)
    return universe_from_frame(_read_table(path, "universe"), source=str(path))
