"""The JSON Schema of an export (``export_schema.json``, shipped with the package) and its validator.

The schema validates ``manifest.json``; ``$defs/tables/<name>`` is the JSON Schema of one row of each table,
so a reader in any language can check rows with a standard JSON Schema validator. :func:`validate_export`
checks the manifest, every table's file hash, each table's parquet column types against its row schema, the
enumerated values of whole columns, a sample of rows with ``jsonschema``, and the contents a reader relies on
(:func:`check_contents`): finite vectors and similarities, one entry per (method, ticker, dimension),
dimensions inside each method's width, vectors of length at most 1, unique tickers that the universe's ticker
rule accepts, and manifest names (headline and explain method, default grouping) that exist.

The sha256 hashes guard against accidents (a truncated copy, a file edited by hand), not against tampering:
whoever can change a table can change its hash in the manifest too.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from finsae._io import file_sha256
from finsae.errors import DataError

SCHEMA_FILE = "export_schema.json"


class ExportError(DataError):
    """An export folder that does not match its schema."""


@lru_cache(maxsize=1)
def export_schema() -> dict:
    """The export JSON Schema (a dict)."""
    return json.loads(resources.files("finsae.export").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def _arrow_kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "number"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def _allowed(prop: dict) -> set[str] | None:
    types = prop.get("type")
    if types is None:
        return None
    allowed = {types} if isinstance(types, str) else set(types)
    if "number" in allowed:
        allowed.add("integer")
    if "string" in allowed:
        allowed.add("timestamp")  # timestamps are written as ISO strings in JSON
    return allowed


def _json_value(v: object) -> object:
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def validate_export(path: str | Path, *, sample_rows: int = 500) -> dict:
    """Check the export folder ``path`` against the schema; return its manifest. Raises :class:`ExportError`
    naming the file, table and column at fault."""
    import jsonschema

    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise ExportError(f"{path} is not a finsae export: no manifest.json")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{mpath} is not valid JSON: {exc}") from None
    if "schema_version" not in manifest and (path / "comovement.parquet").is_file():
        raise ExportError(f"{path} is a benchmark results folder, not an export: make one with finsae export "
                          f"--results {path}")
    if "schema_version" not in manifest and (path / "summary.parquet").is_file():
        raise ExportError(f"{path} is a pairs backtest results folder, not an export: export it with its "
                          f"benchmark (finsae export --results <benchmark folder> --pairs {path})")
    schema = export_schema()
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(map(str, e.path)) or "(top level)"
        raise ExportError(f"{mpath}: {where}: {e.message}")
    row_schemas = schema["$defs"]["tables"]
    for name, info in manifest["tables"].items():
        file = path / info["file"]
        if not file.is_file():
            raise ExportError(f"table {name!r}: {file} is missing")
        if file_sha256(file) != info["sha256"]:
            raise ExportError(f"table {name!r}: {file} does not match the sha256 in the manifest (changed "
                              "after export?)")
        pf = pq.ParquetFile(file)
        if pf.metadata.num_rows != info["rows"]:
            raise ExportError(f"table {name!r}: {pf.metadata.num_rows} rows, manifest says {info['rows']}")
        row_schema = row_schemas.get(name)
        if row_schema is None:
            continue  # a table added in a later minor version: readers ignore it
        arrow = pf.schema_arrow
        missing = [c for c in row_schema.get("required", []) if c not in arrow.names]
        if missing:
            raise ExportError(f"table {name!r} ({file.name}) lacks required column(s) {missing}")
        props = row_schema.get("properties", {})
        table = None
        for col, prop in props.items():
            if col not in arrow.names:
                continue
            kind = _arrow_kind(arrow.field(col).type)
            allowed = _allowed(prop)
            if allowed is not None and kind not in allowed:
                raise ExportError(f"table {name!r}: column {col!r} has type {kind}, schema allows "
                                  f"{sorted(allowed)}")
            if "enum" in prop:
                table = table if table is not None else pq.read_table(file)
                values = set(table.column(col).unique().to_pylist())
                bad = sorted(map(str, values - set(prop["enum"])))
                if bad:
                    raise ExportError(f"table {name!r}: column {col!r} has values {bad[:5]} outside "
                                      f"{prop['enum']}")
        if sample_rows and info["rows"]:
            first = next(pf.iter_batches(batch_size=sample_rows))
            validator = jsonschema.Draft202012Validator(row_schema)
            for i, row in enumerate(first.to_pylist()):
                err = next(iter(validator.iter_errors({k: _json_value(v) for k, v in row.items()})), None)
                if err is not None:
                    raise ExportError(f"table {name!r}, row {i}: {'/'.join(map(str, err.path)) or 'row'}: "
                                      f"{err.message}")
    check_contents(path, manifest)
    return manifest


def check_contents(path: str | Path, manifest: dict) -> None:
    """The checks of an export's contents that hashes and column types cannot make (see the module docstring);
    raises :class:`ExportError` naming the table, column and an example."""
    import re

    import numpy as np
    import pandas as pd

    from finsae.data.universe import TICKER_PATTERN

    path = Path(path)
    tables = manifest["tables"]

    def read(name: str, columns: list[str]) -> pd.DataFrame:
        return pd.read_parquet(path / tables[name]["file"], columns=columns)

    def distinct(col: pd.Series) -> set[str]:  # a column's values, vectorised (tables of millions of rows)
        return {str(v) for v in pd.unique(col.astype(str))}

    methods = manifest["methods"]
    for key in ("headline_method", "explain_method"):
        value = manifest.get(key)
        if value is not None and value not in methods:
            raise ExportError(f"{path / 'manifest.json'}: {key} {value!r} is not one of the methods "
                              f"{list(methods)}")
    companies = read("companies", ["ticker"])["ticker"].astype(str)
    if companies.duplicated().any():
        raise ExportError("table 'companies': duplicate tickers "
                          f"{sorted(set(companies[companies.duplicated()]))[:5]}")
    rule = re.compile(TICKER_PATTERN)
    odd = [t for t in companies if not rule.match(t)]
    if odd:
        raise ExportError(f"table 'companies': tickers {odd[:5]} break the ticker rule {TICKER_PATTERN} (the "
                          "API could not reach them)")
    known = set(companies)
    vec = read("vectors", ["method", "ticker", "dim", "value"])
    unknown = sorted(distinct(vec["method"]) - set(methods))
    if unknown:
        raise ExportError(f"table 'vectors': methods {unknown} are not in the manifest's methods "
                          f"{list(methods)}")
    values = vec["value"].to_numpy(np.float64)
    if not np.isfinite(values).all():
        bad = vec[~np.isfinite(values)].iloc[0]
        raise ExportError(f"table 'vectors': non-finite value for {bad['ticker']} ({bad['method']}, dim "
                          f"{bad['dim']})")
    method_code = pd.Index(list(methods)).get_indexer(vec["method"].astype(str))  # every method is known
    width = np.array([int(info["dims"]) for info in methods.values()], dtype=np.int64)[method_code]
    dims = vec["dim"].to_numpy(np.int64)
    outside = (dims < 0) | (dims >= width)
    if outside.any():
        bad = vec[outside].iloc[0]
        raise ExportError(f"table 'vectors': dim {bad['dim']} of {bad['ticker']} is outside method "
                          f"{bad['method']!r}'s {methods[bad['method']]['dims']} dimensions")
    ticker_code, ticker_names = pd.factorize(vec["ticker"].astype(str))
    company_of = method_code.astype(np.int64) * max(len(ticker_names), 1) + ticker_code  # (method, ticker)
    dup = pd.Series(company_of * (int(dims.max()) + 1 if len(dims) else 1) + dims).duplicated().to_numpy()
    if dup.any():
        bad = vec[dup].iloc[0]
        raise ExportError(f"table 'vectors': {bad['ticker']} has dim {bad['dim']} of method "
                          f"{bad['method']!r} more than once")
    norms = pd.Series(values ** 2).groupby(company_of).sum()  # sorted by (method, ticker code)
    long = norms[norms > 1.0 + 1e-3]
    if len(long):
        pair, v = int(long.index[0]), float(long.iloc[0])
        first = vec.iloc[int(np.flatnonzero(company_of == pair)[0])]
        raise ExportError(f"table 'vectors': the {first['method']!r} vector of {first['ticker']} has length "
                          f"{np.sqrt(v):.4g}; vectors are unit length (or zero)")
    stray = sorted(set(ticker_names) - known)
    if stray:
        raise ExportError(f"table 'vectors': tickers {stray[:5]} are not in companies.parquet")
    peers = read("peers", ["method", "ticker", "peer", "similarity"])
    sims = peers["similarity"].to_numpy(np.float64)
    if not np.isfinite(sims).all():
        bad = peers[~np.isfinite(sims)].iloc[0]
        raise ExportError(f"table 'peers': non-finite similarity of {bad['ticker']} and {bad['peer']}")
    stray = sorted((distinct(peers["ticker"]) | distinct(peers["peer"])) - known)
    if stray:
        raise ExportError(f"table 'peers': tickers {stray[:5]} are not in companies.parquet")
    groups = read("groups", ["grouping", "ticker"])
    stray = sorted(distinct(groups["ticker"]) - known)
    if stray:
        raise ExportError(f"table 'groups': tickers {stray[:5]} are not in companies.parquet")
    default = manifest.get("default_grouping")
    if default is not None and default not in distinct(groups["grouping"]):
        raise ExportError(f"{path / 'manifest.json'}: default_grouping {default!r} is not a grouping of "
                          "groups.parquet")
    if "dimensions" in tables:
        d = read("dimensions", ["method", "dim"])
        w = d["method"].map({m: int(info["dims"]) for m, info in methods.items()})
        bad = d[w.isna() | (d["dim"] < 0) | (d["dim"] >= w.fillna(0))]
        if len(bad):
            raise ExportError(f"table 'dimensions': dim {bad.iloc[0]['dim']} of method "
                              f"{bad.iloc[0]['method']!r} is not one of its dimensions")
