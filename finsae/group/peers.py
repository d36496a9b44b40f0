"""Text peer groups at a matched granularity.

A taxonomy level (e.g. GICS industry) defines two targets on the **formation universe** (the companies with
text in the vintage used to form peers, known when the text is published; no returns are involved):

* ``count``: the number of distinct groups the taxonomy has there;
* ``density``: its pair density ``sum_k n_k (n_k - 1) / 2 / (N (N - 1) / 2)`` over those ``N`` companies
  (companies without a code count in ``N`` but in no group).

:class:`PeerGrouper` cuts one clusterer's tree (or refits k-means) to hit either target, so a text method is
compared with a taxonomy at the taxonomy's own granularity and cannot win by being finer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd

from finsae.data.universe import Universe
from finsae.errors import DataError
from finsae.group.cluster import (
    MergeSequence,
    SphericalKMeans,
    hybrid_merges,
    kmeans_for_density,
    linkage_merges,
    mst_edges,
    n_groups,
    pair_density,
)
from finsae.group.taxonomy import taxonomy_labels

logger = logging.getLogger(__name__)

#: The clusterers, spelled once (configs use these names).
ClustererName = Literal["average", "mst", "kmeans"]
CLUSTERERS: tuple[str, ...] = get_args(ClustererName)


@dataclass(frozen=True)
class GranularityTarget:
    """A taxonomy level's number of groups and pair density on a formation universe of ``n_companies``."""

    level: str
    n_groups: int
    density: float
    n_companies: int

    def value(self, match: str) -> float:
        if match == "count":
            return float(self.n_groups)
        if match == "density":
            return self.density
        raise DataError(f"unknown match {match!r}; choose count or density")


def label_codes(labels: pd.Series, tickers: pd.Index) -> np.ndarray:
    """Integer codes of ``labels`` on ``tickers`` (``-1`` = no label)."""
    return pd.factorize(labels.reindex(tickers))[0].astype(np.int64)


def granularity_targets(
    universe: Universe, tickers: pd.Index, levels: list[str]
) -> dict[str, GranularityTarget]:
    """The count and density targets of each taxonomy ``level`` on the companies ``tickers``."""
    out = {}
    for level in levels:
        codes = label_codes(taxonomy_labels(universe, level), tickers)
        out[level] = GranularityTarget(level, n_groups(codes), pair_density(codes), len(tickers))
    return out


@dataclass(frozen=True)
class TextGrouping:
    """Peer groups of one text method at one matched granularity (``labels``: ticker -> group, NA = none)."""

    method: str
    level: str
    match: str
    labels: pd.Series
    n_groups: int
    density: float
    params: dict = field(default_factory=dict)
    matched: bool = True

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "ticker": self.labels.index,
                "group": self.labels.to_numpy(),
                "method": self.method,
                "level": self.level,
                "match": self.match,
            }
        )


#: A grouping is matched when its count is within one group, or its density within 5% (relative), of the
#: target.
COUNT_TOLERANCE = 1
DENSITY_TOLERANCE = 0.05


def is_matched(target: GranularityTarget, match: str, k: int, density: float) -> bool:
    if match == "count":
        return abs(k - target.n_groups) <= COUNT_TOLERANCE
    return abs(density - target.density) <= DENSITY_TOLERANCE * target.density


class PeerGrouper:
    """Groups of L2-normalised feature rows ``z`` (one per ticker) by ``clusterer``, at any target.

    Tree clusterers (``average``, ``mst``) build their merge sequence once and are cut many times; ``kmeans``
    is refitted per target. ``parents`` (a label per ticker) makes it a hybrid: average-linkage sub-groups
    inside each parent group."""

    def __init__(self, z: np.ndarray | None, tickers: pd.Index, clusterer: str = "average", *,
                 parents: pd.Series | None = None, seed: int = 0, distance: np.ndarray | None = None) -> None:
        if clusterer not in CLUSTERERS:
            raise DataError(f"unknown clusterer {clusterer!r}; choose one of {list(CLUSTERERS)}")
        if z is None:  # a similarity without feature rows (price peers, learned similarities): trees only
            if distance is None or clusterer == "kmeans":
                raise DataError("PeerGrouper without feature rows needs a distance matrix and a tree "
                                "clusterer")
            z = np.zeros((len(distance), 0))
        if len(z) != len(tickers):
            raise DataError(f"{len(z)} feature rows for {len(tickers)} tickers")
        self.z, self.tickers, self.clusterer, self.seed = z, pd.Index(tickers), clusterer, seed
        self.parents = parents
        self._distance = distance  # optional precomputed cosine distance of z (shared between clusterers)
        self._seq: MergeSequence | None = None
        self._members: np.ndarray | None = None

    def _sequence(self) -> MergeSequence:
        if self._seq is None:
            from finsae.group.cluster import cosine_distance_matrix

            if self.parents is not None:
                codes = label_codes(self.parents, self.tickers)
                self._members = codes >= 0
                self._seq = hybrid_merges(self.z, codes, distance=self._distance)
            else:
                d = self._distance if self._distance is not None else cosine_distance_matrix(self.z)
                if self.clusterer == "mst":
                    self._seq = MergeSequence.build(len(self.z), *mst_edges(d))
                else:
                    self._seq = linkage_merges(d, "average")
        return self._seq

    def labels_for(self, target: GranularityTarget, match: str) -> tuple[np.ndarray, dict]:
        """Integer labels (``-1`` = none) hitting ``target`` by ``match``, and the parameters that did it."""
        n_total = len(self.tickers)
        if self.clusterer == "kmeans" and self.parents is None:
            if match == "count":
                model = SphericalKMeans(min(target.n_groups, n_total), random_state=self.seed).fit(self.z)
            else:
                model = kmeans_for_density(self.z, target.density, n_total=n_total, random_state=self.seed)
            return model.labels_, {"k": int(model.n_clusters)}
        seq = self._sequence()
        if match == "count":
            members = int(self._members.sum()) if self._members is not None else seq.n
            m = int(np.clip(members - target.n_groups, 0, len(seq.a)))
            labels = seq.labels(m, self._members)
            return labels, {"merges": m, "cut_distance": round(float(seq.height[m - 1]) if m > 0 else 0.0, 6)}
        want = target.density * n_total * (n_total - 1) / 2
        best = None
        for budget in (want, want * (1 + DENSITY_TOLERANCE)):  # fill up to the target; if short, up to +5%
            labels, m, height = seq.greedy_labels(budget, self._members)
            miss = abs(pair_density(labels) - target.density)
            if best is None or miss < best[0]:
                best = (miss, labels, m, height)
            if miss <= DENSITY_TOLERANCE * target.density:
                break
        assert best is not None  # the loop runs at least once
        _, labels, m, height = best
        return labels, {"merges": m, "last_merge_distance": round(height, 6), "rule": "greedy fill"}

    def grouping(self, method: str, target: GranularityTarget, match: str) -> TextGrouping:
        codes, params = self.labels_for(target, match)
        labels = pd.Series(np.array([f"{method}:{c}" if c >= 0 else None for c in codes], dtype=object),
                           index=self.tickers, name=method)
        k, dens = n_groups(codes), pair_density(codes)
        return TextGrouping(method, target.level, match, labels, k, dens,
                            {"clusterer": "hybrid" if self.parents is not None else self.clusterer, **params},
                            is_matched(target, match, k, dens))
