"""EDGAR submission structure: the SEC header and the ``<DOCUMENT>`` blocks of a full-submission file.

A full submission (``<accession>.txt``) starts with ``<SEC-HEADER>`` (``KEY: value`` lines: accession number,
submission type, period of report, filing date, and per filer the company name, CIK, SIC code and fiscal year
end), followed by one ``<DOCUMENT>`` per file (``<TYPE>``, ``<SEQUENCE>``, ``<FILENAME>``, ``<DESCRIPTION>``,
``<TEXT>`` ... ``</TEXT>``). A single document cut out of a submission keeps its ``<DOCUMENT>`` tags but has no
header; a bare HTML or text file has neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADER = re.compile(r"<(?:SEC|IMS)-HEADER>(.*?)</(?:SEC|IMS)-HEADER>", re.S | re.I)
_DOC = re.compile(r"<DOCUMENT>(.*?)(?:</DOCUMENT>|\Z)", re.S | re.I)
_FIELD = re.compile(r"^\s*([A-Z][A-Z0-9 \-/()]*?):[ \t]*(.*?)\s*$", re.M)
_TAG = {key: re.compile(rf"<{key}>[ \t]*([^\r\n<]*)", re.I) for key in ("TYPE", "SEQUENCE", "FILENAME", "DESCRIPTION")}
_TEXT = re.compile(r"<TEXT>(.*?)(?:</TEXT>|\Z)", re.S | re.I)


@dataclass(frozen=True)
class SecHeader:
    """Fields of the SEC header (``None`` where absent). ``filed`` and ``period`` are ``YYYYMMDD`` strings."""

    accession: str | None
    form: str | None
    period: str | None
    filed: str | None
    company: str | None
    cik: int | None
    sic: str | None
    fiscal_year_end: str | None


@dataclass(frozen=True)
class SgmlDocument:
    type: str | None
    sequence: str | None
    filename: str | None
    description: str | None
    text: str


def parse_header(text: str) -> SecHeader | None:
    """The SEC header of a full submission, or ``None`` where there is none."""
    m = _HEADER.search(text[:200000])
    if m is None:
        return None
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(m.group(1)):
        fields.setdefault(key.strip().upper(), value.strip())  # the first filer's values come first
    cik = fields.get("CENTRAL INDEX KEY")
    sic = re.search(r"\[(\d{3,4})\]", fields.get("STANDARD INDUSTRIAL CLASSIFICATION", ""))
    return SecHeader(
        accession=fields.get("ACCESSION NUMBER"),
        form=fields.get("CONFORMED SUBMISSION TYPE") or fields.get("FORM TYPE"),
        period=fields.get("CONFORMED PERIOD OF REPORT"),
        filed=fields.get("FILED AS OF DATE"),
        company=fields.get("COMPANY CONFORMED NAME"),
        cik=int(cik) if cik and cik.isdigit() else None,
        sic=sic.group(1).zfill(4) if sic else None,
        fiscal_year_end=fields.get("FISCAL YEAR END"),
    )


def split_documents(text: str) -> list[SgmlDocument]:
    """The ``<DOCUMENT>`` blocks of a submission (empty when the text has none)."""
    docs = []
    for m in _DOC.finditer(text):
        body = m.group(1)
        head = body[:2000]
        fields = {}
        for key, rx in _TAG.items():
            found = rx.search(head)
            fields[key] = found.group(1).strip() if found else None
        t = _TEXT.search(body)
        docs.append(SgmlDocument(fields["TYPE"], fields["SEQUENCE"], fields["FILENAME"], fields["DESCRIPTION"],
                                 t.group(1) if t else body))
    return docs
