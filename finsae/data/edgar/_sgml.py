"""EDGAR submission structure: the SEC header and the ``<DOCUMENT>`` blocks of a full-submission file.

A full submission (``<accession>.txt``) starts with ``<SEC-HEADER>`` (``KEY: value`` lines: accession number,
submission type, period of report, filing date, and per filer the company name, CIK, SIC code and fiscal year
end), followed by one ``<DOCUMENT>`` per file (``<TYPE>``, ``<SEQUENCE>``, ``<FILENAME>``, ``<DESCRIPTION>``,
``<TEXT>`` ... ``</TEXT>``). A single document cut out of a submission keeps its ``<DOCUMENT>`` tags but has
no header; a bare HTML or text file has neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADER = re.compile(r"<(?:SEC|IMS)-HEADER>(.*?)</(?:SEC|IMS)-HEADER>", re.S | re.I)
_FIELD = re.compile(r"^\s*([A-Z][A-Z0-9 \-/()]*?):[ \t]*(.*?)\s*$", re.M)
_TAG = {
    key: re.compile(rf"<{key}>[ \t]*([^\r\n<]*)", re.I)
    for key in ("TYPE", "SEQUENCE", "FILENAME", "DESCRIPTION")
}


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
    upper_tags = ("<DOCUMENT>", "<document>")
    pos = min((i for i in (text.find(t) for t in upper_tags) if i >= 0), default=-1)
    while pos >= 0:
        body_start = pos + len("<DOCUMENT>")
        end = text.find("</DOCUMENT>", body_start)
        if end < 0:
            end = text.find("</document>", body_start)
        body = text[body_start:] if end < 0 else text[body_start:end]
        head = body[:2000]
        fields = {}
        for key, rx in _TAG.items():
            found = rx.search(head)
            fields[key] = found.group(1).strip() if found else None
        t0 = body.find("<TEXT>")
        if t0 < 0:
            t0 = body.find("<text>")
        if t0 >= 0:
            t1 = body.rfind("</TEXT>")
            if t1 < 0:
                t1 = body.rfind("</text>")
            content = body[t0 + 6: t1 if t1 > t0 else len(body)]
        else:
            content = body
        docs.append(
            SgmlDocument(
                fields["TYPE"], fields["SEQUENCE"], fields["FILENAME"], fields["DESCRIPTION"], content
            )
        )
        if end < 0:
            break
        nxt = [i for i in (text.find(t, end) for t in upper_tags) if i >= 0]
        pos = min(nxt) if nxt else -1
    return docs
