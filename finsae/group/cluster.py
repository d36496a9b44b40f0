"""Peer groups from feature vectors: scikit-learn style clusterers (``fit(X)`` sets ``labels_``) and cuts at a
requested granularity.

Input rows are L2-normalised feature vectors (:class:`finsae.group.similarity.FeatureTransform` output); the
distance is the cosine distance ``d_ij = 1 - z_i . z_j``. Labels are integers ``0..K-1``; ``-1`` = in no
group.

* :class:`MSTClustering` - the reference paper's method: the minimum spanning tree of the complete graph with
  weights ``d_ij`` (Prim's algorithm), cut by removing every edge longer than ``threshold`` (or the
  ``n_clusters - 1`` longest edges); groups are the connected components. This is single-linkage clustering.
* :class:`LinkageClustering` - agglomerative clustering (default average linkage, cosine), cut at
  ``n_clusters`` or ``distance_threshold`` (scipy's linkage; equal to scikit-learn's
  ``AgglomerativeClustering``).
* :class:`SphericalKMeans` - k-means on the unit sphere: assign each row to the centroid of largest cosine,
  recompute centroids as normalised means (Dhillon & Modha 2001); k-means++ seeding, best of ``n_init``.
* :class:`HybridClustering` - sub-groups inside given parent groups (e.g. SAE groups inside each GICS sector):
  one average-linkage tree per parent, cut at a common distance threshold.

**Matched granularity.** A tree clusterer is a sequence of merges in increasing distance; after ``m`` merges
of ``n`` points there are ``n - m`` groups and the number of within-group pairs is the running sum of
``size_a * size_b`` over the merges. :func:`merges_for_target` picks the ``m`` that hits a requested number of
groups exactly. A pair density ``sum_k n_k (n_k - 1) / 2 / (n (n - 1) / 2)`` cannot always be hit by one cut
(a single merge of two large groups adds many pairs at once), so :meth:`MergeSequence.greedy_labels` takes the
merges in increasing distance and skips those that would exceed a pair budget: every group is still a union
of tree neighbours. The budget is the target's pair count, or 5% above it when that lands closer. Spherical
k-means is matched on density by bisection on ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform
from sklearn.base import BaseEstimator, ClusterMixin

from finsae.errors import DataError
from finsae.group.similarity import l2_normalize, settle_ties


def cosine_distance_matrix(z: np.ndarray) -> np.ndarray:
    """``1 - z_i . z_j`` for L2-normalised rows, clipped to [0, 2], zero diagonal; a zero row is at
    distance 1."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise DataError(f"features must be a non-empty 2-D matrix, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise DataError("features contain NaN or infinite values")
    norms = np.sqrt(np.einsum("ij,ij->i", z, z))
    unit = (
        z
        if np.all((np.abs(norms - 1.0) < 1e-9) | (norms == 0))
        else z / np.where(norms > 0, norms, 1.0)[:, None]
    )
    d = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(d, 0.0)
    return d


def pair_density(labels: np.ndarray) -> float:
    """Share of all company pairs that are in the same group (label ``-1`` = in no group)."""
    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        return float("nan")
    _, counts = np.unique(labels[labels >= 0], return_counts=True)
    return float((counts * (counts - 1) / 2).sum() / (n * (n - 1) / 2))


def n_groups(labels: np.ndarray) -> int:
    labels = np.asarray(labels)
    return int(len(np.unique(labels[labels >= 0])))


# --- merge sequences ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeSequence:
    """Merges of ``n`` points in increasing height: merge ``r`` joins the groups of points ``a[r]`` and
    ``b[r]`` (two different groups at that time) at distance ``height[r]``; ``new_pairs[r]`` = ``size_a *
    size_b``."""

    n: int
    a: np.ndarray
    b: np.ndarray
    height: np.ndarray
    new_pairs: np.ndarray

    @classmethod
    def build(cls, n: int, a: np.ndarray, b: np.ndarray, height: np.ndarray) -> MergeSequence:
        order = np.argsort(height, kind="stable")
        a, b, height = np.asarray(a)[order], np.asarray(b)[order], np.asarray(height, dtype=np.float64)[order]
        parent = np.arange(n)
        size = np.ones(n, dtype=np.int64)
        new_pairs = np.empty(len(a), dtype=np.int64)
        for r in range(len(a)):
            ra, rb = _find(parent, a[r]), _find(parent, b[r])
            if ra == rb:
                raise DataError("merge sequence joins two points that are already in one group")
            new_pairs[r] = size[ra] * size[rb]
            if size[ra] < size[rb]:
                ra, rb = rb, ra
            parent[rb] = ra
            size[ra] += size[rb]
        return cls(n, a, b, height, new_pairs)

    def labels(self, m: int, members: np.ndarray | None = None) -> np.ndarray:
        """Labels after the first ``m`` merges (``0..K-1`` in order of first appearance). Points outside
        ``members`` (a boolean mask; default all) get ``-1``."""
        if not 0 <= m <= len(self.a):
            raise DataError(f"m={m} merges requested, the sequence has {len(self.a)}")
        parent = np.arange(self.n)
        for r in range(m):
            ra, rb = _find(parent, self.a[r]), _find(parent, self.b[r])
            parent[rb] = ra
        roots = np.array([_find(parent, i) for i in range(self.n)])
        _, labels = np.unique(roots, return_inverse=True)
        labels = _first_appearance(labels)
        if members is not None:
            labels = np.where(members, labels, -1)
            labels = _relabel(labels)
        return labels

    def greedy_labels(
        self, max_pairs: float, members: np.ndarray | None = None
    ) -> tuple[np.ndarray, int, float]:
        """Labels from the merges taken in increasing height, skipping any merge that would take the number of
        within-group pairs above ``max_pairs`` (so groups keep growing where that is still possible). Returns
        the labels, the number of merges taken and the height of the last one."""
        parent = np.arange(self.n)
        size = np.ones(self.n, dtype=np.int64)
        pairs, taken, height = 0, 0, 0.0
        for r in range(len(self.a)):
            ra, rb = _find(parent, self.a[r]), _find(parent, self.b[r])
            if ra == rb:
                continue
            add = int(size[ra] * size[rb])
            if pairs + add > max_pairs:
                continue
            if size[ra] < size[rb]:
                ra, rb = rb, ra
            parent[rb] = ra
            size[ra] += size[rb]
            pairs += add
            taken += 1
            height = float(self.height[r])
        roots = np.array([_find(parent, i) for i in range(self.n)])
        labels = _first_appearance(np.unique(roots, return_inverse=True)[1])
        if members is not None:
            labels = _relabel(np.where(members, labels, -1))
        return labels, taken, height


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return int(root)


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[labels]


def _relabel(labels: np.ndarray) -> np.ndarray:
    out = np.full(len(labels), -1, dtype=np.int64)
    ok = labels >= 0
    if ok.any():
        out[ok] = _first_appearance(np.unique(labels[ok], return_inverse=True)[1])
    return out


def mst_edges(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum spanning tree of the complete graph with weights ``d`` (Prim's algorithm, O(n^2)):
    arrays ``(i, j, weight)`` of its ``n - 1`` edges. Distances are compared after :func:`settle_ties` (the
    same tree on every CPU where ties are only separated by float rounding)."""
    d = settle_ties(d)
    n = len(d)
    in_tree = np.zeros(n, dtype=bool)
    best = np.full(n, np.inf)
    via = np.zeros(n, dtype=np.int64)
    best[0] = 0.0
    ei, ej, ew = [], [], []
    for step in range(n):
        cand = np.where(in_tree, np.inf, best)
        v = int(np.argmin(cand))
        in_tree[v] = True
        if step > 0:
            ei.append(via[v])
            ej.append(v)
            ew.append(best[v])
        closer = ~in_tree & (d[v] < best)
        best[closer] = d[v][closer]
        via[closer] = v
    return np.array(ei, dtype=np.int64), np.array(ej, dtype=np.int64), np.array(ew, dtype=np.float64)


def linkage_merges(d: np.ndarray, method: str = "average") -> MergeSequence:
    """scipy's hierarchical clustering of the distance matrix ``d`` (after :func:`settle_ties`: the same
    merges on every CPU where tied distances are only separated by float rounding) as a
    :class:`MergeSequence`."""
    if method not in ("average", "complete", "single", "weighted"):
        raise DataError(f"unknown linkage {method!r}; choose average, complete, single or weighted")
    n = len(d)
    if n < 2:
        return MergeSequence.build(n, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    tree = linkage(squareform(settle_ties(d), checks=False), method=method)
    rep = np.concatenate([np.arange(n), np.zeros(n - 1, dtype=np.int64)])
    a = np.empty(n - 1, dtype=np.int64)
    b = np.empty(n - 1, dtype=np.int64)
    for r, (x, y, _, _) in enumerate(tree):
        a[r], b[r] = rep[int(x)], rep[int(y)]
        rep[n + r] = a[r]
    return MergeSequence.build(n, a, b, tree[:, 2])


def merges_for_target(seq: MergeSequence, *, n_clusters: int) -> int:
    """Number of merges that leaves exactly ``n_clusters`` groups (pair densities are matched by
    :meth:`MergeSequence.greedy_labels` instead: a single cut can jump past them)."""
    lo = seq.n - len(seq.a)  # groups when every merge is done
    if not lo <= n_clusters <= seq.n:
        raise DataError(f"n_clusters={n_clusters} is not reachable: between {lo} and {seq.n} groups possible")
    return seq.n - n_clusters


# --- estimators ---------------------------------------------------------------------------------------------


class _TreeClustering(ClusterMixin, BaseEstimator):
    def _check_target(self) -> None:
        if (self.n_clusters is None) == (self._threshold() is None):
            raise DataError(f"{type(self).__name__} needs exactly one of n_clusters and a distance threshold")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise DataError(f"n_clusters must be at least 1, got {self.n_clusters}")

    def _threshold(self) -> float | None:
        raise NotImplementedError

    def _merges(self, X: np.ndarray) -> MergeSequence:
        raise NotImplementedError

    def fit(self, X: np.ndarray, y: object = None) -> _TreeClustering:
        self._check_target()
        self.merges_ = self._merges(np.asarray(X))
        if self.n_clusters is not None:
            m = merges_for_target(self.merges_, n_clusters=min(self.n_clusters, self.merges_.n))
        else:
            threshold = self._threshold()
            assert threshold is not None  # checked in fit: exactly one of n_clusters and a threshold
            m = int(np.searchsorted(self.merges_.height, threshold, side="right"))
        self.labels_ = self.merges_.labels(m)
        self.n_clusters_ = n_groups(self.labels_)
        return self


class MSTClustering(_TreeClustering):
    """Minimum spanning tree over cosine distance, cut at ``threshold`` or into ``n_clusters`` components."""

    def __init__(self, threshold: float | None = None, n_clusters: int | None = None) -> None:
        self.threshold = threshold
        self.n_clusters = n_clusters

    def _threshold(self) -> float | None:
        return self.threshold

    def _merges(self, X: np.ndarray) -> MergeSequence:
        i, j, w = mst_edges(cosine_distance_matrix(X))
        self.edges_ = pd.DataFrame({"i": i, "j": j, "distance": w})
        return MergeSequence.build(len(X), i, j, w)


class LinkageClustering(_TreeClustering):
    """Agglomerative clustering over cosine distance (``linkage`` average by default)."""

    def __init__(self, n_clusters: int | None = None, distance_threshold: float | None = None,
                 linkage: str = "average") -> None:
        self.n_clusters = n_clusters
        self.distance_threshold = distance_threshold
        self.linkage = linkage

    def _threshold(self) -> float | None:
        return self.distance_threshold

    def _merges(self, X: np.ndarray) -> MergeSequence:
        return linkage_merges(cosine_distance_matrix(X), self.linkage)


class HybridClustering(LinkageClustering):
    """Average-linkage sub-groups inside each parent group (``parents``: one label per row, ``-1`` or NaN =
    no parent, left out), all cut at one distance threshold, or at the threshold that gives ``n_clusters``."""

    def __init__(self, parents: np.ndarray | None = None, n_clusters: int | None = None,
                 distance_threshold: float | None = None, linkage: str = "average") -> None:
        super().__init__(n_clusters, distance_threshold, linkage)
        self.parents = parents

    def _merges(self, X: np.ndarray) -> MergeSequence:
        return hybrid_merges(X, self.parents, self.linkage)

    def fit(self, X: np.ndarray, y: object = None) -> HybridClustering:
        self._check_target()
        self.merges_ = self._merges(np.asarray(X))
        members = _parent_codes(self.parents, len(X)) >= 0
        n_members = int(members.sum())
        if self.n_clusters is not None:  # after m merges the members form n_members - m groups
            m = n_members - self.n_clusters
            if not 0 <= m <= len(self.merges_.a):
                raise DataError(f"n_clusters={self.n_clusters} is not reachable: between "
                                f"{n_members - len(self.merges_.a)} and {n_members} groups possible")
        else:
            assert self.distance_threshold is not None  # checked above: one of the two is given
            m = int(np.searchsorted(self.merges_.height, self.distance_threshold, side="right"))
        self.labels_ = self.merges_.labels(m, members)
        self.n_clusters_ = n_groups(self.labels_)
        return self


def _parent_codes(parents: object, n: int) -> np.ndarray:
    if parents is None:
        raise DataError("HybridClustering needs parents (one parent label per row)")
    s = pd.Series(np.asarray(parents, dtype=object))
    if len(s) != n:
        raise DataError(f"parents has {len(s)} labels for {n} rows")
    codes = pd.Series(pd.factorize(s.where(s.notna() & (s.astype(str) != "-1")))[0])
    return codes.to_numpy()


def hybrid_merges(X: np.ndarray, parents: object, method: str = "average",
                  distance: np.ndarray | None = None) -> MergeSequence:
    """Merges of one linkage tree per parent group, interleaved by height (points without a parent never
    merge). Valid as one sequence because each tree's heights increase (average/complete/single linkage).
    ``distance``: the cosine distance matrix of ``X`` if already computed."""
    X = np.asarray(X)
    codes = _parent_codes(parents, len(X))
    a, b, h = [], [], []
    for code in np.unique(codes[codes >= 0]):
        idx = np.flatnonzero(codes == code)
        if len(idx) < 2:
            continue
        d = distance[np.ix_(idx, idx)] if distance is not None else cosine_distance_matrix(X[idx])
        seq = linkage_merges(d, method)
        a.append(idx[seq.a])
        b.append(idx[seq.b])
        h.append(seq.height)
    if not a:
        return MergeSequence.build(len(X), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    return MergeSequence.build(len(X), np.concatenate(a), np.concatenate(b), np.concatenate(h))


class SphericalKMeans(ClusterMixin, BaseEstimator):
    """k-means with cosine similarity on the unit sphere (see the module docstring)."""

    def __init__(self, n_clusters: int = 8, n_init: int = 3, max_iter: int = 100, tol: float = 1e-6,
                 random_state: int = 0) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: object = None) -> SphericalKMeans:
        from sklearn.cluster import kmeans_plusplus

        z = l2_normalize(np.asarray(X, dtype=np.float64))
        if not 1 <= self.n_clusters <= len(z):
            raise DataError(f"n_clusters={self.n_clusters} must be between 1 and the {len(z)} rows")
        rng = np.random.default_rng(self.random_state)
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        for _ in range(self.n_init):
            centers, _ = kmeans_plusplus(
                z, self.n_clusters, random_state=int(rng.integers(2**31 - 1)), n_local_trials=1
            )
            prev = -np.inf
            for _ in range(self.max_iter):
                sims = z @ centers.T
                labels = sims.argmax(axis=1)
                score = float(sims[np.arange(len(z)), labels].sum())
                onehot = sp.csr_matrix(
                    (np.ones(len(z)), (labels, np.arange(len(z)))), shape=centers.shape[:1] + (len(z),)
                )
                sums = onehot @ z
                cn = np.linalg.norm(sums, axis=1, keepdims=True)
                empty = cn[:, 0] == 0
                centers = np.where(empty[:, None], centers, sums / np.where(cn > 0, cn, 1.0))
                if score - prev <= self.tol * max(1.0, abs(score)):
                    break
                prev = score
            if best is None or score > best[0]:
                best = (score, labels, centers)
        assert best is not None
        self.inertia_ = len(z) - best[0]  # sum of cosine distances to the assigned centroid
        self.labels_ = _first_appearance(np.unique(best[1], return_inverse=True)[1])
        self.cluster_centers_ = best[2]
        self.n_clusters_ = n_groups(self.labels_)
        return self


def kmeans_for_density(X: np.ndarray, density: float, *, n_total: int | None = None, n_init: int = 3,
                       random_state: int = 0, tol: float = 0.05, max_fits: int = 12) -> SphericalKMeans:
    """Spherical k-means with the ``k`` whose pair density is nearest ``density`` (bisection on ``k``; density
    falls as ``k`` grows). Stops early once within ``tol`` (relative)."""
    n = len(X)
    n_total = n_total or n

    def dens(model: SphericalKMeans) -> float:
        _, counts = np.unique(model.labels_, return_counts=True)
        return float((counts * (counts - 1) / 2).sum() / (n_total * (n_total - 1) / 2))

    lo, hi = 1, n
    k = int(np.clip(round(1.0 / max(density, 1e-9)), 1, n))  # equal-size groups: density ~ 1/k
    best: tuple[float, SphericalKMeans] | None = None
    for _ in range(max_fits):
        model = SphericalKMeans(k, n_init=n_init, random_state=random_state).fit(X)
        d = dens(model)
        err = abs(d - density) / max(density, 1e-12)
        if best is None or err < best[0]:
            best = (err, model)
        if err <= tol:
            break
        if d > density:
            lo = k + 1
        else:
            hi = k - 1
        if lo > hi:
            break
        k = int(np.clip(round(k * d / max(density, 1e-12)), lo, hi))  # density ~ 1/k
    assert best is not None
    return best[1]
