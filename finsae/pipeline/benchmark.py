"""The co-movement benchmark: every grouping of a config, in every design window and return frequency.

One correlation matrix per (design, frequency); every grouping is scored on it by
:func:`finsae.evaluate.comovement.comovement`. The results folder is written into a fresh hidden sibling
(tables after each window) and swapped in whole at the end (:func:`finsae._io.staged_results`): the folder is
the previous run or the new one, never a mix; every table carries the run id of the manifest. A failed run
leaves the folder as it was and keeps the windows it finished in ``<folder>.failed-<run id>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from finsae._io import (
    check_results_target,
    run_manifest,
    staged_results,
    write_json,
    write_parquet,
    write_text,
)
from finsae.config import BenchmarkConfig, DesignConfig, Frequency
from finsae.data import Prices, Universe, load_prices, load_universe, log_returns, priced_tickers
from finsae.errors import ConfigError, DataError, WindowError
from finsae.evaluate.comovement import (
    CoMovement,
    comovement,
    correlation_matrix,
    encode_labels,
    paired_difference,
)
from finsae.evaluate.ranking import (
    SpearmanReference,
    neighbour_correlation,
    same_group_similarity,
    topk_neighbours,
)
from finsae.evaluate.results import BenchmarkResult, DesignInfo
from finsae.extract.model import release_free_memory
from finsae.group.taxonomy import TAXONOMIES, taxonomy_labels
from finsae.pipeline.store import build_run
from finsae.pipeline.textgroups import TextStage, VintageGroups

logger = logging.getLogger(__name__)

#: Default cap on the windows scored at once (``run_benchmark(threads=None)``).
DEFAULT_MAX_THREADS = 4


def _run_window(
    universe: Universe,
    prices: Prices,
    info: DesignInfo,
    frequency: Frequency,
    cfg: BenchmarkConfig,
    progress: tqdm,
    text: VintageGroups | None = None,
) -> dict[str, list]:
    ev = cfg.evaluation
    # with text methods, every method (taxonomies too) is scored on the same companies: those with text
    tickers = universe.tickers if text is None else next(iter(text.methods.values())).tickers
    try:
        panel = log_returns(prices, info.start, info.end, frequency, tickers=tickers,
                            min_obs_share=ev.min_obs_share, max_drop_share=ev.max_drop_share)
    except WindowError as exc:
        raise WindowError(f"design {info.name!r} ({frequency}): {exc}") from None
    corr = correlation_matrix(panel)
    keys = {"design": info.name, "frequency": frequency}
    out: dict[str, list] = {
        "rows": [],
        "strata": [],
        "ranking": [],
        "verdict": [],
        "cold_start": [],
        "two_way": [],
        "ranking_two_way": [],
    }
    labels_by_name: dict[str, pd.Series] = {}
    scored: dict[tuple, CoMovement] = {}  # methods that group alike (e.g. a blend that chose price alone)

    def score(name: str, labels: pd.Series, extra: dict) -> None:
        progress.set_postfix_str(f"{info.name}/{frequency}/{name}")
        labels = labels[labels.index.isin(tickers)]
        # count-matched text groups: no permutation null (their giant groups make it slow and it says nothing
        # the density-matched rows do not)
        draws = 0 if extra.get("match") == "count" and not ev.null_for_count_matched else ev.null_draws
        if extra.get("method_kind") == "random":
            draws = 0  # a random grouping against random groupings: nothing to learn
        # every figure of comovement() is a function of the window, the group codes (factorised in the
        # window's ticker order, so the same partition under other group names has the same codes), the
        # dropped count, the draws and the seed: a partition already scored in this window is not scored again
        codes, _, n_dropped = encode_labels(corr, labels)
        key = (hashlib.blake2b(codes.tobytes(), digest_size=16).digest(), n_dropped, draws)
        if key in scored:
            result = dataclasses.replace(scored[key], method=name)
        else:
            result = scored[key] = comovement(corr, labels, null_draws=draws,
                                              bootstrap_draws=ev.bootstrap_draws, seed=ev.seed, method=name)
        if result.n_pairs == 0:  # its figures would be NaN: say so instead of reporting them
            raise DataError(f"grouping {name!r} puts no two of the {len(panel.tickers)} companies with "
                            f"{frequency} returns in design {info.name!r} into one group: nothing to score; "
                            "use a coarser level or more companies")
        out["rows"].append({**keys, "n_periods": panel.n_periods, **extra, **result.to_dict()})
        out["strata"].append(result.strata.assign(**keys, method=name))
        labels_by_name[name] = labels
        progress.update()

    for name in cfg.taxonomies:
        score(name, taxonomy_labels(universe, name),
              {"method_kind": "taxonomy", "text_look_ahead": False, "level": name, "match": "taxonomy"})
    for name in cfg.granularity.levels:  # matched levels are references even when not listed as taxonomies
        if name not in labels_by_name and text is not None:
            score(name, taxonomy_labels(universe, name),
                  {"method_kind": "taxonomy", "text_look_ahead": False, "level": name, "match": "taxonomy"})
    if text is not None:
        for g in text.groupings:
            name = text.name(g)
            score(name, g.labels, {"method_kind": text.kinds[name], "text_look_ahead": info.text_look_ahead,
                                   "text_method": g.method, "level": g.level, "match": g.match,
                                   "formation_groups": g.n_groups, "formation_density": g.density,
                                   "target_groups": text.targets[g.level].n_groups,
                                   "target_density": text.targets[g.level].density, "matched": g.matched,
                                   "params": json.dumps(g.params, default=str)})
        lists = _neighbour_lists(cfg, universe, corr, text)
        out["ranking"] = _ranking_rows(cfg, universe, corr, text, keys, info, lists)
        out["verdict"] = _verdicts(cfg, corr, pd.DataFrame(out["rows"]), labels_by_name, keys)
        if any(m.learned is not None for m in text.methods.values()):
            out["cold_start"] = _cold_start(cfg, universe, corr, text, keys)
            if frequency == "monthly":  # daily: one correlation matrix per draw is too slow
                out["two_way"] = _two_way(cfg, panel, corr, text, labels_by_name, keys)
                out["ranking_two_way"] = _two_way_ranking(cfg, panel, corr, text, keys, lists)
    out["dropped"] = [panel.dropped.rename("reason").reset_index().assign(**keys)]
    return out


def _neighbour_lists(cfg: BenchmarkConfig, universe: Universe, corr,
                     text: VintageGroups) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every text method's and every ranked taxonomy's nearest companies (:func:`topk_neighbours`, enough for
    the ranking table and the learned methods' ``rank_k``), taken once for both tables."""
    k = max([*cfg.ranking.ks, cfg.learned.rank_k if cfg.learned is not None else 0])
    tickers = next(iter(text.methods.values())).tickers
    focal = np.zeros(0, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for name, m in text.methods.items():
        focal, out[name] = topk_neighbours(m.similarity(), tickers, corr, k)
    for name in dict.fromkeys([*cfg.taxonomies, *cfg.granularity.levels]):
        if name != "all_pairs":  # ties at random, seeded: a 0/1 similarity has nothing else to order them by
            sim = same_group_similarity(taxonomy_labels(universe, name), tickers)
            focal, out[name] = topk_neighbours(sim, tickers, corr, k, tie_seed=cfg.evaluation.seed)
    return focal, out


def _ranking_rows(cfg: BenchmarkConfig, universe: Universe, corr, text: VintageGroups, keys: dict,
                  info: DesignInfo,
                  lists: tuple[np.ndarray, dict[str, np.ndarray]] | None = None) -> list[dict]:
    ks = tuple(cfg.ranking.ks)
    rows = []
    first = next(iter(text.methods.values()))
    tickers = first.tickers  # every text method covers the same companies (those with text in the vintage)
    ref = SpearmanReference(tickers, corr)
    n_companies = int(tickers.isin(corr.tickers).sum())
    focal, neighbours = lists if lists is not None else _neighbour_lists(cfg, universe, corr, text)
    for name, m in text.methods.items():
        sim = m.similarity()
        topk = neighbour_correlation(corr, focal, neighbours[name], ks)
        rows.append(
            {
                **keys,
                "method": name,
                "method_kind": m.kind,
                "text_look_ahead": info.text_look_ahead,
                # a learned method's neighbours come from the candidate its neighbour objective chose
                "transform": m.learned.rank_params.get("variant", m.transform) if m.learned else m.transform,
                "n_companies": n_companies,
                **{f"top{k}": v for k, v in topk.items()},
                "spearman": ref.spearman(sim),  # learned methods: also the similarity their groups come from
                "spearman_group_similarity": ref.spearman(m.learned.group_similarity)
                if m.learned
                else np.nan,
            }
        )
    for name in dict.fromkeys([*cfg.taxonomies, *cfg.granularity.levels]):  # on the same companies
        if name == "all_pairs":
            continue
        sim = same_group_similarity(taxonomy_labels(universe, name), tickers)
        topk = neighbour_correlation(corr, focal, neighbours[name], ks)
        rows.append({**keys, "method": name, "method_kind": "taxonomy", "text_look_ahead": False,
                     "transform": "same group", "n_companies": n_companies,
                     **{f"top{k}": v for k, v in topk.items()}, "spearman": ref.spearman(sim)})
    return rows


def _cold_start(
    cfg: BenchmarkConfig, universe: Universe, corr, text: VintageGroups, keys: dict
) -> list[dict]:
    """Cold start (``finsae.pipeline.learned.cold_start_rows``) against the taxonomies and unsupervised
    text."""
    from finsae.pipeline.learned import cold_start_rows

    tickers = next(iter(text.methods.values())).tickers
    levels = list(cfg.granularity.levels)
    refs = {lv: same_group_similarity(taxonomy_labels(universe, lv), tickers) for lv in levels}
    refs.update({n: m.similarity() for n, m in text.methods.items() if m.learned is None})
    learned = {n: m.learned for n, m in text.methods.items() if m.learned is not None}
    return cold_start_rows(learned, refs, {lv: taxonomy_labels(universe, lv) for lv in levels}, tickers, corr,
                           tuple(cfg.ranking.ks), keys, seed=cfg.evaluation.seed)


def _two_way(cfg: BenchmarkConfig, panel, corr, text: VintageGroups, labels: dict[str, pd.Series],
             keys: dict) -> list[dict]:
    """Two-way paired differences at every density-matched level: the headline against the level's taxonomy,
    price peers and every other text method; every text + price blend against price peers."""
    from finsae.evaluate.inference import two_way_differences

    lc = cfg.learned
    assert lc is not None  # two-way differences are made for learned methods only
    headline = cfg.headline_method or cfg.text_methods[0].name
    names = list(text.methods)
    comparisons, meta = [], []
    for level in cfg.granularity.levels:
        def g(method: str, level: str = level) -> str:
            return f"{method}@{level}:density"

        pairs = [(g(headline), level, "taxonomy")]
        pairs += [(g(headline), g(n), "text" if text.methods[n].kind == "text" else text.methods[n].kind)
                  for n in names if n != headline]
        pairs += [(g(n), g("price_peers"), "blend vs price") for n in names
                  if text.methods[n].kind == "text+price" and "price_peers" in text.methods]
        for a, b, what in pairs:
            if a in labels and b in labels:
                comparisons.append((a, b))
                meta.append({"level": level, "comparison": what})
    res = two_way_differences(panel.returns, corr, labels, comparisons, draws=lc.two_way_draws,
                              block=lc.block_months, seed=cfg.evaluation.seed)
    return [{**keys, **m, **r.to_dict()} for m, r in zip(meta, res, strict=True)]


def _two_way_ranking(cfg: BenchmarkConfig, panel, corr, text: VintageGroups, keys: dict,
                     lists: tuple[np.ndarray, dict[str, np.ndarray]]) -> list[dict]:
    """Two-way paired differences of top-``rank_k`` neighbour correlation (the neighbour objective of the
    learned methods): the headline against every matched taxonomy level, price peers and every other text
    method; every text + price blend against price peers."""
    from finsae.evaluate.inference import two_way_topk_differences

    lc = cfg.learned
    assert lc is not None  # made for learned methods only
    headline = cfg.headline_method or cfg.text_methods[0].name
    k = lc.rank_k
    focal, neighbours = lists  # the ranking table's (_neighbour_lists)
    levels = list(dict.fromkeys(cfg.granularity.levels))
    if len(focal) < k + 1:
        return []
    comparisons, meta = [], []
    if headline in text.methods:
        comparisons += [(headline, lv) for lv in levels]
        meta += [{"comparison": "taxonomy"}] * len(levels)
        for n, m in text.methods.items():
            if n != headline:
                comparisons.append((headline, n))
                meta.append({"comparison": "text" if m.kind == "text" else m.kind})
    if "price_peers" in text.methods:
        for n, m in text.methods.items():
            if m.kind == "text+price":
                comparisons.append((n, "price_peers"))
                meta.append({"comparison": "blend vs price"})
    if not comparisons:
        return []
    res = two_way_topk_differences(panel.returns, corr, focal, neighbours, comparisons, k=k,
                                   draws=lc.two_way_draws, block=lc.block_months, seed=cfg.evaluation.seed)
    return [{**keys, **mt, **r.to_dict()} for mt, r in zip(meta, res, strict=True)]


def _verdicts(
    cfg: BenchmarkConfig, corr, rows: pd.DataFrame, labels: dict[str, pd.Series], keys: dict
) -> list[dict]:
    """Per matched granularity: the leader by pair-weighted correlation; the paired difference (company
    bootstrap CI) to the taxonomy defining the granularity of the best text grouping and of the headline
    method's grouping."""
    out = []
    draws, seed = cfg.ranking.difference_draws, cfg.evaluation.seed
    headline = cfg.headline_method or (cfg.text_methods[0].name if cfg.text_methods else None)
    comparable = rows[
        rows["method_kind"].isin(["text", "hybrid"]) & rows["matched"].fillna(False).astype(bool)
    ]
    for level in cfg.granularity.levels:
        ref = rows[(rows["method"] == level)].iloc[0]
        for match in cfg.granularity.match:
            row = {**keys, "level": level, "match": match, "taxonomy_pair_weighted": ref["pair_weighted"],
                   "taxonomy_pair_density": ref["pair_density"]}
            head = rows[
                (rows["text_method"] == headline) & (rows["level"] == level) & (rows["match"] == match)
            ]
            if len(head):
                h = head.iloc[0]
                d = paired_difference(corr, labels[h["method"]], labels[level], draws=draws, seed=seed)
                row.update(
                    headline=h["method"],
                    headline_pair_weighted=h["pair_weighted"],
                    headline_matched=bool(h["matched"]),
                    headline_difference=d.difference,
                    headline_ci_low=d.ci_low,
                    headline_ci_high=d.ci_high,
                    headline_separated=d.separated,
                )
            cands = comparable[(comparable["level"] == level) & (comparable["match"] == match)]
            if cands.empty:  # no text grouping reached the target granularity: nothing comparable to report
                out.append({**row, "leader": None, "best_text": None})
                continue
            best_text = cands.loc[cands["pair_weighted"].idxmax()]
            leader = best_text["method"] if best_text["pair_weighted"] > ref["pair_weighted"] else level
            diff = d if row.get("headline") == best_text["method"] else paired_difference(
                corr, labels[best_text["method"]], labels[level], draws=draws, seed=seed)
            out.append({**row, "leader": leader, "best_text": best_text["method"],
                        "n_candidates": len(cands), "best_text_pair_weighted": best_text["pair_weighted"],
                        "best_text_pair_density": best_text["pair_density"],
                        "difference": diff.difference, "difference_ci_low": diff.ci_low,
                        "difference_ci_high": diff.ci_high, "separated": diff.separated,
                        "text_look_ahead": bool(best_text["text_look_ahead"])})
    return out


def as_of_designs(designs: list[DesignConfig], universe: Universe) -> tuple[Universe, list[DesignConfig]]:
    """``designs`` with every ``text_as_of`` date resolved to its snapshot vintage ``asof_<date>`` (each
    company's latest text published on or before the date, :meth:`finsae.data.Universe.snapshot`), and the
    universe holding those vintages."""
    out = []
    for d in designs:
        if d.text_as_of is not None:
            name = as_of_vintage(d.text_as_of)
            if name not in universe.vintages:
                universe = universe.snapshot(pd.Timestamp(d.text_as_of), name=name)
            d = d.model_copy(update={"text_vintage": name})
        out.append(d)
    return universe, out


def as_of_vintage(date: object) -> str:
    """The name of the snapshot vintage of ``date`` (``asof_YYYY-MM-DD``)."""
    return f"asof_{pd.Timestamp(date):%Y-%m-%d}"


def rolling_designs(
    cfg: BenchmarkConfig, universe: Universe, prices: Prices
) -> tuple[Universe, list[DesignConfig]]:
    """The designs of ``cfg.rolling``, and the universe with one as-of snapshot vintage per formation date."""
    out = []
    for r in cfg.rolling:
        names = r.vintages if r.vintages is not None else list(universe.vintages)
        undated = [v for v in names if universe.vintage(v).published is None]
        if undated:
            logger.warning(
                "rolling %s: vintages %s have no publication date and are skipped", r.name, undated
            )
        published = sorted({p for v in names if (p := universe.vintage(v).published) is not None})
        if not published:
            raise DataError(f"rolling design {r.name!r}: none of the vintages {names} has a publication date")
        if r.every_months is not None:
            dates = list(pd.date_range(published[0], prices.end, freq=pd.DateOffset(months=r.every_months)))
        else:
            dates = list(published)
        for k, date in enumerate(dates):
            start = date + pd.Timedelta(days=1)
            ends = [prices.end]
            if r.horizon_months is not None:
                ends.append(start + pd.DateOffset(months=r.horizon_months) - pd.Timedelta(days=1))
            if k + 1 < len(dates):
                ends.append(dates[k + 1])
            end = min(ends)
            if end < start + pd.DateOffset(months=r.min_months) - pd.Timedelta(days=1):
                logger.warning("rolling %s: formation on %s leaves less than %d months of prices; skipped",
                               r.name, date.date(), r.min_months)
                continue
            vintage = f"{r.name}_asof_{date:%Y-%m-%d}"
            universe = universe.snapshot(date, [v for v in names if v not in undated], name=vintage)
            out.append(
                DesignConfig(
                    name=f"{r.name}:{date:%Y-%m-%d}",
                    text_vintage=vintage,
                    start=start.date(),
                    end=end.date(),
                    frequencies=r.frequencies,
                    note=f"Rolling: each company's latest text published by {date.date()}.",
                )
            )
    return universe, out


def _text_provenance(stage: TextStage | None) -> dict:
    """Per vintage and text method: what produced the features and what the selection chose."""
    if stage is None:
        return {}
    return {v: {name: {"features": m.features.source, "transform": m.transform, "clusterer": m.clusterer,
                       "companies": len(m.tickers)} for name, m in groups.methods.items()}
            for v, groups in stage._vintages.items()}


def _check_sae_folders(cfg: BenchmarkConfig) -> None:
    """Every SAE method's SAE folder is readable (cfg.json and weights): checked before data or models
    load."""
    if not any(m.features == "sae" for m in cfg.text_methods):
        return
    from finsae.extract.sae import DEFAULT_SAE_DIR, SAEHandle

    for m in cfg.text_methods:
        if m.features == "sae":
            try:
                SAEHandle(m.sae or DEFAULT_SAE_DIR)
            except DataError as exc:
                raise DataError(f"text method {m.name!r}: {exc}") from None


def _check_levels(cfg: BenchmarkConfig, universe: Universe) -> None:
    """Every taxonomy level the config uses has codes in the universe, or a ConfigError names the key that
    asks for it (defaults included: ``selection.level`` is ``gics_industry`` unless set) and the levels the
    universe can serve."""
    uses = [("taxonomies", t) for t in cfg.taxonomies]
    if cfg.text_methods:
        uses += [("granularity.levels", lv) for lv in cfg.granularity.levels]
    choose = any("select" in (m.transform, m.clusterer) for m in cfg.text_methods) or cfg.learned is not None
    if choose:
        uses.append(("selection.level", cfg.selection.level))
    if cfg.hybrid is not None:
        uses.append(("hybrid.parent", cfg.hybrid.parent))
    codes = universe.companies
    usable = [t for t, (col, _) in TAXONOMIES.items() if col and codes[col].notna().any()]
    for key, level in uses:
        column = TAXONOMIES[level][0]
        if column and codes[column].isna().all():
            section, _, field = key.partition(".")
            given = getattr(cfg, section)
            implicit = section in ("selection", "hybrid") and field not in given.model_fields_set
            raise ConfigError(
                f"{key}: {level!r}{' (the default)' if implicit else ''} needs {column!r} codes, and "
                f"universe {universe.source} has none; use levels it has codes for: {usable or 'none'}"
            )


def run_benchmark(
    cfg: BenchmarkConfig, output_dir: str | Path | None = None, *, write: bool = True,
    threads: int | None = None, extract_in_child: bool | None = None,
) -> BenchmarkResult:
    """Run ``cfg``; write ``comovement.parquet``, ``size_strata.parquet``, ``dropped.parquet``, ``table.md``
    and ``manifest.json`` into ``output_dir`` (default ``cfg.output_dir / cfg.name``) unless
    ``write=False``.

    ``threads``: how many (design, frequency) windows are scored at once once the text groups are built
    (default: one per CPU, at most :data:`DEFAULT_MAX_THREADS`: each window holds its own N x N matrices and
    calls multi-threaded BLAS; 1: one after another). The tables do not depend on it.

    ``extract_in_child``: extract the text features in a forked child process (default: where ``fork`` exists
    and torch is not loaded yet; :meth:`~finsae.pipeline.textgroups.TextStage.prefetch`). The tables do not
    depend on it."""
    from finsae.report.markdown import benchmark_markdown

    t0 = time.perf_counter()
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    _check_sae_folders(cfg)
    universe = load_universe(cfg.data.companies)
    _check_levels(cfg, universe)
    prices = load_prices(
        cfg.data.prices,
        nonpositive=cfg.data.nonpositive_prices,
        bad_ticks=cfg.data.bad_ticks,
        splits=cfg.data.splits,
        sparse_dates=cfg.data.sparse_dates,
    )
    priced_tickers(universe.tickers, prices, f"universe {universe.source}")  # no common ticker: say so
    universe, fixed = as_of_designs(cfg.designs, universe)
    universe, rolling = rolling_designs(cfg, universe, prices)
    design_cfgs = [*fixed, *rolling]
    if not design_cfgs:
        raise DataError("no design has a window with prices: nothing to evaluate")
    designs = tuple(DesignInfo.from_config(d, universe) for d in design_cfgs)
    lc = cfg.learned
    if lc is not None and cfg.text_methods and lc.two_way_draws and "density" not in cfg.granularity.match:
        logger.warning("learned.two_way_draws: the two-way differences of pair-weighted correlation compare "
                       "density-matched groupings, and granularity.match has no density: none")
    if lc is not None and lc.vintages is not None and cfg.text_methods:
        used = list(dict.fromkeys(d.text_vintage for d in designs))
        unknown = [v for v in lc.vintages if v not in used]
        if unknown:  # its learned methods (maybe the headline) would silently not be built
            raise ConfigError(f"learned.vintages {unknown} names no design's text vintage (the designs use "
                              f"{used}; a text_as_of design's is asof_<date>): fix it, or leave the key out "
                              "to learn on every vintage")
    out = Path(output_dir) if output_dir is not None else cfg.output_dir / cfg.name
    if write:
        check_results_target(out)  # before any work: the folder must be ours to replace
    per_vintage: dict[str, dict[str, pd.DataFrame]] = {"groups": {}, "learned_weights": {}, "neighbours": {}}
    acc: dict[str, list] = {
        "rows": [],
        "strata": [],
        "dropped": [],
        "ranking": [],
        "verdict": [],
        "cold_start": [],
        "two_way": [],
        "ranking_two_way": [],
    }
    text_stage = TextStage(cfg, universe, prices) if cfg.text_methods else None
    total = sum(len(d.frequencies) for d in design_cfgs) * len(cfg.taxonomies)

    def result() -> BenchmarkResult:
        def frame(key: str) -> pd.DataFrame:
            items = acc[key]
            if key in ("strata", "dropped"):
                return pd.concat(items, ignore_index=True) if items else pd.DataFrame()
            return pd.DataFrame(items)

        selections = pd.concat([v.selections() for v in text_stage._vintages.values()], ignore_index=True) \
            if text_stage is not None and text_stage._vintages else pd.DataFrame()
        return BenchmarkResult(cfg.name, frame("rows"), frame("strata"), frame("dropped"), designs,
                               out if write else None, frame("ranking"), frame("verdict"), selections,
                               frame("cold_start"), frame("two_way"), frame("ranking_two_way"))

    with (staged_results(out) if write else contextlib.nullcontext((Path(), ""))) as (folder, run_id), \
            tqdm(total=total, desc=f"benchmark {cfg.name}", unit="grouping", disable=None) as progress:
        windows: list[tuple[DesignInfo, Frequency, VintageGroups | None]] = []
        if text_stage is not None:
            for info in designs:  # before any work
                text_stage.check_selection_window(info.name, info.start, info.text_look_ahead)
            # every vintage's features first (one language-model pass per vintage), while no built vintage is
            # held: an extraction's working set never sits on top of a vintage's learned similarities (#18);
            # by default in a child process, so that the model's memory never enters this one
            text_stage.prefetch([info.text_vintage for info in designs], in_child=extract_in_child)
            gc.collect()  # an in-process extraction's models and batches are gone: hand the freed heap back
            release_free_memory()  # before the scoring windows' matrices are made (the step's peak is there)
        for design, info in zip(design_cfgs, designs, strict=True):
            text = None
            if text_stage is not None:
                text = text_stage.vintage(info.text_vintage)
                progress.total += len(design.frequencies) * (len(text.groupings) + len(
                    [lv for lv in cfg.granularity.levels if lv not in cfg.taxonomies]))
                if write:
                    v = info.text_vintage
                    per_vintage["groups"][v] = text.labels_frame()
                    write_parquet(per_vintage["groups"][v], folder / f"groups_{v}.parquet", run_id)
                    weights = text.weights_frame()
                    if len(weights):  # learned per-latent weights: what `finsae explain` attributes with
                        per_vintage["learned_weights"][v] = weights
                        per_vintage["neighbours"][v] = text.neighbours_frame()
                        write_parquet(weights, folder / f"learned_weights_{v}.parquet", run_id)
                        write_parquet(per_vintage["neighbours"][v], folder / f"neighbours_{v}.parquet",
                                      run_id)
            windows += [(info, frequency, text) for frequency in design.frequencies]

        def window(job: tuple[DesignInfo, Frequency, VintageGroups | None]) -> dict[str, list]:
            return _run_window(universe, prices, job[0], job[1], cfg, progress, job[2])

        # the windows are independent (each its own correlations and seeded draws; the text groups are built
        # above and only read): run side by side, taken in order, the same tables as one after another
        n_threads = max(1, min(threads or min(os.cpu_count() or 1, DEFAULT_MAX_THREADS), len(windows)))
        with ThreadPoolExecutor(n_threads) if n_threads > 1 else contextlib.nullcontext() as pool:
            results = pool.map(window, windows) if pool is not None else map(window, windows)
            for (_, _, text), got in zip(windows, results, strict=True):
                for key, items in got.items():
                    acc[key] += items
                if write:  # after every window: a later failure keeps them in <out>.failed-<run id>
                    res = result()
                    write_parquet(res.table, folder / "comovement.parquet", run_id)
                    write_parquet(res.strata, folder / "size_strata.parquet", run_id)
                    write_parquet(res.dropped, folder / "dropped.parquet", run_id)
                    if text is not None:
                        write_parquet(res.ranking, folder / "ranking.parquet", run_id)
                        write_parquet(res.verdict, folder / "verdict.parquet", run_id)
                        write_parquet(res.selection, folder / "selection.parquet", run_id)
                        if len(res.cold_start):
                            write_parquet(res.cold_start, folder / "cold_start.parquet", run_id)
                            write_parquet(res.two_way, folder / "two_way.parquet", run_id)
                            write_parquet(res.ranking_two_way, folder / "ranking_two_way.parquet", run_id)
        res = result()
        if write:
            write_text(benchmark_markdown(res), folder / "table.md")
            manifest = run_manifest(cfg.model_dump(mode="json"), {"companies": universe.source,
                                                                  "prices": prices.source},
                                    time.perf_counter() - t0, run_id=run_id, n_companies=len(universe),
                                    prices_window=[str(prices.start.date()), str(prices.end.date())],
                                    text_methods=_text_provenance(text_stage))
            # the run store: every text method's spec and vectors, for explain, export, report and backtests
            build_run(cfg, res, universe, text_stage._vintages if text_stage is not None else {},
                      manifest["data"], run_id, per_vintage).save(folder, tables=False)
            write_json(manifest, folder / "manifest.json")
    if write:
        logger.info("benchmark %s written to %s", cfg.name, out)
    return res
