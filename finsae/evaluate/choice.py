"""Choosing a text method's transform and clusterer on returns that precede the text's use.

Each candidate (transform x clusterer) forms groups from the formation text at one matched granularity (e.g.
GICS-industry density); the candidate whose groups have the highest pair-weighted return correlation in the
selection window wins (ties: first in config order). Only the selection window's returns are read, so returns
in a later evaluation window cannot change the choice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finsae.evaluate.comovement import CorrelationMatrix, comovement
from finsae.group.peers import GranularityTarget, PeerGrouper

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParamChoice:
    """The chosen transform and clusterer of one text method, and every candidate's score."""

    method: str
    transform: str
    clusterer: str
    table: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


def choose_text_params(
    method: str,
    transformed: dict[str, tuple[np.ndarray, np.ndarray]],
    tickers: pd.Index,
    clusterers: Sequence[str],
    target: GranularityTarget,
    match: str,
    corr: CorrelationMatrix,
    *,
    seed: int = 0,
) -> ParamChoice:
    """Score every (transform, clusterer) of ``transformed`` (transform name -> (L2-normalised rows for
    ``tickers``, their cosine distances)) x ``clusterers`` at ``target``/``match`` on ``corr`` (the selection
    window only)."""
    rows = []
    for transform, (z, distance) in transformed.items():
        for clusterer in clusterers:
            g = PeerGrouper(z, tickers, clusterer, seed=seed, distance=distance).grouping(
                method, target, match
            )
            res = comovement(corr, g.labels, null_draws=0, bootstrap_draws=0, method=method)
            rows.append(
                {
                    "method": method,
                    "transform": transform,
                    "clusterer": clusterer,
                    "level": target.level,
                    "match": match,
                    "n_groups": g.n_groups,
                    "formation_density": g.density,
                    "pair_weighted": res.pair_weighted,
                    "coverage": res.coverage,
                    "window_start": corr.start,
                    "window_end": corr.end,
                    "frequency": corr.frequency,
                }
            )
    table = pd.DataFrame(rows)
    scores = table["pair_weighted"].fillna(-np.inf).to_numpy()
    best = int(np.argmax(scores))
    table["chosen"] = np.arange(len(table)) == best
    logger.info("%s: chose transform=%s clusterer=%s (pair-weighted %.3f in %s..%s)", method,
                table.at[best, "transform"], table.at[best, "clusterer"], table.at[best, "pair_weighted"],
                corr.start.date(), corr.end.date())
    return ParamChoice(method, str(table.at[best, "transform"]), str(table.at[best, "clusterer"]), table)
