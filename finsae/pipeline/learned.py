"""Similarities that read pre-formation returns: supervised feature weights, price peers, text + price blends,
and their cold-start versions. Every choice is made inside the selection window (which ends before formation).

**Time split.** The selection window ``[S, E]`` (e.g. 2010-01..2017-05) is cut at ``split``: correlations of
``[S, split]`` fit, those of ``(split, E]`` score. A candidate is scored twice on the scoring part: its groups
(average linkage on the similarity, cut to the selection level's pair density) by pair-weighted correlation,
and its ranking by the mean top-``k`` neighbour correlation. The best candidate by each objective is refitted
on all of ``[S, E]``: the first forms the method's groups, the second its neighbour ranking (neighbours and
groups need different objectives: weights that rank all pairs well can pick worse nearest neighbours).

* ``<m>_sup`` (supervised, :mod:`finsae.group.supervised`): candidates ``alpha x prior`` and the unsupervised
  cosine of the same rows, for every feature kind alike.
* ``<m>_nn``: the same with non-negative weights (``nonneg``), so that a feature adds to a pair's similarity
  only where both companies have it.
* ``price_peers``: the correlation over ``[S, E]`` (nothing to choose), :mod:`finsae.evaluate.pricepeers`.
* ``<m>_price``: ``(1 - beta) std(text) + beta std(price)``; ``beta`` chosen like ``alpha``, the text part
  being method ``m`` as chosen for the same objective (refitted on ``[S, split]`` while scoring).

**Cold start** (companies without price history): the companies are split into ``folds`` (a seeded
permutation); for fold ``f`` the weights are fitted on the pairs among the other companies only (same
hyperparameters; the learned feature set is a function of the text only), and fold ``f``'s companies are
scored against all companies with those weights. ``cold_rank`` holds, row by row, each company's similarity to
everyone under the weights fitted without its fold; ``cold_groups`` the groups of every company under each
fold's weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from finsae.config import BenchmarkConfig, LearnedConfig
from finsae.data import Prices, log_returns
from finsae.errors import DataError, WindowError
from finsae.evaluate.comovement import CorrelationMatrix, comovement, correlation_matrix, within_pairs
from finsae.evaluate.pricepeers import aligned_correlation, blend_similarity, price_similarity
from finsae.evaluate.ranking import topk_neighbour_correlation
from finsae.group.peers import GranularityTarget, PeerGrouper, label_codes
from finsae.group.supervised import PairSystem, similarity_distance

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreWindows:
    """Correlations of the selection window: the fitting part, the scoring part and the whole."""

    fit: CorrelationMatrix
    score: CorrelationMatrix
    full: CorrelationMatrix


def pre_windows(cfg: BenchmarkConfig, prices: Prices, tickers: pd.Index) -> PreWindows:
    """Monthly (``selection.frequency``) correlations of ``[start, split]``, ``(split, end]`` and
    ``[start, end]`` of the selection window, on ``tickers``."""
    sel, ev, lc = cfg.selection, cfg.evaluation, cfg.learned
    assert lc is not None
    start, end, split = pd.Timestamp(sel.start), pd.Timestamp(sel.end), pd.Timestamp(lc.split)
    if not start < split < end:
        raise DataError(f"learned.split {lc.split} must lie inside the selection window "
                        f"{sel.start}..{sel.end}")

    def corr(a: pd.Timestamp, b: pd.Timestamp, what: str) -> CorrelationMatrix:
        try:
            panel = log_returns(prices, a, b, sel.frequency, tickers=tickers, min_obs_share=ev.min_obs_share,
                                max_drop_share=1.0)
        except WindowError as exc:
            raise WindowError(f"learned similarities, {what}: {exc}") from None
        if panel.n_periods < 3 or panel.returns.shape[1] < 2:  # every ticker needs 3 returns to correlate
            raise WindowError(f"learned similarities, {what}: {a.date()}..{b.date()} has "
                              f"{panel.n_periods} {sel.frequency} period(s) and {panel.returns.shape[1]} "
                              "companies with enough returns; it needs at least 3 periods: move "
                              "learned.split or widen the selection window")
        return correlation_matrix(panel)

    return PreWindows(corr(start, split, "fit part of the time split (selection.start..learned.split)"),
                      corr(split + pd.Timedelta(days=1), end,
                           "scoring part of the time split (learned.split..selection.end)"),
                      corr(start, end, "selection window (selection.start..selection.end)"))


@dataclass(frozen=True)
class LearnedMethod:
    """One learned similarity on one vintage's companies.

    Attributes:
        name, kind (``supervised`` / ``price`` / ``text+price``), base (the text method it builds on).
        group_similarity, rank_similarity: N x N, from the candidates chosen by each objective.
        group_params, rank_params: those candidates.
        candidates: every candidate with its two scores on the scoring part of the selection window.
        group_weights, rank_weights: the per-feature weights (supervised only), fitted on the whole window.
        cold_rank: row ``i`` = similarity of ``i`` to everyone with weights fitted without ``i``'s fold.
        cold_groups: per fold, (held-out mask, {level: integer group labels of every company under that fold's
            weights, cut to the level's pair density}).
    """

    name: str
    kind: str
    base: str | None
    tickers: pd.Index
    group_similarity: np.ndarray
    rank_similarity: np.ndarray
    group_params: dict
    rank_params: dict
    candidates: pd.DataFrame
    group_weights: np.ndarray | None = None
    rank_weights: np.ndarray | None = None
    cold_rank: np.ndarray | None = None
    cold_groups: list[tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=list)

    def distance(self) -> np.ndarray:
        return similarity_distance(self.group_similarity)

    def to_frame(self) -> pd.DataFrame:
        return self.candidates.copy()


def _groups(name: str, s: np.ndarray, tickers: pd.Index, target: GranularityTarget, match: str) -> pd.Series:
    return PeerGrouper(None, tickers, "average", distance=similarity_distance(s)).grouping(name, target,
                                                                                          match).labels


def _score_groups(name: str, s: np.ndarray, tickers: pd.Index, target: GranularityTarget, match: str,
                  corr: CorrelationMatrix) -> float:
    """Pair-weighted correlation on ``corr`` of the groups of ``s`` at ``target``."""
    labels = _groups(name, s, tickers, target, match)
    return float(comovement(corr, labels, null_draws=0, bootstrap_draws=0, method=name).pair_weighted)


def _score_rank(s: np.ndarray, tickers: pd.Index, corr: CorrelationMatrix, k: int) -> float:
    return float(topk_neighbour_correlation(s, tickers, corr, (k,))[k])


def _choose(table: pd.DataFrame) -> tuple[int, int]:
    """Row positions of the best candidate by groups and by neighbours (ties: first)."""
    return (int(np.argmax(table["score_groups"].fillna(-np.inf).to_numpy())),
            int(np.argmax(table["score_rank"].fillna(-np.inf).to_numpy())))


def _folds(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each of ``n`` companies: a seeded permutation dealt round-robin."""
    out = np.empty(n, dtype=np.int64)
    out[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return out


def _fold_weights(system: PairSystem, c: np.ndarray, cand: dict) -> np.ndarray | None:
    """The candidate's weights fitted on ``system``'s companies (None: the unsupervised cosine); the returns'
    side is kept on the fold's system (tag ``train``) for the fold's other candidates."""
    if cand["prior"] == "none":
        return None
    nonneg = bool(cand.get("nonneg", False))
    return system.solve(system.rhs(c, str(cand["prior"]), nonneg, tag="train"), cand["alpha"],
                        nonneg=nonneg)[0]


class LearnedStage:
    """Builds the learned methods of one vintage (see the module docstring)."""

    def __init__(self, cfg: BenchmarkConfig, windows: PreWindows, tickers: pd.Index,
                 targets: dict[str, GranularityTarget]) -> None:
        if cfg.learned is None:
            raise DataError("the config has no learned section")
        self.cfg, self.lc, self.w, self.tickers = cfg, cfg.learned, windows, pd.Index(tickers)
        self.targets, self.target = targets, targets[cfg.selection.level]
        self.match, self.seed = cfg.selection.match, cfg.evaluation.seed
        self.c_fit = aligned_correlation(windows.fit, self.tickers)
        self.c_full = aligned_correlation(windows.full, self.tickers)
        self._cosine_scores: dict[str, tuple[float, float]] = {}  # per base: the plain cosine's two scores

    def _candidate_rows(self, name: str) -> list[dict]:
        return [{"method": name, "window_fit": f"{self.w.fit.start.date()}..{self.w.fit.end.date()}",
                 "window_score": f"{self.w.score.start.date()}..{self.w.score.end.date()}",
                 "level": self.target.level, "match": self.match, "rank_k": self.lc.rank_k}]

    def supervised(self, name: str, base: str, z: np.ndarray, *, nonneg: bool = False,
                   system: PairSystem | None = None, cold: bool = True) -> tuple[LearnedMethod, PairSystem]:
        """``<m>_sup`` (``nonneg``: ``<m>_nn``) on features ``z``; ``system``: the pair system already built
        for ``z`` (shared by the signed and non-negative fits); ``cold``: also the cold-start folds (else
        :meth:`cold_start` adds them, for several methods of one system at once)."""
        lc = self.lc
        if system is None:
            system = PairSystem.build(z, lc.max_features)
        if not nonneg:
            system.decompose()
        cosine = z @ z.T
        kind = "non-negative ridge" if nonneg else "ridge"
        flag = {"nonneg": True} if nonneg else {}  # signed candidates keep their old records
        cands: list[dict] = [{"variant": "unsupervised cosine", "alpha": np.inf, "prior": "none", **flag}]
        cands += [{"variant": f"{kind} alpha={a:g} prior={p}", "alpha": a, "prior": p, **flag}
                  for p in lc.priors for a in lc.alphas]
        rows = []
        # one per prior for every alpha, kept on the system (tag: the window) for the other sign's fits
        rhs = {p: system.rhs(self.c_fit, p, nonneg, tag="fit") for p in lc.priors}
        free: dict[str, np.ndarray | None] = {p: None for p in lc.priors}  # warm start from the last alpha
        for cand in cands:
            if cand["prior"] == "none":
                s = cosine
                if base not in self._cosine_scores:  # the same matrix for the signed and non-negative fits
                    self._cosine_scores[base] = (
                        _score_groups(name, s, self.tickers, self.target, self.match, self.w.score),
                        _score_rank(s, self.tickers, self.w.score, lc.rank_k))
                pw, topk = self._cosine_scores[base]
            else:
                w, _, _ = system.solve(rhs[cand["prior"]], cand["alpha"], nonneg=nonneg,
                                       free=free[cand["prior"]])
                free[cand["prior"]] = w > 0
                s = system.similarity(w)
                pw = _score_groups(name, s, self.tickers, self.target, self.match, self.w.score)
                topk = _score_rank(s, self.tickers, self.w.score, lc.rank_k)
            rows.append({**self._candidate_rows(name)[0], **cand, "score_groups": pw, "score_rank": topk})
        table = pd.DataFrame(rows)
        g, r = _choose(table)
        table["chosen_groups"] = np.arange(len(table)) == g
        table["chosen_rank"] = np.arange(len(table)) == r

        def final(pos: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
            cand = cands[pos]
            if cand["prior"] == "none":
                return cosine, None, dict(cand)
            full = system.rhs(self.c_full, cand["prior"], nonneg, tag="full")
            w, _, _ = system.solve(full, cand["alpha"], nonneg=nonneg)
            return system.similarity(w), w, dict(cand)

        gs, gw, gp = final(g)
        rs, rw, rp = (gs, gw, dict(gp)) if r == g else final(r)  # one candidate: one N x N matrix (#18)
        logger.info(
            "%s: groups by %s, neighbours by %s (scored on %s..%s)",
            name,
            gp["variant"],
            rp["variant"],
            self.w.score.start.date(),
            self.w.score.end.date(),
        )
        method = LearnedMethod(name, "supervised", base, self.tickers, gs, rs, gp, rp, table, gw, rw)
        if cold:
            method = self.cold_start([method], system, z)[0]
        return method, system

    def cold_start(
        self, methods: list[LearnedMethod], system: PairSystem, z: np.ndarray
    ) -> list[LearnedMethod]:
        """``methods`` (supervised, all on ``system`` and features ``z``) with their cold-start folds (none if
        ``folds < 2``): per fold, one subset system and one right-hand side per (prior, nonneg) serve them
        all. The candidates are the methods' chosen ones (``group_params`` / ``rank_params``)."""
        if self.lc.folds < 2:
            return list(methods)
        if self.lc.folds > len(self.tickers):
            logger.warning("learned.folds %d exceeds the %d companies: %d folds are empty", self.lc.folds,
                           len(self.tickers), self.lc.folds - len(self.tickers))
        folds = _folds(len(self.tickers), self.lc.folds, self.seed)
        cold_rank = [np.empty((len(z), len(z))) for _ in methods]
        cold_groups: list[list] = [[] for _ in methods]
        for f in range(self.lc.folds):
            test = folds == f
            train = np.flatnonzero(~test)
            sub = system.subset(train)
            c_train = self.c_full[np.ix_(train, train)]
            rows = np.flatnonzero(test)
            for i, m in enumerate(methods):
                wr = _fold_weights(sub, c_train, m.rank_params)  # no warm start from the full fit
                cold_rank[i][rows] = (z[rows] @ z.T) if wr is None else system.similarity(wr, rows)
                wg = _fold_weights(sub, c_train, m.group_params)
                sg = (z @ z.T) if wg is None else system.similarity(wg)
                grouper = PeerGrouper(None, self.tickers, "average", distance=similarity_distance(sg))
                codes = {level: grouper.labels_for(t, "density")[0] for level, t in self.targets.items()}
                cold_groups[i].append((test, codes))
        return [replace(m, cold_rank=cold_rank[i], cold_groups=cold_groups[i]) for i, m in enumerate(methods)]

    def price_peers(self) -> LearnedMethod:
        unpriced = self.tickers.difference(self.w.full.tickers)
        if len(unpriced):  # recent listings: similarity -1 to everyone, so each is a group of its own
            logger.warning(
                "price_peers: %d of %d companies have no usable returns in the selection window %s..%s (e.g. "
                "%s): price history cannot place them (similarity -1 to every company, each alone in its "
                "group); cold start is the comparison for them", len(unpriced), len(self.tickers),
                self.w.full.start.date(), self.w.full.end.date(), list(unpriced[:5]))
        s = price_similarity(self.w.full, self.tickers)
        table = pd.DataFrame([{**self._candidate_rows("price_peers")[0], "variant": "correlation",
                               "score_groups": np.nan, "score_rank": np.nan, "chosen_groups": True,
                               "chosen_rank": True}])
        params = {"variant": f"return correlation {self.w.full.start.date()}..{self.w.full.end.date()}"}
        return LearnedMethod("price_peers", "price", None, self.tickers, s, s, params, params, table)

    def blend(self, name: str, base: str, text_fit: tuple[np.ndarray, np.ndarray],
              text_full: tuple[np.ndarray, np.ndarray]) -> LearnedMethod:
        """``text_fit`` / ``text_full``: the base's (group, rank) similarities fitted on ``[S, split]`` / the
        whole window."""
        p_fit = self.c_fit
        rows = []
        for beta in self.lc.betas:
            sg = blend_similarity(text_fit[0], p_fit, beta)
            sr = sg if text_fit[1] is text_fit[0] else blend_similarity(text_fit[1], p_fit, beta)
            pw = _score_groups(name, sg, self.tickers, self.target, self.match, self.w.score)
            topk = _score_rank(sr, self.tickers, self.w.score, self.lc.rank_k)
            rows.append({**self._candidate_rows(name)[0], "variant": f"blend beta={beta:g}", "beta": beta,
                         "base": base, "score_groups": pw, "score_rank": topk})
        table = pd.DataFrame(rows)
        g, r = _choose(table)
        table["chosen_groups"] = np.arange(len(table)) == g
        table["chosen_rank"] = np.arange(len(table)) == r
        bg, br = float(table.at[g, "beta"]), float(table.at[r, "beta"])
        gs = blend_similarity(text_full[0], self.c_full, bg)
        rs = blend_similarity(text_full[1], self.c_full, br)
        return LearnedMethod(
            name,
            "text+price",
            base,
            self.tickers,
            gs,
            rs,
            {"variant": f"beta={bg:g}", "beta": bg},
            {"variant": f"beta={br:g}", "beta": br},
            table,
        )

    def fit_window_similarity(self, m: LearnedMethod, system: PairSystem | None, z: np.ndarray) -> tuple:
        """The (group, rank) similarities of ``m``'s chosen candidates refitted on ``[S, split]`` only."""
        out: list[np.ndarray] = []
        for p in (m.group_params, m.rank_params):
            if out and p == m.group_params:  # both objectives chose one candidate: one refit, one matrix
                out.append(out[0])
                continue
            if m.kind != "supervised" or p.get("prior") == "none":
                out.append(z @ z.T if m.kind == "supervised" else m.group_similarity)
                continue
            assert system is not None
            nonneg = bool(p.get("nonneg", False))
            fit = system.rhs(self.c_fit, p["prior"], nonneg, tag="fit")
            w, _, _ = system.solve(fit, p["alpha"], nonneg=nonneg)
            out.append(system.similarity(w))
        return tuple(out)


def build_learned(cfg: BenchmarkConfig, prices: Prices, tickers: pd.Index, zs: dict[str, np.ndarray],
                  targets: dict[str, GranularityTarget]) -> dict[str, LearnedMethod]:
    """Every learned method of ``cfg.learned`` on ``tickers`` (``zs``: each text method's transformed
    rows)."""
    lc: LearnedConfig | None = cfg.learned
    if lc is None:
        return {}
    windows = pre_windows(cfg, prices, tickers)
    stage = LearnedStage(cfg, windows, tickers, targets)
    built: dict[str, LearnedMethod] = {}
    window_fits: dict[str, tuple] = {}  # blends of a fitted method: its similarities refitted on [S, split]
    # one base at a time: its signed and non-negative fits share one pair system (Gram matrices of the
    # learned features, their eigendecomposition, the fixed part: several hundred MB for the SAE), which is
    # dropped once the base's cold-start folds and any blend's refit are done (#18: the benchmark's peak)
    for base in dict.fromkeys([*lc.methods, *lc.nonnegative]):
        names, system = [], None
        if base in lc.methods:
            m, system = stage.supervised(f"{base}_sup", base, zs[base], cold=False)
            built[m.name] = m
            names.append(m.name)
        if base in lc.nonnegative:
            m, system = stage.supervised(f"{base}_nn", base, zs[base], nonneg=True, system=system, cold=False)
            built[m.name] = m
            names.append(m.name)
        assert system is not None
        built.update(zip(names, stage.cold_start([built[n] for n in names], system, zs[base]), strict=True))
        for name in names:
            if name in lc.blend_with:
                window_fits[name] = stage.fit_window_similarity(built[name], system, zs[base])
        del system
    out: dict[str, LearnedMethod] = {f"{b}_sup": built[f"{b}_sup"] for b in lc.methods}  # the rows' order
    out.update({f"{b}_nn": built[f"{b}_nn"] for b in lc.nonnegative})
    if lc.price_peers:
        out["price_peers"] = stage.price_peers()
    for base in lc.blend_with:
        if base in out:  # a supervised variant
            m = out[base]
            fit = window_fits[base]
            full = (m.group_similarity, m.rank_similarity)
        else:  # an unsupervised text method: its cosine
            cos = zs[base] @ zs[base].T
            fit = full = (cos, cos)
        out[f"{base}_price"] = stage.blend(f"{base}_price", base, fit, full)
    return out


# --- evaluation in a window ---------------------------------------------------------------------------------


def cold_start_rows(methods: dict[str, LearnedMethod], references: dict[str, np.ndarray],
                    reference_labels: dict[str, pd.Series], tickers: pd.Index, corr: CorrelationMatrix,
                    ks: tuple[int, ...], keys: dict, seed: int = 0) -> list[dict]:
    """Cold start in one window.

    * ``kind = "neighbours"``: top-k neighbour correlation of every company, with the weights fitted without
      its fold (learned methods) or as is (``references``: taxonomies and unsupervised text need no fit; ties
      at random);
    * ``kind = "groups"``, per level: pair-weighted correlation of the within-group pairs that involve a
      company of the held-out fold (summed over folds) under the fold's groups at the level's density, and of
      the same kind of pairs under the level's taxonomy (``reference_labels``) on the same folds."""
    rows = []
    c = aligned_correlation(corr, tickers)
    for name, s in references.items():
        topk = topk_neighbour_correlation(s, tickers, corr, ks, tie_seed=seed)
        rows.append({**keys, "kind": "neighbours", "method": name, "fitted": False,
                     **{f"top{k}": v for k, v in topk.items()}})

    def held_out_sum(codes: np.ndarray, test: np.ndarray) -> tuple[float, float]:
        wi, wj, _ = within_pairs(codes.astype(np.int32))
        keep = test[wi] | test[wj]
        vals = c[wi[keep], wj[keep]]
        return float(np.nansum(vals)), float(np.isfinite(vals).sum())

    for name, m in methods.items():
        if m.cold_rank is None:
            continue
        topk = topk_neighbour_correlation(m.cold_rank, tickers, corr, ks)
        rows.append({**keys, "kind": "neighbours", "method": name, "fitted": True,
                     "variant": m.rank_params.get("variant"), **{f"top{k}": v for k, v in topk.items()}})
        levels = m.cold_groups[0][1].keys() if m.cold_groups else []
        for level in levels:
            ref = label_codes(reference_labels[level], tickers) if level in reference_labels else None
            tot = np.zeros(4)
            for test, codes in m.cold_groups:
                tot[:2] += held_out_sum(codes[level], test)
                if ref is not None:
                    tot[2:] += held_out_sum(ref, test)
            rows.append({**keys, "kind": "groups", "method": name, "fitted": True, "level": level,
                         "variant": m.group_params.get("variant"),  # no pair: no figure, not zero
                         "pair_weighted": tot[0] / tot[1] if tot[1] > 0 else np.nan,
                         "n_pairs": int(tot[1]), "taxonomy_pair_weighted": tot[2] / tot[3]
                         if ref is not None and tot[3] > 0 else np.nan, "taxonomy_n_pairs": int(tot[3])})
    return rows
