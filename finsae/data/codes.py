"""Industry codes: SIC validation and GICS names (from the PyPI ``gics`` package).

GICS codes of the bundled data follow the GICS structure of 2018-09-29 (digits 1-2 sector, 1-4 industry group,
1-6 industry, 1-8 sub-industry). SIC codes are 4-digit strings; a 3-digit code in a source table is a code
with its leading zero dropped (``100`` is ``0100``, agricultural production - crops).
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from finsae.errors import DataError

#: GICS structure used by the bundled codes (about 2020, GICS 2018 definitions).
GICS_VERSION = "20180929"

#: GICS level name -> number of leading digits.
GICS_LEVELS: dict[str, int] = {"sector": 2, "industry_group": 4, "industry": 6, "sub_industry": 8}

# Major groups (first two digits) of the 1987 SIC manual, plus 99 (nonclassifiable). A code whose major group
# is not here is not a SIC code.
_SIC_MAJOR_GROUPS = frozenset(
    [1, 2, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
    + list(range(20, 40))
    + list(range(40, 50))
    + [50, 51]
    + list(range(52, 60))
    + [60, 61, 62, 63, 64, 65, 67]
    + [70, 72, 73, 75, 76, 78, 79, 80, 81, 82, 83, 84, 86, 87, 88, 89]
    + [91, 92, 93, 94, 95, 96, 97, 99]
)


@lru_cache(maxsize=4)
def _gics_definition(version: str) -> dict[str, str]:
    from gics import GICS  # small pure-Python package; imported lazily to keep start-up fast

    try:
        definition = GICS(None, version=version).definition
    except ValueError as exc:
        raise DataError(f"unknown GICS version {version!r}: {exc}") from None
    return {code: " ".join(str(entry.name).split()) for code, entry in definition.items()}


def _code_strings(codes: pd.Series, width: int, what: str, pad: bool = True) -> pd.Series:
    """Codes as zero-padded digit strings (unpadded unless ``pad``); missing stays missing; anything
    non-numeric is reported."""
    out = pd.Series(pd.NA, index=codes.index, dtype="string")
    present = codes.notna()
    if not present.any():
        return out
    raw = codes[present].astype(str).str.strip()
    raw = raw.str.replace(r"\.0+$", "", regex=True)  # 3559.0 from a float column
    bad = ~raw.str.fullmatch(rf"\d{{1,{width}}}")
    if bad.any():
        examples = ", ".join(f"{t}: {c!r}" for t, c in raw[bad].head(5).items())
        raise DataError(f"{what} codes must be up to {width} digits; bad values for {int(bad.sum())} "
                        f"ticker(s): {examples}")
    out[present] = raw.str.zfill(width) if pad else raw
    return out


def normalize_sic(codes: pd.Series) -> pd.Series:
    """4-digit SIC strings indexed like ``codes`` (ticker index). Raises :class:`DataError` naming unknown
    codes."""
    out = _code_strings(codes, 4, "SIC")
    present = out.dropna()
    major = present.str[:2].astype(int)
    bad = ~major.isin(_SIC_MAJOR_GROUPS)
    if bad.any():
        examples = ", ".join(f"{t}: {c}" for t, c in present[bad].head(5).items())
        raise DataError(
            f"unknown SIC code for {int(bad.sum())} ticker(s) (major group not in the SIC manual): {examples}"
        )
    return out


def normalize_gics(codes: pd.Series, version: str = GICS_VERSION) -> pd.Series:
    """8-digit GICS sub-industry strings. Raises :class:`DataError` naming codes unknown to ``version``."""
    out = _code_strings(codes, 8, "GICS", pad=False)  # GICS codes never start with 0: no padding
    present = out.dropna()
    short = present.str.len() != 8
    if short.any():
        examples = ", ".join(f"{t}: {c} ({len(c)} digits)" for t, c in present[short].head(5).items())
        raise DataError(f"GICS codes must be 8-digit sub-industry codes; {int(short.sum())} ticker(s) have "
                        f"shorter ones (a sector, group or industry code?): {examples}")
    known = set(_gics_definition(version))
    bad = short | ~present.isin(known)
    if bad.any():
        examples = ", ".join(f"{t}: {c}" for t, c in present[bad].head(5).items())
        raise DataError(
            f"unknown GICS sub-industry code (GICS structure {version}) for {int(bad.sum())} ticker(s): "
            f"{examples}"
        )
    return out


def gics_name(codes: pd.Series, level: str, version: str = GICS_VERSION) -> pd.Series:
    """Names of the GICS ``level`` (sector, industry_group, industry, sub_industry) of 8-digit codes."""
    if level not in GICS_LEVELS:
        raise DataError(f"unknown GICS level {level!r}; choose one of {sorted(GICS_LEVELS)}")
    names = _gics_definition(version)
    prefix = codes.astype("string").str[: GICS_LEVELS[level]]
    return prefix.map(names, na_action="ignore").astype("string")
