"""Token-level statistics of SAE latents, gathered during extraction: what latent labels are made from.

For each latent ``j`` over a corpus: ``mass[j, t]``, its summed activation on vocabulary token ``t``; the
number of pooled tokens where it fires; the documents each token occurs in; the token id and document row of
every pooled position in order; and its ``n_examples`` strongest positions. :class:`StatsAccumulator` gathers
them batch by batch from the same ``(feats, tokens, mask)`` batches that pooling reads, so one language-model
pass gives both the features and the statistics (issue #18). The feature cache stores them per shard beside
the shard's features (:func:`stats_path`); :func:`merge_stats` joins shards exactly: sums for the mass, counts
and document frequencies (shards hold disjoint documents), concatenation with offsets for positions and rows,
and the top ``n_examples`` of the shards' candidates for the strongest positions. Labels
(:mod:`finsae.explain.labels`) read the merged statistics.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from finsae._io import atomic_write

#: Strongest positions kept per latent (the examples a label is checked against).
LABEL_EXAMPLES = 10


@dataclass(frozen=True)
class LatentStats:
    """What :class:`StatsAccumulator` gathered: ``mass`` (latents x vocabulary, summed activation), ``active``
    (pooled tokens where each latent fires), ``doc_freq`` (documents holding each token) of ``n_docs``, the
    token ids and document rows of every position in order, and per latent the values and positions of its
    strongest activations (``n_examples x d_sae``; value -1 where there are fewer). ``rows``: the document
    rows the statistics cover (documents with text; rows ``0..rows-1``)."""

    mass: sp.csr_matrix
    active: np.ndarray
    doc_freq: np.ndarray
    n_docs: int
    ids: np.ndarray
    docs: np.ndarray
    top_val: np.ndarray
    top_pos: np.ndarray
    rows: int = 0


class StatsAccumulator:
    """Per-latent statistics of token activations, fed batch by batch with ``(feats [n, d_sae], token ids
    [n], document rows [n])`` in batch order (the tokens of one chunk contiguous): activation mass per token,
    tokens where each latent fires, the documents each token occurs in, and each latent's ``n_examples``
    strongest positions. ``feats`` is a torch tensor (any device)."""

    def __init__(self, d_sae: int, vocab: int, n_examples: int = LABEL_EXAMPLES) -> None:
        import torch

        self.d_sae, self.vocab, self.n_examples = d_sae, vocab, n_examples
        self.mass = sp.csr_matrix((d_sae, vocab), dtype=np.float64)
        self.active = np.zeros(d_sae, dtype=np.int64)
        self.doc_tokens: set[tuple[int, int]] = set()
        self.ids: list[np.ndarray] = []
        self.docs: list[np.ndarray] = []
        self.offset = 0
        self.top_val = torch.full((n_examples, d_sae), -1.0)
        self.top_pos = torch.zeros((n_examples, d_sae), dtype=torch.long)

    def add(self, feats, ids: np.ndarray, docs: np.ndarray) -> None:
        import torch

        feats = feats.float().cpu()
        ids = np.asarray(ids, dtype=np.int64)
        docs = np.asarray(docs, dtype=np.int64)
        rows, cols = feats.nonzero(as_tuple=True)
        vals = feats[rows, cols].double().numpy()
        self.active += np.bincount(cols.numpy(), minlength=self.d_sae)
        self.mass = self.mass + sp.csr_matrix((vals, (cols.numpy(), ids[rows.numpy()])),
                                              shape=(self.d_sae, self.vocab))
        self.doc_tokens.update(zip(docs.tolist(), ids.tolist(), strict=True))
        if len(ids):
            k = min(self.n_examples, len(ids))
            v, i = torch.topk(feats, k, dim=0)  # strongest positions of each latent in this batch
            cand_val = torch.cat([self.top_val, v])
            cand_pos = torch.cat([self.top_pos, i + self.offset])
            best = torch.topk(cand_val, self.n_examples, dim=0).indices
            self.top_val = torch.gather(cand_val, 0, best)
            self.top_pos = torch.gather(cand_pos, 0, best)
        self.ids.append(ids)
        self.docs.append(docs)
        self.offset += len(ids)

    def result(self, rows: int | None = None) -> LatentStats:
        """The statistics so far; ``rows``: the document rows covered (default: one past the largest seen)."""
        doc_freq = np.zeros(self.vocab, dtype=np.int64)
        if self.doc_tokens:
            np.add.at(doc_freq, np.fromiter((t for _, t in self.doc_tokens), dtype=np.int64), 1)
        ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
        docs = np.concatenate(self.docs) if self.docs else np.zeros(0, np.int64)
        n_docs = len({d for d, _ in self.doc_tokens})
        if rows is None:
            rows = int(docs.max()) + 1 if len(docs) else 0
        return LatentStats(self.mass.tocsr(), self.active, doc_freq, n_docs, ids, docs,
                           self.top_val.numpy(), self.top_pos.numpy(), int(rows))


def merge_stats(parts: Sequence[LatentStats]) -> LatentStats:
    """The statistics of consecutive shards as one corpus (rows and positions in shard order; see the module
    docstring). Every part must have the same width, vocabulary and ``n_examples``."""
    import torch

    if not parts:
        raise ValueError("no statistics to merge")
    first = parts[0]
    shape, n_ex = first.mass.shape, first.top_val.shape[0]
    for p in parts[1:]:
        if p.mass.shape != shape or p.top_val.shape[0] != n_ex:
            raise ValueError(f"statistics of different shapes: {p.mass.shape} x {p.top_val.shape[0]} "
                             f"examples, expected {shape} x {n_ex}")
    mass = first.mass
    for p in parts[1:]:
        mass = mass + p.mass
    row_off = np.cumsum([0] + [p.rows for p in parts])[:-1]
    pos_off = np.cumsum([0] + [len(p.ids) for p in parts])[:-1]
    cand_val = torch.from_numpy(np.concatenate([p.top_val for p in parts]))
    cand_pos = torch.from_numpy(np.concatenate([p.top_pos + o for p, o in zip(parts, pos_off, strict=True)]))
    best = torch.topk(cand_val, n_ex, dim=0).indices
    return LatentStats(
        mass.tocsr(),
        np.sum([p.active for p in parts], axis=0),
        np.sum([p.doc_freq for p in parts], axis=0),
        int(sum(p.n_docs for p in parts)),
        np.concatenate([p.ids for p in parts]),
        np.concatenate([p.docs + o for p, o in zip(parts, row_off, strict=True)]),
        torch.gather(cand_val, 0, best).numpy(),
        torch.gather(cand_pos, 0, best).numpy(),
        int(sum(p.rows for p in parts)),
    )


def stats_path(shard_file: Path, n_examples: int = LABEL_EXAMPLES) -> Path:
    """Where the token statistics of a feature shard file are stored (beside it, in the same cache folder)."""
    return shard_file.with_name(f"{shard_file.stem}.stats{n_examples}.npz")


def save_stats(stats: LatentStats, path: Path) -> None:
    """Write ``stats`` to ``path`` atomically."""
    def write(tmp: Path) -> None:
        buf = io.BytesIO()
        m = stats.mass
        np.savez(buf, data=m.data, indices=m.indices.astype(np.int32), indptr=m.indptr.astype(np.int64),
                 shape=np.array(m.shape), active=stats.active, doc_freq=stats.doc_freq,
                 n_docs=np.array(stats.n_docs), ids=stats.ids.astype(np.int32),
                 docs=stats.docs.astype(np.int32), top_val=stats.top_val, top_pos=stats.top_pos,
                 rows=np.array(stats.rows))
        tmp.write_bytes(buf.getvalue())

    atomic_write(Path(path), write)


def load_stats(path: Path) -> LatentStats:
    """The statistics written by :func:`save_stats` (a truncated or foreign file raises)."""
    with np.load(path, allow_pickle=False) as z:
        shape = tuple(int(s) for s in z["shape"])
        mass = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
        return LatentStats(mass, z["active"], z["doc_freq"], int(z["n_docs"]), z["ids"].astype(np.int64),
                           z["docs"].astype(np.int64), z["top_val"], z["top_pos"], int(z["rows"]))
