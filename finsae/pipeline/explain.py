"""Explain every group of one SAE grouping written by ``finsae benchmark``: latent labels, group explanations,
rules, faithfulness. Results go to ``<results>/explanations/<grouping>/``."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from finsae._io import write_json, write_parquet
from finsae.data import load_universe
from finsae.errors import ConfigError, DataError
from finsae.explain.groups import GroupExplanation, explain_group, explain_group_weighted, faithfulness
from finsae.explain.labels import LatentLabels, latent_labels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplanationResult:
    """Explanations of one grouping.

    Attributes:
        grouping: the grouping's name (as in the benchmark's ``groups_<vintage>.parquet``).
        groups: one row per (group, explaining latent) with the group's rule, precision and recall.
        faithfulness: one row per group.
        labels: the latent labels used.
        output_dir: where it was written.
    """

    grouping: str
    groups: pd.DataFrame
    faithfulness: pd.DataFrame
    labels: LatentLabels
    output_dir: Path | None

    @property
    def faithful_share(self) -> float:
        f = self.faithfulness
        return float(f["faithful"].mean()) if len(f) else float("nan")

    def to_frame(self) -> pd.DataFrame:
        return self.groups.copy()


def _grouping_info(results: Path, name: str) -> tuple[pd.DataFrame, str, dict]:
    files = sorted(results.glob("groups_*.parquet"))
    if not files:
        raise ConfigError(f"{results} has no groups_*.parquet: run finsae benchmark with text methods first")
    for f in files:
        table = pd.read_parquet(f)
        rows = table[table["name"] == name]
        if len(rows):
            params: dict = {}
            como = results / "comovement.parquet"
            if como.is_file():
                c = pd.read_parquet(como)
                hit = c[(c["method"] == name) & c["params"].notna()] if "params" in c else c.iloc[0:0]
                if len(hit):
                    params = json.loads(hit["params"].iloc[0])
            return rows, str(rows["vintage"].iloc[0]), params
    names = sorted(pd.concat(pd.read_parquet(f)["name"] for f in files).unique())
    raise ConfigError(f"no grouping {name!r} in {results}; available e.g. {[n for n in names if 'sae' in n][:8]}")


def _learned_weights(results: Path, vintage: str, method: str, n_latents: int) -> np.ndarray | None:
    """The group similarity's per-latent weights of a learned method (``learned_weights_<vintage>.parquet``)."""
    path = results / f"learned_weights_{vintage}.parquet"
    if not path.is_file():
        return None
    w = pd.read_parquet(path)
    w = w[w["method"] == method].sort_values("latent")
    if w.empty:
        return None
    if len(w) != n_latents:
        raise DataError(f"{path}: {len(w)} weights for method {method!r}, the features have {n_latents} latents")
    return w["weight_groups"].to_numpy(dtype=np.float64)


def _weighted(e: GroupExplanation, z: np.ndarray, weights: np.ndarray, members: np.ndarray, features: object,
              labels: pd.Series, top: int) -> GroupExplanation:
    """``e`` with its latents replaced by those of largest weighted-contribution excess
    (:func:`finsae.explain.groups.explain_group_weighted`), with their in/out document frequencies."""
    from dataclasses import replace

    from finsae.explain.groups import _activity

    table = explain_group_weighted(z, weights, members, labels=labels, top=top)
    a = _activity(features)[:, table["latent"].to_numpy()]
    p_in = np.asarray(a[members].mean(axis=0)).ravel()
    p_out = np.asarray(a[~members].mean(axis=0)).ravel()
    smooth = 1.0 / len(members)
    lift = (p_in + smooth) / (p_out + smooth)
    table = table.assign(p_in=p_in, p_out=p_out, lift=lift, score=table["excess"])
    return replace(e, latents=table)


def explain_grouping(results: str | Path, grouping: str, *, companies: str | Path | None = None,
                     sae: str | Path | None = None, model: str = "gemma-3-270m", tl_name: str | None = None,
                     top: int = 8, min_size: int = 3, draws: int = 50, seed: int = 0,
                     write: bool = True, progress: bool | None = None) -> ExplanationResult:
    """Explain every group (of at least ``min_size`` members) of the SAE grouping ``grouping`` found in the
    benchmark results folder ``results``."""
    from finsae.extract.documents import document_features
    from finsae.extract.model import load_model
    from finsae.extract.sae import DEFAULT_SAE_DIR, SAEHandle
    from finsae.group.similarity import FeatureTransform

    t0 = time.perf_counter()
    results = Path(results)
    rows, vintage, params = _grouping_info(results, grouping)
    universe = load_universe(companies)
    feats = document_features(universe, vintage, "sae", model=model, tl_name=tl_name, sae=sae, progress=progress)
    texts = universe.descriptions(vintage)
    handle = SAEHandle(sae or DEFAULT_SAE_DIR)
    labels = latent_labels(load_model(model, tl_name=tl_name, lazy=True), handle, list(texts), list(texts.index),
                           progress=progress)
    label_series = labels.labels()
    transform = params.get("transform", "raw")
    z = FeatureTransform(transform).fit_transform(feats.matrix)
    weights = _learned_weights(results, vintage, str(rows["method"].iloc[0]), z.shape[1])
    group_of = pd.Series(rows["group"].to_numpy(), index=rows["ticker"]).reindex(feats.tickers)
    sizes = group_of.value_counts()
    groups = sizes[sizes >= min_size].index
    if len(groups) == 0:
        raise DataError(f"grouping {grouping!r} has no group of {min_size} or more companies with text")
    expl_rows, faith_rows = [], []
    for g in tqdm(groups, desc=f"explain {grouping}", unit="group", disable=None if progress is None else not progress):
        members = (group_of == g).to_numpy()
        e = explain_group(feats.matrix, members, labels=label_series, top=top, group=str(g))
        if weights is not None:  # a learned similarity: latents by their weighted contribution to it
            e = _weighted(e, z, weights, members, feats.matrix, label_series, top)
        f = faithfulness(z, feats.matrix, members, e.latents["latent"].to_numpy()[:min(5, len(e.latents))],
                         draws=draws, seed=seed, group=str(g), weights=weights)
        member_list = list(feats.tickers[members])
        expl_rows.append(e.to_frame().assign(rank=np.arange(len(e.latents)), members=", ".join(member_list)))
        faith_rows.append({**f.to_dict(), "members": ", ".join(member_list)})
    table = pd.concat(expl_rows, ignore_index=True)
    faith = pd.DataFrame(faith_rows)
    out = results / "explanations" / re.sub(r"[^A-Za-z0-9_.@-]+", "_", grouping)
    result = ExplanationResult(grouping, table, faith, labels, out if write else None)
    if write:
        write_parquet(table, out / "groups.parquet")
        write_parquet(faith, out / "faithfulness.parquet")
        write_parquet(labels.table.reset_index(drop=True), out / "latent_labels.parquet")
        write_parquet(labels.examples, out / "latent_examples.parquet")
        try:  # which benchmark run the groups came from: export refuses explanations of another run
            run_id = json.loads((results / "manifest.json").read_text()).get("run_id")
        except (OSError, ValueError):
            run_id = None
        write_json({"grouping": grouping, "results_run_id": run_id, "vintage": vintage, "transform": transform,
                    "groups": len(groups),
                    "min_size": min_size, "top": top, "draws": draws, "faithful_share": result.faithful_share,
                    "seconds": round(time.perf_counter() - t0, 1), "features": feats.source}, out / "manifest.json")
    logger.info("%s: %d groups explained, %.0f%% faithful", grouping, len(groups), 100 * result.faithful_share)
    return result
