"""The text side of the benchmark: features of a design's text vintage -> transforms -> (selected)
clusterer -> groups at every matched granularity, plus the hybrid and random groups.

Everything here is a function of the formation text and taxonomy codes, except the optional selection of
transform/clusterer, which reads returns of the selection window only (checked to end before any forward
design's window starts).
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finsae.config import BenchmarkConfig, TextMethodConfig
from finsae.data import Prices, Universe, log_returns
from finsae.errors import ConfigError, DataError, WindowError
from finsae.evaluate.choice import ParamChoice, choose_text_params
from finsae.evaluate.comovement import CorrelationMatrix, correlation_matrix
from finsae.extract.documents import TextFeatures, document_features, document_features_many
from finsae.group.cluster import cosine_distance_matrix, n_groups, pair_density
from finsae.group.peers import GranularityTarget, PeerGrouper, TextGrouping, granularity_targets
from finsae.group.similarity import FeatureTransform, largest_first
from finsae.group.taxonomy import taxonomy_labels
from finsae.pipeline.learned import LearnedMethod, build_learned

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextMethodResult:
    """One text method on one vintage: its features, the chosen transform/clusterer and the transformed
    rows."""

    config: TextMethodConfig
    features: TextFeatures
    transform: str
    clusterer: str
    z: np.ndarray
    selection: ParamChoice | None
    # cosine distance of z (clipped to [0, 2]); None for learned methods, whose group distance
    # (``learned.distance()``) is only needed to build their groups and is not kept (N x N each, #18)
    distance: np.ndarray | None
    rank_similarity: np.ndarray | None = None  # learned methods: the similarity chosen for neighbour ranking
    kind: str = "text"  # text / price / text+price
    learned: LearnedMethod | None = None

    @property
    def tickers(self) -> pd.Index:
        return self.features.tickers

    def similarity(self) -> np.ndarray:
        if self.rank_similarity is not None:
            return self.rank_similarity
        assert self.distance is not None  # set for every method that is not learned
        return 1.0 - self.distance

    def group_distance(self) -> np.ndarray:
        """The distance its groups are cut from (for a learned method, computed again from its group
        similarity)."""
        if self.distance is not None:
            return self.distance
        assert self.learned is not None  # only learned methods keep no distance
        return self.learned.distance()


@dataclass
class VintageGroups:
    """All text groupings of one vintage."""

    vintage: str
    targets: dict[str, GranularityTarget]
    methods: dict[str, TextMethodResult]
    groupings: list[TextGrouping]
    kinds: dict[str, str] = field(default_factory=dict)  # grouping name -> text / hybrid / random

    @staticmethod
    def name(g: TextGrouping) -> str:
        return f"{g.method}@{g.level}:{g.match}"

    def selections(self) -> pd.DataFrame:
        frames = [
            m.selection.table.assign(vintage=self.vintage) for m in self.methods.values() if m.selection
        ]
        frames = [f.astype({c: str for c in ("alpha", "beta") if c in f}) for f in frames]  # one parquet type
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def weights_frame(self) -> pd.DataFrame:
        """Per supervised method and feature: the learned weights of its group and neighbour similarities."""
        frames = []
        for name, m in self.methods.items():
            lm = m.learned
            if lm is None or lm.kind != "supervised":
                continue
            d = m.z.shape[1]
            names = m.features.names if len(m.features.names) == d else np.arange(d).astype(str)
            cos = np.ones(d)  # the unsupervised cosine: weight 1 on every feature
            frames.append(
                pd.DataFrame(
                    {
                        "method": name,
                        "base": lm.base,
                        "transform": self.methods[str(lm.base)].transform,
                        "latent": np.arange(d),
                        "feature": np.asarray(names, dtype=str),
                        "weight_groups": lm.group_weights if lm.group_weights is not None else cos,
                        "weight_rank": lm.rank_weights if lm.rank_weights is not None else cos,
                        "vintage": self.vintage,
                    }
                )
            )
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def neighbours_frame(self, k: int = 5, top: int = 3) -> pd.DataFrame:
        """Per supervised method and company: its ``k`` nearest companies by the neighbour similarity, each
        with the ``top`` latents of largest weighted contribution ``w_l z_il z_jl`` to the pair's
        similarity."""
        frames = []
        for name, m in self.methods.items():
            lm = m.learned
            if lm is None or lm.kind != "supervised":
                continue
            w = lm.rank_weights if lm.rank_weights is not None else np.ones(m.z.shape[1])
            s = lm.rank_similarity.copy()
            np.fill_diagonal(s, -np.inf)
            kk = min(k, len(s) - 1)
            nearest = largest_first(s, kk)  # = the stable argsort of -s, first kk
            latents, contributions = [], []
            d = m.z.shape[1]
            for lo in range(0, len(s), 128):  # 128 companies at a time: (128 x k) rows of terms
                i = np.arange(lo, min(lo + 128, len(s)))
                # row (i, r): w * z_i * z_j for the r-th peer j of company i
                terms = ((w * m.z[i])[:, None, :] * m.z[nearest[i]]).reshape(-1, d)
                best = largest_first(terms, top)
                latents.extend(best.tolist())
                contributions.extend(np.take_along_axis(terms, best, axis=1).tolist())
            tickers = np.asarray(m.tickers, dtype=object)
            frames.append(pd.DataFrame({
                "method": name,
                "ticker": np.repeat(tickers, kk),
                "rank": np.tile(np.arange(1, kk + 1), len(s)),
                "peer": tickers[nearest.ravel()],
                "similarity": np.take_along_axis(s, nearest, axis=1).ravel(),
                "latents": latents,
                "contributions": contributions,
            }).assign(vintage=self.vintage))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def labels_frame(self) -> pd.DataFrame:
        frames = [g.to_frame().assign(name=self.name(g), kind=self.kinds[self.name(g)], vintage=self.vintage)
                  for g in self.groupings]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _transform(features: TextFeatures, kind: str, n_components: int | None) -> np.ndarray:
    return FeatureTransform(kind, n_components=n_components).fit_transform(features.matrix)


def _feature_key(m: TextMethodConfig, vintage: str) -> tuple:
    return (m.features, m.model, m.tl_name, str(m.sae), m.pooling, vintage)


def method_features(cfg: BenchmarkConfig, universe: Universe, m: TextMethodConfig, vintage: str,
                    cache: dict[tuple, TextFeatures], progress: bool | None = None) -> TextFeatures:
    """The features of text method ``m`` on ``vintage``, memoised in ``cache``; the first SAE method asked for
    extracts every SAE method of ``cfg`` at once (one language-model pass per shard, #18), each cached under
    its own key; methods that differ only in grouping share their features."""
    key = _feature_key(m, vintage)
    if key not in cache and m.features == "sae":
        todo = {}
        for o in cfg.text_methods:
            k = _feature_key(o, vintage)
            if o.features == "sae" and k not in cache:
                todo[k] = {"model": o.model, "tl_name": o.tl_name, "sae": o.sae, "pooling": o.pooling}
        feats = document_features_many(  # shards encoded now keep the latents' token statistics: finsae
            universe, vintage, list(todo.values()), progress=progress,  # explain's labels then need no
            label_stats=True,  # language-model pass of their own
        )
        cache.update(zip(todo, feats, strict=True))
    if key not in cache:
        cache[key] = document_features(universe, vintage, m.features, model=m.model, tl_name=m.tl_name,
                                       sae=m.sae, pooling=m.pooling, progress=progress)
    return cache[key]


def _features_in_child(cfg: BenchmarkConfig, universe: Universe, vintages: list[str],
                       known: dict[tuple, TextFeatures], progress: bool | None) -> dict[tuple, TextFeatures]:
    """:meth:`TextStage.prefetch`'s child: every text method's features of ``vintages`` not in ``known``."""
    cache = dict(known)
    for v in vintages:
        for m in cfg.text_methods:
            method_features(cfg, universe, m, v, cache, progress)
    return {k: f for k, f in cache.items() if k not in known}


class TextStage:
    """Builds (and memoises per vintage) the text groupings of a benchmark config."""

    def __init__(
        self, cfg: BenchmarkConfig, universe: Universe, prices: Prices, *, progress: bool | None = None
    ) -> None:
        self.cfg, self.universe, self.prices, self.progress = cfg, universe, prices, progress
        self._vintages: dict[str, VintageGroups] = {}
        self._selection_corr: CorrelationMatrix | None = None
        self._feature_cache: dict[tuple, TextFeatures] = {}
        self._transform_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def selection_corr(self) -> CorrelationMatrix:
        if self._selection_corr is None:
            sel, ev = self.cfg.selection, self.cfg.evaluation
            try:
                panel = log_returns(self.prices, pd.Timestamp(sel.start), pd.Timestamp(sel.end),
                                    sel.frequency, tickers=self.universe.tickers,
                                    min_obs_share=ev.min_obs_share, max_drop_share=ev.max_drop_share)
            except WindowError as exc:
                raise WindowError(f"the selection window (selection.start..selection.end, where `select` "
                                  f"and learned methods choose): {exc}") from None
            self._selection_corr = correlation_matrix(panel)
        return self._selection_corr

    def check_selection_window(self, design_name: str, start: pd.Timestamp, look_ahead: bool) -> None:
        """A forward design may not choose parameters on returns that overlap its window."""
        selecting = any("select" in (m.transform, m.clusterer) for m in self.cfg.text_methods) \
            or self.cfg.learned is not None  # learned similarities are fitted on the selection window
        if selecting and not look_ahead and pd.Timestamp(self.cfg.selection.end) >= start:
            raise ConfigError(f"selection.end {self.cfg.selection.end} is not before design {design_name!r} "
                              f"starts ({start.date()}): the forward design would choose parameters on its "
                              "own returns")

    def vintage(self, vintage: str) -> VintageGroups:
        if vintage not in self._vintages:
            self._vintages[vintage] = self._build(vintage)
        return self._vintages[vintage]

    def prefetch(self, vintages: Sequence[str], *, in_child: bool | None = None) -> None:
        """Extract (or read from the caches) every text method's features of ``vintages`` now; building a
        vintage later reuses them.

        ``in_child``: compute them in a forked child process and take only the feature matrices back, so that
        the language model, torch and their allocator's residue never enter this process (#18: the
        benchmark's peak comes later, in the scoring windows, and sat ~0.7 GB higher with torch's memory
        still held). ``None`` (default): a child where the ``fork`` start method exists and torch is not
        imported here yet (forking a process that already runs torch's thread pools is unsafe, and with
        torch loaded there is little left to keep out). The features are the same either way."""
        todo = list(dict.fromkeys(vintages))
        if in_child is None:
            in_child = "fork" in multiprocessing.get_all_start_methods() and "torch" not in sys.modules
        if not in_child:
            self._feature_cache.update(_features_in_child(self.cfg, self.universe, todo, self._feature_cache,
                                                          self.progress))
            return
        ctx = multiprocessing.get_context("fork")
        logger.info("extracting the features of %s in a child process", ", ".join(todo))
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            try:
                got = pool.submit(_features_in_child, self.cfg, self.universe, todo,
                                  dict(self._feature_cache), self.progress).result()
            except BrokenProcessPool:
                raise DataError("the feature extraction's child process died before it finished (killed, "
                                "out of memory?); run with less memory in use, or extract in this process "
                                "(TextStage.prefetch(in_child=False))") from None
        self._feature_cache.update(got)

    def features(self, m: TextMethodConfig, vintage: str) -> TextFeatures:
        """The features of text method ``m`` on ``vintage``: those :meth:`prefetch` took, else extracted (or
        read from the caches) now and kept."""
        return method_features(self.cfg, self.universe, m, vintage, self._feature_cache, self.progress)

    def _transformed(
        self, m: TextMethodConfig, vintage: str, transform: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised rows and their cosine distance matrix, computed once per features and transform."""
        key = (*_feature_key(m, vintage), transform, m.n_components)
        if key not in self._transform_cache:
            z = _transform(self.features(m, vintage), transform, m.n_components)
            self._transform_cache[key] = (z, cosine_distance_matrix(z))
        return self._transform_cache[key]

    def _method(
        self, m: TextMethodConfig, vintage: str, targets: dict[str, GranularityTarget]
    ) -> TextMethodResult:
        feats = self.features(m, vintage)
        sel_cfg = self.cfg.selection
        transforms = list(m.transforms or sel_cfg.transforms) if m.transform == "select" else [m.transform]
        clusterers = list(sel_cfg.clusterers) if m.clusterer == "select" else [m.clusterer]
        zs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for t in transforms:
            try:
                zs[t] = self._transformed(m, vintage, t)
            except DataError as exc:  # e.g. log1p of signed embeddings: not a candidate for this method
                if m.transform != "select":
                    raise
                logger.info("%s: transform %s skipped (%s)", m.name, t, exc)
        selection = None
        if len(zs) * len(clusterers) > 1:
            level = sel_cfg.level
            target = targets.get(level) or granularity_targets(self.universe, feats.tickers, [level])[level]
            selection = choose_text_params(m.name, zs, feats.tickers, clusterers, target, sel_cfg.match,
                                           self.selection_corr(), seed=self.cfg.evaluation.seed)
            transform, clusterer = selection.transform, selection.clusterer
        else:
            transform, clusterer = next(iter(zs)), clusterers[0]
        z, distance = zs[transform]
        return TextMethodResult(m, feats, transform, clusterer, z, selection, distance)

    def _add_learned(
        self,
        vintage: str,
        methods: dict[str, TextMethodResult],
        targets: dict[str, GranularityTarget],
        groupings: list[TextGrouping],
        kinds: dict[str, str],
    ) -> None:
        """The learned methods (``finsae.pipeline.learned``) as methods with their groupings at every
        level."""
        cfg = self.cfg
        first = next(iter(methods.values()))
        sel_targets = dict(targets)
        if cfg.selection.level not in sel_targets:
            sel_targets.update(granularity_targets(self.universe, first.tickers, [cfg.selection.level]))
        learned = build_learned(
            cfg, self.prices, first.tickers, {n: m.z for n, m in methods.items()}, sel_targets
        )
        for name, lm in learned.items():
            base = methods[str(lm.base)] if lm.base in methods else (
                methods[str(learned[str(lm.base)].base)] if lm.base in learned else first)
            z = base.z if lm.kind == "supervised" else np.zeros((len(first.tickers), 0))
            variant = str(lm.group_params.get("variant"))
            methods[name] = TextMethodResult(
                base.config,
                base.features,
                variant,
                "average",
                z,
                ParamChoice(name, variant, "average", lm.candidates.assign(vintage=vintage, chosen=False)),
                None,
                lm.rank_similarity,
                "text" if lm.kind == "supervised" else lm.kind,
                lm,
            )
            grouper = PeerGrouper(None, first.tickers, "average", distance=lm.distance())
            for level in cfg.granularity.levels:
                for match in cfg.granularity.match:
                    g = grouper.grouping(name, targets[level], match)
                    g.params.update(transform=base.transform, variant=variant, kind=lm.kind)
                    groupings.append(g)
                    kinds[VintageGroups.name(g)] = "text" if lm.kind == "supervised" else lm.kind

    def _build(self, vintage: str) -> VintageGroups:
        cfg = self.cfg
        shared = self.universe.shared_descriptions(vintage) if cfg.text_methods else {}
        if shared:
            n = sum(len(t) for t in shared.values())
            text, tickers = max(shared.items(), key=lambda kv: len(kv[1]))
            logger.warning(
                "text vintage %s: %d companies share %d description(s) with another company, so every text "
                "method makes them identical (e.g. %r: %s)", vintage, n, len(shared),
                text if len(text) <= 60 else text[:57] + "...",
                ", ".join(tickers[:8]) + (f" and {len(tickers) - 8} more" if len(tickers) > 8 else ""),
            )
        levels = list(cfg.granularity.levels)
        methods: dict[str, TextMethodResult] = {}
        targets: dict[str, GranularityTarget] = {}
        groupings: list[TextGrouping] = []
        kinds: dict[str, str] = {}
        for m in cfg.text_methods:
            res = self._method(m, vintage, targets)
            if not targets:
                targets = granularity_targets(self.universe, res.tickers, levels)
            elif not res.tickers.equals(next(iter(methods.values())).tickers):
                raise DataError(f"text method {m.name!r} covers different companies than the others")
            methods[m.name] = res
            grouper = PeerGrouper(
                res.z, res.tickers, res.clusterer, seed=cfg.evaluation.seed, distance=res.distance
            )
            for level in levels:
                for match in cfg.granularity.match:
                    g = grouper.grouping(m.name, targets[level], match)
                    g.params.update(transform=res.transform)
                    groupings.append(g)
                    kinds[VintageGroups.name(g)] = "text"
        lc = cfg.learned
        if lc is not None and methods and (lc.vintages is None or vintage in lc.vintages):
            self._add_learned(vintage, methods, targets, groupings, kinds)
        if cfg.hybrid is not None and methods:
            base = methods[cfg.hybrid.method]
            parents = taxonomy_labels(self.universe, cfg.hybrid.parent)
            parent_groups = targets.get(cfg.hybrid.parent) or granularity_targets(
                self.universe, base.tickers, [cfg.hybrid.parent])[cfg.hybrid.parent]
            grouper = PeerGrouper(base.z, base.tickers, "average", parents=parents,
                                  distance=base.group_distance())
            name = f"{cfg.hybrid.method}_in_{cfg.hybrid.parent}"
            for level in levels:
                if targets[level].n_groups <= parent_groups.n_groups:
                    continue  # not finer than the parent level: nothing to sub-divide
                for match in cfg.granularity.match:
                    g = grouper.grouping(name, targets[level], match)
                    g.params.update(transform=base.transform)
                    groupings.append(g)
                    kinds[VintageGroups.name(g)] = "hybrid"
        if cfg.random_groups and methods:
            tickers = next(iter(methods.values())).tickers
            rng = np.random.default_rng(cfg.evaluation.seed)
            for level in levels:
                labels = taxonomy_labels(self.universe, level).reindex(tickers)
                shuffled = pd.Series(
                    labels.to_numpy()[rng.permutation(len(labels))], index=tickers, name="random"
                )
                codes = pd.factorize(shuffled)[0]
                g = TextGrouping("random", level, "same_sizes", shuffled.astype("string"), n_groups(codes),
                                 pair_density(codes), {"clusterer": "permuted " + level})
                groupings.append(g)
                kinds[VintageGroups.name(g)] = "random"
        # the transforms not chosen were candidates only (dense rows and a distance matrix each: a large share
        # of the benchmark's resident size); the chosen ones live on in the method results
        self._transform_cache.clear()  # its keys are per vintage: no other vintage reads them
        return VintageGroups(vintage, targets, methods, groupings, kinds)
