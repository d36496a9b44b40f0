"""Write a versioned export of a model run: parquet tables plus ``manifest.json``, readable without finsae.

An export is made from a ``finsae benchmark`` results folder (its manifest names the universe, the text methods,
their feature sources and the transform each method used), optionally with a pairs backtest folder and
``finsae explain`` folders. Layout (schema version :data:`SCHEMA_VERSION`; columns in ``export_schema.json``):

* ``companies.parquet``: one row per company of the universe (ticker, name, codes, GICS names, ``has_text``).
* ``groups.parquet``: long table ``grouping, method, level, match, kind, group, ticker`` with every text grouping
  of the benchmark's formation vintage and the taxonomy groupings of the benchmark's levels.
* ``vectors.parquet``: ``method, ticker, dim, value``: the non-zero entries of each text method's unit-length
  company vectors (the method's transform fitted on the formation text). The cosine similarity of two companies
  is the sum of products of their entries with equal ``dim``.
* ``peers.parquet``: ``method, ticker, rank, peer, similarity``: each company's ``k`` most similar companies
  (ties broken by universe order).
* ``dimensions.parquet``: ``method, dim, label``: what a dimension of an interpretable method means (an SAE
  latent's label, a TF-IDF term); pair explanations name the shared dimensions with it.
* ``latents.parquet``, ``group_explanations.parquet``, ``group_faithfulness.parquet``: SAE latent labels and group
  explanations (with explanation folders).
* ``benchmark_*.parquet`` and ``backtest_*.parquet``: the benchmark's and the pairs backtest's result tables.
* ``.finsae-export``: the marker that says the folder is an export: ``overwrite=True`` (``--overwrite``) replaces
  only a folder with this marker (or an export manifest, for exports made before it) and nothing but export files.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from pathlib import Path

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
    """Refuse an export folder ``out`` that would lose or mix the user's files: ``out`` must not contain or lie
    inside an input folder (``inputs``: label -> folder); an existing ``out`` is replaced only with ``overwrite``,
    only when it is a finsae export, and only when it holds nothing but the export's own files."""
    target = out.resolve()
    for label, folder in inputs.items():
        if folder is None:
            continue
        src = Path(folder).resolve()
        if target == src or src.is_relative_to(target) or target.is_relative_to(src):
            raise ConfigError(f"export folder {out} and the {label} folder {folder} overlap (one contains the "
                              "other): write the export to a folder of its own")
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
        raise ConfigError(f"{out} is not a finsae export (no {EXPORT_MARKER} marker or export manifest.json): "
                          "--overwrite replaces only an export folder; choose another --out")
    strangers = [e for e in entries if e not in own]
    if strangers:
        raise ConfigError(f"{out} holds files that are not part of the export ({strangers[:5]}): move them away "
                          "or choose another --out; --overwrite deletes nothing but an export")


def _results_manifest(results: Path) -> dict:
    path = results / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"{results} is not a finsae benchmark results folder (no manifest.json); "
                          "run finsae benchmark --config ... first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    check_run_tables(results, manifest)  # every table from the run the manifest describes
    if not manifest.get("text_methods"):
        raise ConfigError(f"the benchmark in {results} has no text methods: nothing to export (peers and "
                          "similarities come from text features)")
    return manifest


def _pick_vintage(manifest: dict, vintage: str | None) -> str:
    available = list(manifest["text_methods"])
    if vintage is not None:
        if vintage not in available:
            raise ConfigError(f"the benchmark has no text groups for vintage {vintage!r}; available: {available}")
        return vintage
    for design in manifest["config"].get("designs", []):  # the first design's formation text: the headline
        if design.get("text_vintage") in available:
            return str(design["text_vintage"])
    return available[0]


def _universe(manifest: dict, companies: str | Path | None):
    from finsae.data import load_universe

    recorded = manifest.get("data", {}).get("companies", {})
    path = companies if companies is not None else recorded.get("path")
    if path is not None and not Path(path).is_file():
        raise DataError(f"the benchmark's companies table {path} is missing; pass the table it was run on")
    if path is not None and recorded.get("sha256") and file_sha256(path) != recorded["sha256"]:
        raise DataError(f"companies table {path} differs from the one the benchmark was run on "
                        f"(sha256 {recorded['sha256'][:12]}...): rerun finsae benchmark on it")
    return load_universe(path)


def _method_vectors(manifest: dict, universe, vintage: str, progress: bool | None) -> dict[str, tuple]:
    """Each text method's unit-length company vectors, recomputed from the (cached) features with the transform the
    benchmark used; a feature source that no longer matches the benchmark's is an error, not a silent change."""
    from finsae.config import TextMethodConfig
    from finsae.extract.documents import document_features
    from finsae.group.similarity import FeatureTransform

    configs = {m["name"]: TextMethodConfig(**m) for m in manifest["config"]["text_methods"]}
    used = manifest["text_methods"][vintage]
    features: dict[tuple, object] = {}
    out: dict[str, tuple] = {}
    for name, info in used.items():
        if name not in configs:  # learned similarities and price peers: not a vector per company (weights may be
            # negative, price peers have no text); their groupings are exported in the groups table
            logger.info("export: %s has no company vectors (a learned or price similarity); its groups are exported",
                        name)
            continue
        m = configs[name]
        key = (m.features, m.model, m.tl_name, str(m.sae), m.pooling)
        if key not in features:
            features[key] = document_features(universe, vintage, m.features, model=m.model, tl_name=m.tl_name,
                                              sae=m.sae, pooling=m.pooling, progress=progress)
        feats = features[key]
        recorded = (info.get("features") or {}).get("cache")
        now = feats.source.get("cache")
        if recorded and now and Path(str(recorded)).name != Path(str(now)).name:
            raise DataError(f"text method {name!r}: the benchmark used features {Path(str(recorded)).name}, but they now "
                            f"resolve to {Path(str(now)).name} (a different model, SAE or text): rerun finsae benchmark "
                            "before exporting")
        z = FeatureTransform(info["transform"], n_components=m.n_components).fit_transform(feats.matrix)
        order = np.argsort(universe.tickers.get_indexer(feats.tickers), kind="stable")  # universe order: ties
        tickers, z = feats.tickers[order], np.asarray(z)[order]
        # dimensions keep a meaning (a latent, a term) unless PCA mixed them; minilm's never had one
        names = feats.names if m.n_components is None and m.features in ("sae", "tfidf") else None
        out[name] = (tickers, sp.csr_matrix(np.asarray(z, dtype=np.float32)),
                     {"features": m.features, "transform": info["transform"], "clusterer": info.get("clusterer"),
                      "interpretable": names is not None, "dims": int(z.shape[1]), "companies": int(z.shape[0]),
                      "source": {k: str(v) for k, v in feats.source.items() if v is not None}}, names)
    return out


def _vectors_frame(vectors: dict[str, tuple]) -> pd.DataFrame:
    frames = []
    for name, (tickers, z, _, _) in vectors.items():
        coo = z.tocoo()
        frames.append(pd.DataFrame({"method": name, "ticker": tickers.to_numpy()[coo.row],
                                    "dim": coo.col.astype(np.int32), "value": coo.data.astype(np.float32)}))
    return pd.concat(frames, ignore_index=True)


def _peers_frame(vectors: dict[str, tuple], k: int) -> pd.DataFrame:
    frames = []
    for name, (tickers, z, _, _) in vectors.items():
        names = tickers.to_numpy()
        full = similarity_matrix(z)
        rows, peers, sims, ranks = [], [], [], []
        for i in range(len(names)):
            order, s = top_peers(full[i], i, k)
            rows.append(np.full(len(order), i))
            peers.append(order)
            sims.append(s)
            ranks.append(np.arange(1, len(order) + 1))
        r = np.concatenate(rows)
        frames.append(pd.DataFrame({"method": name, "ticker": names[r], "rank": np.concatenate(ranks).astype(np.int32),
                                    "peer": names[np.concatenate(peers)], "similarity": np.concatenate(sims)}))
    return pd.concat(frames, ignore_index=True)


def _dimensions_frame(vectors: dict[str, tuple], labels: pd.DataFrame | None) -> pd.DataFrame:
    """What each dimension of an interpretable method means: an SAE latent's label (``latent j`` without
    explanations) or a TF-IDF term."""
    frames = []
    by_latent = (pd.Series(labels["label"].to_numpy(), index=labels["latent"].to_numpy())
                 if labels is not None else None)
    for name, (_, z, info, names) in vectors.items():
        if names is None:
            continue
        dims = np.arange(z.shape[1])
        if info["features"] == "sae":
            text = [f"latent {j}" for j in dims]
            if by_latent is not None:
                text = [str(by_latent.get(j, t)) for j, t in zip(dims, text, strict=True)]
        else:
            text = [str(x) for x in names]
        frames.append(pd.DataFrame({"method": name, "dim": dims.astype(np.int32), "label": text}))
    if not frames:
        return pd.DataFrame({"method": pd.Series(dtype=object), "dim": pd.Series(dtype=np.int32),
                             "label": pd.Series(dtype=object)})
    return pd.concat(frames, ignore_index=True)


def _groups_frame(results: Path, manifest: dict, universe, vintage: str) -> pd.DataFrame:
    from finsae.group.taxonomy import taxonomy_labels

    path = results / f"groups_{vintage}.parquet"
    if not path.is_file():
        raise ConfigError(f"{results} has no {path.name}: rerun finsae benchmark (it writes the text groups)")
    text = pd.read_parquet(path).rename(columns={"name": "grouping"})
    text = text[["grouping", "method", "level", "match", "kind", "group", "ticker"]]
    levels = manifest["config"].get("granularity", {}).get("levels", [])
    frames = [text]
    for level in levels:
        labels = taxonomy_labels(universe, level).dropna()
        family = level.split("_")[0]
        frames.append(pd.DataFrame({"grouping": level, "method": _TAXONOMY_FAMILY.get(family, family), "level": level,
                                    "match": "taxonomy", "kind": "taxonomy", "group": labels.astype(str).to_numpy(),
                                    "ticker": labels.index.to_numpy()}))
    out = pd.concat(frames, ignore_index=True)
    return out.astype({c: object for c in out.columns})


def _explanation_frames(dirs: list[Path], run_id: str | None = None
                        ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    expl, faith, labels, names = [], [], None, []
    for d in dirs:
        info_path = d / "manifest.json"
        if not info_path.is_file():
            raise ConfigError(f"{d} is not a finsae explain folder (no manifest.json)")
        info = json.loads(info_path.read_text())
        made_from = info.get("results_run_id")
        if run_id and made_from and made_from != run_id:
            raise DataError(f"explanations {d} were made from another benchmark run ({made_from}) than the results "
                            f"being exported ({run_id}): rerun finsae explain, or leave them out")
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
            raise DataError(f"explanation folders {dirs[0]} and {d} use different latent labels (different SAEs?)")
    lead = ["grouping", "group", "rank", "latent", "label"]
    e = pd.concat(expl, ignore_index=True)
    e = e[lead + [c for c in e.columns if c not in lead]]
    f = pd.concat(faith, ignore_index=True)
    f = f[["grouping"] + [c for c in f.columns if c != "grouping"]]
    lab = labels.assign(top_tokens=labels["top_tokens"].map(lambda t: ", ".join(map(str, t))))
    return e, f, lab, names


def _copy_table(src: Path, dst: Path) -> pd.DataFrame:
    table = pd.read_parquet(src)
    for c in table.columns:  # mixed-type object columns (e.g. bool/None) stored as strings, readable anywhere
        if table[c].dtype == object and not table[c].map(lambda v: isinstance(v, str) or v is None).all():
            table[c] = table[c].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
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


def export_run(results: str | Path, out: str | Path, *, pairs: str | Path | None = None,
               explanations: list[str | Path] | str | Path | None = None, vintage: str | None = None, k: int = 20,
               companies: str | Path | None = None, overwrite: bool = False,
               progress: bool | None = None) -> ExportResult:
    """Export the benchmark results folder ``results`` (plus the pairs backtest folder ``pairs`` and ``finsae
    explain`` folders ``explanations``) to the folder ``out``; see the module docstring for the layout.

    The export is written to a temporary sibling folder and renamed into place at the end, so ``out`` is either
    the previous export or the complete new one, never a mix. An existing ``out`` is replaced only with
    ``overwrite`` and only when it is an export (see :func:`check_export_target`)."""
    t0 = time.perf_counter()
    results, out = Path(results), Path(out)
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    expl_dirs = [Path(e) for e in ([explanations] if isinstance(explanations, str | Path) else explanations or [])]
    manifest = _results_manifest(results)
    check_export_target(out, overwrite, {"results": results, "pairs": Path(pairs) if pairs is not None else None,
                                         **{f"explanations {i + 1}": d for i, d in enumerate(expl_dirs)}})
    vintage = _pick_vintage(manifest, vintage)
    universe = _universe(manifest, companies)
    vectors = _method_vectors(manifest, universe, vintage, progress)

    tmp = fresh_sibling(out, "partial")
    try:
        out_manifest = _write_export(tmp, results, manifest, universe, vintage, vectors, expl_dirs, pairs, k)
        check_export_target(out, overwrite, {})  # again: nothing may have appeared in it meanwhile
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("export of %s written to %s in %.1f s", results, out, time.perf_counter() - t0)
    return ExportResult(out, out_manifest)


def _write_export(tmp: Path, results: Path, manifest: dict, universe, vintage: str, vectors: dict[str, tuple],
                  expl_dirs: list[Path], pairs: str | Path | None, k: int) -> dict:
    """Write every table, the manifest and the marker of an export into the (new, empty) folder ``tmp``."""
    import finsae

    tables: dict[str, pd.DataFrame] = {}
    companies_frame = universe.to_frame().reset_index()
    texts = universe.descriptions(vintage).index
    companies_frame["has_text"] = companies_frame["ticker"].isin(texts)
    keep = ["ticker", "name", "cik", "sic", "gics", "gics_sector", "gics_industry_group", "gics_industry",
            "gics_sub_industry", "has_text"]
    companies_frame = companies_frame[[c for c in keep if c in companies_frame]]
    companies_frame = companies_frame.astype({c: object for c in companies_frame.columns if c != "has_text"})
    tables["companies"] = companies_frame
    tables["groups"] = _groups_frame(results, manifest, universe, vintage)
    tables["vectors"] = _vectors_frame(vectors)
    tables["peers"] = _peers_frame(vectors, k)
    explained: list[str] = []
    lab = None
    if expl_dirs:
        e, f, lab, explained = _explanation_frames(expl_dirs, manifest.get("run_id"))
        tables["group_explanations"], tables["group_faithfulness"], tables["latents"] = e, f, lab
    tables["dimensions"] = _dimensions_frame(vectors, lab)
    for name, table in tables.items():
        write_parquet(table, tmp / f"{name}.parquet")
    for src, name in [("comovement", "benchmark_comovement"), ("ranking", "benchmark_ranking"),
                      ("verdict", "benchmark_verdict")]:
        if (results / f"{src}.parquet").is_file():
            tables[name] = _copy_table(results / f"{src}.parquet", tmp / f"{name}.parquet")
    pairs_info = None
    if pairs is not None:
        pairs = Path(pairs)
        if not (pairs / "summary.parquet").is_file():
            raise ConfigError(f"{pairs} is not a finsae backtest results folder (no summary.parquet)")
        for src in ("summary", "windows", "daily"):
            if (pairs / f"{src}.parquet").is_file():
                tables[f"backtest_{src}"] = _copy_table(pairs / f"{src}.parquet", tmp / f"backtest_{src}.parquet")
        pm = json.loads((pairs / "manifest.json").read_text()) if (pairs / "manifest.json").is_file() else {}
        if pm.get("run_id"):  # a backtest folder written through staged_results: one run, or refuse
            check_run_tables(pairs, pm)
        pairs_info = {"path": str(pairs), "config": pm.get("config", {}).get("name"),
                      "window": [pm.get("config", {}).get("start"), pm.get("config", {}).get("end")]}

    cfg = manifest["config"]
    headline = cfg.get("headline_method") or cfg["text_methods"][0]["name"]
    if headline not in vectors:  # a learned similarity: peers come from the text method it is built on
        from finsae.config import LearnedConfig

        base = LearnedConfig(**cfg["learned"]).base_method(headline) if cfg.get("learned") else None
        fallback = base if base in vectors else next(iter(vectors), headline)
        logger.warning("export: the benchmark's headline method %s has no company vectors; %s is the export's "
                       "headline method for peers (its groups are in the groups table)", headline, fallback)
        headline = fallback
    own = [g for g in explained if g.startswith(f"{headline}@")]  # the headline's explained grouping first
    default_grouping = (own or explained or [f"{headline}@{cfg['granularity']['levels'][0]}:density"])[0]
    explainable = sorted((n for n, v in vectors.items() if v[2]["interpretable"]),
                         key=lambda n: vectors[n][2]["features"] != "sae")  # SAE methods first
    out_manifest = {
        "schema_version": SCHEMA_VERSION,
        "finsae_version": finsae.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "vintage": vintage,
        "methods": {n: v[2] for n, v in vectors.items()},
        "headline_method": headline,
        "explain_method": explainable[0] if explainable else None,
        "default_grouping": default_grouping,
        "explained_groupings": explained,
        "k": k,
        "data": {
            "companies": manifest.get("data", {}).get("companies"),
            "prices": manifest.get("data", {}).get("prices"),
            "prices_window": manifest.get("prices_window"),
            "designs": [{key: d.get(key) for key in ("name", "start", "end", "text_vintage")}
                        for d in cfg.get("designs", [])],
            "n_companies": len(universe),
            "n_with_text": int(len(texts)),
        },
        "source": {"results": str(results), "benchmark": cfg.get("name"), "backtest": pairs_info},
        "tables": {name: {"file": f"{name}.parquet", "rows": len(table), "columns": _column_types(table),
                          "sha256": file_sha256(tmp / f"{name}.parquet")}
                   for name, table in tables.items()},
    }
    write_json(out_manifest, tmp / "manifest.json")
    write_text(f"finsae export, schema {SCHEMA_VERSION}: finsae export --overwrite replaces this folder\n",
               tmp / EXPORT_MARKER)
    from finsae.export.schema import validate_export

    validate_export(tmp)
    return out_manifest
