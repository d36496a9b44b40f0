"""Golden copies of a run's numbers: a refactor must leave every number of ``make run`` as it was (issue #14).

``snapshot(folder)`` reads every parquet table under a results (or export) folder, drops what legitimately
changes between runs (run ids, timings, paths), sorts rows by their non-float columns and returns one
canonical frame per table. ``write_golden`` stores them under ``tests/golden/<name>/``; ``compare`` reports
every table, column and row that differs (floats, also those inside list columns, to 12 significant digits:
a refactor may reorder a sum, nothing more; to 6 against a copy whose ``machine.json`` names another kind of
CPU, see :data:`CROSS_MACHINE_RTOL`).

Run ``python -m tests.golden write results`` before a change and ``python -m tests.golden check results``
after. A copy named ``<name>@<kind>`` (``kind``: torch's CPU capability, e.g. ``AVX2``) is the one compared on
that kind of CPU; without one, ``<name>`` is compared at the cross-kind tolerance.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

GOLDEN = Path(__file__).parent / "golden"
VOLATILE = {
    "run_id",
    "seconds",
    "wall_seconds",
    "elapsed",
    "elapsed_s",
    "created",
    "created_at",
    "path",
    "file",
    "source",
    "results",
    "features_source",
}
RTOL = 1e-12
# A golden copy made on another kind of CPU (``machine.json``: torch's CPU capability and the BLAS kernel):
# language-model features and ill-conditioned solves differ there in their last bits (seen: the explanation
# weights of `sae_sup`, an alpha=0.01 ridge fit, by up to 1.1e-9 between an AVX2 and an AVX-512 host), so
# floats are compared to 1e-6 relative; every discrete column (groups, tickers, labels, chosen flags) must
# still be equal.
CROSS_MACHINE_RTOL = 1e-6
# large tables are digested per column instead of stored whole
STORE_MAX_ROWS = 20_000


#: A list column of floats with at most this many entries per row is compared entry by entry (one float
#: column per position, ``name[k]``); a longer one by three float columns per row (sum, absolute sum,
#: position-weighted sum), so its floats get the float rule too, not an exact text match of their last bits.
MAX_EXPLODED = 32


def _is_seq(v: object) -> bool:
    return isinstance(v, list | tuple | np.ndarray)


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _float_lists(col: pd.Series) -> bool:
    """Whether every value of an object column is a sequence (or missing) and some entry is a float."""
    values = [v for v in col if not _missing(v)]
    if not values or not all(_is_seq(v) for v in values):
        return False
    return any(isinstance(x, float | np.floating) for v in values for x in v)


def _float_list_columns(name: str, col: pd.Series) -> dict[str, pd.Series]:
    rows = [np.asarray(v, dtype=np.float64) if _is_seq(v) else None for v in col]
    longest = max((len(r) for r in rows if r is not None), default=0)
    lengths = pd.Series([None if r is None else f"len {len(r)}" for r in rows], index=col.index, dtype=object)
    out = {name: lengths}  # the discrete part: which rows have a list, and how long
    if longest <= MAX_EXPLODED:
        for k in range(longest):
            out[f"{name}[{k}]"] = pd.Series([r[k] if r is not None and k < len(r) else np.nan for r in rows],
                                            index=col.index, dtype=np.float64)
        return out
    for what, f in (("sum", np.sum), ("abs_sum", lambda r: np.abs(r).sum()),
                    ("weighted", lambda r: (np.arange(1, len(r) + 1) * r).sum())):
        out[f"{name}[{what}]"] = pd.Series([np.nan if r is None else float(f(r)) for r in rows],
                                           index=col.index, dtype=np.float64)
    return out


def _canonical(table: pd.DataFrame) -> pd.DataFrame:
    table = table.drop(columns=[c for c in table.columns if str(c) in VOLATILE], errors="ignore")
    table = table.reset_index(drop=True)
    lists = [c for c in table.columns if table[c].dtype == object and _float_lists(table[c])]
    if lists:
        parts: dict[str, pd.Series] = {}
        for c in table.columns:
            parts.update(_float_list_columns(str(c), table[c]) if c in lists else {c: table[c]})
        table = pd.DataFrame(parts)
    for c in table.columns:
        col = table[c]
        if col.dtype == object or str(col.dtype).startswith(("string", "category")):
            table[c] = col.map(
                lambda v: (
                    None
                    if _missing(v)
                    else str([x.item() if isinstance(x, np.generic) else x for x in v])
                    if _is_seq(v)
                    else str(v)
                )
            ).astype(object)
    keys = [c for c in table.columns if not pd.api.types.is_float_dtype(table[c])]
    if keys:
        table = table.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)
    return table.reindex(columns=sorted(table.columns, key=str))


def snapshot(folder: Path) -> dict[str, pd.DataFrame]:
    """Every parquet table under ``folder`` (relative path -> canonical frame)."""
    out = {}
    for path in sorted(Path(folder).rglob("*.parquet")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        out[str(path.relative_to(folder))] = _canonical(pd.read_parquet(path))
    return out


def _digest(table: pd.DataFrame) -> pd.DataFrame:
    """One row per column: dtype, and for floats sum / abs-sum / NaN count, for others a hash of the
    values."""
    rows = []
    for c in table.columns:
        col = table[c]
        if pd.api.types.is_float_dtype(col):
            v = col.to_numpy(dtype=np.float64)
            rows.append({"column": str(c), "n": len(v), "nan": int(np.isnan(v).sum()),
                         "sum": float(np.nansum(v)), "abs_sum": float(np.nansum(np.abs(v))), "hash": ""})
        else:
            h = pd.util.hash_pandas_object(col.astype(str), index=False)
            rows.append({"column": str(c), "n": len(col), "nan": int(col.isna().sum()), "sum": np.nan,
                         "abs_sum": np.nan, "hash": str(int(h.sum()) % (1 << 61))})
    return pd.DataFrame(rows)


@functools.cache
def machine() -> dict[str, str]:
    """The numeric platform a run's last bits depend on: torch's CPU kernels and numpy's BLAS kernel."""
    import torch
    from threadpoolctl import threadpool_info

    blas = [f"{i.get('internal_api')} {i.get('architecture')}" for i in threadpool_info()
            if i.get("user_api") == "blas"]
    return {"torch_cpu": str(torch.backends.cpu.get_cpu_capability()), "blas": ", ".join(sorted(blas))}


def golden_for(name: str) -> Path:
    """The golden copy ``name`` made on this kind of CPU where there is one (``<name>@<kind>``, ``kind`` being
    torch's CPU capability, e.g. ``make_run_forward_2017@AVX2``, written by ``python -m tests.golden write
    <folder> <name>@<kind>``), else ``<name>`` itself."""
    own = GOLDEN / f"{name}@{machine()['torch_cpu']}"
    return own if own.is_dir() else GOLDEN / name


def made_on(target: Path) -> dict[str, str] | None:
    """The machine record of the golden copy ``target`` (``None``: it records none)."""
    record = target / "machine.json"
    return json.loads(record.read_text()) if record.is_file() else None


def made_here(target: Path) -> bool:
    """Whether the golden copy ``target`` was made on this kind of machine (or records none)."""
    record = made_on(target)
    return record is None or record == machine()


def _rtol(target: Path) -> float:
    """Strict (:data:`RTOL`) for a golden copy made on this kind of machine (or with no record of one);
    :data:`CROSS_MACHINE_RTOL` for one made on another."""
    return RTOL if made_here(target) else CROSS_MACHINE_RTOL


def write_golden(folder: Path, name: str) -> Path:
    target = GOLDEN / name
    target.mkdir(parents=True, exist_ok=True)
    (target / "machine.json").write_text(json.dumps(machine(), indent=1) + "\n")
    for old in target.rglob("*.parquet"):
        old.unlink()
    for rel, table in snapshot(folder).items():
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if len(table) <= STORE_MAX_ROWS:
            table.to_parquet(dst)
        else:
            _digest(table).to_parquet(dst.with_suffix(".digest.parquet"))
    return target


def _close(a: pd.Series, b: pd.Series, rtol: float = RTOL) -> bool:
    if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
        x, y = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
        return bool(np.allclose(x, y, rtol=rtol, atol=1e-14, equal_nan=True))
    return a.astype(object).fillna("<NA>").tolist() == b.astype(object).fillna("<NA>").tolist()


def compare(folder: Path, name: str) -> list[str]:
    """Differences between ``folder``'s tables and the golden copy ``name`` (this CPU kind's own copy where
    there is one, :func:`golden_for`; empty: identical). Tables the golden copy lacks are not differences:
    they are new, and new tables change no number."""
    target = golden_for(name)
    if not target.is_dir():
        return [f"no golden copy {target}"]
    got = snapshot(folder)
    rtol = _rtol(target)
    problems = []
    expected = {str(p.relative_to(target)).replace(".digest.parquet", ".parquet"): p
                for p in sorted(target.rglob("*.parquet"))}
    for rel in sorted(set(expected) - set(got)):
        problems.append(f"{rel}: missing")
    # a table the golden copy lacks is new (a refactor may add one, e.g. the run store); it changes no number
    for rel in sorted(set(expected) & set(got)):
        want = pd.read_parquet(expected[rel])
        have = got[rel]
        if expected[rel].name.endswith(".digest.parquet"):
            have = _digest(have)
            for (_, w), (_, h) in zip(want.iterrows(), have.iterrows(), strict=False):
                if (
                    w["column"] != h["column"]
                    or w["n"] != h["n"]
                    or w["nan"] != h["nan"]
                    or w["hash"] != h["hash"]
                    or not np.allclose(
                        [w["sum"], w["abs_sum"]], [h["sum"], h["abs_sum"]], rtol=max(rtol, 1e-10),
                        equal_nan=True,
                    )
                ):
                    problems.append(f"{rel}: column {w['column']} differs ({dict(w)} vs {dict(h)})")
            if len(want) != len(have):
                problems.append(f"{rel}: columns {list(want['column'])} vs {list(have['column'])}")
            continue
        if list(want.columns) != list(have.columns):
            problems.append(f"{rel}: columns {sorted(set(want.columns) ^ set(have.columns))} differ")
            continue
        if len(want) != len(have):
            problems.append(f"{rel}: {len(have)} rows, golden {len(want)}")
            continue
        for c in want.columns:
            if not _close(want[c], have[c], rtol):
                problems.append(f"{rel}: column {c} differs")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("write", "check"):
        print("usage: python -m tests.golden write|check <folder> <golden name>")
        return 2
    folder, name = Path(argv[1]), argv[2]
    if argv[0] == "write":
        print(write_golden(folder, name))
        return 0
    problems = compare(folder, name)
    target = golden_for(name)
    mode = "" if made_here(target) else f" (made on another CPU kind: rtol {CROSS_MACHINE_RTOL:g})"
    print("\n".join(problems) if problems else f"{folder}: identical to golden {target.name}{mode}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
