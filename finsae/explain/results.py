"""The result type of explaining one grouping: what :mod:`finsae.pipeline.explain` computes and the renderers
(:mod:`finsae.report`) and the export (:mod:`finsae.pipeline.export`) read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finsae.explain.labels import LatentLabels


@dataclass(frozen=True)
class ExplanationResult:
    """Explanations of one grouping.

    Attributes:
        grouping: the grouping's name (as in the benchmark's ``groups_<vintage>.parquet``).
        groups: one row per (group, explaining latent) with the group's rule, precision and recall.
        faithfulness: one row per group.
        labels: the latent labels used.
        output_dir: where it was written.
        method: the text method whose features the explanation used (None when not recorded).
        sae: the SAE folder whose latents ``groups`` indexes (None when not recorded).
        results_run_id: the run id of the benchmark results the grouping came from (None when not recorded).
    """

    grouping: str
    groups: pd.DataFrame
    faithfulness: pd.DataFrame
    labels: LatentLabels
    output_dir: Path | None
    method: str | None = None
    sae: str | None = None
    results_run_id: str | None = None

    @property
    def faithful_share(self) -> float:
        f = self.faithfulness
        return float(f["faithful"].mean()) if len(f) else float("nan")

    @property
    def content_top_share(self) -> float:
        """Share of groups whose top explaining latent (rank 0) has a content-word label (kind ``token``,
        ``context`` or ``documents``: :attr:`finsae.explain.labels.LatentLabels.content`)."""
        g = self.groups
        if not len(g) or "rank" not in g:
            return float("nan")
        top = g[g["rank"] == 0]["latent"].astype(int)
        content = self.labels.content
        return float(content.reindex(top.to_numpy()).fillna(False).astype(bool).mean())

    @property
    def top_label_kinds(self) -> dict[str, int]:
        """Groups by the kind of their top explaining latent's label (``token``, ``context``, ``documents``,
        ``function``, ``dead``; :mod:`finsae.explain.labels`)."""
        g = self.groups
        if not len(g) or "rank" not in g:
            return {}
        top = g[g["rank"] == 0]["latent"].astype(int).to_numpy()
        return _counts(self.labels.table["kind"].reindex(top))

    @property
    def label_kinds(self) -> dict[str, int]:
        """Every latent of the SAE by the kind of its label."""
        return _counts(self.labels.table["kind"])

    def to_frame(self) -> pd.DataFrame:
        return self.groups.copy()


def _counts(kinds: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()}
