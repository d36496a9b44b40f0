"""Choose the default SAE by measurement: train TopK SAEs at candidate layers and widths, report their quality,
and score the peers they produce on returns *before* the forward window only.

Candidates already trained in ``out_dir/candidates`` by an interrupted run are reused, not retrained.

Rule: among the candidates that meet the quality floor (explained variance >= 0.80, LM loss recovered >= 85%,
dead latents <= 50%), the one whose companies' 5 nearest neighbours (cosine of log1p sum-pooled features) have the
highest mean monthly-return correlation over ``returns_window`` (default 2010-01 to 2017-05, before the 2017
descriptions were published). Every candidate's figures are written to ``selection.json`` beside the SAEs.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from finsae._io import write_json
from finsae.extract.sae import load_sae
from finsae.extract.train import collect_activations, evaluate_sae, train_topk_sae

logger = logging.getLogger(__name__)


def pooled_sums(sae, acts: np.ndarray, rows: np.ndarray, n_rows: int, batch: int = 8192) -> np.ndarray:
    """Sum-pooled SAE activations per document row from token activations ``acts`` and their ``rows``."""
    import torch

    out = np.zeros((n_rows, int(sae.cfg.d_sae)), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(acts), batch):
            f = sae.encode(torch.from_numpy(acts[start: start + batch])).numpy()
            np.add.at(out, rows[start: start + batch], f)
    return out


def train_and_select(loaded, texts: Sequence[str], tickers: Sequence[str], out_dir: str | Path, *,
                     layers: Sequence[int], widths: Sequence[int], k: int = 32, hook_kind: str = "hook_resid_post",
                     epochs: int = 5, batch_size: int = 1024, max_length: int = 512, holdout: float = 0.2, seed: int = 0,
                     corr=None, eval_docs: int = 150, dead_feature_window: int = 1000) -> pd.DataFrame:
    """Train every (layer, width) candidate, evaluate it, choose by the module's rule; return the figures."""
    from finsae.evaluate.ranking import cosine_similarity_matrix, topk_neighbour_correlation

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    rng = np.random.default_rng(seed)
    n = len(texts)
    is_holdout = np.zeros(n, dtype=bool)
    is_holdout[rng.choice(n, size=int(round(holdout * n)), replace=False)] = True
    hooks = [f"blocks.{layer}.{hook_kind}" for layer in layers]
    logger.info("collecting activations of %d documents at %s", n, hooks)
    acts, rows = collect_activations(model, list(texts), hooks, max_length=max_length, return_docs=True)
    held_texts = [t for t, h in zip(texts, is_holdout, strict=True) if h][:eval_docs]
    records = []
    for hook in hooks:
        train_mask = ~is_holdout[rows[hook]]
        for width in widths:
            name = f"{hook.replace('blocks.', 'L').replace('.hook_', '-')}-{width}"
            folder = out / "candidates" / name
            if (folder / "cfg.json").is_file():  # trained by an earlier, interrupted run: reuse it
                logger.info("reusing the trained candidate %s", folder)
                sae = load_sae(folder)
            else:
                logger.info("training %s on %d tokens", name, int(train_mask.sum()))
                sae = train_topk_sae(acts[hook][train_mask], hook_name=hook, d_sae=width, k=k,
                                     context_size=max_length, model_name=loaded.model_id, epochs=epochs,
                                     batch_size=batch_size, seed=seed, autocast=False, out_dir=folder,
                                     dead_feature_window=dead_feature_window)
            quality = evaluate_sae(model, sae, held_texts, max_length=max_length,
                                   acts=acts[hook][~train_mask])
            record = {"candidate": name, "hook": hook, "d_sae": width, "k": k, **quality.to_dict(),
                      "meets_floor": quality.meets_floor(), "train_tokens": int(train_mask.sum())}
            if corr is not None:
                feats = pooled_sums(sae, acts[hook], rows[hook], n)
                sim = cosine_similarity_matrix(feats, "log1p")
                record.update({f"top{kk}_corr_pre": v for kk, v in
                               topk_neighbour_correlation(sim, pd.Index(tickers), corr, (1, 5, 10)).items()})
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
    write_json({"rule": __doc__.split("Rule: ")[1].split("Every candidate")[0].strip().replace("\n", " "),
                "chosen": chosen, "candidates": table.to_dict(orient="records"),
                "returns_window": None if corr is None else [str(corr.start.date()), str(corr.end.date())],
                "holdout_share": holdout, "seed": seed, "epochs": epochs, "model": loaded.model_id,
                "dead_feature_window": dead_feature_window},
               final / "selection.json")
    return table
