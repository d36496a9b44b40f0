"""The pre-registered SAE sweep of issue #17 (``docs/sae_sweep_rule.md``): train TopK / BatchTopK SAEs with
sae_lens on dated text, measure each on returns *before* the forward window only, and choose by the written
rule.

Steps (each resumable: what an interrupted run wrote is reused, never retrained):

1. **Corpus** (:func:`sweep_corpus`): the universe's ``description_2017`` texts, then the May-2017 profiles of
   ``data/corpus_2017.parquet`` (deduplicated by text), in the order of SHA-256 of a salted text, until
   ``token_budget`` tokens. A
   text is held out for the SAE metrics when the hex SHA-256 of its text starts below ``1a`` (about 10%).
2. **Activations** (:func:`finsae.extract.train.write_activation_shards`): one language-model pass to the
   deepest layer of the grid gives every layer's activations (bfloat16 on disk).
3. **Training** (:func:`finsae.extract.train.train_topk_sae`): the same optimiser settings and token budget
   for every candidate.
4. **Quality** on the held-out texts: explained variance, loss recovered, L0, dead share.
5. **The pre-period measure** (:func:`pre_period_measure`): sum-pooled latents of ``description_2017``, unit
   rows of ``log1p``, then ``sae_sup`` as configured in ``backtests/forward_2017.yaml``'s ``learned`` section
   (alpha x prior chosen at GICS-industry pair density) fitted on monthly returns 2010-01..2013-12 and scored
   on 2014-01..2017-05: ``M = (PW(industry density) + PW(sub-industry density)) / 2``.
6. **Rule** (:func:`choose`): sanity floor (explained variance >= 0.70, loss recovered >= 0.80), the largest
   M; a lead of less than 0.005 goes to the higher content-word top-label share, then the smaller width x k.
   Stage 1 chooses the layer, stage 2 the SAE at that layer. The shipped SAE is replaced only if the chosen
   one's M is at least the shipped one's.

Every candidate's figures go to ``sweep.parquet`` / ``sweep.json`` in the output folder; the chosen SAE is
copied to ``<out>/sae`` with ``selection.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from finsae._io import write_json
from finsae._paths import bundled_data_dir
from finsae.errors import DataError

if TYPE_CHECKING:  # sae_lens / TransformerLens load lazily
    from sae_lens import SAE

    from finsae.config import BenchmarkConfig
    from finsae.data import Prices, Universe
    from finsae.explain.labels import LatentLabels
    from finsae.extract.model import LoadedModel

logger = logging.getLogger(__name__)

CORPUS_NAME = "corpus_2017.parquet"  # in the bundled data folder
HOLDOUT_BELOW = "1a"  # hex prefix of the text's SHA-256: held out when below (pre-registered)
ORDER_SALT = "finsae-sweep-order:"  # profiles enter the budget in the order of SHA-256(salt + text)
TIE_MARGIN = 0.005
EV_FLOOR, RECOVERED_FLOOR = 0.70, 0.80


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SweepCorpus:
    """The sweep's texts: ``texts[:n_descriptions]`` are the universe's descriptions (``tickers``), the rest
    corpus profiles; ``holdout`` marks the texts kept out of training; ``tokens`` per text."""

    texts: list[str]
    tickers: pd.Index
    n_descriptions: int
    holdout: np.ndarray
    tokens: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        kind = np.where(np.arange(len(self.texts)) < self.n_descriptions, "description", "profile")
        return pd.DataFrame({"kind": kind, "sha256": [text_sha(t) for t in self.texts],
                             "holdout": self.holdout, "tokens": self.tokens})


def sweep_corpus(descriptions: pd.Series, profiles: Sequence[str], token_counts: Sequence[int] | None,
                 token_budget: int, count_tokens: object = None) -> SweepCorpus:
    """Descriptions first (all of them), then profiles by SHA-256 until ``token_budget`` tokens in all
    (duplicates of a text already taken are skipped). ``count_tokens(text) -> int`` counts a text's tokens
    where ``token_counts`` (one per description then profile) is not given."""
    seen: set[str] = set()
    shas: list[str] = []
    texts: list[str] = []
    tickers: list[str] = []
    counts: list[int] = []
    desc = [(str(t), str(k)) for k, t in descriptions.items()]

    def n_tokens(pos: int, text: str) -> int:
        if token_counts is not None:
            return int(token_counts[pos])
        assert callable(count_tokens)
        return int(count_tokens(text))

    for pos, (text, ticker) in enumerate(desc):
        sha = text_sha(text)
        if sha in seen:
            continue
        seen.add(sha)
        shas.append(sha)
        texts.append(text)
        tickers.append(ticker)
        counts.append(n_tokens(pos, text))
    n_desc = len(texts)
    # not the held-out key: profiles taken by text SHA would all be near the held-out prefix
    order = sorted(range(len(profiles)), key=lambda p: text_sha(ORDER_SALT + str(profiles[p])))
    total = sum(counts)
    for p in order:
        if total >= token_budget:
            break
        text = str(profiles[p])
        sha = text_sha(text)
        if not text.strip() or sha in seen:
            continue
        seen.add(sha)
        shas.append(sha)
        c = n_tokens(len(desc) + p, text)
        texts.append(text)
        counts.append(c)
        total += c
    holdout = np.array([sha[:2] < HOLDOUT_BELOW for sha in shas])
    return SweepCorpus(texts, pd.Index(tickers, name="ticker"), n_desc, holdout, np.asarray(counts))


def load_profiles(path: str | Path | None = None) -> list[str]:
    """The May-2017 profile texts (``data/corpus_2017.parquet``: columns source, symbol, scraped_by, text)."""
    p = Path(path) if path is not None else bundled_data_dir() / CORPUS_NAME
    if not p.is_file():
        raise DataError(f"no text corpus at {p}")
    frame = pd.read_parquet(p)
    if "text" not in frame:
        raise DataError(f"{p} has no 'text' column")
    return [t for t in frame["text"].tolist() if isinstance(t, str) and t.strip()]


@dataclass(frozen=True)
class Candidate:
    """One SAE of the grid."""

    layer: int
    d_sae: int
    k: int
    architecture: Literal["topk", "batchtopk"] = "topk"
    stage: int = 1

    @property
    def hook(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"

    @property
    def name(self) -> str:
        return f"L{self.layer}-{self.architecture}-{self.d_sae}-k{self.k}"


@dataclass(frozen=True)
class SweepPlan:
    """The grid and training settings (pre-registered values as defaults)."""

    layers: tuple[int, ...] = (3, 6, 9, 12)
    stage1_width: int = 4096
    stage1_k: int = 64
    stage2_widths: tuple[int, ...] = (2048, 8192)
    stage2_ks: tuple[int, ...] = (32, 128)
    batchtopk: bool = True
    token_budget: int = 1_000_000
    epochs: int = 1
    batch_size: int = 1024
    lr: float = 3e-4
    max_length: int = 512
    seed: int = 0
    eval_docs: int = 40
    dead_feature_window: int = 1000
    stages: tuple[int, ...] = (1, 2)
    ev_floor: float = EV_FLOOR
    recovered_floor: float = RECOVERED_FLOOR

    def stage1(self) -> list[Candidate]:
        return [Candidate(layer, self.stage1_width, self.stage1_k) for layer in self.layers]

    def stage2(self, layer: int) -> list[Candidate]:
        out = [Candidate(layer, w, k, "topk", 2) for w in self.stage2_widths for k in self.stage2_ks]
        if self.batchtopk:
            out.append(Candidate(layer, self.stage1_width, self.stage1_k, "batchtopk", 2))
        return out


@dataclass
class CandidateResult:
    candidate: Candidate
    figures: dict[str, float | int | str | bool] = field(default_factory=dict)

    def row(self) -> dict:
        return {"candidate": self.candidate.name, **asdict(self.candidate), **self.figures}


def _design_config(config: str | Path | None) -> BenchmarkConfig:
    from finsae.config import load_benchmark_config

    path = Path(config) if config is not None else Path(__file__).resolve().parents[2] / "backtests" \
        / "forward_2017.yaml"
    cfg = load_benchmark_config(path)
    if cfg.learned is None:
        raise DataError(f"{path} has no learned section: the sweep's measure uses its sae_sup settings")
    return cfg


@dataclass(frozen=True)
class PrePeriodFit:
    """:func:`pre_period_measure`'s figures, and what an explanation of its groups needs: the unit rows ``z``
    of the companies ``tickers``, the chosen weights fitted on the fitting part (None: the plain cosine) and
    the industry-density groups of that similarity."""

    figures: dict
    tickers: pd.Index
    z: np.ndarray
    weights: np.ndarray | None
    groups: pd.Series


def pre_period_measure(features: np.ndarray, tickers: pd.Index, universe: Universe, prices: Prices,
                       cfg: BenchmarkConfig) -> PrePeriodFit:
    """M and its parts for sum-pooled features (companies x latents) of ``tickers`` (see the module
    docstring). Only returns up to the selection window's end are read."""
    from finsae.group.peers import granularity_targets
    from finsae.group.similarity import l2_normalize
    from finsae.pipeline.learned import LearnedStage, _groups, _score_groups, _score_rank, pre_windows

    assert cfg.learned is not None
    cfg = cfg.model_copy(update={"learned": cfg.learned.model_copy(update={"folds": 0})})
    z = l2_normalize(np.log1p(np.maximum(features, 0.0)))
    keep = np.linalg.norm(z, axis=1) > 0
    tickers = pd.Index(tickers)[keep]
    z = z[keep]
    levels = ["gics_industry", "gics_sub_industry"]
    targets = granularity_targets(universe, tickers, levels)
    windows = pre_windows(cfg, prices, tickers)
    stage = LearnedStage(cfg, windows, tickers, targets)
    method, system = stage.supervised("sae_sup", "sae", z)
    p = method.group_params
    weights = None if p.get("prior") == "none" else system.solve(stage.c_fit, p["alpha"], p["prior"])[0]
    s_fit = z @ z.T if weights is None else system.similarity(weights)
    pw = {lv: _score_groups("sae_sup", s_fit, tickers, targets[lv], "density", windows.score)
          for lv in levels}
    top10 = _score_rank(s_fit, tickers, windows.score, stage.lc.rank_k)
    figures = {"M": (pw["gics_industry"] + pw["gics_sub_industry"]) / 2,
               "pw_industry_pre": pw["gics_industry"], "pw_sub_industry_pre": pw["gics_sub_industry"],
               "top10_pre": top10, "sup_variant": str(p["variant"]), "companies": int(len(tickers))}
    groups = _groups("sae_sup", s_fit, tickers, targets["gics_industry"], "density")
    return PrePeriodFit(figures, tickers, z, weights, groups)


def content_top_label_share(fit: PrePeriodFit, features: np.ndarray, content: pd.Series,
                            min_size: int = 3) -> tuple[float, int]:
    """Share of ``fit``'s groups (``min_size`` members or more) whose top explaining latent (by weighted
    contribution excess; by lift for the plain cosine) has a content-word label, and the number of groups."""
    import scipy.sparse as sp

    from finsae.explain.groups import explain_group, explain_group_weighted

    group_of = fit.groups.reindex(fit.tickers)
    sizes = group_of.value_counts()
    hits = []
    rows = sp.csr_matrix(features)
    for g in sizes[sizes >= min_size].index:
        members = (group_of == g).to_numpy()
        if fit.weights is not None:
            latent = int(explain_group_weighted(fit.z, fit.weights, members, top=1)["latent"].iloc[0])
        else:
            latent = int(explain_group(rows, members, top=1).latents["latent"].iloc[0])
        hits.append(bool(content.get(latent, False)))
    return (float(np.mean(hits)) if hits else float("nan")), len(hits)


def forward_figures(features: np.ndarray, tickers: pd.Index, universe: Universe, prices: Prices,
                    cfg: BenchmarkConfig, design: str = "forward",
                    cold_start: bool = False) -> dict[str, float]:
    """Forward-window figures of one SAE's features, for the sweep table *after* the choice (rule item 5):
    ``sae_sup`` fitted as in the benchmark (choices on the selection window, weights refitted on all of it),
    its groups' and the plain log1p cosine's groups' pair-weighted correlation at GICS-industry and
    sub-industry density on the design's monthly returns, and its top-10 neighbour correlation beside GICS
    sub-industry's; with ``cold_start``, the top-10 with weights fitted without the company's fold (the
    benchmark reports it for the shipped SAEs; 5 more fits an SAE)."""
    from finsae.data import log_returns
    from finsae.evaluate.comovement import correlation_matrix
    from finsae.evaluate.ranking import same_group_similarity, topk_neighbour_correlation
    from finsae.group.peers import granularity_targets
    from finsae.group.similarity import l2_normalize
    from finsae.group.taxonomy import taxonomy_labels
    from finsae.pipeline.learned import LearnedStage, _score_groups, pre_windows

    info = next((d for d in cfg.designs if d.name == design), None)
    if info is None:
        raise DataError(f"the config has no design {design!r}")
    z = l2_normalize(np.log1p(np.maximum(features, 0.0)))
    keep = np.linalg.norm(z, axis=1) > 0
    tickers, z = pd.Index(tickers)[keep], z[keep]
    levels = ["gics_industry", "gics_sub_industry"]
    targets = granularity_targets(universe, tickers, levels)
    assert cfg.learned is not None
    if not cold_start:
        cfg = cfg.model_copy(update={"learned": cfg.learned.model_copy(update={"folds": 0})})
    stage = LearnedStage(cfg, pre_windows(cfg, prices, tickers), tickers, targets)
    method, _ = stage.supervised("sae_sup", "sae", z)
    ev = cfg.evaluation
    panel = log_returns(prices, pd.Timestamp(info.start), pd.Timestamp(info.end), "monthly", tickers=tickers,
                        min_obs_share=ev.min_obs_share, max_drop_share=ev.max_drop_share)
    corr = correlation_matrix(panel)
    out: dict[str, float] = {}
    for lv in levels:
        out[f"fwd_sup_{lv}"] = _score_groups("sae_sup", method.group_similarity, tickers, targets[lv],
                                             "density", corr)
        out[f"fwd_cos_{lv}"] = _score_groups("sae", z @ z.T, tickers, targets[lv], "density", corr)
    out["top10"] = float(topk_neighbour_correlation(method.rank_similarity, tickers, corr, (10,))[10])
    gics = same_group_similarity(taxonomy_labels(universe, "gics_sub_industry"), tickers)
    out["top10_gics_sub"] = float(topk_neighbour_correlation(gics, tickers, corr, (10,),
                                                             tie_seed=ev.seed)[10])
    if method.cold_rank is not None:
        out["cold_top10"] = float(topk_neighbour_correlation(method.cold_rank, tickers, corr, (10,))[10])
    return out


def choose(table: pd.DataFrame, ev_floor: float = EV_FLOOR, recovered_floor: float = RECOVERED_FLOOR) -> str:
    """The rule's choice among ``table``'s rows (columns candidate, M, explained_variance, loss_recovered,
    content_share, d_sae, k)."""
    ok = table[(table["explained_variance"] >= ev_floor) & (table["loss_recovered"] >= recovered_floor)]
    if ok.empty:
        raise DataError(f"no candidate meets the sanity floor (explained variance >= {ev_floor}, loss "
                        f"recovered >= {recovered_floor})")
    best = float(ok["M"].max())
    near = ok[ok["M"] > best - TIE_MARGIN].copy()
    near["size"] = near["d_sae"] * near["k"]
    share = near["content_share"].fillna(-1.0) if "content_share" in near else pd.Series(0.0, near.index)
    near = near.assign(_share=share).sort_values(["_share", "M", "size"], ascending=[False, False, True])
    return str(near.iloc[0]["candidate"])


class Sweep:
    """Runs a :class:`SweepPlan` into ``out`` (see the module docstring)."""

    def __init__(self, plan: SweepPlan, out: str | Path, loaded: LoadedModel, universe: Universe,
                 prices: Prices, *, profiles: Sequence[str] | None = None, config: str | Path | None = None,
                 references: dict[str, Path] | None = None, progress: bool = False) -> None:
        """``references``: SAEs measured beside the grid, by name; the first is the shipped default, which the
        chosen SAE must match or beat on M to replace."""
        self.plan, self.out, self.loaded = plan, Path(out), loaded
        self.universe, self.prices, self.progress = universe, prices, progress
        self.profiles = list(profiles) if profiles is not None else load_profiles()
        self.cfg = _design_config(config)
        self.references = dict(references or {})
        self._corpus: SweepCorpus | None = None
        self._acts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # -- corpus and activations
    def corpus(self) -> SweepCorpus:
        if self._corpus is None:
            from finsae.extract.features import tokenizer_of

            tok = tokenizer_of(self.loaded.model)
            descriptions = self.universe.descriptions("2017")
            self._corpus = sweep_corpus(descriptions, self.profiles, None, self.plan.token_budget,
                                        lambda t: len(tok(t, add_special_tokens=False)["input_ids"]))
            self.out.mkdir(parents=True, exist_ok=True)
            frame = self._corpus.to_frame()
            frame.to_parquet(self.out / "corpus.parquet")
            logger.info("sweep corpus: %d texts (%d descriptions), %d tokens, %d held out", len(frame),
                        self._corpus.n_descriptions, int(frame["tokens"].sum()), int(frame["holdout"].sum()))
        return self._corpus

    def hooks(self, layers: Sequence[int]) -> list[str]:
        return [f"blocks.{layer}.hook_resid_post" for layer in layers]

    def activations(self) -> Path:
        from finsae.extract.train import write_activation_shards

        corpus = self.corpus()
        return write_activation_shards(self.loaded.model, corpus.texts, self.hooks(self.plan.layers),
                                       self.out / "activations", model_id=self.loaded.model_id,
                                       max_length=self.plan.max_length, progress=self.progress)

    def layer_acts(self, hook: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from finsae.extract.train import read_activations

        if hook not in self._acts:
            self._acts = {hook: read_activations(self.out / "activations", hook)}  # one layer in memory
        return self._acts[hook]

    # -- one candidate
    def train(self, cand: Candidate) -> SAE:
        from finsae.extract.sae import load_sae
        from finsae.extract.train import norm_keep, train_topk_sae

        folder = self.out / "candidates" / cand.name
        if (folder / "cfg.json").is_file():
            logger.info("reusing the trained candidate %s", folder)
            return load_sae(folder)
        acts, docs, _ = self.layer_acts(cand.hook)
        train = ~self.corpus().holdout[docs] & norm_keep(acts)
        logger.info("training %s on %d tokens", cand.name, int(train.sum()))
        p = self.plan
        return train_topk_sae(acts[train], hook_name=cand.hook, d_sae=cand.d_sae, k=cand.k,
                              context_size=p.max_length, model_name=self.loaded.model_id, epochs=p.epochs,
                              batch_size=p.batch_size, lr=p.lr, seed=p.seed, out_dir=folder,
                              dead_feature_window=p.dead_feature_window, architecture=cand.architecture)

    def _descriptions(self, sae: SAE, hook: str,
                      labels: bool = True) -> tuple[np.ndarray, LatentLabels | None]:
        """Sum-pooled latents of the descriptions and the latents' labels over them (the product's label rule,
        :func:`finsae.explain.labels.label_latents`), from the stored activations: no model pass."""
        import torch

        from finsae.explain.labels import StatsAccumulator, label_latents
        from finsae.extract.features import tokenizer_of

        corpus = self.corpus()
        n = corpus.n_descriptions
        acts, docs, ids = self.layer_acts(hook)
        sel = np.flatnonzero(docs < n)
        tok = tokenizer_of(self.loaded.model)
        d_sae = int(sae.cfg.d_sae)
        acc = StatsAccumulator(d_sae, int(max(len(tok), self.loaded.model.cfg.d_vocab)), 10)
        pooled_t = torch.zeros((n, d_sae), dtype=torch.float64)
        dtype = next(sae.parameters()).dtype
        with torch.inference_mode():
            for start in range(0, len(sel), 8192):
                part = sel[start: start + 8192]
                f = sae.encode(torch.from_numpy(acts[part]).to(dtype)).float()
                pooled_t.index_add_(0, torch.from_numpy(docs[part].astype(np.int64)), f.double())
                if labels:
                    acc.add(f, ids[part], docs[part])
        pooled = pooled_t.numpy()
        if not labels:
            return pooled, None
        return pooled, label_latents(acc.result(), tok, corpus.texts[:n], [str(t) for t in corpus.tickers])

    def measure(self, name: str, sae: SAE, cand: Candidate | None) -> dict:
        """Every figure of one SAE (cached in ``figures/<name>.json``): held-out quality, the pre-period
        measure and the content-word top-label share of its pre-period groups."""
        from finsae.extract.train import evaluate_sae, norm_keep

        cache = self.out / "figures" / f"{name}.json"
        if cache.is_file():
            return dict(json.loads(cache.read_text()))
        hook = str(sae.cfg.metadata.hook_name)
        corpus = self.corpus()
        acts, docs, _ = self.layer_acts(hook)
        kept = norm_keep(acts)
        held = corpus.holdout[docs] & kept
        held_texts = [t for t, h in zip(corpus.texts, corpus.holdout, strict=True) if h]
        held_texts = held_texts[: self.plan.eval_docs]
        ref_file = self.out / "figures" / f"reference_loss.{hook}.json"  # clean / zeroed losses, per layer
        reference = tuple(json.loads(ref_file.read_text())) if ref_file.is_file() else None
        q = evaluate_sae(self.loaded.model, sae, held_texts, max_length=self.plan.max_length, acts=acts[held],
                         reference=reference)
        if reference is None:
            write_json([q.ce_clean, q.ce_zero], ref_file)
        pooled, labels = self._descriptions(sae, hook)
        assert labels is not None
        fit = pre_period_measure(pooled, corpus.tickers, self.universe, self.prices, self.cfg)
        rows = pd.Index(corpus.tickers).get_indexer(fit.tickers)
        share, n_groups = content_top_label_share(fit, pooled[rows], labels.content)
        fig = {"name": name, "hook": hook, "d_sae": int(sae.cfg.d_sae), **q.to_dict(), **fit.figures,
               "content_share": share, "content_groups": n_groups,
               "label_content_latents": float(labels.content[labels.table["kind"] != "dead"].mean()),
               "train_tokens": int((~corpus.holdout[docs] & kept).sum()),
               "architecture": str(sae.cfg.architecture()), "k": int(getattr(sae.cfg, "k", 0) or 0)}
        if cand is not None:
            fig.update(asdict(cand))
        write_json(fig, cache)
        return fig

    def run(self) -> pd.DataFrame:
        """Both stages, the references and the choice (see the module docstring)."""
        self.activations()
        rows = []
        for name, folder in self.references.items():
            from finsae.extract.sae import load_sae

            fig = self.measure(name, load_sae(folder), None)
            rows.append({**fig, "candidate": name, "stage": 0, "reference": True})
        stage1 = [self._row(c) for c in self.plan.stage1()]
        table1 = pd.DataFrame(stage1)
        floors = (self.plan.ev_floor, self.plan.recovered_floor)
        layer = int(table1.set_index("candidate").loc[choose(table1, *floors), "layer"])
        logger.info("stage 1 chooses layer %d", layer)
        stage2 = [self._row(c) for c in self.plan.stage2(layer)] if 2 in self.plan.stages else []
        table = pd.DataFrame(stage1 + stage2 + rows)
        first = ["candidate", "stage", "layer", "architecture", "d_sae", "k", "reference"]
        table = table[first + sorted(set(table.columns) - set(first))]
        swept = table[table["stage"] > 0]
        at_layer = swept[(swept["stage"] == 2) | (swept["layer"] == layer)]
        chosen = choose(at_layer, *floors)
        table["chosen"] = table["candidate"] == chosen
        by_name = table.set_index("candidate")
        m_chosen = float(by_name.loc[chosen, "M"])
        shipped = next(iter(self.references), None)  # the first reference is the shipped default
        m_shipped = float(by_name.loc[shipped, "M"]) if shipped is not None else float("-inf")
        replace_shipped = m_chosen >= m_shipped
        table["replaces_shipped"] = table["chosen"] & replace_shipped
        write_json({"rule": "docs/sae_sweep_rule.md", "stage1_layer": layer, "chosen": chosen,
                    "M_chosen": m_chosen, "shipped": shipped, "M_shipped": m_shipped,
                    "replaces_shipped": replace_shipped,
                    "plan": asdict(self.plan), "model": self.loaded.model_id,
                    "candidates": table.to_dict(orient="records")}, self.out / "sweep.json")
        table.to_parquet(self.out / "sweep.parquet")
        final = self.out / "sae"
        if final.exists():
            if not (final / "selection.json").is_file():
                raise DataError(f"{final} exists and was not written by a sweep: move it away first")
            shutil.rmtree(final)
        shutil.copytree(self.out / "candidates" / chosen, final)
        write_json({"rule": "docs/sae_sweep_rule.md", "chosen": chosen, "M": m_chosen,
                    "M_shipped_reference": m_shipped, "replaces_shipped": replace_shipped},
                   final / "selection.json")
        return table

    def forward(self) -> pd.DataFrame:
        """The forward figures (:func:`forward_figures`) of every SAE of a finished sweep, added to its table
        (``sweep_forward.parquet``). Refused before the choice is written (``sweep.json``)."""
        from finsae.extract.sae import load_sae

        done = self.out / "sweep.json"
        if not done.is_file():
            raise DataError(f"{self.out} has no sweep.json: the forward figures come only after the choice")
        table = pd.read_parquet(self.out / "sweep.parquet")
        rows = []
        corpus = self.corpus()
        for _, r in table.iterrows():
            name = str(r["candidate"])
            cache = self.out / "figures" / f"{name}.forward.json"
            if cache.is_file():
                rows.append(json.loads(cache.read_text()))
                continue
            folder = self.references[name] if bool(r["reference"]) else self.out / "candidates" / name
            sae = load_sae(folder)
            pooled, _ = self._descriptions(sae, str(r["hook"]), labels=False)
            fig = {"candidate": name, **forward_figures(pooled, corpus.tickers, self.universe, self.prices,
                                                        self.cfg)}
            write_json(fig, cache)
            rows.append(fig)
        out = table.merge(pd.DataFrame(rows), on="candidate", how="left")
        out.to_parquet(self.out / "sweep_forward.parquet")
        return out

    def _row(self, cand: Candidate) -> dict:
        sae = self.train(cand)
        return {**self.measure(cand.name, sae, cand), "candidate": cand.name, "reference": False}
