"""One 10-K filing in, one :class:`FilingResult` out: metadata, Item 1 text and a status, never an exception.

Accepted inputs: a full-submission ``.txt`` (SGML header and documents: the main document is the first whose
type is the form), a single ``<DOCUMENT>`` block cut from one, a bare HTML or inline XBRL document, or a
plain-text document; optionally gzip, xz or bzip2 compressed.

Metadata comes from the SEC header where there is one (CIK, company name, form, period of report, filing date,
SIC code), else from the inline XBRL cover facts (``dei:EntityCentralIndexKey``, ``dei:EntityRegistrantName``,
``dei:DocumentType``, ``dei:DocumentPeriodEndDate``, ``dei:DocumentFiscalYearFocus``, ``dei:TradingSymbol``),
else from the cover page text (``FORM 10-K``, "for the fiscal year ended ...", the line above "exact name of
registrant"). The filing date is the text's ``as_of``: the description may be used only after it. A document
without an SEC header carries no filing date; its ``as_of`` is then the latest date of its signature section
(the date its signers give most often in the last signature section) plus :data:`UNDATED_MARGIN_DAYS`
(signatures are dated on or a few days before filing), marked
``as_of_source="signature_date+margin"``, and is missing when no signature date is found.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finsae.data.edgar import _sgml, _text
from finsae.data.edgar.item1 import ExecOfficers, extract_item1

logger = logging.getLogger(__name__)

STATUSES = ("ok", "not_found", "incorporated_by_reference", "not_a_10k", "unreadable")
#: Forms read as annual reports (amendments included); other forms get ``not_a_10k``.
TEN_K_FORMS = frozenset(("10-K", "10-K405", "10-KT", "10-KSB", "10-KSB40", "10-K/A", "10-K405/A", "10-KT/A",
                         "10-KSB/A", "10-KSB40/A"))
#: Days added to a signature date to bound the unknown filing date from above.
UNDATED_MARGIN_DAYS = 7

_MONTHS = {m: i for i, m in enumerate(("january february march april may june july august september october "
                                       "november december").split(), start=1)}
_DATE = re.compile(
    r"\b(January|February|March|April|May|June|July|August|September|October|November|December)"
    r"\.?\s+(\d{1,2})\s*,?\s*(\d{4})\b",
    re.I,
)
_FORM_ON_COVER = re.compile(r"\bform\s+(10-?k405|10-?ksb40|10-?ksb|10-?kt|10-?k|10-?q|8-?k|20-?f|40-?f|6-?k|"
                            r"11-?k|s-1|s-4|n-csr|def\s*14a)(\s*/\s*a)?(?![\w-])", re.I)
_ANNUAL = re.compile(r"annual\s+report\s+pursuant\s+to\s+section\s+13\s+or\s+15\s*\(d\)", re.I)
_QUARTERLY = re.compile(r"quarterly\s+report\s+pursuant\s+to\s+section\s+13", re.I)
_CURRENT = re.compile(r"current\s+report\s+pursuant\s+to\s+section\s+13", re.I)
_FY_ENDED = re.compile(r"(?:fiscal\s+)?year\s+ended\s*:?\s*", re.I)
_DEI = re.compile(r"<ix:nonnumeric\b[^>]*?\bname=[\"']dei:(\w+)[\"'][^>]*>(.*?)</ix:nonnumeric>", re.I | re.S)
_TAGS = re.compile(r"<[^>]+>")
_DEI_WANTED = frozenset(
    (
        "DocumentType",
        "EntityCentralIndexKey",
        "EntityRegistrantName",
        "DocumentPeriodEndDate",
        "DocumentFiscalYearFocus",
        "TradingSymbol",
        "AmendmentFlag",
    )
)


@dataclass(frozen=True)
class FilingResult:
    """What was read from one file. ``status`` is one of :data:`STATUSES`; ``detail`` says why (or where Item
    1 was found); ``text`` is Item 1 (also kept, as the pointer it is, for ``incorporated_by_reference``)."""

    path: str
    status: str
    detail: str
    text: str = ""
    cik: int | None = None
    company: str | None = None
    ticker: str | None = None
    form: str | None = None
    period: dt.date | None = None
    filed: dt.date | None = None
    fiscal_year: int | None = None
    as_of: dt.date | None = None
    as_of_source: str | None = None
    sic: str | None = None
    accession: str | None = None
    encoding: str | None = None
    fmt: str | None = None
    seconds: float = 0.0
    exec_officers_dropped: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def n_chars(self) -> int:
        return len(self.text)

    @property
    def n_words(self) -> int:
        return len(self.text.split())

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("extra")
        out["n_chars"], out["n_words"] = self.n_chars, self.n_words
        return out


def _date(text: str | None) -> dt.date | None:
    """A date from ``YYYYMMDD``, ``YYYY-MM-DD`` or ``Month D, YYYY`` text."""
    if not text:
        return None
    text = text.strip()
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", text)
    try:
        if m:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        m2 = _DATE.search(text)
        if m2:
            return dt.date(int(m2.group(3)), _MONTHS[m2.group(1).lower()], int(m2.group(2)))
    except ValueError:
        return None
    return None


def normalize_form(form: str | None) -> str | None:
    if not form:
        return None
    f = re.sub(r"\s+", "", form.upper())
    f = re.sub(r"^10K", "10-K", f)
    f = re.sub(r"^8K", "8-K", f).replace("10Q", "10-Q")
    return f


def _dei_facts(raw: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    if "dei:" not in raw:
        return facts
    for name, value in _DEI.findall(raw):
        if name in _DEI_WANTED:
            text = _text.clean_line(html.unescape(_TAGS.sub(" ", value)))
            if text and name not in facts:
                facts[name] = text
    return facts


def _cover_form(lines: list[str]) -> str | None:
    head = " ".join(ln for ln in lines[:250] if ln)
    m = _FORM_ON_COVER.search(head[:20000])
    if m:
        return normalize_form(m.group(1) + ("/A" if m.group(2) else ""))
    if _ANNUAL.search(head):
        return "10-K"
    if _QUARTERLY.search(head):
        return "10-Q"
    if _CURRENT.search(head):
        return "8-K"
    return None


def _cover_name(lines: list[str]) -> str | None:
    for i, ln in enumerate(lines[:400]):
        if "exact name of registrant" in ln.lower():
            before = ln.lower().split("(exact name")[0].split("exact name")[0].strip(" (")
            if len(before) > 2:
                return ln[: len(before)].strip()
            for j in range(i - 1, max(-1, i - 4), -1):
                cand = lines[j].strip()
                if cand and re.search(r"[A-Za-z]{2}", cand) and "commission file" not in cand.lower():
                    return cand
    return None


def _cover_period(lines: list[str]) -> dt.date | None:
    head = " ".join(ln for ln in lines[:250] if ln)
    for m in _FY_ENDED.finditer(head):
        d = _date(head[m.end(): m.end() + 40])
        if d is not None:
            return d
    return None


def _signature_date(lines: list[str], period: dt.date | None) -> dt.date | None:
    """The signature date: in the last ``SIGNATURES`` section that has dates (within two years after the
    period of report) in its next 80 lines, the date given most often (every signer dates the page)."""
    heads = [i for i, ln in enumerate(lines)
             if ln and ln[0] in "Ss" and len(ln) <= 12 and re.fullmatch(r"signatures?\.?", ln, re.I)]
    for i in reversed(heads):
        block = " ".join(lines[i + 1: i + 80])
        dates = [d for m in _DATE.finditer(block) if (d := _date(m.group(0)))]
        if period is not None:
            dates = [d for d in dates if period < d <= period + dt.timedelta(days=730)]
        if dates:
            counts = Counter(dates)
            return max(counts, key=lambda d: (counts[d], d))
    return None


def _main_document(text: str) -> tuple[str, str | None]:
    """The 10-K document of a submission (the first whose type is a 10-K form, else the first) and its
    type."""
    docs = _sgml.split_documents(text)
    if not docs:
        return text, None
    for d in docs:
        if normalize_form(d.type) in TEN_K_FORMS:
            return d.text, normalize_form(d.type)
    return docs[0].text, normalize_form(docs[0].type)


def read_filing(path: str | Path, *, data: bytes | None = None, executive_officers: ExecOfficers = "keep",
                tickers: dict[int | str, str] | None = None) -> FilingResult:
    """Read one filing (``data`` if given, else the file) and extract its Item 1; never raises for bad
    input."""
    import time

    t0 = time.perf_counter()
    path = str(path)
    try:
        if data is None:
            data = Path(path).read_bytes()
        decoded = _text.decode(data)
    except _text.UnreadableError as exc:
        return FilingResult(path, "unreadable", str(exc), seconds=time.perf_counter() - t0)
    except OSError as exc:
        return FilingResult(path, "unreadable", f"cannot read file: {exc}", seconds=time.perf_counter() - t0)
    try:
        res = _read_text(path, decoded, executive_officers, tickers or {})
    except Exception as exc:  # a parser failure on one file must not stop a batch
        logger.exception("unexpected failure reading %s", path)
        res = FilingResult(path, "unreadable", f"{type(exc).__name__}: {exc}", encoding=decoded.encoding)
    return _with_seconds(res, time.perf_counter() - t0)


def _with_seconds(res: FilingResult, seconds: float) -> FilingResult:
    from dataclasses import replace

    return replace(res, seconds=round(seconds, 4))


def _read_text(path: str, decoded: _text.Decoded, executive_officers: ExecOfficers,
               tickers: dict[int | str, str]) -> FilingResult:
    raw = decoded.text
    header = _sgml.parse_header(raw)
    doc, doc_type = _main_document(raw)
    is_html = _text.looks_like_html(doc)
    if is_html:
        lines = _text.html_lines(doc)
        fmt = "ixbrl" if re.search(r"<ix:(?:header|nonnumeric|nonfraction)", doc[:400000], re.I) else "html"
    else:
        lines = _text.text_lines(doc)
        fmt = "text"
    if header is not None:
        fmt = f"submission/{fmt}"
    facts = _dei_facts(doc) if fmt.endswith("ixbrl") else {}
    form = normalize_form(header.form if header else None) or normalize_form(facts.get("DocumentType")) \
        or doc_type or _cover_form(lines)
    if form is not None and facts.get("AmendmentFlag", "").lower() == "true" and not form.endswith("/A"):
        form += "/A"
    cik = header.cik if header and header.cik else None
    if cik is None and facts.get("EntityCentralIndexKey", "").isdigit():
        cik = int(facts["EntityCentralIndexKey"])
    company = (header.company if header else None) or facts.get("EntityRegistrantName") or _cover_name(lines)
    period = _date(header.period if header else None) or _date(facts.get("DocumentPeriodEndDate")) \
        or _cover_period(lines)
    fy_text = facts.get("DocumentFiscalYearFocus", "")
    fiscal_year = int(fy_text) if fy_text.isdigit() else (period.year if period else None)
    filed = _date(header.filed if header else None)
    as_of: dt.date | None
    as_of_source: str | None
    if filed is not None:
        as_of, as_of_source = filed, "filing_date"
    else:
        signed = _signature_date(lines, period)
        as_of = signed + dt.timedelta(days=UNDATED_MARGIN_DAYS) if signed else None
        as_of_source = "signature_date+margin" if signed else None
    ticker = tickers.get(cik) if cik is not None else None
    ticker_source = "map (cik)" if ticker else None
    if ticker is None:
        name = Path(path).name
        ticker = tickers.get(name) or (tickers.get(name.rsplit(".", 1)[0]) if "." in name else None)
        ticker_source = "map (file)" if ticker else None
    if ticker is None and facts.get("TradingSymbol"):
        ticker, ticker_source = facts["TradingSymbol"].split()[0].upper(), "dei:TradingSymbol"
    meta: dict[str, Any] = dict(
        cik=cik,
        company=company,
        ticker=ticker,
        form=form,
        period=period,
        filed=filed,
        fiscal_year=fiscal_year,
        as_of=as_of,
        as_of_source=as_of_source,
        sic=header.sic if header else None,
        accession=header.accession if header else None,
        encoding=decoded.encoding,
        fmt=fmt,
        extra={"ticker_source": ticker_source or ""},
    )
    if form is None:
        return FilingResult(path, "not_a_10k", "no form type found (no SEC header, no dei:DocumentType, no "
                            "'FORM 10-K' or annual-report line on the cover)", **meta)
    if form not in TEN_K_FORMS:
        return FilingResult(path, "not_a_10k", f"form {form}, not a 10-K", **meta)
    if not any(lines):
        return FilingResult(path, "unreadable", "the document holds no text", **meta)
    item = extract_item1(lines, plain=not is_html, executive_officers=executive_officers)
    detail = item.detail
    if item.status != "ok" and is_html and not re.search(r"</html\s*>", doc[-4000:], re.I):
        detail += "; the HTML has no closing </html> tag: the file looks truncated"
    return FilingResult(path, item.status, detail, text=item.text,
                        exec_officers_dropped=item.exec_officers_dropped, **meta)
