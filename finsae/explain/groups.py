"""Why companies are grouped or paired, in terms of SAE latents; and whether those reasons are faithful.

Notation: ``A`` is the documents x latents activity matrix (``A_dj = 1`` when latent ``j`` fires anywhere in
document ``d``), ``G`` a group of ``n_G`` of the ``n`` documents.

* **Group explanation**: for each latent, document frequency inside the group ``p_in = mean_{d in G} A_dj``
  and outside ``p_out``; lift ``(p_in + a) / (p_out + a)`` with ``a = 1 / n`` (so a latent absent outside does
  not get an infinite lift) and score ``p_in * log(lift)``, the latent's contribution to the KL divergence of
  the group's activity from the population's: high when the latent is both common in the group and rarer
  outside. The top latents by score explain the group.
* **Rule**: a depth-2 decision tree (scikit-learn, balanced class weights) on the top latents' activity that
  predicts membership, with its in-sample precision and recall.
* **Pair explanation**: for L2-normalised rows ``z_a, z_b`` the cosine is ``sum_j z_aj z_bj``; each shared
  latent's term and its share of the cosine.
* **Faithfulness**: the mean within-group cosine after zeroing the explaining latents (rows renormalised),
  against zeroing as many random latents of similar document frequency (each explaining latent replaced by one
  of its ``pool`` nearest in overall document frequency), ``draws`` times. Faithful: the explaining latents'
  drop exceeds the 95th percentile of the random drops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.tree import DecisionTreeClassifier, export_text

from finsae.errors import DataError


@dataclass(frozen=True)
class GroupExplanation:
    """The latents that set a group apart, and a compact membership rule."""

    group: str
    n_members: int
    latents: pd.DataFrame  # latent, label, p_in, p_out, lift, score
    rule: str
    precision: float
    recall: float

    def to_frame(self) -> pd.DataFrame:
        return self.latents.assign(group=self.group, n_members=self.n_members, rule=self.rule,
                                   precision=self.precision, recall=self.recall)


def _activity(features: object) -> sp.csr_matrix:
    a = sp.csr_matrix(features)
    return sp.csr_matrix((np.ones_like(a.data), a.indices, a.indptr), shape=a.shape, dtype=np.float64) \
        if a.nnz and (a.data > 0).all() else (a > 0).astype(np.float64).tocsr()


def explain_group(features: object, members: np.ndarray, *, labels: pd.Series | None = None, top: int = 8,
                  rule_latents: int = 20, group: str = "") -> GroupExplanation:
    """Explain the group ``members`` (boolean mask over the rows of ``features``); see the module
    docstring."""
    a = _activity(features)
    members = np.asarray(members, dtype=bool)
    n = a.shape[0]
    if members.shape != (n,):
        raise DataError(f"members has shape {members.shape}, expected ({n},)")
    n_in = int(members.sum())
    if n_in == 0 or n_in == n:
        raise DataError(f"group {group!r} must have some but not all of the {n} documents (has {n_in})")
    p_in = np.asarray(a[members].mean(axis=0)).ravel()
    p_out = np.asarray(a[~members].mean(axis=0)).ravel()
    smooth = 1.0 / n
    lift = (p_in + smooth) / (p_out + smooth)
    score = p_in * np.log(lift)
    order = np.argsort(-score, kind="stable")
    order = order[score[order] > 0]
    best = order[:top]
    names = (labels.reindex(best).fillna("").astype(str).to_numpy() if labels is not None
             else np.array([f"latent {j}" for j in best]))
    table = pd.DataFrame({"latent": best, "label": names, "p_in": p_in[best], "p_out": p_out[best],
                          "lift": lift[best], "score": score[best]})
    cols = order[:rule_latents]
    rule, precision, recall = "(no distinguishing latent)", float("nan"), float("nan")
    if len(cols):
        x = a[:, cols].toarray()
        tree = DecisionTreeClassifier(max_depth=2, class_weight="balanced", random_state=0).fit(x, members)
        pred = tree.predict(x).astype(bool)
        tp = int((pred & members).sum())
        precision = tp / max(int(pred.sum()), 1)
        recall = tp / n_in
        feat_names = [f"[{j}] " + (str(labels.get(j, "")) if labels is not None else "") for j in cols]
        rule = export_text(
            tree, feature_names=[f.replace("\n", " ") for f in feat_names], class_names=["out", "in"]
        )
    return GroupExplanation(group, n_in, table, rule, float(precision), float(recall))


def explain_pair(z: np.ndarray, a: int, b: int, *, labels: pd.Series | None = None, top: int = 8,
                 mean: np.ndarray | None = None, rank_by: str = "excess") -> pd.DataFrame:
    """The shared latents behind the cosine of rows ``a`` and ``b`` of L2-normalised ``z``: ``latent, label,
    contribution`` (``z_aj * z_bj``) and ``share`` of the cosine, largest first.

    With ``mean`` (the mean row of ``z`` over all companies) also ``excess = z_aj * z_bj - mean_j**2``, the
    term minus what latent ``j`` gives a typical pair, and rows are ranked by it: latents active for nearly
    everyone add to every pair's cosine and explain nothing about this one. The excesses of all latents sum to
    ``cosine - |mean|**2``. ``rank_by="contribution"`` keeps the ``excess`` column but ranks by the raw
    terms."""
    if rank_by not in ("excess", "contribution"):
        raise DataError(f"rank_by must be 'excess' or 'contribution', got {rank_by!r}")
    z = np.asarray(z, dtype=np.float64)
    terms = z[a] * z[b]
    cosine = float(terms.sum())
    excess = terms - np.asarray(mean, dtype=np.float64) ** 2 if mean is not None else None
    key = excess if excess is not None and rank_by == "excess" else terms
    shared = np.flatnonzero(terms > 0)
    order = shared[np.lexsort((shared, -key[shared]))][:max(0, top)]
    names = (labels.reindex(order).fillna("").astype(str).to_numpy() if labels is not None
             else np.array([f"latent {j}" for j in order]))
    out = pd.DataFrame({"latent": order, "label": names, "contribution": terms[order],
                        "share": terms[order] / cosine if cosine > 0 else np.nan})
    if excess is not None:
        out["excess"] = excess[order]
    return out


def _within_mean_cosine(z: np.ndarray, rows: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean over pairs of ``rows`` of the cosine of the (re-normalised) rows of ``z``, or of the weighted
    similarity ``sum_k w_k z_ik z_jk`` of the re-normalised rows when ``weights`` are given."""
    g = z[rows]
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    g = np.divide(g, norms, out=np.zeros_like(g), where=norms > 0)
    s = (g * weights) @ g.T if weights is not None else g @ g.T
    n = len(rows)
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))


@dataclass(frozen=True)
class Faithfulness:
    group: str
    n_members: int
    within_cosine: float
    drop_explaining: float
    drop_random_mean: float
    drop_random_p95: float
    percentile: float

    @property
    def faithful(self) -> bool:
        return self.drop_explaining > self.drop_random_p95

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "faithful": self.faithful}


def faithfulness(
    z: np.ndarray,
    features: object,
    members: np.ndarray,
    latents: np.ndarray,
    *,
    draws: int = 50,
    pool: int = 20,
    seed: int = 0,
    group: str = "",
    weights: np.ndarray | None = None,
) -> Faithfulness:
    """Drop of the mean within-group cosine (rows of ``z``) when ``latents`` are zeroed, against random
    latents of similar document frequency (in ``features``); see the module docstring. With ``weights`` (a
    learned similarity), the drop of the mean within-group weighted similarity of the re-normalised rows: the
    similarity the group was formed by (without re-normalisation the drop would be the latents' contributions
    themselves, and a test of latents ranked by contribution would pass by construction)."""
    z = np.asarray(z, dtype=np.float64)
    rows = np.flatnonzero(np.asarray(members, dtype=bool))
    if len(rows) < 2:
        raise DataError(f"group {group!r} needs at least 2 members for a within-group cosine")
    latents = np.asarray(latents, dtype=np.int64)
    zg = z[rows]  # only the group's rows matter
    every = np.arange(len(rows))
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    base = _within_mean_cosine(zg, every, w)

    def ablated(cols: np.ndarray) -> float:
        zz = zg.copy()
        zz[:, cols] = 0.0
        return base - _within_mean_cosine(zz, every, w)

    drop = ablated(latents)
    df = np.asarray(_activity(features).mean(axis=0)).ravel()
    order = np.argsort(df, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    rng = np.random.default_rng(seed)
    excluded = set(latents.tolist())
    random_drops = np.empty(draws)
    for d in range(draws):
        picks = []
        for j in latents:
            lo = max(0, rank[j] - pool // 2)
            near = [c for c in order[lo: lo + pool + len(latents)] if c not in excluded and c not in picks]
            picks.append(int(rng.choice(near)))
        random_drops[d] = ablated(np.array(picks))
    pct = float(100.0 * np.mean(random_drops < drop))
    return Faithfulness(group, len(rows), base, drop, float(random_drops.mean()),
                        float(np.percentile(random_drops, 95)), pct)


# --- explanations of a learned (weighted) similarity --------------------------------------------------------


def explain_pair_weighted(
    z: np.ndarray, weights: np.ndarray, a: int, b: int, *, labels: pd.Series | None = None, top: int = 8
) -> pd.DataFrame:
    """The latents behind the learned similarity ``s_ab = sum_k w_k z_ak z_bk`` of rows ``a`` and ``b``
    (:mod:`finsae.group.supervised`): ``latent, label, weight, contribution`` (``w_k z_ak z_bk``) and
    ``share`` of ``s_ab``, largest contribution first. All contributions (not only the ``top`` shown) sum to
    ``s_ab``; negative ones (a latent both share whose weight says it does not make returns co-move) are
    kept."""
    z = np.asarray(z, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (z.shape[1],):
        raise DataError(f"weights have shape {w.shape}, expected ({z.shape[1]},) (one per latent)")
    terms = w * z[a] * z[b]
    total = float(terms.sum())
    shared = np.flatnonzero(terms != 0)
    order = shared[np.lexsort((shared, -terms[shared]))][:max(0, top)]
    names = (labels.reindex(order).fillna("").astype(str).to_numpy() if labels is not None
             else np.array([f"latent {j}" for j in order]))
    return pd.DataFrame({"latent": order, "label": names, "weight": w[order], "contribution": terms[order],
                         "share": terms[order] / total if total != 0 else np.nan})


def explain_group_weighted(z: np.ndarray, weights: np.ndarray, members: np.ndarray, *,
                           labels: pd.Series | None = None, top: int = 8,
                           order: str = "excess") -> pd.DataFrame:
    """The latents behind a group's mean within-group learned similarity.

    For group ``G`` (``n_G >= 2``) latent ``k`` contributes ``c_k = w_k mean_{i != j in G} z_ik z_jk =
    w_k ((sum_G z_k)^2 - sum_G z_k^2) / (n_G (n_G - 1))`` (the ``c_k`` sum to the group's mean similarity);
    the same over all companies, ``c_k^all``, is what latent ``k`` gives a typical pair. Rows: ``latent,
    label, weight, contribution`` (``c_k``), ``typical`` (``c_k^all``), ``excess = c_k - c_k^all`` and
    ``evidence``: ``shared`` where ``w_k > 0`` and ``excess > 0`` (the members have more of a latent that
    raises similarity), ``absent`` where ``w_k < 0`` and ``excess > 0`` (they have less of one that lowers
    it: with non-negative features ``c_k <= 0``, so it adds nothing to their similarity, it only subtracts
    less than from a typical pair), else ``none``.

    ``order="excess"``: ranked by excess, what sets the group's similarity apart; ``order="evidence"``: the
    ``shared`` latents first, then the ``absent`` ones, then the rest, each by excess (what the members have
    in common before what they lack). Ties: by latent index."""
    if order not in ("excess", "evidence"):
        raise DataError(f"order must be 'excess' or 'evidence', got {order!r}")
    z = np.asarray(z, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    if members.shape != (len(z),):
        raise DataError(f"members has shape {members.shape}, expected ({len(z)},)")
    if w.shape != (z.shape[1],):
        raise DataError(f"weights have shape {w.shape}, expected ({z.shape[1]},) (one per latent)")

    def mean_pair(rows: np.ndarray) -> np.ndarray:
        g = z[rows]
        n = len(g)
        if n < 2:
            raise DataError(f"a group needs at least 2 members, got {n}")
        return (g.sum(axis=0) ** 2 - (g * g).sum(axis=0)) / (n * (n - 1))

    c = w * mean_pair(np.flatnonzero(members))
    typical = w * mean_pair(np.arange(len(z)))
    excess = c - typical
    evidence = np.where(excess > 0, np.where(w > 0, "shared", np.where(w < 0, "absent", "none")), "none")
    tier = np.select([evidence == "shared", evidence == "absent"], [0, 1], 2) if order == "evidence" \
        else np.zeros(len(c), dtype=np.int64)
    rows = np.lexsort((np.arange(len(c)), -excess, tier))[:max(0, top)]
    names = (labels.reindex(rows).fillna("").astype(str).to_numpy() if labels is not None
             else np.array([f"latent {j}" for j in rows]))
    return pd.DataFrame({"latent": rows, "label": names, "weight": w[rows], "contribution": c[rows],
                         "typical": typical[rows], "excess": excess[rows], "evidence": evidence[rows]})
