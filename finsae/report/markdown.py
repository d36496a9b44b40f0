"""Markdown tables of benchmark results."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from finsae.evaluate.benchmark import BenchmarkResult, DesignInfo

METHOD_NAMES: dict[str, str] = {
    "all_pairs": "All pairs",
    "gics_sector": "GICS sector",
    "gics_industry_group": "GICS industry group",
    "gics_industry": "GICS industry",
    "gics_sub_industry": "GICS sub-industry",
    "sic2": "SIC 2-digit",
    "sic3": "SIC 3-digit",
    "sic4": "SIC 4-digit",
    "yahoo_sector": "Yahoo sector",
    "yahoo_industry": "Yahoo industry",
}


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def comovement_markdown(rows: pd.DataFrame) -> str:
    """A markdown table of co-movement rows (one per method) from one window."""
    header = ("| method | groups | coverage | pair density | cluster-weighted corr | pair-weighted corr [95% CI] "
              "| null mean | null pct |")
    lines = [header, "|" + "---|" * 8]
    for r in rows.itertuples(index=False):
        ci = f" [{_f(r.pair_weighted_ci_low)}, {_f(r.pair_weighted_ci_high)}]" if not np.isnan(r.pair_weighted_ci_low) else ""
        lines.append(
            f"| {METHOD_NAMES.get(r.method, r.method)} | {r.n_groups} | {r.coverage:.1%} | {r.pair_density:.2%} "
            f"| {_f(r.cluster_weighted)} | {_f(r.pair_weighted)}{ci} | {_f(r.null_pair_weighted_mean)} "
            f"| {_f(r.null_pair_weighted_percentile, 1)} |"
        )
    return "\n".join(lines)


def _design_heading(info: DesignInfo, frequency: str, rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    window = f"{first.start:%Y-%m-%d} to {first.end:%Y-%m-%d}"
    published = "unknown date" if info.text_published is None else f"{info.text_published:%Y-%m-%d}"
    if info.text_look_ahead:
        flag = (f"**LOOK-AHEAD for any text method**: text vintage `{info.text_vintage}` (published {published}) "
                "is not older than the window.")
    else:
        flag = f"Forward-dated: text vintage `{info.text_vintage}` (published {published}) precedes the window."
    return (f"### {info.name}: {frequency} log returns, {window}\n\n{first.n_periods} periods, "
            f"{first.n_companies} companies with usable returns, {first.n_dropped} dropped. {flag}"
            + (f" {info.note}" if info.note else ""))


def benchmark_markdown(result: BenchmarkResult) -> str:
    """The benchmark as markdown: one table per design and frequency, with the data limits."""
    parts = [f"## Benchmark `{result.name}`: co-movement of returns inside peer groups", ""]
    table = result.table
    for info in result.designs:
        for frequency in table.loc[table["design"] == info.name, "frequency"].unique():
            rows = table[(table["design"] == info.name) & (table["frequency"] == frequency)]
            parts += [_design_heading(info, frequency, rows), "", comovement_markdown(rows), ""]
    draws = int(table["null_draws"].iloc[0]) if len(table) else 0
    parts.append(
        "Correlations are pairwise Pearson correlations of log returns. Pair-weighted: every within-group pair "
        "counts once; cluster-weighted: mean per group, then over groups (rewards many small groups). CI: 95% "
        f"percentile bootstrap over groups. Null: {draws} random relabellings with the same group sizes; "
        "'null pct' is the percentile of the pair-weighted value among them. Taxonomy codes are snapshots "
        "(SIC about 2018, GICS about 2020) and every company survived to 2020: both flatter every method a little."
    )
    return "\n".join(parts) + "\n"
