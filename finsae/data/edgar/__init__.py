"""Descriptions from SEC 10-K filings: "Item 1. Business" from local filings or from EDGAR.

* :func:`read_filing` / :func:`read_filings`: full-submission ``.txt`` files, plain-text 1990s filings, HTML
  and inline XBRL documents (forms 10-K, 10-K405, 10-KT, 10-KSB and amendments) to a :class:`FilingResult`
  each: Item 1 as clean text, metadata (CIK, company, form, period, filing date = ``as_of``, fiscal year,
  SIC), and a status (``ok``, ``not_found``, ``incorporated_by_reference``, ``not_a_10k``, ``unreadable``)
  with its reason.
* :class:`EdgarBatch`: the per-file report (:meth:`~EdgarBatch.to_frame`) and the universe table
  (:meth:`~EdgarBatch.universe_frame`) that :func:`finsae.data.load_universe` reads.
* :class:`EdgarClient`: rate-limited, cached downloads of a company's 10-Ks with a declared User-Agent.

The extraction rules are in :mod:`finsae.data.edgar.item1`.
"""

from finsae.data.edgar.batch import EdgarBatch, expand_paths, load_cik_map, read_filings
from finsae.data.edgar.download import EdgarClient, FilingRef, RateLimiter
from finsae.data.edgar.filing import STATUSES, TEN_K_FORMS, FilingResult, read_filing
from finsae.data.edgar.item1 import extract_item1

__all__ = [
    "STATUSES",
    "TEN_K_FORMS",
    "EdgarBatch",
    "EdgarClient",
    "FilingRef",
    "FilingResult",
    "RateLimiter",
    "expand_paths",
    "extract_item1",
    "load_cik_map",
    "read_filing",
    "read_filings",
]
