"""Markdown tables of benchmark results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from finsae.backtest.results import BacktestResult
    from finsae.evaluate.results import BenchmarkResult, DesignInfo
    from finsae.explain.results import ExplanationResult

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


def _absent(row: object) -> str:
    """`` [absent]`` for a latent a group's members lack (a learned similarity's negative weight; the
    explanation's ``evidence`` column), else nothing."""
    return " [absent]" if getattr(row, "evidence", None) == "absent" else ""


def _f(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "n/a"
    return f"{round(float(x), digits) + 0.0:.{digits}f}"  # + 0.0: a value that rounds to zero prints no sign


def _row(cells: Sequence[str]) -> str:
    """One row of a markdown table."""
    return "| " + " | ".join(cells) + " |"


def _table(intro: str, head: str, n_cols: int) -> list[str]:
    """A paragraph ``intro``, a blank line, then the header row ``head`` of a markdown table of ``n_cols``
    columns and its separator row."""
    return [intro, "", head, "|" + "---|" * n_cols]


def comovement_markdown(rows: pd.DataFrame) -> str:
    """A markdown table of co-movement rows (one per method) from one window."""
    header = ("| method | groups | coverage | pair density | cluster-weighted corr | pair-weighted corr [95% "
              "CI] | null mean | null pct |")
    lines = [header, "|" + "---|" * 8]
    for r in rows.itertuples(index=False):
        ci = (
            f" [{_f(r.pair_weighted_ci_low)}, {_f(r.pair_weighted_ci_high)}]"
            if not np.isnan(r.pair_weighted_ci_low)
            else ""
        )
        lines.append(
            f"| {METHOD_NAMES.get(r.method, r.method)} | {r.n_groups} | {r.coverage:.1%} | "
            f"{r.pair_density:.2%} | {_f(r.cluster_weighted)} | {_f(r.pair_weighted)}{ci} | "
            f"{_f(r.null_pair_weighted_mean)} | {_f(r.null_pair_weighted_percentile, 1)} |"
        )
    return "\n".join(lines)


def _design_heading(info: DesignInfo, frequency: str, rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    window = f"{first.start:%Y-%m-%d} to {first.end:%Y-%m-%d}"
    published = "unknown date" if info.text_published is None else f"{info.text_published:%Y-%m-%d}"
    if info.text_look_ahead:
        flag = (f"**LOOK-AHEAD for any text method**: text vintage `{info.text_vintage}` (published "
                f"{published}) is not older than the window.")
    else:
        flag = (
            f"Forward-dated: text vintage `{info.text_vintage}` (published {published}) precedes the window."
        )
    return (f"### {info.name}: {frequency} log returns, {window}\n\n{first.n_periods} periods, "
            f"{first.n_companies} companies with usable returns, {first.n_dropped} dropped. {flag}"
            + (f" {info.note}" if info.note else ""))


def benchmark_markdown(result: BenchmarkResult) -> str:
    """The benchmark as markdown: one table per design and frequency, with the data limits (a config with text
    methods gets :func:`text_benchmark_markdown`)."""
    if len(result.verdict):
        return text_benchmark_markdown(result)
    parts = [f"## Benchmark `{result.name}`: co-movement of returns inside peer groups", ""]
    table = result.table
    for info in result.designs:
        for frequency in table.loc[table["design"] == info.name, "frequency"].unique():
            rows = table[(table["design"] == info.name) & (table["frequency"] == frequency)]
            parts += [_design_heading(info, frequency, rows), "", comovement_markdown(rows), ""]
    draws = int(table["null_draws"].iloc[0]) if len(table) else 0
    parts.append(
        "Correlations are pairwise Pearson correlations of log returns. Pair-weighted: every within-group "
        "pair counts once; cluster-weighted: mean per group, then over groups (rewards many small groups). "
        f"CI: 95% percentile bootstrap over groups. Null: {draws} random relabellings with the same group "
        "sizes; 'null pct' is the percentile of the pair-weighted value among them. Taxonomy codes are "
        "snapshots (in the bundled data SIC about 2018, GICS about 2020), and a universe of companies that "
        "all survived the window (as the bundled one: all listed in January 2020) flatters every method a "
        "little."
    )
    return "\n".join(parts) + "\n"


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.0%}"


def backtest_markdown(result: BacktestResult) -> str:
    """The pairs backtest as markdown: per strategy and capital basis, one row per method with Sharpe ratios
    gross and net, CI, monthly excess return, placebos and concentration."""
    cfg = result.config
    s = result.summary
    head = cfg.headline_cost_bps
    costs = list(cfg.costs_bps)
    cols = [
        "method",
        "Sharpe gross",
        *[f"net {c:g}bp" for c in costs],
        f"95% CI (net {head:g}bp)",
        "bp/month gross / net",
        "return/yr net",
        "random pairs: median / pct",
        "random groups: median / pct",
        "pairs",
        "trades",
        "stocks",
        "top stock (P&L share)",
        "ex-top Sharpe / bp/month",
        "hit rate",
        "days held",
        "max DD",
    ]
    sections = []
    strategy_names = {
        "coint": "co-integration (Engle-Granger, legs 1 : b)",
        "distance": "distance (Gatev et al. 2006)",
    }
    bases = [cfg.headline_basis] + [b for b in ("committed", "employed") if b != cfg.headline_basis]
    for strategy in [st for st in ("coint", "distance") if (s["strategy"] == st).any()]:
        for basis in bases:
            rows = s[(s["strategy"] == strategy) & (s["basis"] == basis)]
            mark = " (headline basis)" if basis == cfg.headline_basis else ""
            lines = _table(f"**{strategy_names[strategy]}, {basis} capital{mark}**", _row(cols), len(cols))
            for r in rows.itertuples(index=False):
                d = r._asdict()
                name = METHOD_NAMES.get(r.method, r.method) + (" (LOOK-AHEAD)" if d.get("look_ahead") else "")
                cells = [name, _f(r.sharpe_gross, 2), *[_f(d[f"sharpe_net_{c:g}bp"], 2) for c in costs],
                         f"[{_f(r.sharpe_net_ci_low, 2)}, {_f(r.sharpe_net_ci_high, 2)}]",
                         f"{_f(r.bp_month_gross, 0)} / {_f(r.bp_month_net, 0)}", f"{r.annual_return_net:.1%}"]
                for kind in ("random_pairs", "random_groups"):
                    med, pct = d[f"{kind}_median_sharpe"], d[f"{kind}_percentile"]
                    cells.append("n/a" if np.isnan(pct) else f"{_f(med, 2)} / {_f(pct, 0)}")
                traded = isinstance(r.top_stock, str) and r.top_stock  # NaN when nothing traded
                top = f"{r.top_stock} ({_pct(r.top_stock_pnl_share)})" if traded else "n/a"
                cells += [str(r.pairs_traded), str(r.trades), str(r.distinct_stocks), top,
                          f"{_f(r.ex_top_sharpe_net, 2)} / {_f(r.ex_top_bp_month_net, 0)}",
                          _pct(r.hit_rate_net), _f(r.avg_holding_days, 1), f"{r.max_drawdown_net:.1%}"]
                lines.append(_row(cells))
            sections += [*lines, ""]
    w = result.windows[result.windows["strategy"] == "coint"]
    if len(w) and "candidates_significant_at_5pct" in w:
        funnel = _table(
            "**co-integration selection, mean per window**",
            "| method | eligible | I(1) legs | candidates | usable | significant at 5% | selected |",
            7,
        )
        for m, g in w.groupby("method", sort=False):
            share = g["candidates_significant_at_5pct"].sum() / max(g["candidates"].sum(), 1)
            funnel.append(f"| {METHOD_NAMES.get(str(m), m)} | {g['eligible'].mean():.0f} | "
                          f"{g['i1_eligible'].mean():.0f} | {g['candidates'].mean():,.0f} | "
                          f"{g['candidates_usable'].mean():,.0f} | {share:.1%} | {g['selected'].mean():.1f} "
                          "|")
        sections += [*funnel, ""]
    start = result.daily["date"].min()
    end = result.daily["date"].max()
    sel = cfg.selection
    orderings = {"first": "one ordering (y first in universe order)",
                 "both": "both orderings, both must pass (the larger p-value is controlled; the smaller "
                         "one's ordering is traded)",
                 "best": "both orderings, the smaller p-value and its ordering"}[sel.orderings]
    screen = (
        f"both legs I(1) in the formation window (ADF, {sel.i1_lags} lag(s), level p >= {sel.i1_alpha:g}, "
        f"difference p < {sel.i1_alpha:g})"
        if sel.i1_screen
        else "no I(1) screen of the legs"
    )
    cap = (
        f"at most {sel.max_pairs_per_stock} pairs per stock"
        if sel.max_pairs_per_stock
        else "no cap per stock"
    )
    dist = cfg.distance
    text = [
        f"## Pairs backtest `{result.name}`: {start:%Y-%m-%d} to {end:%Y-%m-%d}",
        "",
        f"Walk-forward: {cfg.formation_days} formation days, then {cfg.trading_days} trading days; pairs "
        f"inside each method's groups. Co-integration: Engle-Granger (maxlag={sel.maxlag}, "
        f"autolag={sel.autolag}) on formation log prices, {orderings}; {screen}; hedge ratio > 0; "
        f"Benjamini-Hochberg FDR {sel.fdr:g} within the method's candidates, half-life "
        f"{sel.min_half_life:g}-{sel.max_half_life:g} days, at most {sel.max_pairs} pairs per window, {cap}. "
        "The position is the tested spread: +1 of y against -b of x, gross notional "
        f"{cfg.trading.gross_notional:g} per unit of capital split 1 : b. Enter at |z| >= "
        f"{cfg.trading.entry_z:g}, exit at {cfg.trading.exit_z:g}, stop at {cfg.trading.stop_z:g}."
        + (
            f" Distance: the {dist.max_pairs} within-group pairs with the smallest sum of squared deviations "
            f"of normalised prices ({cap}), open at {dist.entry_z:g} formation sd, close when the paths "
            "cross, no stop."
            if dist.enabled
            else ""
        )
        + " Signals at a close execute at the next close; every spread model is fitted on the formation "
        "window only. A stock whose prices stop is closed on its first day without a price (delisting return "
        f"{cfg.trading.delisting_return:g}). Costs per traded notional, short borrow "
        f"{cfg.trading.borrow_bps:g} bp/yr. Committed capital: each selected pair holds 1/N of the capital "
        f"whether it trades or not, idle capital earns the risk-free rate ({cfg.rf_annual:g}/yr); employed "
        f"capital: split over the open pairs. Sharpe annualised with {cfg.periods_per_year:g} periods/yr; "
        "bp/month: mean monthly excess return.",
        "",
        *sections,
        f"Placebos ({cfg.placebo.draws} draws each): 'random pairs' trades as many random candidate pairs as "
        "the method, 'random groups' runs the same selection inside random groups with the method's group "
        f"sizes; 'pct' is the percentile of the method's net {head:g}bp Sharpe among the draws (same basis). "
        "CI: stationary bootstrap of daily returns. Top stock: the stock whose pairs contribute most to the "
        "P&L (its share of the total; pairs count for both their stocks); ex-top: the same book without that "
        "stock's pairs. Survivorship: a universe whose stocks all survived (the "
        "bundled one: every stock listed in January 2020) flatters every method equally.",
    ]
    return "\n".join(text) + "\n"


def _cell(r: pd.Series) -> str:
    ci = (f" [{_f(r.pair_weighted_ci_low, 2)}, {_f(r.pair_weighted_ci_high, 2)}]"
          if not np.isnan(r.pair_weighted_ci_low) else "")
    mark = "" if bool(r.get("matched", True)) else " (unmatched)"
    return f"{_f(r.pair_weighted)}{ci} @{r.pair_density:.1%}{mark}"


#: A taxonomy level that covers less than this share of a window's companies, or has fewer within-group pairs
#: than :data:`THIN_PAIRS`, makes a thin comparison: its verdict lines say so (the text groups are cut to its
#: pair density, so they are as thin).
THIN_COVERAGE = 0.5
THIN_PAIRS = 30


def _thin(table: pd.DataFrame | None, v: object) -> str:
    """A caution for verdict ``v`` when its taxonomy level is thin in the window (``table``: the co-movement
    rows), else nothing."""
    if table is None or not len(table):
        return ""
    design, frequency, level = (getattr(v, k) for k in ("design", "frequency", "level"))
    ref = table[(table["design"] == design) & (table["frequency"] == frequency) & (table["method"] == level)]
    if ref.empty:
        return ""
    r = ref.iloc[0]
    if r["coverage"] >= THIN_COVERAGE and r["n_pairs"] >= THIN_PAIRS:
        return ""
    name = METHOD_NAMES.get(r["method"], r["method"])
    return (f" **Thin comparison**: {name} covers {r['coverage']:.0%} of the window's companies with "
            f"{int(r['n_pairs'])} within-group pairs, and the text groups are cut to its pair density: read "
            "nothing into it.")


def verdict_lines(verdict: pd.DataFrame, table: pd.DataFrame | None = None) -> list[str]:
    """One sentence per (design, frequency, level, match): who leads, whether the CI separates the best text
    grouping from the taxonomy, and where the headline method stands; ``table`` (the co-movement rows) adds a
    caution where the taxonomy level is thin (:data:`THIN_COVERAGE`, :data:`THIN_PAIRS`)."""
    lines = []

    def ci(d: float, lo: float, hi: float) -> str:
        return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"

    for v in verdict.itertuples(index=False):
        d = v._asdict()
        ref = METHOD_NAMES.get(v.level, v.level)
        where = f"{v.design}/{v.frequency}, {ref} granularity by {v.match}"
        flag = " (LOOK-AHEAD design)" if d.get("text_look_ahead") is True else ""
        head = ""
        if isinstance(d.get("headline"), str):
            sep = "separated" if d["headline_separated"] else "not separated"
            unmatched = "" if d["headline_matched"] else ", missed the target granularity"
            head = (f" Headline `{d['headline']}`: {_f(d['headline_pair_weighted'])}, "
                    f"{ci(d['headline_difference'], d['headline_ci_low'], d['headline_ci_high'])} "
                    f"({sep}{unmatched}).")
        thin = _thin(table, v)
        if not isinstance(d.get("best_text"), str):
            lines.append(f"- {where}: no text grouping reached the target granularity.{head}{thin}")
            continue
        diff = ci(v.difference, v.difference_ci_low, v.difference_ci_high)
        if v.separated:
            sep = "the CI excludes zero"
        elif not v.difference_ci_high > v.difference_ci_low:  # every draw the same: nothing resampled
            sep = "the CI has no width (too few pairs to resample): not separated"
        else:
            sep = "the CI includes zero: not separated"
        of = f"best of {int(v.n_candidates)} text groupings"
        if v.leader == v.level:
            lines.append(f"- {where}{flag}: **{ref} leads** ({_f(v.taxonomy_pair_weighted)}); {of} "
                         f"`{v.best_text}` {_f(v.best_text_pair_weighted)}, difference {diff}: {sep}.{head}"
                         f"{thin}")
        else:
            lines.append(f"- {where}{flag}: **`{v.leader}` leads** ({_f(v.best_text_pair_weighted)}, {of}) "
                         f"over {ref} ({_f(v.taxonomy_pair_weighted)}), difference {diff}: {sep}.{head}"
                         f"{thin}")
    return lines


def _learned_sections(result: BenchmarkResult, design: str, frequency: str) -> list[str]:
    """Two-way paired differences and cold start of one window (``finsae.pipeline.learned``), if any."""
    parts: list[str] = []
    tw = result.two_way
    if len(tw):
        tw = tw[(tw["design"] == design) & (tw["frequency"] == frequency)]
    if len(tw):
        lines = _table("Paired differences of pair-weighted correlation, density-matched, with a two-way "
                       "bootstrap (companies x circular blocks of months, 95% CI):",
                       "| level | A | B | PW(A) | PW(B) | A - B [95% CI] |", 6)
        for x in tw.itertuples(index=False):
            lines.append(f"| {METHOD_NAMES.get(x.level, x.level)} | {x.a} | {x.b} | {_f(x.pair_weighted_a)} "
                         f"| {_f(x.pair_weighted_b)} | {x.difference:+.3f} [{x.ci_low:+.3f}, "
                         f"{x.ci_high:+.3f}] |")
        parts += [*lines, ""]
    rw = result.ranking_two_way
    if len(rw):
        rw = rw[(rw["design"] == design) & (rw["frequency"] == frequency)]
    if len(rw) and not len(tw):
        parts += ["No two-way differences of pair-weighted correlation: they compare density-matched "
                  "groupings, and granularity.match has no density.", ""]
    if len(rw):
        k = int(rw["k"].iloc[0])
        lines = _table(f"Paired differences of top-{k} neighbour correlation (each company's {k} most "
                       "similar companies), with the same two-way bootstrap (focal companies x circular "
                       "blocks of months, 95% CI):", f"| A | B | top{k}(A) | top{k}(B) | A - B [95% CI] |", 5)
        for x in rw.itertuples(index=False):
            lines.append(f"| {METHOD_NAMES.get(x.a, x.a)} | {METHOD_NAMES.get(x.b, x.b)} | {_f(x.top_a)} | "
                         f"{_f(x.top_b)} | {x.difference:+.3f} [{x.ci_low:+.3f}, {x.ci_high:+.3f}] |")
        parts += [*lines, ""]
    cs = result.cold_start
    if len(cs):
        cs = cs[(cs["design"] == design) & (cs["frequency"] == frequency)]
    if len(cs):
        nb = cs[cs["kind"] == "neighbours"]
        ks = [c for c in nb.columns if c.startswith("top") and nb[c].notna().any()]
        lines = _table("Cold start (no price history): top-k neighbour correlation of every company, learned "
                       "weights fitted without any pair of the company's fold; references need no fit:",
                       "| method | fitted without the fold | " + " | ".join(ks) + " |", 2 + len(ks))
        for x in nb.itertuples(index=False):
            d = x._asdict()
            lines.append(f"| {METHOD_NAMES.get(x.method, x.method)} | {'yes' if x.fitted else 'no fit'} | "
                         + " | ".join(_f(d[k]) for k in ks) + " |")
        gr = cs[cs["kind"] == "groups"]
        if len(gr):
            lines += ["", *_table("Cold-start groups (each fold's weights; within-group pairs with a "
                                  "held-out company, pooled over folds), against the taxonomy on the same "
                                  "folds:", "| method | level | pair-weighted | taxonomy | pairs |", 5)]
            for x in gr.itertuples(index=False):
                lines.append(f"| {x.method} | {METHOD_NAMES.get(x.level, x.level)} | {_f(x.pair_weighted)} | "
                             f"{_f(x.taxonomy_pair_weighted)} | {int(x.n_pairs)} |")
        parts += [*lines, ""]
    return parts


def text_benchmark_markdown(result: BenchmarkResult) -> str:
    """The text benchmark: per design and frequency, one table per matching rule (rows: granularity levels;
    columns: the taxonomy level itself, each text method, the hybrid and random groups), the ranking metrics,
    the parameter selection and the verdict lines."""
    t = result.table
    parts = [f"## Benchmark `{result.name}`: peer groups from text vs taxonomies at matched granularity", ""]
    for info in result.designs:
        for frequency in t.loc[t["design"] == info.name, "frequency"].unique():
            w = t[(t["design"] == info.name) & (t["frequency"] == frequency)]
            parts += [_design_heading(info, frequency, w), ""]
            allp = w[w["method"] == "all_pairs"]
            if len(allp):
                parts += [f"All pairs: {_f(allp.iloc[0].pair_weighted)}.", ""]
            text = w[w["method_kind"].isin(["text", "hybrid", "random", "price", "text+price"])]
            methods = list(dict.fromkeys(text["text_method"]))
            for match in [m for m in ("density", "count") if m in set(text["match"])]:
                cols = ["level", "taxonomy", *methods]
                lines = _table(f"Matched by {'pair density' if match == 'density' else 'number of groups'} "
                               "(pair-weighted correlation [95% CI] @ pair density in the window):",
                               _row(cols), len(cols))
                for level in dict.fromkeys(text["level"]):
                    ref = w[(w["method"] == level) & (w["method_kind"] == "taxonomy")]
                    cells = [METHOD_NAMES.get(level, level), _cell(ref.iloc[0]) if len(ref) else "n/a"]
                    for m in methods:
                        row = text[(text["text_method"] == m) & (text["level"] == level)
                                   & (text["match"].isin([match, "same_sizes"]))]
                        cells.append(_cell(row.iloc[0]) if len(row) else "")
                    lines.append(_row(cells))
                parts += [*lines, ""]
            if len(result.ranking):
                r = result.ranking[
                    (result.ranking["design"] == info.name) & (result.ranking["frequency"] == frequency)
                ]
                ks = [c for c in r.columns if c.startswith("top")]
                lines = _table("Ranking (no clustering): mean return correlation of each company's k most "
                               "similar companies, and Spearman of similarity vs correlation over all pairs "
                               "(taxonomies: same group = 1):",
                               "| method | transform | companies | " + " | ".join(ks) + " | Spearman |",
                               4 + len(ks))
                for x in r.itertuples(index=False):
                    d = x._asdict()
                    lines.append(f"| {METHOD_NAMES.get(x.method, x.method)} | {x.transform} | "
                                 f"{x.n_companies} | "
                                 + " | ".join(_f(d[k]) for k in ks) + f" | {_f(x.spearman)} |")
                parts += [*lines, ""]
            if len(result.verdict):
                v = result.verdict[
                    (result.verdict["design"] == info.name) & (result.verdict["frequency"] == frequency)
                ]
                parts += [
                    "Verdict (leader among the text groupings that hit the target granularity; difference = "
                    "text grouping minus the taxonomy, company-bootstrap 95% CI; the best of several text "
                    "groupings is chosen after seeing the window, so its CI is optimistic - the headline "
                    "method's is not):",
                    "",
                    *verdict_lines(v, result.table),
                    "",
                ]
            parts += _learned_sections(result, info.name, frequency)
    if len(result.selection):
        # transform x clusterer choices (methods with `select`); a config may have learned methods only
        chosen = result.selection.get("chosen", pd.Series(False, index=result.selection.index))
        s = result.selection[chosen.fillna(False).astype(bool)]
        if len(s):
            sel = ", ".join(
                f"`{r.method}` ({r.vintage} text): {r.transform} + {r.clusterer}" for r in s.itertuples()
            )
            first = s.iloc[0]
            parts += [
                f"Chosen on {first.frequency} returns {first.window_start:%Y-%m-%d} to "
                f"{first.window_end:%Y-%m-%d} only (groups at {METHOD_NAMES.get(first.level, first.level)} "
                f"{first.match}): {sel}.",
                "",
            ]
        if "chosen_groups" in result.selection:
            lr = result.selection[result.selection["chosen_groups"].notna()]
            picks = []
            for name, g in lr.groupby("method", sort=False):
                grp = g[g["chosen_groups"].astype(bool)].iloc[0]
                rnk = g[g["chosen_rank"].astype(bool)].iloc[0]
                picks.append(
                    f"`{name}` ({len(g)} candidate{'s' if len(g) != 1 else ''}): groups {grp.variant}, "
                    f"neighbours {rnk.variant}"
                )
            f0 = lr.iloc[0]
            parts += [
                f"Learned similarities, {len(lr)} candidates in all, each fitted on {f0.window_fit} and "
                f"scored on {f0.window_score} (groups: pair-weighted at "
                f"{METHOD_NAMES.get(f0.level, f0.level)} density; neighbours: top-{int(f0.rank_k)}), the "
                "choice refitted on the whole selection window: " + "; ".join(picks) + ".",
                "",
            ]
    parts.append(
        "Every method, taxonomies included, is scored on the same companies: those with text in the design's "
        "vintage and usable returns in the window. Text groups are cut to each taxonomy level's number of "
        "groups or pair density on the companies with text in the design's vintage (no returns involved); "
        "'unmatched' marks cuts that could not get within one group or 5% of the target (single-linkage "
        "merges can be large) and they are not eligible to lead. Pair-weighted: every within-group pair "
        "counts once; CI: bootstrap over groups. Random: the level's labels shuffled over the companies (one "
        "draw; the null percentile uses many). Taxonomy codes are snapshots (in the bundled "
        "data SIC about 2018, GICS about 2020): later codes flatter the taxonomies in the forward design.")
    return "\n".join(parts) + "\n"


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def explanation_markdown(result: ExplanationResult, max_groups: int = 15) -> str:
    """The largest groups of an explained grouping: members, top latents with labels, rule quality,
    faithfulness; and the share of faithful groups."""
    f = result.faithfulness.set_index("group")
    g = result.groups
    order = f.sort_values("n_members", ascending=False).index[:max_groups]
    lines = [f"## Explanations of `{result.grouping}`", "", *_table(
        f"{len(f)} groups of 3 or more companies; the explaining latents are faithful (ablating them lowers "
        f"the within-group similarity the groups were formed by (the cosine, or a learned method's weighted "
        f"similarity) more than 95% of ablations of random latents with similar document "
        f"frequency) for **{result.faithful_share:.0%}** of them; **{result.content_top_share:.0%}** have a "
        f"top latent whose label is made of business words (not stopwords, boilerplate, numbers or places). "
        f"Top labels by kind: {_kinds(result.top_label_kinds)}; all {len(result.labels.table)} latents: "
        f"{_kinds(result.label_kinds)}.",
        "| group | members | top latents (label: share in group / outside) | rule precision / recall | "
        "cosine drop: explaining / random |",
        5,
    )]
    for group in order:
        rows = g[g["group"] == group].sort_values("rank").head(4)
        latents = "; ".join(f"{r.label} ({r.p_in:.0%} / {r.p_out:.0%}){_absent(r)}"
                            for r in rows.itertuples())
        members = str(f.at[group, "members"])
        members = members if len(members) <= 60 else members[:57] + "..."
        first = rows.iloc[0] if len(rows) else None
        rule = "n/a" if first is None else f"{first.precision:.2f} / {first.recall:.2f}"
        lines.append(f"| {group} | {members} | {latents} | {rule} | "
                     f"{f.at[group, 'drop_explaining']:.3f} / {f.at[group, 'drop_random_mean']:.3f} |")
    return "\n".join(lines) + "\n"
