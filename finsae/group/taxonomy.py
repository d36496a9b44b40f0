"""Taxonomy peer groups: one group label per company from its SIC, GICS or Yahoo codes.

A grouping is a ``pd.Series`` indexed by ticker whose values are group labels (strings); a missing label means
the company is in no group (its code is unknown). ``all_pairs`` puts every company into one group: the
baseline of "any two companies".
"""

from __future__ import annotations

import pandas as pd

from finsae.data.universe import Universe
from finsae.errors import DataError

#: Taxonomy name -> (column of ``Universe.companies``, number of leading characters kept; None = whole value).
TAXONOMIES: dict[str, tuple[str, int | None]] = {
    "all_pairs": ("", None),
    "gics_sector": ("gics", 2),
    "gics_industry_group": ("gics", 4),
    "gics_industry": ("gics", 6),
    "gics_sub_industry": ("gics", 8),
    "sic2": ("sic", 2),
    "sic3": ("sic", 3),
    "sic4": ("sic", 4),
    "yahoo_sector": ("yahoo_sector", None),
    "yahoo_industry": ("yahoo_industry", None),
}


def taxonomy_labels(universe: Universe, name: str) -> pd.Series:
    """Group label per ticker for taxonomy ``name`` (one of :data:`TAXONOMIES`)."""
    if name not in TAXONOMIES:
        raise DataError(f"unknown taxonomy {name!r}; choose one of {list(TAXONOMIES)}")
    column, digits = TAXONOMIES[name]
    if name == "all_pairs":
        labels = pd.Series("all", index=universe.tickers, dtype="string")
    else:
        values = universe.companies[column].astype("string")
        if values.isna().all():
            raise DataError(f"taxonomy {name!r} needs column {column!r}, which is empty in universe "
                            f"{universe.source}")
        labels = values.str[:digits] if digits else values
    labels.name = name
    labels.index.name = "ticker"
    return labels
