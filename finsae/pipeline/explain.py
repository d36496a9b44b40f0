"""Explain every group of one SAE grouping written by ``finsae benchmark``: latent labels, group explanations,
rules, faithfulness. Results go to ``<results>/explanations/<grouping>/``.

Everything about the grouping comes from the benchmark's run store
(:class:`finsae.pipeline.store.BenchmarkRun`): its labels, the method whose features formed it (a hybrid's
text method, a learned method's base), that method's SAE, model and pooling, the unit vectors it was grouped
by and its raw features, and a learned method's weights. A grouping that was not formed from SAE latents is
refused, saying why.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from finsae._io import write_json, write_parquet
from finsae.errors import ConfigError, DataError
from finsae.explain.groups import GroupExplanation, explain_group, explain_group_weighted, faithfulness
from finsae.explain.labels import LABEL_RULE, latent_labels
from finsae.explain.results import ExplanationResult
from finsae.extract.spec import ExtractionSpec
from finsae.pipeline.store import BenchmarkRun, FeatureRecord, GroupingSpec, MethodSpec

logger = logging.getLogger(__name__)

__all__ = ["ExplanationResult", "explain_grouping"]


def _sae_method(run: BenchmarkRun, g: GroupingSpec) -> tuple[MethodSpec, FeatureRecord]:
    """The SAE method whose latents formed grouping ``g``, or a ConfigError saying why there is none."""
    try:
        spec = run.features_of(g)
    except ConfigError as exc:
        raise ConfigError(f"cannot explain {g.name!r} by SAE latents: {exc}") from None
    ex = spec.extraction
    if ex is None or ex.features != "sae":
        what = "no text features" if ex is None else f"{ex.features} features"
        raise ConfigError(
            f"cannot explain {g.name!r} by SAE latents: its method {spec.name!r} was formed from "
            f"{what}, not SAE latents (finsae explain explains groupings of SAE methods)"
        )
    if spec.n_components is not None:
        raise ConfigError(
            f"cannot explain {g.name!r} by SAE latents: its method {spec.name!r} reduces its features "
            f"to {spec.n_components} PCA components, whose dimensions are not latents"
        )
    return spec, ex


def _check_given(
    ex: FeatureRecord, grouping: str, sae: str | Path | None, model: str | None, tl_name: str | None
) -> None:
    """An SAE, model or architecture passed by the caller must be the one the grouping's features came
    from."""
    if sae is not None and Path(sae).resolve() != Path(str(ex.sae)).resolve():
        raise ConfigError(
            f"grouping {grouping!r} was formed with the SAE {ex.sae}, not {sae}: leave the SAE out "
            "(the run store knows it) or explain a grouping of that SAE"
        )
    if model is not None and model != ex.model:
        raise ConfigError(
            f"grouping {grouping!r} was formed with features of model {ex.model!r}, not {model!r}"
        )
    if tl_name is not None and tl_name != ex.tl_name:
        raise ConfigError(f"grouping {grouping!r} was formed with tl_name {ex.tl_name!r}, not {tl_name!r}")


def _learned_weights(run: BenchmarkRun, vintage: str, method: str, n_latents: int) -> np.ndarray | None:
    """The group similarity's per-latent weights of a learned method
    (``learned_weights_<vintage>.parquet``)."""
    w = run.learned_weights.get(vintage)
    if w is None or w.empty:
        return None
    w = w[w["method"] == method].sort_values("latent")
    if w.empty:
        return None
    if len(w) != n_latents:
        raise DataError(
            f"learned_weights_{vintage}.parquet: {len(w)} weights for method {method!r}, the features "
            f"have {n_latents} latents"
        )
    return w["weight_groups"].to_numpy(dtype=np.float64)


#: How a learned (weighted) similarity's group latents are ordered (``explain_group_weighted(order=...)``):
#: ``evidence``, the latents the members share (positive weight, positive excess) before those they lack
#: (negative weight, positive excess). Written on 2026-12-04 after reading ``make run``'s ``sae_sup`` groups,
#: 14 of whose 30 top latents were ones their members lack (e.g. ``retail / stores / treatment``, weight -87),
#: and before any explanation under it was computed; one variant. Until then: ``excess`` alone.
WEIGHTED_ORDER = "evidence"


def _weighted(
    e: GroupExplanation,
    z: np.ndarray,
    weights: np.ndarray,
    members: np.ndarray,
    features: object,
    labels: pd.Series,
    top: int,
) -> GroupExplanation:
    """``e`` with its latents replaced by the weighted-contribution ones in :data:`WEIGHTED_ORDER`
    (:func:`finsae.explain.groups.explain_group_weighted`), with their in/out document frequencies."""
    from finsae.explain.groups import _activity

    table = explain_group_weighted(z, weights, members, labels=labels, top=top, order=WEIGHTED_ORDER)
    a = _activity(features)[:, table["latent"].to_numpy()]
    p_in = np.asarray(a[members].mean(axis=0)).ravel()
    p_out = np.asarray(a[~members].mean(axis=0)).ravel()
    smooth = 1.0 / len(members)
    lift = (p_in + smooth) / (p_out + smooth)
    table = table.assign(p_in=p_in, p_out=p_out, lift=lift, score=table["excess"])
    return replace(e, latents=table)


def explain_grouping(
    results: str | Path,
    grouping: str,
    *,
    companies: str | Path | None = None,
    sae: str | Path | None = None,
    model: str | None = None,
    tl_name: str | None = None,
    top: int = 8,
    min_size: int = 3,
    draws: int = 50,
    seed: int = 0,
    write: bool = True,
    progress: bool | None = None,
) -> ExplanationResult:
    """Explain every group (of at least ``min_size`` members) of the SAE grouping ``grouping`` found in the
    benchmark results folder ``results``, with the SAE, model, vectors and features that formed it (from the
    run store). ``sae``, ``model`` and ``tl_name`` are optional checks: given, they must be the grouping's
    own."""
    from finsae.extract.model import load_model
    from finsae.extract.sae import SAEHandle

    t0 = time.perf_counter()
    results = Path(results)
    run = BenchmarkRun.load(results)
    g = run.grouping(grouping)
    spec, ex = _sae_method(run, g)
    _check_given(ex, grouping, sae, model, tl_name)
    vintage = g.vintage
    rows = run.labels(g)
    vectors = run.vectors(spec)
    feats = run.features(spec)
    z = vectors.matrix
    universe = run.universe(companies)
    texts = universe.descriptions(vintage)
    if not pd.Index(texts.index).equals(vectors.tickers):
        raise DataError(
            f"the {vintage!r} descriptions of {universe.source} are not the companies the benchmark "
            f"grouped ({len(texts)} vs {len(vectors.tickers)}): pass the companies table it ran on"
        )
    handle = SAEHandle(str(ex.sae))
    if handle.d_sae != ex.d_sae or (ex.sae_digest is not None and handle.digest != ex.sae_digest):
        raise DataError(
            f"the SAE in {ex.sae} is not the one that formed {grouping!r} (d_sae {handle.d_sae} vs "
            f"{ex.d_sae}, or other weights): restore it or rerun finsae benchmark"
        )
    loaded = load_model(str(ex.model), tl_name=ex.tl_name, lazy=True)
    if ex.model_id is not None and loaded.model_id != ex.model_id:
        raise DataError(
            f"model {ex.model!r} now resolves to {loaded.model_id}, but the features of {grouping!r} "
            f"came from {ex.model_id}: rerun finsae benchmark"
        )
    # the labels' token statistics come from the shards of the grouping's own feature extraction: stored by
    # the benchmark's pass, so no language-model pass is needed here (#18)
    extraction = ExtractionSpec.from_fields({
        "model": ex.model, "tl_name": ex.tl_name, "sae": ex.sae, "pooling": ex.pooling,
        "max_length": ex.max_length, "overlap": ex.overlap, "batch_tokens": ex.batch_tokens,
        "dtype": ex.dtype, "compile": ex.compile,
    })
    labels = latent_labels(loaded, handle, list(texts), list(texts.index), spec=extraction, progress=progress)
    label_series = labels.labels()
    weights = _learned_weights(run, vintage, g.method, z.shape[1])
    group_of = pd.Series(rows["group"].to_numpy(), index=rows["ticker"]).reindex(vectors.tickers)
    sizes = group_of.value_counts()
    groups = sizes[sizes >= min_size].index
    if len(groups) == 0:
        raise DataError(f"grouping {grouping!r} has no group of {min_size} or more companies with text")
    expl_rows, faith_rows = [], []
    for grp in tqdm(
        groups, desc=f"explain {grouping}", unit="group", disable=None if progress is None else not progress
    ):
        members = (group_of == grp).to_numpy()
        e = explain_group(feats.matrix, members, labels=label_series, top=top, group=str(grp))
        if weights is not None:  # a learned similarity: latents by their weighted contribution to it
            e = _weighted(e, z, weights, members, feats.matrix, label_series, top)
        f = faithfulness(
            z,
            feats.matrix,
            members,
            e.latents["latent"].to_numpy()[: min(5, len(e.latents))],
            draws=draws,
            seed=seed,
            group=str(grp),
            weights=weights,
        )
        member_list = list(vectors.tickers[members])
        expl_rows.append(e.to_frame().assign(rank=np.arange(len(e.latents)), members=", ".join(member_list)))
        faith_rows.append({**f.to_dict(), "members": ", ".join(member_list)})
    table = pd.concat(expl_rows, ignore_index=True)
    faith = pd.DataFrame(faith_rows)
    out = results / "explanations" / re.sub(r"[^A-Za-z0-9_.@-]+", "_", grouping)
    result = ExplanationResult(
        grouping, table, faith, labels, out if write else None, spec.name, ex.sae, run.run_id
    )
    if write:
        write_parquet(table, out / "groups.parquet")
        write_parquet(faith, out / "faithfulness.parquet")
        write_parquet(labels.table.reset_index(drop=True), out / "latent_labels.parquet")
        write_parquet(labels.examples, out / "latent_examples.parquet")
        # which benchmark run the groups came from: export refuses explanations of another run
        write_json(
            {
                "grouping": grouping,
                "results_run_id": run.run_id,
                "vintage": vintage,
                "transform": spec.transform,
                "method": spec.name,
                "sae": ex.sae,
                "sae_digest": ex.sae_digest,
                "d_sae": ex.d_sae,
                "groups": len(groups),
                "min_size": min_size,
                "top": top,
                "draws": draws,
                "faithful_share": result.faithful_share,
                "content_top_share": result.content_top_share,
                "label_rule": LABEL_RULE,
                "weighted_order": WEIGHTED_ORDER,
                "top_label_kinds": result.top_label_kinds,
                "label_kinds": result.label_kinds,
                "seconds": round(time.perf_counter() - t0, 1),
                "features": ex.source,
            },
            out / "manifest.json",
        )
    logger.info(
        "%s: %d groups explained with %s (%d latents), %.0f%% faithful, %.0f%% with a content-word top label",
        grouping,
        len(groups),
        ex.sae,
        ex.d_sae or 0,
        100 * result.faithful_share,
        100 * result.content_top_share,
    )
    return result


def load_explanation(folder: str | Path) -> ExplanationResult:
    """An explanation folder written by :func:`explain_grouping`, as an :class:`ExplanationResult`."""
    from finsae.explain.labels import LatentLabels

    folder = Path(folder)
    info_path = folder / "manifest.json"
    if not info_path.is_file() or not (folder / "groups.parquet").is_file():
        raise ConfigError(f"{folder} is not a finsae explain folder (no manifest.json or groups.parquet)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{info_path} is not valid JSON: {exc}") from None
    labels_path, examples_path = folder / "latent_labels.parquet", folder / "latent_examples.parquet"
    table = pd.read_parquet(labels_path) if labels_path.is_file() else pd.DataFrame()
    examples = pd.read_parquet(examples_path) if examples_path.is_file() else pd.DataFrame()
    return ExplanationResult(
        str(info.get("grouping", "")),
        pd.read_parquet(folder / "groups.parquet"),
        pd.read_parquet(folder / "faithfulness.parquet"),
        LatentLabels(table, examples),
        folder,
        info.get("method"),
        info.get("sae"),
        info.get("results_run_id"),
    )
