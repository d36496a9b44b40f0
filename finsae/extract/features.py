"""Pooled SAE features of documents: tokenize, chunk, run the model to the hook, encode with the SAE, pool.

For a document with tokens ``w_1..w_n`` (no special tokens), chunks hold at most ``max_length - 1`` tokens after
a BOS token; consecutive chunks overlap by ``overlap`` tokens, which are context only: every token of the document
is pooled exactly once, in the first chunk that contains it. BOS, padding and any other special token never
contribute. With ``f_t`` the SAE activations (``d_sae``) of pooled token ``t``:

* ``sum``: ``sum_t f_t``;  ``mean``: ``sum_t f_t / n``;  ``max``: ``max_t f_t`` (elementwise);
* ``binary``: ``1[max_t f_t > 0]`` (the latent is active anywhere);  ``count``: ``sum_t 1[f_t > 0]``.

Chunks are sorted by length and batched up to ``batch_tokens`` padded tokens. Right padding needs no attention
mask in a causal model: no real token attends to a later position. The forward pass stops at the hook's block
(``stop_at_layer``; for a ``hook_resid_post`` hook the blocks are called directly, optionally compiled, see
:class:`ResidualForward`) and caches only the hook (``names_filter``). Activations are pooled batch by batch; the
[tokens x d_sae] matrix of the whole corpus is never held.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from finsae.errors import DataError

logger = logging.getLogger(__name__)

POOLINGS: tuple[str, ...] = ("sum", "mean", "max", "binary", "count")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise DataError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
    return pooling


def hook_layer(hook_name: str) -> int:
    """Block index of a TransformerLens hook name such as ``blocks.9.hook_resid_pre``."""
    match = re.match(r"^blocks\.(\d+)\.", hook_name)
    if not match:
        raise DataError(f"hook {hook_name!r} is not inside a transformer block (expected 'blocks.<layer>.<hook>')")
    return int(match.group(1))


@dataclass(frozen=True)
class Chunk:
    doc: int  # position of the document in the input list
    tokens: list[int]  # BOS + chunk tokens
    pooled_from: int  # tokens before this position (BOS and overlap context) are not pooled


def chunk_tokens(ids: list[int], bos: int, max_length: int, overlap: int) -> list[tuple[list[int], int]]:
    """Split ``ids`` into ``(BOS + chunk, first pooled position)`` pieces of at most ``max_length`` tokens."""
    body = max_length - 1
    if body < 1:
        raise DataError(f"max_length must be at least 2 (BOS + one token), not {max_length}")
    if not 0 <= overlap < body:
        raise DataError(f"overlap must be in [0, max_length - 1) = [0, {body}), not {overlap}")
    pieces = []
    start = 0
    while True:
        begin = max(0, start - overlap) if start > 0 else 0
        piece = ids[begin: start + body - (start - begin)]
        pieces.append(([bos, *piece], 1 + (start - begin)))
        start = begin + len(piece)
        if start >= len(ids):
            break
    return pieces


@dataclass(frozen=True)
class FeatureSet:
    """Pooled features of documents.

    Attributes:
        matrix: CSR matrix (documents with text x d_sae latents), float32.
        doc_ids: identifiers of the rows of ``matrix``.
        pooling: how token activations were pooled.
        n_tokens: pooled tokens per row; n_chunks: chunks per row.
        skipped: identifier -> reason for documents with no usable text (empty, blank or missing).
        manifest: how the features were made (model, hook, SAE, chunking, pooling, dtype, timings).
    """

    matrix: sp.csr_matrix
    doc_ids: list[str]
    pooling: str
    n_tokens: np.ndarray
    n_chunks: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per document: tokens, chunks and active latents."""
        return pd.DataFrame({"doc_id": self.doc_ids, "n_tokens": self.n_tokens, "n_chunks": self.n_chunks,
                             "n_active": np.diff(self.matrix.indptr)})


def clean_texts(texts: Sequence[object]) -> tuple[list[int], dict[int, str]]:
    """Positions of usable texts, and position -> reason for the others (missing, not a string, blank)."""
    keep, skipped = [], {}
    for k, text in enumerate(texts):
        if text is None or (isinstance(text, float) and np.isnan(text)) or text is pd.NA:
            skipped[k] = "missing"
        elif not isinstance(text, str):
            skipped[k] = f"not text ({type(text).__name__})"
        elif not text.strip():
            skipped[k] = "empty or blank"
        else:
            keep.append(k)
    return keep, skipped


def _batches(chunks: list[Chunk], batch_tokens: int) -> Iterator[list[Chunk]]:
    order = sorted(range(len(chunks)), key=lambda c: len(chunks[c].tokens))
    batch: list[Chunk] = []
    longest = 0
    for c in order:
        length = len(chunks[c].tokens)
        if batch and max(longest, length) * (len(batch) + 1) > batch_tokens:
            yield batch
            batch, longest = [], 0
        batch.append(chunks[c])
        longest = max(longest, length)
    if batch:
        yield batch


def document_chunks(tokenizer, texts: Sequence[object], keep: Sequence[int], max_length: int,
                    overlap: int) -> list[Chunk]:
    """Chunks of the texts at positions ``keep``; ``Chunk.doc`` is the row (index into ``keep``)."""
    out = []
    for row, k in enumerate(keep):
        ids = tokenizer(texts[k], add_special_tokens=False)["input_ids"]
        out += [Chunk(row, piece, first) for piece, first in chunk_tokens(ids, tokenizer.bos_token_id, max_length, overlap)]
    return out


def padded_batch(tokenizer, batch: list[Chunk]):
    """Right-padded token tensor of a batch and the mask of positions to pool (no BOS, padding, control tokens
    or overlap context; an unknown-word token is a real position)."""
    import torch

    bos = tokenizer.bos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
    width = max(len(c.tokens) for c in batch)
    tokens = torch.full((len(batch), width), pad, dtype=torch.long)
    pool = torch.zeros((len(batch), width), dtype=torch.bool)
    for b, c in enumerate(batch):
        tokens[b, : len(c.tokens)] = torch.tensor(c.tokens)
        pool[b, c.pooled_from: len(c.tokens)] = True
    special = torch.tensor(sorted((set(tokenizer.all_special_ids) | {bos, pad}) - {tokenizer.unk_token_id}))
    return tokens, pool & ~torch.isin(tokens, special)


def _combine(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int], how: str) -> sp.csr_matrix:
    """CSR matrix from COO entries, duplicates combined by ``how`` ("sum" or "max")."""
    if how == "sum":
        return sp.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.float32)
    if len(rows) == 0:
        return sp.csr_matrix(shape, dtype=np.float32)
    key = rows.astype(np.int64) * shape[1] + cols
    order = np.argsort(key, kind="stable")
    key, vals = key[order], vals[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    return sp.csr_matrix((np.maximum.reduceat(vals, starts), (key[starts] // shape[1], key[starts] % shape[1])),
                         shape=shape, dtype=np.float32)


class ResidualForward:
    """The residual stream after block ``layer`` (``blocks.<layer>.hook_resid_post``), computed by calling
    TransformerLens' embedding and blocks directly: the same modules and arguments as ``HookedTransformer.forward``
    with ``stop_at_layer`` (tested equal), without hook bookkeeping, and with each block optionally compiled by
    ``torch.compile`` (inductor fuses the elementwise work between matrix products: end to end about 1.4x faster on this
    project's 2-core CPU; the residual equals eager to about 3e-7 relative, float reassociation, but TopK turns
    some of that into a different active latent on near-tied tokens). Compiling needs a C++ compiler; a failure
    is an error that says to run without compiling."""

    def __init__(self, model, layer: int, compile: bool = False) -> None:
        self.model, self.layer = model, layer
        self.blocks = list(model.blocks[: layer + 1])
        self.compiled = False
        if compile:
            cache = getattr(model, "_finsae_compiled_blocks", None)
            if cache is None:
                import torch

                for block in model.blocks:  # numpy scalars (TransformerLens' default attention scale) become
                    attn = getattr(block, "attn", None)  # tensors that dynamo mis-guards in inference mode
                    if isinstance(getattr(attn, "attn_scale", None), np.generic):
                        attn.attn_scale = float(attn.attn_scale)  # same value, exactly

                cache = [torch.compile(b, dynamic=True) for b in model.blocks]
                object.__setattr__(model, "_finsae_compiled_blocks", cache)
            self.blocks = cache[: layer + 1]
            self.compiled = True

    def _run(self, tokens, blocks):
        import torch

        with torch.inference_mode():  # one grad mode always: compiled graphs are guarded on it
            residual, _, shortformer, mask = self.model.input_to_embed(tokens)
            for blk in blocks:
                residual = blk(residual, shortformer_pos_embed=shortformer, attention_mask=mask)
        return residual

    def __call__(self, tokens):
        if not self.compiled:
            return self._run(tokens, self.blocks)
        try:
            return self._run(tokens, self.blocks)
        except Exception as exc:  # inductor needs a working C++ toolchain
            from finsae.errors import ProviderError

            raise ProviderError(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:300]}); extract without "
                                "compiling (compile=False, no --compile)") from exc


def encoded_batches(model, sae, hook: str, chunks: list[Chunk], batch_tokens: int, compile: bool = False):
    """Yield ``(chunks, tokens, mask, feats)`` per length-sorted batch: the padded tokens, the mask of pooled
    positions and the SAE activations ``[batch, width, d_sae]`` (zero outside the mask). The forward pass stops
    at the hook's block; a ``hook_resid_post`` hook is read from :class:`ResidualForward` (``compile`` applies),
    any other hook through ``run_with_cache``."""
    import torch

    tok = model.tokenizer
    stop = hook_layer(hook) + 1
    dtype = next(sae.parameters()).dtype
    device = next(sae.parameters()).device
    direct = ResidualForward(model, stop - 1, compile) if hook.endswith(".hook_resid_post") else None
    with torch.inference_mode():
        for batch in _batches(chunks, batch_tokens):
            tokens, pool = padded_batch(tok, batch)
            tokens = tokens.to(model.cfg.device)
            if direct is not None:
                acts = direct(tokens)
            else:
                _, cache = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=stop)
                acts = cache[hook]
            feats = sae.encode(acts.to(device=device, dtype=dtype)).float()  # [batch, width, d_sae]
            mask = pool.to(feats.device)
            yield batch, tokens, mask, feats * mask[..., None]


def extract_features(model, sae, texts: Sequence[object], *, doc_ids: Sequence[str] | None = None,
                     pooling: str = "sum", max_length: int | None = None, overlap: int = 0,
                     batch_tokens: int = 4096, progress: bool | None = None,
                     compile: bool = False) -> FeatureSet:
    """Pooled SAE features of ``texts`` with a TransformerLens ``model`` and a sae_lens ``sae``.

    ``max_length`` defaults to the SAE's training context size (or 512 if unknown). Texts that are missing or
    blank are skipped and listed in ``FeatureSet.skipped``, never encoded as zero rows. ``compile``: run the
    blocks through ``torch.compile`` (:class:`ResidualForward`).
    """
    import torch

    from finsae.extract.sae import check_compatible

    check_pooling(pooling)
    hook = check_compatible(model, sae)
    if max_length is None:
        max_length = int(getattr(sae.cfg.metadata, "context_size", None) or 512)
    ids = [str(d) for d in doc_ids] if doc_ids is not None else [str(k) for k in range(len(texts))]
    if len(ids) != len(texts):
        raise DataError(f"doc_ids has {len(ids)} entries but there are {len(texts)} texts")
    keep, skipped_pos = clean_texts(texts)
    if skipped_pos:
        logger.info("skipping %d document(s) without text: %s", len(skipped_pos), list(skipped_pos.values())[:5])
    tok = model.tokenizer
    if tok.bos_token_id is None:
        raise DataError("the model's tokenizer has no BOS token")
    chunks = document_chunks(tok, texts, keep, max_length, overlap)
    n_rows = len(keep)
    d_sae = int(sae.cfg.d_sae)
    dtype = next(sae.parameters()).dtype
    how = "max" if pooling in ("max", "binary") else "sum"
    parts_r, parts_c, parts_v = [], [], []
    n_tokens = np.zeros(n_rows, dtype=np.int64)
    n_chunks = np.bincount([c.doc for c in chunks], minlength=n_rows)
    total = sum(len(c.tokens) - c.pooled_from for c in chunks)
    if compile not in (True, False):
        raise DataError(f"compile must be True or False, not {compile!r}")
    use_compile = bool(compile)
    t0 = time.perf_counter()
    with torch.inference_mode(), tqdm(total=total, unit="tok", unit_scale=True, desc="extract",
                                       disable=None if progress is None else not progress) as bar:
        for batch, _, mask, feats in encoded_batches(model, sae, hook, chunks, batch_tokens, use_compile):
            if pooling in ("sum", "mean"):
                pooled = feats.sum(dim=1)
            elif pooling in ("max", "binary"):
                pooled = feats.amax(dim=1)
                if pooling == "binary":
                    pooled = (pooled > 0).float()
            else:  # count
                pooled = (feats > 0).sum(dim=1).float()
            nz = pooled.nonzero(as_tuple=True)
            docs = torch.tensor([c.doc for c in batch])
            parts_r.append(docs[nz[0].cpu()].numpy())
            parts_c.append(nz[1].cpu().numpy())
            parts_v.append(pooled[nz].cpu().numpy().astype(np.float32))
            np.add.at(n_tokens, docs.numpy(), mask.sum(dim=1).cpu().numpy())
            bar.update(int(mask.sum()))
    seconds = time.perf_counter() - t0
    rows = np.concatenate(parts_r) if parts_r else np.empty(0, dtype=np.int64)
    cols = np.concatenate(parts_c) if parts_c else np.empty(0, dtype=np.int64)
    vals = np.concatenate(parts_v) if parts_v else np.empty(0, dtype=np.float32)
    matrix = _combine(rows, cols, vals, (n_rows, d_sae), how)
    if pooling == "mean":
        matrix = sp.csr_matrix(sp.diags(1.0 / np.maximum(n_tokens, 1)) @ matrix, dtype=np.float32)
    matrix.sort_indices()
    if not np.isfinite(matrix.data).all():
        bad = sorted({ids[keep[r]] for r in np.unique(matrix.tocoo().row[~np.isfinite(matrix.tocoo().data)])})
        raise DataError(f"NaN or infinite SAE features for {len(bad)} document(s), e.g. {bad[:5]}: the model's "
                        "activations or the SAE's weights are not finite")
    manifest = {"hook": hook, "pooling": pooling, "max_length": max_length, "overlap": overlap,
                "batch_tokens": batch_tokens, "dtype": str(dtype).replace("torch.", ""), "d_sae": d_sae,
                "documents": n_rows, "skipped": len(skipped_pos), "tokens": int(n_tokens.sum()),
                "seconds": round(seconds, 3), "tokens_per_second": round(float(n_tokens.sum()) / max(seconds, 1e-9), 1),
                "compiled": use_compile}
    return FeatureSet(matrix, [ids[k] for k in keep], pooling, n_tokens, n_chunks,
                      {ids[k]: reason for k, reason in skipped_pos.items()}, manifest)
