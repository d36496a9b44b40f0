"""Pooled SAE features of documents: tokenize, chunk, run the model to the hook, encode with the SAE, pool.

For a document with tokens ``w_1..w_n`` (no special tokens), chunks hold at most ``max_length - 1`` tokens
after a BOS token; consecutive chunks overlap by ``overlap`` tokens, which are context only: every token of
the document is pooled exactly once, in the first chunk that contains it. BOS, padding and any other special
token never contribute. With ``f_t`` the SAE activations (``d_sae``) of pooled token ``t``:

* ``sum``: ``sum_t f_t``;  ``mean``: ``sum_t f_t / n``;  ``max``: ``max_t f_t`` (elementwise);
* ``binary``: ``1[max_t f_t > 0]`` (the latent is active anywhere);  ``count``: ``sum_t 1[f_t > 0]``.

Chunks are sorted by length and batched up to ``batch_tokens`` padded tokens. Right padding needs no attention
mask in a causal model: no real token attends to a later position. The forward pass stops at the hook's block
(``stop_at_layer``; for a ``hook_resid_post`` hook the blocks are called directly, optionally compiled, see
:class:`ResidualForward`) and caches only the hook (``names_filter``). Activations are pooled batch by batch;
the [tokens x d_sae] matrix of the whole corpus is never held.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from finsae.errors import DataError, ProviderError
from finsae.extract.sae import TopKEncoder, check_compatible

# torch (the 'llm' extra, seconds to import) is imported inside the functions that run the model: a
# feature-cache hit never imports it.
if TYPE_CHECKING:  # the typed model/SAE boundary
    import torch
    from sae_lens import SAE
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerBase

    from finsae.extract.tokenstats import StatsAccumulator

logger = logging.getLogger(__name__)

POOLINGS: tuple[str, ...] = ("sum", "mean", "max", "binary", "count")
#: Chunk length (tokens, BOS included) for an SAE that does not say what context size it was trained on.
FALLBACK_CONTEXT = 512


def tokenizer_of(model: HookedTransformer) -> PreTrainedTokenizerBase:
    """The model's tokenizer; a model without one (or without a BOS token) cannot be read."""
    tok = model.tokenizer
    if tok is None:
        raise DataError("the model has no tokenizer: load it with one "
                        "(HookedTransformer(cfg, tokenizer=...))")
    if tok.bos_token_id is None:
        raise DataError("the model's tokenizer has no BOS token")
    return tok


def check_pooling(pooling: str) -> str:
    """``pooling`` if it is one of :data:`POOLINGS`, else a :class:`DataError`."""
    if pooling not in POOLINGS:
        raise DataError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
    return pooling


def hook_layer(hook_name: str) -> int:
    """Block index of a TransformerLens hook name such as ``blocks.9.hook_resid_pre``."""
    match = re.match(r"^blocks\.(\d+)\.", hook_name)
    if not match:
        raise DataError(f"hook {hook_name!r} is not inside a transformer block "
                        "(expected 'blocks.<layer>.<hook>')")
    return int(match.group(1))


@dataclass(frozen=True)
class Chunk:
    doc: int  # position of the document in the input list
    tokens: list[int]  # BOS + chunk tokens
    pooled_from: int  # tokens before this position (BOS and overlap context) are not pooled


B = TypeVar("B")
if TYPE_CHECKING:
    #: One batch of :func:`encoded_batches`: its chunks, padded tokens, mask of pooled positions, activations.
    EncodedBatch: TypeAlias = tuple[list[Chunk], torch.Tensor, torch.Tensor, B]


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
    manifest: dict[str, Any] = field(default_factory=dict)

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


def length_batches(chunks: list[Chunk], batch_tokens: int) -> Iterator[list[Chunk]]:
    """The chunks sorted by length, in batches of at most ``batch_tokens`` padded tokens."""
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


def document_chunks(tokenizer: PreTrainedTokenizerBase, texts: Sequence[object], keep: Sequence[int],
                    max_length: int, overlap: int) -> list[Chunk]:
    """Chunks of the texts at positions ``keep``; ``Chunk.doc`` is the row (index into ``keep``)."""
    out = []
    for row, k in enumerate(keep):
        ids = tokenizer(texts[k], add_special_tokens=False)["input_ids"]
        pieces = chunk_tokens(ids, tokenizer.bos_token_id, max_length, overlap)
        out += [Chunk(row, piece, first) for piece, first in pieces]
    return out


def padded_batch(tokenizer: PreTrainedTokenizerBase, batch: list[Chunk]) -> tuple[torch.Tensor, torch.Tensor]:
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


def _combine(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int],
             how: str) -> sp.csr_matrix:
    """CSR matrix from COO entries, duplicates combined by ``how`` ("sum" or "max")."""
    if how == "sum":
        return sp.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.float32)
    if len(rows) == 0:
        return sp.csr_matrix(shape, dtype=np.float32)
    key = rows.astype(np.int64) * shape[1] + cols
    order = np.argsort(key, kind="stable")
    key, vals = key[order], vals[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    where = (key[starts] // shape[1], key[starts] % shape[1])
    return sp.csr_matrix((np.maximum.reduceat(vals, starts), where), shape=shape, dtype=np.float32)


class ResidualForward:
    """The residual stream after block ``layer`` (``blocks.<layer>.hook_resid_post``), computed by calling
    TransformerLens' embedding and blocks directly: the same modules and arguments as
    ``HookedTransformer.forward`` with ``stop_at_layer`` (tested equal), without hook bookkeeping, and with
    each block optionally compiled by ``torch.compile`` (inductor fuses the elementwise work between matrix
    products: end to end about 1.4x faster on this project's 2-core CPU; the residual equals eager to about
    3e-7 relative, float reassociation, but TopK turns some of that into a different active latent on
    near-tied tokens). Compiling needs a C++ compiler; a failure is an error that says to run without
    compiling."""

    def __init__(self, model: HookedTransformer, layer: int, compile: bool = False) -> None:
        self.model, self.layer = model, layer
        self.blocks = list(model.blocks[: layer + 1])
        self.compiled = False
        if compile:
            cache = getattr(model, "_finsae_compiled_blocks", None)
            if cache is None:
                import torch

                for block in model.blocks:  # numpy scalars (TransformerLens' default attention scale) become
                    attn = getattr(block, "attn", None)  # tensors that dynamo mis-guards in inference mode
                    scale = getattr(attn, "attn_scale", None)
                    if attn is not None and isinstance(scale, np.generic):
                        attn.attn_scale = float(scale)  # same value, exactly

                cache = [torch.compile(b, dynamic=True) for b in model.blocks]
                object.__setattr__(model, "_finsae_compiled_blocks", cache)
            self.blocks = cache[: layer + 1]
            self.compiled = True

    def _run(self, tokens: torch.Tensor, blocks: Sequence[Any],
             taps: frozenset[int] = frozenset()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        import torch

        out = {}
        with torch.inference_mode():  # one grad mode always: compiled graphs are guarded on it
            residual, _, shortformer, mask = self.model.input_to_embed(tokens)
            for layer, blk in enumerate(blocks):
                residual = blk(residual, shortformer_pos_embed=shortformer, attention_mask=mask)
                if layer in taps:
                    out[layer] = residual
        return residual, out

    def _guarded(self, tokens: torch.Tensor,
                 taps: frozenset[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        if not self.compiled:
            return self._run(tokens, self.blocks, taps)
        try:
            return self._run(tokens, self.blocks, taps)
        except Exception as exc:  # inductor needs a working C++ toolchain
            raise ProviderError(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:300]}); extract "
                                "without compiling (compile=False, no --compile)") from exc

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._guarded(tokens, frozenset())[0]

    def residuals(self, tokens: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """The residual stream after each block in ``layers`` (all at most ``self.layer``), from one pass: a
        shallower layer's tensor is the one the deeper blocks then read, so it equals a pass stopped there."""
        taps = frozenset(int(x) for x in layers)
        if taps and max(taps) > self.layer:
            raise ValueError(f"layer {max(taps)} is past the last block of this forward ({self.layer})")
        return self._guarded(tokens, taps)[1]


def hook_activations(model: HookedTransformer, hooks: Sequence[str],
                     compile: bool = False) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A function ``tokens -> {hook: activation}`` that reads every hook in ``hooks`` from one forward pass to
    the deepest of them. ``hook_resid_post`` hooks are read between the blocks of one :class:`ResidualForward`
    (``compile`` applies); any other hook from one ``run_with_cache`` with all of them in ``names_filter``.
    Each activation equals that of a pass stopped at its own hook (the blocks before it are the same calls on
    the same inputs). A mix of both kinds takes one pass of each kind, as a single hook of that kind would."""
    direct = sorted({h for h in hooks if h.endswith(".hook_resid_post")}, key=hook_layer)
    cached = sorted({h for h in hooks if not h.endswith(".hook_resid_post")}, key=hook_layer)
    forward = ResidualForward(model, hook_layer(direct[-1]), compile) if direct else None
    layers = {h: hook_layer(h) for h in direct}
    stop = max((hook_layer(h) for h in cached), default=-1) + 1

    def run(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        acts = {}
        if forward is not None:
            taps = forward.residuals(tokens, sorted(set(layers.values())))
            acts.update({h: taps[layer] for h, layer in layers.items()})
        if cached:
            _, cache = model.run_with_cache(tokens, names_filter=list(cached), stop_at_layer=stop)
            acts.update({h: cache[h] for h in cached})
        return acts

    return run


def encoded_batches_many(model: HookedTransformer, saes: Sequence[SAE], chunks: list[Chunk],
                         batch_tokens: int,
                         compile: bool = False) -> Iterator[EncodedBatch[list[torch.Tensor]]]:
    """Yield ``(chunks, tokens, mask, [feats of each SAE])`` per length-sorted batch, from one forward pass
    per batch for all ``saes`` (:func:`hook_activations`): each SAE's activations ``[batch, width, d_sae]``
    are zero outside the mask and equal those of :func:`encoded_batches` with that SAE alone (same batches,
    same forward calls, the same encode: :class:`~finsae.extract.sae.TopKEncoder`, equal to ``sae.encode``).
    An SAE given twice is encoded once."""
    import torch

    tok = tokenizer_of(model)
    hooks = [check_compatible(model, s) for s in saes]
    read = hook_activations(model, hooks, compile)
    distinct: dict[int, int] = {}
    for n, s in enumerate(saes):
        distinct.setdefault(id(s), n)
    encoders = {id(s): TopKEncoder(s) for s in saes}
    with torch.inference_mode():
        for batch in length_batches(chunks, batch_tokens):
            tokens, pool = padded_batch(tok, batch)
            tokens = tokens.to(model.cfg.device)
            acts = read(tokens)
            encoded: dict[int, torch.Tensor] = {}
            masks: dict[torch.device, torch.Tensor] = {}
            for n, s in enumerate(saes):
                if distinct[id(s)] != n:
                    continue
                param = next(s.parameters())
                if param.device not in masks:
                    masks[param.device] = pool.to(param.device)
                encoded[id(s)] = encoders[id(s)](acts[hooks[n]].to(device=param.device, dtype=param.dtype),
                                                 masks[param.device])
            first = encoded[id(saes[0])]
            yield batch, tokens, masks[first.device], [encoded[id(s)] for s in saes]


def encoded_batches(model: HookedTransformer, sae: SAE, hook: str, chunks: list[Chunk], batch_tokens: int,
                    compile: bool = False) -> Iterator[EncodedBatch[torch.Tensor]]:
    """Yield ``(chunks, tokens, mask, feats)`` per length-sorted batch: the padded tokens, the mask of pooled
    positions and the SAE activations ``[batch, width, d_sae]`` (zero outside the mask). The forward pass
    stops at the hook's block; a ``hook_resid_post`` hook is read from :class:`ResidualForward` (``compile``
    applies), any other hook through ``run_with_cache``. (One SAE of :func:`encoded_batches_many`; ``hook``
    must be the SAE's.)"""
    if hook != sae.cfg.metadata.hook_name:
        raise DataError(f"hook {hook!r} is not the SAE's ({sae.cfg.metadata.hook_name!r})")
    for batch, tokens, mask, (feats,) in encoded_batches_many(model, [sae], chunks, batch_tokens, compile):
        yield batch, tokens, mask, feats


class _Pooler:
    """Pooled features of one (SAE, pooling) request, accumulated batch by batch (the arithmetic of
    :func:`extract_features`: the same reductions in the same order)."""

    def __init__(self, pooling: str, n_rows: int, d_sae: int) -> None:
        self.pooling, self.n_rows, self.d_sae = pooling, n_rows, d_sae
        self.parts_r: list[np.ndarray] = []
        self.parts_c: list[np.ndarray] = []
        self.parts_v: list[np.ndarray] = []

    def add(self, docs: torch.Tensor, feats: torch.Tensor) -> None:
        pooling = self.pooling
        if pooling in ("sum", "mean"):
            pooled = feats.sum(dim=1)
        elif pooling in ("max", "binary"):
            pooled = feats.amax(dim=1)
            if pooling == "binary":
                pooled = (pooled > 0).float()
        else:  # count
            pooled = (feats > 0).sum(dim=1).float()
        nz = pooled.nonzero(as_tuple=True)
        self.parts_r.append(docs[nz[0].cpu()].numpy())
        self.parts_c.append(nz[1].cpu().numpy())
        self.parts_v.append(pooled[nz].cpu().numpy().astype(np.float32))

    def matrix(self, n_tokens: np.ndarray) -> sp.csr_matrix:
        rows = np.concatenate(self.parts_r) if self.parts_r else np.empty(0, dtype=np.int64)
        cols = np.concatenate(self.parts_c) if self.parts_c else np.empty(0, dtype=np.int64)
        vals = np.concatenate(self.parts_v) if self.parts_v else np.empty(0, dtype=np.float32)
        how = "max" if self.pooling in ("max", "binary") else "sum"
        matrix = _combine(rows, cols, vals, (self.n_rows, self.d_sae), how)
        if self.pooling == "mean":
            matrix = sp.csr_matrix(sp.diags(1.0 / np.maximum(n_tokens, 1)) @ matrix, dtype=np.float32)
        matrix.sort_indices()
        return matrix


def extract_features(model: HookedTransformer, sae: SAE, texts: Sequence[object], *,
                     doc_ids: Sequence[str] | None = None, pooling: str = "sum",
                     max_length: int | None = None, overlap: int = 0, batch_tokens: int = 4096,
                     progress: bool | None = None, compile: bool = False) -> FeatureSet:
    """Pooled SAE features of ``texts`` with a TransformerLens ``model`` and a sae_lens ``sae``.

    ``max_length`` defaults to the SAE's training context size (or 512 if unknown). Texts that are missing or
    blank are skipped and listed in ``FeatureSet.skipped``, never encoded as zero rows. ``compile``: run the
    blocks through ``torch.compile`` (:class:`ResidualForward`).
    """
    return extract_features_many(model, [(sae, pooling)], texts, doc_ids=doc_ids, max_length=max_length,
                                 overlap=overlap, batch_tokens=batch_tokens, progress=progress,
                                 compile=compile)[0]


def _context_size(sae: SAE) -> int:
    return int(getattr(sae.cfg.metadata, "context_size", None) or FALLBACK_CONTEXT)


def extract_features_many(model: HookedTransformer, requests: Sequence[tuple[SAE, str]],
                          texts: Sequence[object], *, doc_ids: Sequence[str] | None = None,
                          max_length: int | None = None, overlap: int = 0,
                          batch_tokens: int = 4096, progress: bool | None = None,
                          compile: bool = False,
                          stats: Sequence[StatsAccumulator | None] | None = None) -> list[FeatureSet]:
    """Pooled features of ``texts`` for every ``(sae, pooling)`` request, from one language-model pass per
    batch (:func:`encoded_batches_many`; SAEs on any hooks, each SAE encoded once however many poolings ask
    for it). Each result equals :func:`extract_features` with that SAE and pooling alone, bit for bit. The
    requests share the chunking: ``max_length`` defaults to the SAEs' common context size (different ones are
    an error).

    ``stats``: one :class:`~finsae.extract.tokenstats.StatsAccumulator` (or None) per request, fed every
    batch's pooled token activations of that request's SAE, token ids and document rows (the latent-label
    statistics, from the same pass).
    """
    import torch

    if not requests:
        raise DataError("no (sae, pooling) request to extract")
    saes = [r[0] for r in requests]
    for sae, pooling in requests:
        check_pooling(pooling)
        check_compatible(model, sae)
    if max_length is None:
        sizes = {_context_size(s) for s in saes}
        if len(sizes) > 1:
            raise DataError(f"the SAEs were trained on different context sizes {sorted(sizes)}: pass "
                            "max_length or extract them apart")
        max_length = sizes.pop()
    ids = [str(d) for d in doc_ids] if doc_ids is not None else [str(k) for k in range(len(texts))]
    if len(ids) != len(texts):
        raise DataError(f"doc_ids has {len(ids)} entries but there are {len(texts)} texts")
    if compile not in (True, False):
        raise DataError(f"compile must be True or False, not {compile!r}")
    keep, skipped_pos = clean_texts(texts)
    if skipped_pos:
        logger.info("skipping %d document(s) without text: %s", len(skipped_pos),
                    list(skipped_pos.values())[:5])
    if stats is not None and len(stats) != len(requests):
        raise DataError(f"stats has {len(stats)} entries for {len(requests)} requests")
    tok = tokenizer_of(model)
    chunks = document_chunks(tok, texts, keep, max_length, overlap)
    n_rows = len(keep)
    poolers = [_Pooler(pooling, n_rows, int(sae.cfg.d_sae)) for sae, pooling in requests]
    n_tokens = np.zeros(n_rows, dtype=np.int64)
    n_chunks = np.bincount([c.doc for c in chunks], minlength=n_rows)
    total = sum(len(c.tokens) - c.pooled_from for c in chunks)
    use_compile = bool(compile)
    t0 = time.perf_counter()
    with torch.inference_mode(), tqdm(total=total, unit="tok", unit_scale=True, desc="extract",
                                       disable=None if progress is None else not progress) as bar:
        for batch, tokens, mask, feats in encoded_batches_many(model, saes, chunks, batch_tokens,
                                                               use_compile):
            docs = torch.tensor([c.doc for c in batch])
            for pooler, f in zip(poolers, feats, strict=True):
                pooler.add(docs, f)
            if stats is not None and any(a is not None for a in stats):
                m = mask.cpu()
                token_ids = tokens.cpu()[m].numpy()
                rows = docs[:, None].expand_as(m)[m].numpy()
                for acc, f in zip(stats, feats, strict=True):
                    if acc is not None:
                        acc.add(f.cpu()[m], token_ids, rows)
            np.add.at(n_tokens, docs.numpy(), mask.sum(dim=1).cpu().numpy())
            bar.update(int(mask.sum()))
    seconds = time.perf_counter() - t0
    shared = len({id(s) for s in saes})
    out = []
    for (sae, pooling), pooler in zip(requests, poolers, strict=True):
        matrix = pooler.matrix(n_tokens)
        if not np.isfinite(matrix.data).all():
            coo = matrix.tocoo()
            bad = sorted({ids[keep[r]] for r in np.unique(coo.row[~np.isfinite(coo.data)])})
            raise DataError(f"NaN or infinite SAE features for {len(bad)} document(s), e.g. {bad[:5]}: the "
                            "model's activations or the SAE's weights are not finite")
        dtype = next(sae.parameters()).dtype
        manifest = {"hook": sae.cfg.metadata.hook_name, "pooling": pooling, "max_length": max_length,
                    "overlap": overlap, "batch_tokens": batch_tokens,
                    "dtype": str(dtype).replace("torch.", ""), "d_sae": pooler.d_sae, "documents": n_rows,
                    "skipped": len(skipped_pos),
                    "tokens": int(n_tokens.sum()), "seconds": round(seconds, 3),
                    "tokens_per_second": round(float(n_tokens.sum()) / max(seconds, 1e-9), 1),
                    "compiled": use_compile}
        if shared > 1:
            manifest["shared_pass_saes"] = shared  # the seconds are those of the pass that fed all of them
        out.append(FeatureSet(matrix, [ids[k] for k in keep], pooling, n_tokens.copy(), n_chunks.copy(),
                              {ids[k]: reason for k, reason in skipped_pos.items()}, manifest))
    return out
