"""Choose the default SAE by measurement: train TopK SAEs at candidate layers and widths, report their
quality, and score the peers they produce on returns *before* the forward window only.

Candidates already trained in ``out_dir/candidates`` by an interrupted run are reused, not retrained.

Rule: among the candidates that meet the quality floor (explained variance >= 0.80, LM loss recovered >= 85%,
dead latents <= 50%), the one whose companies' 5 nearest neighbours (cosine of log1p sum-pooled features) have
the highest mean monthly-return correlation over ``returns_window`` (default 2010-01 to 2017-05, before the
2017 descriptions were published). Every candidate's figures are written to ``selection.json`` beside the
SAEs.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from finsae._io import write_json
from finsae.evaluate.comovement import CorrelationMatrix
from finsae.evaluate.ranking import cosine_similarity_matrix, topk_neighbour_correlation
from finsae.extract.model import LoadedModel
from finsae.extract.sae import load_sae
from finsae.extract.train import SAEQuality, collect_activations, evaluate_sae, train_topk_sae

if TYPE_CHECKING:  # sae_lens loads lazily
    from sae_lens import SAE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SAESweep:
    """The candidates of a sweep (every ``layers`` x ``widths``, TopK with ``k`` active latents at
    ``blocks.<layer>.<hook_kind>``) and how each is trained (``epochs``, ``batch_size``, chunks of
    ``max_length`` tokens, ``dead_feature_window``) and judged (a ``holdout`` share of the documents drawn
    with ``seed``; ``eval_docs`` of them for the language-model loss)."""

    layers: tuple[int, ...]
    widths: tuple[int, ...]
    k: int = 32
    hook_kind: str = "hook_resid_post"
    epochs: int = 5
    batch_size: int = 1024
    max_length: int = 512
    holdout: float = 0.2
    seed: int = 0
    eval_docs: int = 150
    dead_feature_window: int = 1000

    @property
    def hooks(self) -> list[str]:
        return [f"blocks.{layer}.{self.hook_kind}" for layer in self.layers]

    @staticmethod
    def candidate_name(hook: str, width: int) -> str:
        """``blocks.3.hook_resid_post``, 2048 -> ``L3-resid_post-2048``."""
        return f"{hook.replace('blocks.', 'L').replace('.hook_', '-')}-{width}"


def pooled_sums(sae: SAE, acts: np.ndarray, rows: np.ndarray, n_rows: int, batch: int = 8192) -> np.ndarray:
    """Sum-pooled SAE activations per document row from token activations ``acts`` and their ``rows``."""
    import torch  # heavy: only once activations are in memory

    out = np.zeros((n_rows, int(sae.cfg.d_sae)), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(acts), batch):
            f = sae.encode(torch.from_numpy(acts[start: start + batch])).numpy()
            np.add.at(out, rows[start: start + batch], f)
    return out


def _trained(loaded: LoadedModel, sweep: SAESweep, folder: Path, acts: np.ndarray, hook: str,
             width: int) -> SAE:
    """The candidate in ``folder``: reused where an earlier, interrupted run saved it, else trained on
    ``acts`` and saved there."""
    if (folder / "cfg.json").is_file():
        logger.info("reusing the trained candidate %s", folder)
        return load_sae(folder)
    logger.info("training %s on %d tokens", folder.name, len(acts))
    return train_topk_sae(acts, hook_name=hook, d_sae=width, k=sweep.k, context_size=sweep.max_length,
                          model_name=loaded.model_id, epochs=sweep.epochs, batch_size=sweep.batch_size,
                          seed=sweep.seed, autocast=False, out_dir=folder,
                          dead_feature_window=sweep.dead_feature_window)


def _peer_scores(sae: SAE, acts: np.ndarray, rows: np.ndarray, tickers: Sequence[str],
                 corr: CorrelationMatrix) -> dict[str, float]:
    """Mean return correlation of each company's 1, 5 and 10 nearest neighbours by the candidate's
    features."""
    sim = cosine_similarity_matrix(pooled_sums(sae, acts, rows, len(tickers)), "log1p")
    return {f"top{kk}_corr_pre": v for kk, v in
            topk_neighbour_correlation(sim, pd.Index(tickers), corr, (1, 5, 10)).items()}


def train_and_select(loaded: LoadedModel, texts: Sequence[str], tickers: Sequence[str], out_dir: str | Path,
                     sweep: SAESweep, corr: CorrelationMatrix | None = None) -> pd.DataFrame:
    """Train every candidate of ``sweep``, evaluate it, choose by the module's rule (peers scored on ``corr``,
    a return correlation matrix of the companies; without it, by explained variance); return the figures."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    rng = np.random.default_rng(sweep.seed)
    n = len(texts)
    is_holdout = np.zeros(n, dtype=bool)
    is_holdout[rng.choice(n, size=int(round(sweep.holdout * n)), replace=False)] = True
    hooks = sweep.hooks
    logger.info("collecting activations of %d documents at %s", n, hooks)
    acts, rows = collect_activations(model, list(texts), hooks, max_length=sweep.max_length, return_docs=True)
    held_texts = [t for t, h in zip(texts, is_holdout, strict=True) if h][:sweep.eval_docs]
    records = []
    for hook in hooks:
        train_mask = ~is_holdout[rows[hook]]
        for width in sweep.widths:
            name = sweep.candidate_name(hook, width)
            sae = _trained(loaded, sweep, out / "candidates" / name, acts[hook][train_mask], hook, width)
            quality: SAEQuality = evaluate_sae(model, sae, held_texts, max_length=sweep.max_length,
                                               acts=acts[hook][~train_mask])
            record = {"candidate": name, "hook": hook, "d_sae": width, "k": sweep.k, **quality.to_dict(),
                      "meets_floor": quality.meets_floor(), "train_tokens": int(train_mask.sum())}
            if corr is not None:
                record.update(_peer_scores(sae, acts[hook], rows[hook], tickers, corr))
            logger.info("%s: %s", name, record)
            records.append(record)
    table = pd.DataFrame(records)
    ok = table[table["meets_floor"]] if table["meets_floor"].any() else table
    score = "top5_corr_pre" if "top5_corr_pre" in table else "explained_variance"
    chosen = ok.sort_values(score, ascending=False).iloc[0]["candidate"]
    table["chosen"] = table["candidate"] == chosen
    final = out / "sae"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(out / "candidates" / chosen, final)
    rule = str(__doc__).split("Rule: ")[1].split("Every candidate")[0].strip().replace("\n", " ")
    write_json({"rule": rule, "chosen": chosen, "candidates": table.to_dict(orient="records"),
                "returns_window": None if corr is None else [str(corr.start.date()), str(corr.end.date())],
                "holdout_share": sweep.holdout, "seed": sweep.seed, "epochs": sweep.epochs,
                "model": loaded.model_id, "dead_feature_window": sweep.dead_feature_window},
               final / "selection.json")
    return table
