"""The README's answer-first chart: the pre-registered headline method minus the taxonomy and minus price
peers at each density-matched level, with two-way bootstrap CIs, from a benchmark results folder
(``two_way.parquet``).

    python benchmarks/answer_chart.py [--results results/forward_2017] [--out docs/answer.png]

Also prints the numbers behind each bar and the figures the README gives beside the chart: each method's
coverage (share of companies in a group of 2 or more) and singletons at GICS-industry and sub-industry
density, the headline grouping's largest groups, and the share of the 2017 descriptions longer than MiniLM's
window (``--no-minilm`` skips loading its tokenizer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from finsae.report.html import answer_figure


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=Path("results/forward_2017"))
    parser.add_argument("--out", type=Path, default=Path("docs/answer.png"))
    parser.add_argument("--no-minilm", action="store_true", help="Skip the MiniLM window statistic.")
    args = parser.parse_args()
    path = args.results / "two_way.parquet"
    out = answer_figure(pd.read_parquet(path)) if path.is_file() else None
    if out is None:
        raise SystemExit(f"{args.results} has no two_way.parquet: run finsae benchmark --config "
                         "backtests/forward_2017.yaml first")
    fig, head, _ = out
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    tw = pd.read_parquet(args.results / "two_way.parquet")
    tw = tw[(tw["design"] == tw["design"].iloc[0]) & (tw["frequency"] == tw["frequency"].iloc[0])]
    rows = tw[tw["a"].str.startswith(head + "@") & (tw["comparison"].isin(["taxonomy", "price"]))]
    with pd.option_context("display.width", 200):
        print(
            rows[
                [
                    "level",
                    "comparison",
                    "a",
                    "b",
                    "pair_weighted_a",
                    "pair_weighted_b",
                    "difference",
                    "ci_low",
                    "ci_high",
                ]
            ]
            .round(3)
            .to_string(index=False)
        )
    print(f"chart written to {args.out}")

    como = pd.read_parquet(args.results / "comovement.parquet")
    levels = ["gics_industry", "gics_sub_industry"]
    rows = como[
        (como["design"] == tw["design"].iloc[0])
        & (como["frequency"] == tw["frequency"].iloc[0])
        & como["level"].isin(levels)
        & ((como["match"] == "density") | (como["method_kind"] == "taxonomy"))
    ]
    print("\ncoverage at matched density (share of companies in a group of 2+; singletons):")
    with pd.option_context("display.width", 200):
        print(rows[["level", "method", "n_groups", "n_singletons", "coverage", "pair_weighted"]].round(3)
              .to_string(index=False))
    groups = pd.concat(pd.read_parquet(f) for f in sorted(args.results.glob("groups_*.parquet")))
    for level in levels:
        name = f"{head}@{level}:density"
        sizes = groups.loc[groups["name"] == name, "group"].value_counts()
        print(f"{name}: {len(sizes)} groups, {int((sizes == 1).sum())} singletons, largest "
              f"{sizes.head(5).tolist()}")
    if not args.no_minilm:
        from finsae.data import load_universe
        from finsae.extract.featurizers import EmbeddingFeaturizer

        model = EmbeddingFeaturizer().fit()._model()
        texts = list(load_universe().descriptions("2017"))
        ids = model.tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        longer = sum(len(t) + 2 > model.max_seq_length for t in ids)
        print(f"2017 descriptions longer than MiniLM's {model.max_seq_length}-token window: {longer} of "
              f"{len(ids)} ({longer / len(ids):.0%})")


if __name__ == "__main__":
    main()
