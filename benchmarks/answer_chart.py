"""The README's answer-first chart: the pre-registered headline method minus the taxonomy and minus price peers at
each density-matched level, with two-way bootstrap CIs, from a benchmark results folder (``two_way.parquet``).

    python benchmarks/answer_chart.py [--results results/forward_2017] [--out docs/answer.png]

Also prints the numbers behind each bar.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from finsae.report.html import answer_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results/forward_2017"))
    parser.add_argument("--out", type=Path, default=Path("docs/answer.png"))
    args = parser.parse_args()
    out = answer_figure(args.results)
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
        print(rows[["level", "comparison", "a", "b", "pair_weighted_a", "pair_weighted_b", "difference", "ci_low",
                    "ci_high"]].round(3).to_string(index=False))
    print(f"chart written to {args.out}")


if __name__ == "__main__":
    main()
