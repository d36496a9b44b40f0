"""The SAE sweep's table (issue #17) as markdown, from a sweep folder written by ``finsae train-sae`` or the
copy shipped beside the chosen SAE (``sweep.parquet``, and ``sweep_forward.parquet`` once the forward figures
were computed after the choice).

    python benchmarks/sae_sweep_table.py [--sweep finsae/sae/<chosen SAE>]

The forward figures are computed, only after the choice is committed (docs/sae_sweep_rule.md item 5), by
``finsae train-sae --out DIR --forward`` on the sweep folder that holds the activations.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from finsae.extract.sae import DEFAULT_SAE_DIR

PRE = {"candidate": "SAE", "stage": "stage", "layer": "layer", "architecture": "arch", "d_sae": "width",
       "k": "k", "train_tokens": "train tokens", "explained_variance": "EV", "loss_recovered": "loss rec.",
       "dead_share": "dead", "pw_industry_pre": "PW ind. (pre)", "pw_sub_industry_pre": "PW sub (pre)",
       "M": "M", "content_share": "content top label", "chosen": "chosen"}
FWD = {"fwd_sup_gics_industry": "sae_sup PW ind.", "fwd_sup_gics_sub_industry": "sae_sup PW sub",
       "fwd_cos_gics_industry": "cosine PW ind.", "fwd_cos_gics_sub_industry": "cosine PW sub",
       "top10": "sae_sup top-10", "top10_gics_sub": "GICS sub top-10"}


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def markdown(table: pd.DataFrame, columns: dict[str, str]) -> str:
    cols = [c for c in columns if c in table]
    lines = ["| " + " | ".join(columns[c] for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", type=Path, default=DEFAULT_SAE_DIR)
    args = parser.parse_args()
    fwd = args.sweep / "sweep_forward.parquet"
    table = pd.read_parquet(fwd if fwd.is_file() else args.sweep / "sweep.parquet")
    ref = table["reference"].astype(bool)
    layer = table["hook"].str.extract(r"blocks\.(\d+)\.", expand=False).astype(int)
    table = table.assign(stage=table["stage"].map({0: "reference", 1: "1", 2: "2"}).fillna(table["stage"]),
                         layer=layer.astype(str),
                         # a reference SAE was trained on its own text (its selection.json), not the sweep's
                         train_tokens=[("own" if r else f"{int(t):,}")
                                       for r, t in zip(ref, table["train_tokens"], strict=True)])
    meta = json.loads((args.sweep / "sweep.json").read_text())
    plan = meta["plan"]
    print(f"Sweep: {plan['token_budget']:,} tokens of text, {plan['epochs']} epoch(s), "
          f"layers {plan['layers']}; "
          f"stage 1 chose layer {meta['stage1_layer']}; chosen {meta['chosen']} (M {meta['M_chosen']:.4f}) "
          f"against the shipped {meta['shipped']} (M {meta['M_shipped']:.4f}): "
          f"{'replaces it' if meta['replaces_shipped'] else 'the shipped SAE stays'}.")
    print()
    print(markdown(table, PRE))
    if any(c in table for c in FWD):
        print()
        print("Forward window (June 2017 - January 2020, monthly; computed after the choice):")
        print()
        print(markdown(table, {"candidate": "SAE", **FWD}))


if __name__ == "__main__":
    main()
