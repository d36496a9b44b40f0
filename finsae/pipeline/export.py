"""Write a versioned export of a model run: parquet tables plus ``manifest.json``, readable without finsae.

An export is made from a ``finsae benchmark`` results folder (its run store holds each text method's vectors
as it grouped them, with their feature sources and transform, its groups and headline method; its manifest
names the data files), optionally with a pairs backtest folder and ``finsae explain`` folders. Layout (schema
version :data:`SCHEMA_VERSION`; columns in ``export_schema.json``):

* ``companies.parquet``: one row per company of the universe (ticker, name, codes, GICS names, ``has_text``).
* ``groups.parquet``: long table ``grouping, method, level, match, kind, group, ticker`` with every text
  grouping of the benchmark's formation vintage and the taxonomy groupings of the benchmark's levels.
* ``vectors.parquet``: ``method, ticker, dim, value``: the non-zero entries of each text method's unit-length
  company vectors (the method's transform fitted on the formation text, as the benchmark grouped them). The
  cosine similarity of two companies is the sum of products of their entries with equal ``dim``. A learned
  method fitted with non-negative weights (``<m>_nn``, config ``learned.nonnegative``) gets the vectors
  ``u_i = z_i * sqrt(w) / C`` of its base method's rows ``z_i`` and its neighbour weights ``w``, with ``C``
  the largest ``|z_i * sqrt(w)|`` (so every ``|u_i| <= 1``): ``u_a . u_b`` is its learned similarity
  ``sum_k w_k z_ak z_bk`` divided by ``C^2`` (the manifest's ``weighting.scale``), the same ranking of peers,
  and each dimension's term is that latent's weighted contribution. Signed weights have no such vectors (their
  groups are exported), even where they happen to come out ``>= 0``.
* ``peers.parquet``: ``method, ticker, rank, peer, similarity``: each company's ``k`` most similar companies
  (ties broken by universe order).
* ``dimensions.parquet``: ``method, dim, label``: what a dimension of an interpretable method means (an SAE
  latent's label, a TF-IDF term); pair explanations name the shared dimensions with it.
* ``latents.parquet``, ``group_explanations.parquet``, ``group_faithfulness.parquet``: SAE latent labels and
  group explanations (with explanation folders).
* ``benchmark_*.parquet`` and ``backtest_*.parquet``: the benchmark's and the pairs backtest's result tables.
* ``.finsae-export``: the marker that says the folder is an export: ``overwrite=True`` (``--overwrite``)
  replaces only a folder with this marker (or an export manifest, for exports made before it) and nothing but
  export files.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from finsae._io import (
    check_run_tables,
    file_sha256,
    fresh_sibling,
    replace_dir,
    write_json,
    write_parquet,
    write_text,
)
from finsae.errors import ConfigError, DataError
from finsae.export.layout import EXPORT_MARKER, SCHEMA_VERSION, ExportResult, similarity_matrix, top_peers
from finsae.pipeline.store import BenchmarkRun, MethodSpec, MethodVectors, check_same_companies

if TYPE_CHECKING:
    from finsae.data import Universe

logger = logging.getLogger(__name__)

_TAXONOMY_FAMILY = {"gics": "gics", "sic": "sic", "yahoo": "yahoo"}


def _export_files(folder: Path) -> set[str] | None:
    """The names of the files an export folder consists of (marker, manifest, its tables), or None when
    ``folder`` is not an export (no marker and no export manifest)."""
    names = {EXPORT_MARKER, "manifest.json"}
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict) and isinstance(manifest.get("tables"), dict):
        names |= {str(t.get("file")) for t in manifest["tables"].values() if isinstance(t, dict)}
        if "schema_version" in manifest:
            return names
    return names if (folder / EXPORT_MARKER).is_file() else None


def check_export_target(out: Path, overwrite: bool, inputs: dict[str, Path | None]) -> None:
    """Refuse an export folder ``out`` that would lose or mix the user's files: ``out`` must not contain or
    lie inside an input folder (``inputs``: label -> folder); an existing ``out`` is replaced only with
    ``overwrite``, only when it is a finsae export, and only when it holds nothing but the export's own
    files."""
    target = out.resolve()
    for label, folder in inputs.items():
        if folder is None:
            continue
        src = Path(folder).resolve()
        if target == src or src.is_relative_to(target) or target.is_relative_to(src):
            raise ConfigError(
                f"export folder {out} and the {label} folder {folder} overlap (one contains the "
                "other): write the export to a folder of its own"
            )
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise ConfigError(f"{out} already exists: pass overwrite=True (--overwrite) to replace it")
    if out.is_symlink() or not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder (a file or a link): refusing to replace it")
    entries = sorted(e.name for e in out.iterdir())
    if not entries:
        return
    own = _export_files(out)
    if own is None:
        raise ConfigError(
            f"{out} is not a finsae export (no {EXPORT_MARKER} marker or export manifest.json): "
            "--overwrite replaces only an export folder; choose another --out"
        )
    strangers = [e for e in entries if e not in own]
    if strangers:
        raise ConfigError(
            f"{out} holds files that are not part of the export ({strangers[:5]}): move them away "
            "or choose another --out; --overwrite deletes nothing but an export"
        )


def _results_manifest(results: Path) -> dict:
    path = results / "manifest.json"
    if not path.is_file():
        raise ConfigError(
            f"{results} is not a finsae benchmark results folder (no manifest.json); "
            "run finsae benchmark --config ... first"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    check_run_tables(results, manifest)  # every table from the run the manifest describes
    if not manifest.get("text_methods"):
        raise ConfigError(
            f"the benchmark in {results} has no text methods: nothing to export (peers and "
            "similarities come from text features)"
        )
    return manifest


@dataclass(frozen=True)
class MethodExport:
    """One text method's company vectors as exported: ``tickers`` (universe order), ``z`` (unit rows,
    float32), ``info`` (its entry in the export manifest) and ``names`` (what each dimension means; None when
    PCA mixed them or they never had a meaning)."""

    name: str
    tickers: pd.Index
    z: sp.csr_matrix
    info: dict[str, Any]
    names: np.ndarray | None


@dataclass(frozen=True)
class ExportPlan:
    """Everything an export is made from, read and checked before anything is written."""

    results: Path
    out: Path
    manifest: dict[str, Any]
    run: BenchmarkRun
    universe: Universe
    vintage: str
    vectors: dict[str, MethodExport]
    explanations: list[Path]
    pairs: Path | None
    k: int


def _weighted_vectors(
    run: BenchmarkRun, spec: MethodSpec, vintage: str, nonneg: set[str]
) -> tuple[MethodVectors, dict[str, Any]] | None:
    """The vectors ``z_i * sqrt(w) / C`` of a learned method fitted with non-negative weights (one of
    ``nonneg``; module docstring) and their ``weighting`` record; None for any other method."""
    if spec.name not in nonneg or spec.learned != "supervised" or spec.feature_method is None:
        return None
    table = run.learned_weights.get(vintage)
    if table is None or table.empty:
        return None
    rows = table[table["method"] == spec.name].sort_values("latent")
    if rows.empty:
        return None
    w = rows["weight_rank"].to_numpy(dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise DataError(f"learned_weights_{vintage}.parquet: method {spec.name!r} was fitted with "
                        "non-negative weights, but some of its neighbour weights are negative or not finite")
    base = run.vectors(run.method(spec.feature_method, vintage))
    if len(w) != base.matrix.shape[1]:
        raise DataError(f"learned_weights_{vintage}.parquet: {len(w)} weights for method {spec.name!r}, its "
                        f"base {spec.feature_method!r} has {base.matrix.shape[1]} dimensions")
    u = np.asarray(base.matrix, dtype=np.float64) * np.sqrt(w)
    c = float(np.sqrt((u * u).sum(axis=1)).max())
    if c > 0:
        u /= c
    record = {"kind": "learned non-negative weights (the method's neighbour weights)",
              "base": spec.feature_method, "scale": c * c,
              "note": "u_a . u_b x scale = the learned similarity sum_k w_k z_ak z_bk"}
    return MethodVectors(base.tickers, u, base.names), record


def _method_vectors(
    run: BenchmarkRun, universe: Universe, vintage: str, nonneg: set[str] | None = None
) -> dict[str, MethodExport]:
    """Each text method's unit-length company vectors as the benchmark grouped them (from the run store), in
    universe order, and the weighted vectors of non-negative learned methods (module docstring); other learned
    similarities and price peers have none (their groupings are exported)."""
    out: dict[str, MethodExport] = {}
    for spec in run.methods_of(vintage):
        weighting = None
        if spec.vectors is None:
            weighted = _weighted_vectors(run, spec, vintage, nonneg or set())
            if weighted is None:  # signed learned weights, price peers (no text): their groups are exported
                logger.info(
                    "export: %s has no company vectors (%s); its groups are exported", spec.name, spec.note
                )
                continue
            got, weighting = weighted
            ex = run.method(str(spec.feature_method), vintage).extraction
        else:
            ex = spec.extraction
            got = run.vectors(spec)
        assert ex is not None  # a method with vectors has features
        order = np.argsort(universe.tickers.get_indexer(got.tickers), kind="stable")  # universe order: ties
        tickers, z = got.tickers[order], got.matrix[order]
        # dimensions keep a meaning (a latent, a term) unless PCA mixed them; minilm's never had one
        names = got.names if spec.n_components is None and ex.features in ("sae", "tfidf") else None
        info = {
            "features": ex.features,
            "transform": spec.transform,
            "clusterer": spec.clusterer,
            "interpretable": names is not None,
            "dims": int(z.shape[1]),
            "companies": int(z.shape[0]),
            "source": dict(ex.source),
            **({"weighting": weighting} if weighting is not None else {}),
        }
        out[spec.name] = MethodExport(
            spec.name, tickers, sp.csr_matrix(np.asarray(z, dtype=np.float32)), info, names
        )
    return out


def _vectors_frame(vectors: dict[str, MethodExport]) -> pd.DataFrame:
    frames = []
    for name, v in vectors.items():
        coo = v.z.tocoo()
        frames.append(
            pd.DataFrame(
                {
                    "method": name,
                    "ticker": v.tickers.to_numpy()[coo.row],
                    "dim": coo.col.astype(np.int32),
                    "value": coo.data.astype(np.float32),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _peers_frame(vectors: dict[str, MethodExport], k: int) -> pd.DataFrame:
    frames = []
    for name, v in vectors.items():
        names = v.tickers.to_numpy()
        full = similarity_matrix(v.z)
        rows, peers, sims, ranks = [], [], [], []
        for i in range(len(names)):
            order, s = top_peers(full[i], i, k)
            rows.append(np.full(len(order), i))
            peers.append(order)
            sims.append(s)
            ranks.append(np.arange(1, len(order) + 1))
        r = np.concatenate(rows)
        frames.append(
            pd.DataFrame(
                {
                    "method": name,
                    "ticker": names[r],
                    "rank": np.concatenate(ranks).astype(np.int32),
                    "peer": names[np.concatenate(peers)],
                    "similarity": np.concatenate(sims),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _dimensions_frame(vectors: dict[str, MethodExport], labels: pd.DataFrame | None) -> pd.DataFrame:
    """What each dimension of an interpretable method means: an SAE latent's label (``latent j`` without
    explanations) or a TF-IDF term."""
    frames = []
    by_latent = (
        pd.Series(labels["label"].to_numpy(), index=labels["latent"].to_numpy())
        if labels is not None
        else None
    )
    for name, v in vectors.items():
        names = v.names
        if names is None:
            continue
        dims = np.arange(v.z.shape[1])
        if v.info["features"] == "sae":
            text = [f"latent {j}" for j in dims]
            if by_latent is not None:
                text = [str(by_latent.get(j, t)) for j, t in zip(dims, text, strict=True)]
        else:
            text = [str(x) for x in names]
        frames.append(pd.DataFrame({"method": name, "dim": dims.astype(np.int32), "label": text}))
    if not frames:
        return pd.DataFrame(
            {
                "method": pd.Series(dtype=object),
                "dim": pd.Series(dtype=np.int32),
                "label": pd.Series(dtype=object),
            }
        )
    return pd.concat(frames, ignore_index=True)


def _groups_frame(run: BenchmarkRun, universe: Universe, vintage: str) -> pd.DataFrame:
    """Every text grouping of ``vintage`` (the run store's groups table) and the taxonomy groupings of the
    benchmark's levels."""
    from finsae.group.taxonomy import taxonomy_labels

    text = run.groups[vintage].rename(columns={"name": "grouping"})
    text = text[["grouping", "method", "level", "match", "kind", "group", "ticker"]]
    frames = [text]
    for level in run.levels:
        labels = taxonomy_labels(universe, level).dropna()
        family = level.split("_")[0]
        frames.append(
            pd.DataFrame(
                {
                    "grouping": level,
                    "method": _TAXONOMY_FAMILY.get(family, family),
                    "level": level,
                    "match": "taxonomy",
                    "kind": "taxonomy",
                    "group": labels.astype(str).to_numpy(),
                    "ticker": labels.index.to_numpy(),
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    return out.astype({c: object for c in out.columns})


def _explanation_frames(
    dirs: list[Path], run_id: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    expl, faith, labels, names = [], [], None, []
    for d in dirs:
        info_path = d / "manifest.json"
        if not info_path.is_file():
            raise ConfigError(f"{d} is not a finsae explain folder (no manifest.json)")
        info = json.loads(info_path.read_text())
        made_from = info.get("results_run_id")
        if run_id and made_from and made_from != run_id:
            raise DataError(
                f"explanations {d} were made from another benchmark run ({made_from}) than the results "
                f"being exported ({run_id}): rerun finsae explain, or leave them out"
            )
        grouping = info["grouping"]
        names.append(grouping)
        g = pd.read_parquet(d / "groups.parquet")
        expl.append(g.drop(columns=["members"], errors="ignore").assign(grouping=grouping))
        f = pd.read_parquet(d / "faithfulness.parquet")
        faith.append(f.drop(columns=["members"], errors="ignore").assign(grouping=grouping))
        lab = pd.read_parquet(d / "latent_labels.parquet")
        if labels is None:
            labels = lab
        elif not labels["label"].equals(lab["label"]):
            raise DataError(
                f"explanation folders {dirs[0]} and {d} use different latent labels (different SAEs?)"
            )
    lead = ["grouping", "group", "rank", "latent", "label"]
    e = pd.concat(expl, ignore_index=True)
    e = e[lead + [c for c in e.columns if c not in lead]]
    f = pd.concat(faith, ignore_index=True)
    f = f[["grouping"] + [c for c in f.columns if c != "grouping"]]
    if labels is None:
        raise ConfigError("no explanation folders given")
    lab = labels.assign(top_tokens=labels["top_tokens"].map(lambda t: ", ".join(map(str, t))))
    return e, f, lab, names


def _copy_frame(table: pd.DataFrame, dst: Path) -> pd.DataFrame:
    """Write ``table`` to ``dst`` with mixed-type object columns (e.g. bool/None) as strings, readable
    anywhere."""
    table = table.copy()
    for c in table.columns:
        if table[c].dtype == object and not table[c].map(lambda v: isinstance(v, str) or v is None).all():
            table[c] = table[c].map(
                lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            )
    write_parquet(table, dst)
    return table


def _column_types(table: pd.DataFrame) -> dict[str, str]:
    out = {}
    for c, dtype in table.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):
            out[c] = "boolean"
        elif pd.api.types.is_integer_dtype(dtype):
            out[c] = "integer"
        elif pd.api.types.is_float_dtype(dtype):
            out[c] = "number"
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            out[c] = "timestamp"
        else:
            out[c] = "string"
    return out


def export_run(
    results: str | Path,
    out: str | Path,
    *,
    pairs: str | Path | None = None,
    explanations: Sequence[str | Path] | str | Path | None = None,
    vintage: str | None = None,
    k: int = 20,
    companies: str | Path | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export the benchmark results folder ``results`` (plus the pairs backtest folder ``pairs`` and ``finsae
    explain`` folders ``explanations``) to the folder ``out``; see the module docstring for the layout.
    Vectors, groups and the headline come from the benchmark's run store: the export holds exactly the vectors
    the groups were formed by (nothing is extracted).

    The export is written to a temporary sibling folder and renamed into place at the end, so ``out`` is
    either the previous export or the complete new one, never a mix. An existing ``out`` is replaced only with
    ``overwrite`` and only when it is an export (see :func:`check_export_target`)."""
    t0 = time.perf_counter()
    # read and check everything the export needs before anything is written
    results, out = Path(results), Path(out)
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    expl_dirs = [
        Path(e) for e in ([explanations] if isinstance(explanations, str | Path) else explanations or [])
    ]
    manifest = _results_manifest(results)
    pairs_dir = Path(pairs) if pairs is not None else None
    check_export_target(
        out,
        overwrite,
        {
            "results": results,
            "pairs": pairs_dir,
            **{f"explanations {i + 1}": d for i, d in enumerate(expl_dirs)},
        },
    )
    run = BenchmarkRun.load(results)
    vintage = run.pick_vintage(vintage)
    universe = run.universe(companies)
    learned_cfg = (manifest.get("config") or {}).get("learned") or {}
    nonneg = {f"{m}_nn" for m in learned_cfg.get("nonnegative") or []}
    vectors = _method_vectors(run, universe, vintage, nonneg)
    if pairs_dir is not None and not (pairs_dir / "summary.parquet").is_file():
        raise ConfigError(f"{pairs_dir} is not a finsae backtest results folder (no summary.parquet)")
    if pairs_dir is not None:
        check_same_companies(results, pairs_dir)
    plan = ExportPlan(results, out, manifest, run, universe, vintage, vectors, expl_dirs, pairs_dir, k)
    tmp = fresh_sibling(plan.out, "partial")
    try:
        out_manifest = _write_export(tmp, plan)
        check_export_target(plan.out, overwrite, {})  # again: nothing may have appeared in it meanwhile
        replace_dir(tmp, plan.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("export of %s written to %s in %.1f s", plan.results, plan.out, time.perf_counter() - t0)
    return ExportResult(plan.out, out_manifest)


def _companies_frame(universe: Universe, texts: pd.Index) -> pd.DataFrame:
    frame = universe.to_frame().reset_index()
    frame["has_text"] = frame["ticker"].isin(texts)
    keep = [
        "ticker",
        "name",
        "cik",
        "sic",
        "gics",
        "gics_sector",
        "gics_industry_group",
        "gics_industry",
        "gics_sub_industry",
        "has_text",
    ]
    frame = frame[[c for c in keep if c in frame]]
    return frame.astype({c: object for c in frame.columns if c != "has_text"})


def _model_tables(plan: ExportPlan) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The export's own tables (companies, groups, vectors, peers, explanations, dimensions) and the names of
    the explained groupings."""
    tables: dict[str, pd.DataFrame] = {}
    tables["companies"] = _companies_frame(plan.universe, plan.universe.descriptions(plan.vintage).index)
    tables["groups"] = _groups_frame(plan.run, plan.universe, plan.vintage)
    tables["vectors"] = _vectors_frame(plan.vectors)
    tables["peers"] = _peers_frame(plan.vectors, plan.k)
    explained: list[str] = []
    lab = None
    if plan.explanations:
        e, f, lab, explained = _explanation_frames(plan.explanations, plan.manifest.get("run_id"))
        tables["group_explanations"], tables["group_faithfulness"], tables["latents"] = e, f, lab
    tables["dimensions"] = _dimensions_frame(plan.vectors, lab)
    return tables, explained


def _copy_results(plan: ExportPlan, tmp: Path) -> dict[str, pd.DataFrame]:
    """The benchmark's co-movement, ranking and verdict tables (from the run store)."""
    out = {}
    for attr, name in [
        ("table", "benchmark_comovement"),
        ("ranking", "benchmark_ranking"),
        ("verdict", "benchmark_verdict"),
    ]:
        if plan.run.has_table(attr):
            out[name] = _copy_frame(getattr(plan.run.result, attr), tmp / f"{name}.parquet")
    return out


def _copy_backtest(plan: ExportPlan, tmp: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any] | None]:
    """The pairs backtest's summary, windows and daily tables, and where they came from."""
    if plan.pairs is None:
        return {}, None
    pairs, out = plan.pairs, {}
    for src in ("summary", "windows", "daily"):
        if (pairs / f"{src}.parquet").is_file():
            out[f"backtest_{src}"] = _copy_frame(
                pd.read_parquet(pairs / f"{src}.parquet"), tmp / f"backtest_{src}.parquet"
            )
    pm = json.loads((pairs / "manifest.json").read_text()) if (pairs / "manifest.json").is_file() else {}
    if pm.get("run_id"):  # a backtest folder written through staged_results: one run, or refuse
        check_run_tables(pairs, pm)
    return out, {
        "path": str(pairs),
        "config": pm.get("config", {}).get("name"),
        "window": [pm.get("config", {}).get("start"), pm.get("config", {}).get("end")],
    }


def _headline(plan: ExportPlan, explained: list[str]) -> tuple[str, str]:
    """The export's headline method (the benchmark's, or the text method a learned headline builds on) and its
    default grouping (the headline's explained grouping first)."""
    run, vectors = plan.run, plan.vectors
    headline = run.headline_method or next(iter(vectors))
    if headline not in vectors:  # a learned similarity: peers come from the text method it is built on
        base = next((m.feature_method for m in run.methods_of(plan.vintage) if m.name == headline), None)
        fallback = base if base in vectors else next(iter(vectors), headline)
        logger.warning(
            "export: the benchmark's headline method %s has no company vectors; %s is the export's "
            "headline method for peers (its groups are in the groups table)",
            headline,
            fallback,
        )
        headline = str(fallback)
    own = [g for g in explained if g.startswith(f"{headline}@")]
    return headline, (own or explained or [f"{headline}@{run.levels[0]}:density"])[0]


def _write_export(tmp: Path, plan: ExportPlan) -> dict:
    """Write every table, the manifest and the marker of an export into the (new, empty) folder ``tmp``."""
    import finsae

    tables, explained = _model_tables(plan)
    for name, table in tables.items():
        write_parquet(table, tmp / f"{name}.parquet")
    tables.update(_copy_results(plan, tmp))
    backtest, pairs_info = _copy_backtest(plan, tmp)
    tables.update(backtest)
    headline, default_grouping = _headline(plan, explained)
    vectors, manifest = plan.vectors, plan.manifest
    cfg = manifest["config"]
    explainable = sorted(
        (n for n, v in vectors.items() if v.info["interpretable"]),
        key=lambda n: vectors[n].info["features"] != "sae",
    )  # SAE methods first
    out_manifest = {
        "schema_version": SCHEMA_VERSION,
        "finsae_version": finsae.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "vintage": plan.vintage,
        "methods": {n: v.info for n, v in vectors.items()},
        "headline_method": headline,
        "explain_method": explainable[0] if explainable else None,
        "default_grouping": default_grouping,
        "explained_groupings": explained,
        "k": plan.k,
        "data": {
            "companies": manifest.get("data", {}).get("companies"),
            "prices": manifest.get("data", {}).get("prices"),
            "prices_window": manifest.get("prices_window"),
            "designs": [  # a text_as_of design: its snapshot vintage asof_<date>
                {**{key: d.get(key) for key in ("name", "start", "end", "text_vintage")},
                 **({"text_vintage": f"asof_{d['text_as_of']}"} if d.get("text_as_of") else {})}
                for d in cfg.get("designs", [])
            ],
            "n_companies": len(plan.universe),
            "n_with_text": int(len(plan.universe.descriptions(plan.vintage))),
        },
        "source": {"results": str(plan.results), "benchmark": plan.run.name, "backtest": pairs_info},
        "tables": {
            name: {
                "file": f"{name}.parquet",
                "rows": len(table),
                "columns": _column_types(table),
                "sha256": file_sha256(tmp / f"{name}.parquet"),
            }
            for name, table in tables.items()
        },
    }
    write_json(out_manifest, tmp / "manifest.json")
    write_text(
        f"finsae export, schema {SCHEMA_VERSION}: finsae export --overwrite replaces this folder\n",
        tmp / EXPORT_MARKER,
    )
    from finsae.export.schema import validate_export

    validate_export(tmp)
    return out_manifest
