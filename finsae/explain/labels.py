"""Words for SAE latents: the tokens and snippets where each latent fires, and a short label.

One pass over a corpus (the same chunks and forward pass as extraction) collects, per latent ``j``:

* ``mass[j, t]``: the summed activation of ``j`` on token ``t`` (over every occurrence), and ``count[t]``, the
  number of pooled occurrences of token ``t``;
* the ``n_examples`` strongest activations, each with its document and a snippet of the text around it.

The label is the ``n_label_tokens`` tokens with the highest ``mass[j, t] * log(N / count[t])`` (``N`` = pooled
tokens in the corpus): tokens the latent fires on a lot, down-weighted when they are everywhere. Where those
are only function words (the latent reads context, not the word), the two commonest content words around its
strongest examples are added: ``of (near: banking, services)``. Results are
cached under ``<finsae cache>/labels/`` by a key over the model, the SAE, the chunking and the texts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from tqdm.auto import tqdm

from finsae._io import write_parquet
from finsae._paths import cache_dir
from finsae.errors import DataError
from finsae.extract.sae import as_sae_source

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentLabels:
    """Per-latent labels and examples.

    Attributes:
        table: one row per latent: ``latent``, ``label``, ``top_tokens`` (list), ``n_active_tokens`` (pooled
            tokens where it fires), ``activation_mass``.
        examples: ``latent, rank, value, doc_id, token, snippet`` for the strongest activations.
    """

    table: pd.DataFrame
    examples: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def label(self, latent: int) -> str:
        return str(self.table.at[latent, "label"])

    def labels(self) -> pd.Series:
        return self.table["label"]


def _clean_token(text: str) -> str:
    return text.replace("\n", " ").strip().lower()


def _labels_key(model_id: str, weight_hash: str, sae_digest: str, max_length: int, ids: Sequence[str],
                texts: Sequence[str], n_examples: int, n_label_tokens: int) -> str:
    digest = hashlib.sha256(
        json.dumps([model_id, weight_hash, sae_digest, max_length, n_examples, n_label_tokens, "v2"]).encode()
    )
    for d, t in zip(ids, texts, strict=True):
        digest.update(b"\x00" + str(d).encode() + b"\x01" + str(t).encode())
    return digest.hexdigest()[:32]


def latent_labels(loaded, sae, texts: Sequence[object], doc_ids: Sequence[str], *, n_examples: int = 10,
                  n_label_tokens: int = 3, context: int = 8, max_length: int | None = None,
                  batch_tokens: int = 8192, cache: bool = True, progress: bool | None = None) -> LatentLabels:
    """Labels and top examples of every latent of ``sae`` over ``texts`` (see the module docstring).

    ``loaded`` is a :class:`finsae.extract.LoadedModel`, ``sae`` an :class:`finsae.extract.sae.SAESource`
    (e.g. :class:`finsae.extract.SAEHandle`) or a sae_lens SAE; on a cache hit neither is loaded."""
    source = as_sae_source(sae)
    if len(doc_ids) != len(texts):
        raise DataError(f"doc_ids has {len(doc_ids)} entries but there are {len(texts)} texts")
    max_length = int(max_length or source.context_size or 512)
    key = _labels_key(
        loaded.model_id,
        loaded.weight_hash,
        source.digest,
        max_length,
        [str(d) for d in doc_ids],
        [str(t) for t in texts],
        n_examples,
        n_label_tokens,
    )
    folder = cache_dir() / "labels" / key
    if cache and (folder / "labels.parquet").is_file() and (folder / "examples.parquet").is_file():
        try:
            table = pd.read_parquet(folder / "labels.parquet")
            examples = pd.read_parquet(folder / "examples.parquet")
            table["top_tokens"] = table["top_tokens"].map(list)
            logger.info("latent labels from the cache %s", folder)
            return LatentLabels(table.set_index("latent", drop=False), examples)
        except Exception as exc:  # unreadable: recompute
            logger.warning("latent label cache %s is unreadable (%s): recomputing", folder, exc)
    result = _compute(loaded.model, source.load(), texts, doc_ids, n_examples=n_examples,
                      n_label_tokens=n_label_tokens, context=context, max_length=max_length,
                      batch_tokens=batch_tokens, progress=progress)
    if cache:
        save_labels(result, folder)
    return result


def _compute(
    model,
    sae,
    texts: Sequence[object],
    doc_ids: Sequence[str],
    *,
    n_examples: int,
    n_label_tokens: int,
    context: int,
    max_length: int,
    batch_tokens: int,
    progress: bool | None,
) -> LatentLabels:
    import torch

    from finsae.extract.features import clean_texts, document_chunks, encoded_batches
    from finsae.extract.sae import check_compatible

    hook = check_compatible(model, sae)
    tok = model.tokenizer
    keep, _ = clean_texts(texts)
    chunks = document_chunks(tok, texts, keep, max_length, 0)
    index = {id(c): i for i, c in enumerate(chunks)}
    d_sae = int(sae.cfg.d_sae)
    vocab = int(max(len(tok), model.cfg.d_vocab))
    mass = sp.csr_matrix((d_sae, vocab), dtype=np.float64)
    count = np.zeros(vocab, dtype=np.int64)
    active = np.zeros(d_sae, dtype=np.int64)
    top_val = torch.full((n_examples, d_sae), -1.0)
    top_chunk = torch.zeros((n_examples, d_sae), dtype=torch.long)
    top_pos = torch.zeros((n_examples, d_sae), dtype=torch.long)
    total = sum(len(c.tokens) - c.pooled_from for c in chunks)
    with torch.inference_mode(), tqdm(total=total, unit="tok", unit_scale=True, desc="label latents",
                                       disable=None if progress is None else not progress) as bar:
        for batch, tokens, mask, feats in encoded_batches(model, sae, hook, chunks, batch_tokens):
            b, w, _ = feats.shape
            flat = feats.reshape(b * w, d_sae)
            tok_flat = tokens.reshape(-1)
            m = mask.reshape(-1)
            count += np.bincount(tok_flat[m].numpy(), minlength=vocab)[:vocab]
            rows, cols = flat.nonzero(as_tuple=True)
            vals = flat[rows, cols].double().numpy()
            active += np.bincount(cols.numpy(), minlength=d_sae)
            mass = mass + sp.csr_matrix((vals, (cols.numpy(), tok_flat[rows].numpy())), shape=(d_sae, vocab))
            k = min(n_examples, b * w)
            v, i = torch.topk(flat, k, dim=0)  # strongest positions of each latent in this batch
            chunk_ids = torch.tensor([index[id(c)] for c in batch])
            cand_val = torch.cat([top_val, v])
            cand_chunk = torch.cat([top_chunk, chunk_ids[i // w]])
            cand_pos = torch.cat([top_pos, i % w])
            best = torch.topk(cand_val, n_examples, dim=0).indices
            top_val = torch.gather(cand_val, 0, best)
            top_chunk = torch.gather(cand_chunk, 0, best)
            top_pos = torch.gather(cand_pos, 0, best)
            bar.update(int(m.sum()))
    special = set(tok.all_special_ids)  # an unknown-word token fires latents but is no label
    n_pooled = max(int(count.sum()), 1)
    idf = np.log(n_pooled / np.maximum(count, 1))
    scored = mass.multiply(idf[None, :]).tocsr()
    ids = [str(doc_ids[k]) for k in keep]
    examples = []
    context_words: dict[int, Counter] = {}
    tv, tc, tp = top_val.numpy(), top_chunk.numpy(), top_pos.numpy()
    for j in range(d_sae):
        for r in range(n_examples):
            if tv[r, j] <= 0:
                break
            chunk = chunks[int(tc[r, j])]
            pos = int(tp[r, j])
            left = tok.decode(chunk.tokens[max(chunk.pooled_from, pos - context): pos])
            mid = tok.decode([chunk.tokens[pos]])
            right = tok.decode(chunk.tokens[pos + 1: pos + 1 + context // 2])
            examples.append({"latent": j, "rank": r, "value": float(tv[r, j]), "doc_id": ids[chunk.doc],
                             "token": mid, "snippet": f"{left}[[{mid}]]{right}".replace("\n", " ")})
            context_words.setdefault(j, Counter()).update(
                {
                    w
                    for w in re.findall(r"[a-z][a-z]+", f"{left} {right}".lower())
                    if w not in ENGLISH_STOP_WORDS
                }
            )
    rows = []
    for j in range(d_sae):
        lo, hi = scored.indptr[j], scored.indptr[j + 1]
        cols, vals = scored.indices[lo:hi], scored.data[lo:hi]
        words: list[str] = []
        marks: list[str] = []  # punctuation-only tokens, if nothing better
        for c in cols[np.argsort(-vals, kind="stable")]:
            if int(c) in special:
                continue
            word = _clean_token(tok.decode([int(c)]))
            if word and word not in words and any(ch.isalnum() for ch in word):
                words.append(word)
            elif word and word not in marks and len(marks) < n_label_tokens:
                marks.append(f"'{word}'")
            if len(words) == n_label_tokens:
                break
        label = " / ".join(words or marks) if active[j] else "(never active)"
        if active[j] and (not words or all(w in ENGLISH_STOP_WORDS for w in words)):
            # function words: add context
            near = [w for w, _ in context_words.get(j, Counter()).most_common(2)]
            if near:
                label += f" (near: {', '.join(near)})"
        m_lo, m_hi = mass.indptr[j], mass.indptr[j + 1]
        rows.append({"latent": j, "label": label, "top_tokens": words, "n_active_tokens": int(active[j]),
                     "activation_mass": float(mass.data[m_lo:m_hi].sum())})
    table = pd.DataFrame(rows).set_index("latent", drop=False)
    return LatentLabels(table, pd.DataFrame(examples, columns=["latent", "rank", "value", "doc_id", "token",
                                                                "snippet"]))


def save_labels(labels: LatentLabels, folder: str | Path) -> None:
    """Write ``labels.parquet`` and ``examples.parquet`` into ``folder`` (atomically)."""
    folder = Path(folder)
    write_parquet(labels.table.reset_index(drop=True), folder / "labels.parquet")
    write_parquet(labels.examples, folder / "examples.parquet")
