"""Train and evaluate TopK SAEs on a model's residual activations with sae_lens (its trainer, its format).

* Activations: the corpus is tokenized and chunked as for extraction; BOS, padding, special tokens and overlap
  context are dropped, and so are tokens whose activation norm exceeds ``max_norm_ratio`` times the median
  norm (rare huge-norm positions that would dominate the reconstruction loss).
* Training: ``sae_lens.TopKTrainingSAE`` with ``SAETrainer`` fed from the cached activations, decoder bias
  initialised at the activation mean (Gemma's residual stream has a large constant offset), cosine
  learning-rate decay to ``lr / 10``; saved with ``save_inference_model`` (``cfg.json`` +
  ``sae_weights.safetensors``).
* Quality on held-out documents: explained variance ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``, mean
  L0, the share of latents never active (dead), and the share of language-model loss recovered when the SAE
  reconstruction replaces the activation from position 1 on:
  ``(CE_zero - CE_sae) / (CE_zero - CE_clean)``, with ``CE_zero`` the loss when the activation is zeroed
  there.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from finsae.errors import DataError
from finsae.extract.features import (
    Chunk,
    clean_texts,
    document_chunks,
    hook_layer,
    length_batches,
    padded_batch,
    tokenizer_of,
)

if TYPE_CHECKING:  # the typed model/SAE boundary; torch, sae_lens and TransformerLens load lazily at run time
    import torch
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)


def _chunks(model: HookedTransformer, texts: Sequence[object], max_length: int) -> list[Chunk]:
    return document_chunks(tokenizer_of(model), texts, clean_texts(texts)[0], max_length, 0)


Activations = dict[str, np.ndarray]


@overload
def collect_activations(model: HookedTransformer, texts: Sequence[object], hooks: Sequence[str], *,
                        max_length: int = ..., batch_tokens: int = ..., max_norm_ratio: float = ...,
                        return_docs: Literal[False] = ...) -> Activations: ...


@overload
def collect_activations(model: HookedTransformer, texts: Sequence[object], hooks: Sequence[str], *,
                        max_length: int = ..., batch_tokens: int = ..., max_norm_ratio: float = ...,
                        return_docs: Literal[True]) -> tuple[Activations, Activations]: ...


def collect_activations(model: HookedTransformer, texts: Sequence[object], hooks: Sequence[str], *,
                        max_length: int = 512, batch_tokens: int = 8192, max_norm_ratio: float = 10.0,
                        return_docs: bool = False) -> Activations | tuple[Activations, Activations]:
    """Activations (tokens x d_model, float32) at each hook for every pooled token of ``texts``; with
    ``return_docs`` also the row (position among the texts with text) of every kept token."""
    import torch

    stop = max(hook_layer(h) for h in hooks) + 1
    out: dict[str, list[np.ndarray]] = {h: [] for h in hooks}
    docs: list[np.ndarray] = []
    with torch.inference_mode():
        for batch in length_batches(_chunks(model, texts, max_length), batch_tokens):
            tokens, pool = padded_batch(tokenizer_of(model), batch)
            _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=list(hooks),
                                            stop_at_layer=stop)
            for h in hooks:
                out[h].append(cache[h][pool.to(cache[h].device)].float().cpu().numpy())
            docs.append(np.repeat([c.doc for c in batch], pool.sum(dim=1).numpy()))
    result, result_docs = {}, {}
    all_docs = np.concatenate(docs)
    for h, parts in out.items():
        acts = np.concatenate(parts)
        norms = np.linalg.norm(acts, axis=1)
        keep = norms <= max_norm_ratio * np.median(norms)
        if (~keep).any():
            logger.info("%s: dropped %d huge-norm token(s) of %d", h, int((~keep).sum()), len(acts))
        result[h] = acts[keep]
        result_docs[h] = all_docs[keep]
    return (result, result_docs) if return_docs else result


def train_topk_sae(acts: np.ndarray, *, hook_name: str, d_sae: int, k: int = 32, context_size: int = 512,
                   model_name: str = "", epochs: int = 5, batch_size: int = 1024, lr: float = 3e-4,
                   seed: int = 0, autocast: bool = True, out_dir: str | Path | None = None,
                   dead_feature_window: int = 1000,
                   architecture: Literal["topk", "batchtopk"] = "topk") -> SAE:
    """Train a TopK SAE on ``acts`` (tokens x d_in) and return the inference SAE (saved to ``out_dir`` if
    given). ``architecture="batchtopk"``: sae_lens' BatchTopK (the ``k x batch`` largest activations of a
    batch are kept; saved for inference as JumpReLU with the learned threshold).

    ``dead_feature_window``: steps without firing after which a latent counts as dead and the AuxK loss starts
    pulling it towards the residual (sae_lens' default 1,000 steps exceeds a short run on a small corpus)."""
    import torch  # heavy optional imports (the 'llm' extra): only when an SAE is trained
    from sae_lens import (
        SAE,
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        LoggingConfig,
        SAETrainer,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.training.sae_trainer import SAETrainerConfig

    # training needs autograd even where a caller's code left it off (TransformerLens' toggle_autodiff sets
    # the global grad mode; a grad-mode context inside an unfinished generator outlives its yield)
    with torch.inference_mode(False), torch.enable_grad():
        if len(acts) < batch_size:
            raise DataError(f"only {len(acts)} activation tokens: fewer than one batch of {batch_size}")
        torch.manual_seed(seed)
        data = torch.from_numpy(np.ascontiguousarray(acts, dtype=np.float32))
        if architecture not in ("topk", "batchtopk"):
            raise DataError(f"architecture must be 'topk' or 'batchtopk', not {architecture!r}")
        meta = SAEMetadata(hook_name=hook_name, context_size=context_size, model_name=model_name,
                           prepend_bos=True)
        sae: Any
        if architecture == "topk":
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=data.shape[1], d_sae=d_sae, k=k, metadata=meta))
        else:
            sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=data.shape[1], d_sae=d_sae, k=k,
                                                                  metadata=meta))
        with torch.no_grad():
            sae.b_dec.copy_(data.mean(dim=0))
        generator = torch.Generator().manual_seed(seed)

        def batches() -> Iterator[torch.Tensor]:
            while True:
                for idx in torch.randperm(len(data), generator=generator).split(batch_size):
                    if len(idx) == batch_size:
                        yield data[idx]

        total = epochs * (len(data) // batch_size) * batch_size
        trainer_cfg = SAETrainerConfig(total_training_samples=total, train_batch_size_samples=batch_size,
                                       lr=lr,
                                       lr_end=lr / 10, lr_scheduler_name="cosineannealing", autocast=autocast,
                                       logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0,
                                       save_final_checkpoint=False, n_batches_for_norm_estimate=10,
                                       dead_feature_window=dead_feature_window)
        trained = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches()).fit()
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(out_dir) if out_dir is not None else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            trained.save_inference_model(str(folder))
            return SAE.load_from_disk(str(folder)).eval()


@dataclass(frozen=True)
class SAEQuality:
    explained_variance: float
    l0: float
    dead_share: float
    ce_clean: float
    ce_sae: float
    ce_zero: float
    loss_recovered: float
    eval_tokens: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def meets_floor(self, ev: float = 0.80, recovered: float = 0.85, dead: float = 0.50) -> bool:
        return self.explained_variance >= ev and self.loss_recovered >= recovered and self.dead_share <= dead


def evaluate_sae(model: HookedTransformer, sae: SAE, texts: Sequence[object], *, max_length: int = 512,
                 batch_tokens: int = 4096, acts: np.ndarray | None = None,
                 loss_batch_tokens: int = 512, reference: tuple[float, float] | None = None) -> SAEQuality:
    """Quality of ``sae`` on held-out ``texts`` (see the module docstring for the formulas).

    The language-model loss is computed in batches of ``loss_batch_tokens`` padded tokens: the logits of one
    batch take ``tokens x vocabulary x 4`` bytes (0.5 GB for 512 tokens of Gemma's 262,144-token
    vocabulary). ``reference``: ``(CE_clean, CE_zero)`` already measured on the same texts and hook (another
    SAE of the same layer): only the spliced loss is computed."""
    import torch

    hook = sae.cfg.metadata.hook_name
    if acts is None:
        acts = collect_activations(model, texts, [hook], max_length=max_length,
                                   batch_tokens=batch_tokens)[hook]
    x = torch.from_numpy(acts)
    resid = torch.zeros((), dtype=torch.float64)
    ever_active = torch.zeros(int(sae.cfg.d_sae), dtype=torch.bool)
    l0_sum = 0.0
    with torch.inference_mode():
        for start in range(0, len(x), 8192):  # in slices: [tokens x d_sae] of the whole set is never held
            xs = x[start: start + 8192]
            feats = sae.encode(xs.to(next(sae.parameters()).dtype))
            resid += ((xs - sae.decode(feats).float()) ** 2).sum(dtype=torch.float64)
            active = feats > 0
            ever_active |= active.any(dim=0)
            l0_sum += float(active.sum())
    total = ((x - x.mean(dim=0)) ** 2).sum(dtype=torch.float64)
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    modes = ["sae"] if reference is not None else list(ce)
    n_pred = 0

    def splice(mode: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            if mode == "sae":
                rec = sae.decode(sae.encode(act.to(next(sae.parameters()).dtype))).to(act.dtype)
                act[:, 1:] = rec[:, 1:]
            elif mode == "zero":
                act[:, 1:] = 0.0
            return act
        return hook_fn

    with torch.inference_mode():
        for batch in length_batches(_chunks(model, texts, max_length), loss_batch_tokens):
            tokens, pool = padded_batch(tokenizer_of(model), batch)
            target_mask = pool[:, 1:]  # predict every real token after the first position
            for mode in modes:
                hooks = [] if mode == "clean" else [(hook, splice(mode))]
                logits = model.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits")[:, :-1]
                nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                        tokens[:, 1:].reshape(-1), reduction="none")
                ce[mode] += float(nll[target_mask.reshape(-1)].sum())
                del logits, nll
            n_pred += int(target_mask.sum())
    ce = {m: v / max(n_pred, 1) for m, v in ce.items()}
    if reference is not None:
        ce["clean"], ce["zero"] = reference
    lost = ce["zero"] - ce["clean"]
    recovered = (ce["zero"] - ce["sae"]) / lost if ce["zero"] != ce["clean"] else math.nan
    return SAEQuality(float(1 - resid / total), l0_sum / max(len(x), 1), float((~ever_active).float().mean()),
                      ce["clean"], ce["sae"], ce["zero"], float(recovered), len(acts))


# --- activations on disk: one language-model pass, every hook, resumable ------------------------------------


def _bf16_bits(x: torch.Tensor) -> np.ndarray:
    import torch

    return x.to(torch.bfloat16).view(torch.int16).cpu().numpy()


def _from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    import torch

    return torch.from_numpy(np.ascontiguousarray(bits)).view(torch.bfloat16).float().numpy()


def write_activation_shards(model: HookedTransformer, texts: Sequence[str], hooks: Sequence[str],
                            folder: str | Path, *, model_id: str, max_length: int = 512,
                            batch_tokens: int = 4096, shard_docs: int = 250, progress: bool = False) -> Path:
    """Residual activations of every pooled token of ``texts`` at every hook, from one forward pass to the
    deepest hook, written to ``folder`` in shards of ``shard_docs`` texts (``shard_NNNNN.npz``: ``docs``, the
    text's position, ``tokens``, the token ids, and per hook the activations in bfloat16, 2 bytes a value).

    Resumable: shards already written are kept; the folder's ``manifest.json`` (hooks, chunking, model, the
    texts' digest) must match, else the folder is refused (a different corpus or model is not mixed in)."""
    import hashlib
    import json

    import torch

    from finsae._io import atomic_write, write_json

    out = Path(folder)
    digest = hashlib.sha256("\n".join(hashlib.sha256(t.encode()).hexdigest() for t in texts).encode())
    manifest = {"hooks": list(hooks), "max_length": max_length, "model": model_id, "n_texts": len(texts),
                "texts_sha256": digest.hexdigest(), "shard_docs": shard_docs, "dtype": "bfloat16"}
    mpath = out / "manifest.json"
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        if old != manifest:
            diff = sorted(k for k in manifest if old.get(k) != manifest[k])
            raise DataError(f"{out} holds activations of another corpus or model (differs in {diff}); use "
                            "another folder or remove it")
    else:
        write_json(manifest, mpath)
    stop = max(hook_layer(h) for h in hooks) + 1
    tok = tokenizer_of(model)
    starts = range(0, len(texts), shard_docs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts), desc="activation shards", unit="shard")
    for s, start in enumerate(starts):
        path = out / f"shard_{s:05d}.npz"
        if not path.is_file():
            part = list(texts[start: start + shard_docs])
            acts: dict[str, list[np.ndarray]] = {h: [] for h in hooks}
            docs: list[np.ndarray] = []
            ids: list[np.ndarray] = []
            with torch.inference_mode():
                for batch in length_batches(_chunks(model, part, max_length), batch_tokens):
                    tokens, pool = padded_batch(tok, batch)
                    ids.append(tokens[pool].numpy().astype(np.int32))
                    _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=list(hooks),
                                                    stop_at_layer=stop)
                    for h in hooks:
                        acts[h].append(_bf16_bits(cache[h][pool.to(cache[h].device)]))
                    docs.append(start + np.repeat([c.doc for c in batch], pool.sum(dim=1).numpy()))
            arrays = {h: np.concatenate(v) if v else np.zeros((0, model.cfg.d_model), np.int16)
                      for h, v in acts.items()}
            doc_rows = np.concatenate(docs).astype(np.int32) if docs else np.zeros(0, np.int32)
            token_ids = np.concatenate(ids) if ids else np.zeros(0, np.int32)

            def save(tmp: Path, arrays: dict[str, np.ndarray] = arrays,
                     doc_rows: np.ndarray = doc_rows, token_ids: np.ndarray = token_ids) -> None:
                named: dict[str, Any] = {f"act{i}": arrays[h] for i, h in enumerate(hooks)}
                with open(tmp, "wb") as fh:
                    np.savez(fh, docs=doc_rows, tokens=token_ids, **named)

            atomic_write(path, save)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


def read_activations(folder: str | Path, hook: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The activations (tokens x d_model, float32) at ``hook`` written by :func:`write_activation_shards`,
    each token's text position and its token id."""
    import json

    out = Path(folder)
    mpath = out / "manifest.json"
    if not mpath.is_file():
        raise DataError(f"{out} holds no activations (no manifest.json)")
    manifest = json.loads(mpath.read_text())
    if hook not in manifest["hooks"]:
        raise DataError(f"{out} has no activations at {hook}; it has {manifest['hooks']}")
    i = manifest["hooks"].index(hook)
    n_shards = -(-int(manifest["n_texts"]) // int(manifest["shard_docs"]))
    parts, docs, ids = [], [], []
    for s in range(n_shards):
        path = out / f"shard_{s:05d}.npz"
        if not path.is_file():
            raise DataError(f"{out} is incomplete: {path.name} is missing (rerun to finish it)")
        with np.load(path) as z:
            parts.append(_from_bf16_bits(z[f"act{i}"]))
            docs.append(z["docs"])
            ids.append(z["tokens"])
    return np.concatenate(parts), np.concatenate(docs), np.concatenate(ids)


def norm_keep(acts: np.ndarray, max_norm_ratio: float = 10.0) -> np.ndarray:
    """Tokens to train on: activation norm at most ``max_norm_ratio`` times the median norm."""
    norms = np.linalg.norm(acts, axis=1)
    return norms <= max_norm_ratio * np.median(norms)
