"""The layout of a finsae export: its schema version, its marker file, what an export run returns, and the
peer ranking both the writer (:mod:`finsae.pipeline.export`) and the reader (:mod:`finsae.export.store`)
use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Version of the export layout; bumped on any change a reader could notice (a column renamed, removed or
#: retyped, a table removed). Adding a table or a column keeps the major version.
SCHEMA_VERSION = "1.3"

#: The file that marks a folder as a finsae export (``--overwrite`` replaces nothing else).
EXPORT_MARKER = ".finsae-export"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote: the folder, the manifest and rows per table."""

    path: Path
    manifest: dict

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"table": name, **{k: v for k, v in info.items() if k != "columns"}}
                             for name, info in self.manifest["tables"].items()])


def top_peers(sims: np.ndarray, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``k`` largest entries of ``sims`` (the cosine similarities of company ``row`` to every
    company) other than ``row`` itself, and their values; ties broken by position (the universe order)."""
    sims = np.array(sims, dtype=np.float64).ravel()
    sims[row] = -np.inf
    k = min(k, len(sims) - 1)
    if k <= 0:
        return np.array([], dtype=np.int64), np.array([], dtype=np.float64)
    # candidates: everything at least as similar as the k-th largest, then an exact (similarity, position)
    # sort
    kth = np.partition(sims, len(sims) - k)[len(sims) - k]
    cand = np.flatnonzero(sims >= kth)
    order = cand[np.lexsort((cand, -sims[cand]))][:k]
    return order, sims[order]


def similarity_matrix(z: sp.csr_matrix) -> np.ndarray:
    """``z @ z.T`` as a dense float64 array (BLAS on dense rows unless ``z`` is very sparse)."""
    if z.nnz > 0.05 * z.shape[0] * z.shape[1]:
        d = z.toarray().astype(np.float64)
        return d @ d.T
    z64 = z.astype(np.float64)
    return (z64 @ z64.T).toarray()
