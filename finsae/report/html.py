"""One self-contained HTML report (plots embedded as PNG) from result objects (:class:`ReportInputs`).

Sections (each an element id, so tests and links can find them): ``benchmark`` (density-matched table and a
plot of pair-weighted correlation by method and granularity with CIs), ``ranking`` (top-k neighbour
correlation), ``pairs`` (equity curves gross and net, Sharpe with CI against the placebo distribution),
``sizes`` (group size distribution), ``groups`` (every explained group with members, latents and rule) and
``lookup`` (a company's peers under each method, and why).

The renderer reads no file: :mod:`finsae.pipeline.report` loads the benchmark's run store, the pairs backtest
and an explanation into a :class:`ReportInputs` and writes the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from finsae.evaluate.results import BenchmarkResult
from finsae.explain.results import ExplanationResult
from finsae.report.markdown import METHOD_NAMES, verdict_lines

logger = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;\
padding:1rem 2rem;
color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0;display:block;max-width:100%;\
overflow-x:auto}td,th{border:1px solid #ddd;\
padding:.25rem .45rem;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.9rem}img{max-width:100%}details{margin:.3rem 0}summary{cursor:pointer}
nav a{margin-right:1rem}.best{font-weight:bold}#lookup-out table{min-width:60%}code{background:#f6f6f6}
"""


class HeadlineSettings(Protocol):
    """What the pairs section reads of a backtest's configuration."""

    @property
    def headline_basis(self) -> str: ...

    @property
    def headline_cost_bps(self) -> float: ...


class BacktestTables(Protocol):
    """What the pairs section reads of a backtest (a ``BacktestResult`` or one loaded from its folder)."""

    @property
    def summary(self) -> pd.DataFrame: ...

    @property
    def daily(self) -> pd.DataFrame: ...

    @property
    def placebo(self) -> pd.DataFrame: ...

    @property
    def config(self) -> HeadlineSettings: ...


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows.

    Attributes:
        benchmark: the benchmark's designs and tables.
        headline_method: the benchmark's headline method (None without text methods).
        groups: the text groupings of the headline vintage (``name``, ``ticker``, ``group``).
        names: the groupings the sizes and lookup sections show (one level and match of every method).
        level: the level those groupings are matched to.
        neighbours: the supervised learned methods' nearest peers of the headline vintage (may be empty).
        pairs: the pairs backtest (None: not given).
        explanation: an explained grouping (None: not given); the company lookup reads its labels.
        more_explanations: further explained groupings, each shown in a section of its own.
        source, pairs_source: where the results came from (shown on the page).
        headline_registered: whether the config named its headline method (``headline_method``) before the
            run, rather than defaulting to its first text method.
    """

    benchmark: BenchmarkResult
    headline_method: str | None
    groups: pd.DataFrame
    names: tuple[str, ...]
    level: str
    neighbours: pd.DataFrame
    pairs: BacktestTables | None = None
    explanation: ExplanationResult | None = None
    source: str = ""
    pairs_source: str | None = None
    more_explanations: tuple[ExplanationResult, ...] = ()
    headline_registered: bool = False


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _name(m: str) -> str:
    return METHOD_NAMES.get(m, m)


def _esc(x: object) -> str:
    return html.escape(str(x))


def _benchmark_section(bench: BenchmarkResult) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = bench.table
    w = t[(t["design"] == t["design"].iloc[0]) & (t["frequency"] == t["frequency"].iloc[0])]
    design, freq = w["design"].iloc[0], w["frequency"].iloc[0]
    parts = [
        f'<section id="benchmark"><h2>Benchmark: co-movement inside peer groups</h2>'
        f'<p class="note">Design <code>{_esc(design)}</code>, {freq} log returns '
        f"{w['start'].iloc[0]:%Y-%m-%d} to {w['end'].iloc[0]:%Y-%m-%d}, {int(w['n_companies'].iloc[0])} "
        "companies. Pair-weighted correlation inside groups, 95% CI over groups; text methods cut to each "
        "taxonomy level's pair density.</p>"
    ]
    if "method_kind" not in w or not (w["method_kind"] == "text").any():
        rows = "".join(f"<tr><td>{_esc(_name(r.method))}</td><td>{r.pair_weighted:.3f}</td>"
                       f"<td>{r.pair_density:.2%}</td></tr>" for r in w.itertuples())
        parts.append(f"<table><tr><th>method</th><th>pair-weighted</th><th>density</th></tr>{rows}</table>")
        return "".join(parts) + "</section>"
    dens = w[w["match"].isin(["density", "same_sizes"])]
    levels = list(dict.fromkeys(dens["level"]))
    methods = list(dict.fromkeys(dens["text_method"].dropna()))
    head = "".join(f"<th>{_esc(m)}</th>" for m in ["level", "taxonomy", *methods])
    body = []
    for level in levels:
        ref = w[(w["method"] == level) & (w["method_kind"] == "taxonomy")]
        vals = {"taxonomy": float(ref["pair_weighted"].iloc[0]) if len(ref) else np.nan}
        for m in methods:
            r = dens[(dens["text_method"] == m) & (dens["level"] == level)]
            vals[m] = float(r["pair_weighted"].iloc[0]) if len(r) else np.nan
        best = max((v for v in vals.values() if not np.isnan(v)), default=np.nan)
        cells = "".join(f'<td class="{"best" if v == best else ""}">{"" if np.isnan(v) else f"{v:.3f}"}</td>'
                        for v in vals.values())
        body.append(f"<tr><td>{_esc(_name(level))}</td>{cells}</tr>")
    parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
    fig, ax = plt.subplots(figsize=(11, 4.2))
    series = ["taxonomy", *methods]
    width = 0.8 / len(series)
    for k, m in enumerate(series):
        ys, lo, hi = [], [], []
        for level in levels:
            r = (w[(w["method"] == level) & (w["method_kind"] == "taxonomy")] if m == "taxonomy"
                 else dens[(dens["text_method"] == m) & (dens["level"] == level)])
            if len(r):
                y = float(r["pair_weighted"].iloc[0])
                ys.append(y)
                lo.append(y - float(r["pair_weighted_ci_low"].iloc[0]))
                hi.append(float(r["pair_weighted_ci_high"].iloc[0]) - y)
            else:
                ys.append(np.nan)
                lo.append(0)
                hi.append(0)
        x = np.arange(len(levels)) + (k - len(series) / 2 + 0.5) * width
        ax.bar(x, ys, width, label=m, yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], capsize=2)
    allp = w[w["method"] == "all_pairs"]
    if len(allp):
        ax.axhline(float(allp["pair_weighted"].iloc[0]), color="k", ls="--", lw=1, label="all pairs")
    ax.set_xticks(np.arange(len(levels)), [_name(lv) for lv in levels], rotation=20, ha="right")
    ax.set_ylabel("pair-weighted correlation")
    ax.set_title("Density-matched peer groups: within-group return correlation (95% CI over groups)")
    ax.legend(ncol=4, fontsize=8)
    parts.append(_png(fig))
    if len(bench.verdict):
        v = bench.verdict
        v = v[(v["design"] == design) & (v["frequency"] == freq)]
        lines = verdict_lines(v, bench.table)
        items = "".join(f"<li>{_esc(line[2:]).replace('**', '')}</li>" for line in lines)
        parts.append(f"<h3>Verdict</h3><ul class='note'>{items}</ul>")
    return "".join(parts) + "</section>"


def answer_figure(two_way: pd.DataFrame) -> tuple[Any, str, pd.DataFrame] | None:
    """The answer-first chart: the headline method minus the taxonomy and minus price peers at each
    density-matched level, with two-way bootstrap CIs (a benchmark's ``two_way`` table).

    Returns ``(figure, headline method, the two-way rows against the taxonomy)``, or None without that
    table."""
    if two_way is None or two_way.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tw = two_way
    tw = tw[(tw["design"] == tw["design"].iloc[0]) & (tw["frequency"] == tw["frequency"].iloc[0])]
    tax = tw[tw["comparison"] == "taxonomy"]
    if tax.empty:
        return None
    head = str(tax["a"].iloc[0]).split("@")[0]
    price = tw[tw["b"].str.startswith("price_peers@") & tw["a"].str.startswith(head + "@")]
    levels = list(dict.fromkeys(tax["level"]))
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for k, (frame, label) in enumerate(((tax, "minus the taxonomy"), (price, "minus price peers"))):
        f = frame.set_index("level").reindex(levels)
        x = np.arange(len(levels)) + (k - 0.5) * 0.38
        ax.bar(
            x,
            f["difference"],
            0.38,
            label=f"{head} {label}",
            yerr=[
                np.nan_to_num(f["difference"] - f["ci_low"]),
                np.nan_to_num(f["ci_high"] - f["difference"]),
            ],
            capsize=3,
        )
    ax.axhline(0, color="k", lw=1)
    ax.set_xticks(np.arange(len(levels)), [_name(lv) for lv in levels], rotation=20, ha="right")
    ax.set_ylabel("difference in pair-weighted correlation")
    ax.set_title("Headline method against the taxonomy and price peers at each density (two-way 95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, head, tax


def _answer_section(bench: BenchmarkResult, registered: bool = True) -> str:
    """Answer first: one sentence and one chart (:func:`answer_figure`); empty without a two-way table. The
    sentence gives GICS industry and sub-industry where the benchmark has them (else every level it has),
    says whether the headline was pre-registered (``registered``) and marks a look-ahead design."""
    out = answer_figure(bench.two_way)
    if out is None:
        return ""
    fig, head, tax = out
    levels = list(dict.fromkeys(tax["level"]))
    shown = [lv for lv in levels if lv in ("gics_industry", "gics_sub_industry")] or levels
    ind = tax.set_index("level")
    sentence = "; ".join(f"{_name(lv)} {ind.at[lv, 'difference']:+.3f} [{ind.at[lv, 'ci_low']:+.3f}, "
                         f"{ind.at[lv, 'ci_high']:+.3f}]" for lv in shown)
    design = str(tax["design"].iloc[0])
    ahead = any(d.name == design and d.text_look_ahead for d in bench.designs)
    flag = (f" <b>LOOK-AHEAD</b>: the text of design <code>{_esc(design)}</code> is not older than its "
            "window." if ahead else "")
    who = "Pre-registered" if registered else "Headline (the config's first text method; no headline_method)"
    return (
        f'<section id="answer"><h2>Answer</h2><p>{who} <code>{_esc(head)}</code> minus the taxonomy in '
        f"within-group return correlation at each level's pair density (two-way bootstrap 95% CI): "
        f"{_esc(sentence)}.{flag}</p>{_png(fig)}</section>"
    )


def _ranking_section(bench: BenchmarkResult) -> str:
    import matplotlib.pyplot as plt

    if bench.ranking.empty:
        return ""
    r = bench.ranking
    r = r[(r["design"] == r["design"].iloc[0]) & (r["frequency"] == r["frequency"].iloc[0])]
    ks = [c for c in r.columns if c.startswith("top")]
    head = "".join(f"<th>{c}</th>" for c in ["method", *ks, "Spearman"])
    rows = "".join(
        "<tr><td>"
        + _esc(_name(x["method"]))
        + "</td>"
        + "".join(f"<td>{x[k]:.3f}</td>" for k in ks)
        + f"<td>{x['spearman']:.3f}</td></tr>"
        for _, x in r.iterrows()
    )
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for _, x in r.iterrows():
        ax.plot([int(k[3:]) for k in ks], [x[k] for k in ks], marker="o", label=_name(x["method"]),
                ls="-" if x["method_kind"] == "text" else ":")
    ax.set_xlabel("k nearest companies")
    ax.set_ylabel("mean return correlation")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Top-k neighbour correlation")
    return (f'<section id="ranking"><h2>Ranking: do the most similar companies co-move?</h2>'
            f"<table><tr>{head}</tr>{rows}</table>{_png(fig)}{_ranking_differences(bench)}</section>")


def _ranking_differences(bench: BenchmarkResult) -> str:
    """The two-way paired differences of top-k neighbour correlation of the first window, if any."""
    rw = bench.ranking_two_way
    if rw is None or rw.empty:
        return ""
    rw = rw[(rw["design"] == rw["design"].iloc[0]) & (rw["frequency"] == rw["frequency"].iloc[0])]
    k = int(rw["k"].iloc[0])
    rows = "".join(
        f"<tr><td>{_esc(_name(x['a']))}</td><td>{_esc(_name(x['b']))}</td><td>{x['top_a']:.3f}</td>"
        f"<td>{x['top_b']:.3f}</td><td>{x['difference']:+.3f} [{x['ci_low']:+.3f}, {x['ci_high']:+.3f}]</td>"
        "</tr>"
        for _, x in rw.iterrows()
    )
    return (f'<p class="note">Paired differences of top-{k} neighbour correlation, two-way bootstrap (focal '
            "companies x blocks of months, 95% CI):</p>"
            f"<table><tr><th>A</th><th>B</th><th>top{k}(A)</th><th>top{k}(B)</th><th>A - B [95% CI]</th></tr>"
            f"{rows}</table>")


def _pairs_section(pairs: BacktestTables | None) -> str:
    import matplotlib.pyplot as plt

    if pairs is None:
        return ('<section id="pairs"><h2>Pairs trading</h2><p class="note">No backtest results given '
                "(finsae report --pairs DIR).</p></section>")
    s, daily, placebo = pairs.summary, pairs.daily, pairs.placebo
    ahead = set(s.loc[s["look_ahead"].fillna(False).astype(bool), "method"]) if "look_ahead" in s else set()

    def label(m: str) -> str:  # a book formed from text published after its trading started says so
        return _name(m) + (" (LOOK-AHEAD)" if m in ahead else "")

    basis = pairs.config.headline_basis
    net_col = f"net_{float(pairs.config.headline_cost_bps):g}bp"
    s = s[s["basis"] == basis]
    coint = s[s["strategy"] == "coint"]
    d = daily[(daily["basis"] == basis) & (daily["strategy"] == "coint")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for m, g in d.groupby("method", sort=False):
        for ax, col in zip(axes, ["gross", net_col], strict=True):
            ax.plot(g["date"], np.cumsum(g[col].to_numpy()), label=label(str(m)), lw=1)
    axes[0].set_title(f"co-integration, cumulative return, gross ({basis} capital)")
    axes[1].set_title(f"cumulative return, {net_col.replace('_', ' ')}")
    axes[1].legend(fontsize=7)
    curves = _png(fig)
    sharpe_col = "sharpe_" + net_col
    fig, ax = plt.subplots(figsize=(12, 4))
    methods = list(coint["method"])
    for k, m in enumerate(methods):
        pl = placebo[(placebo["method"] == m) & (placebo["strategy"] == "coint") & (placebo["basis"] == basis)
                     & (placebo["kind"] == "random_pairs")][sharpe_col].dropna()
        if len(pl):
            ax.violinplot(pl, positions=[k], widths=0.7, showextrema=False)
    ax.errorbar(
        np.arange(len(methods)),
        coint[sharpe_col],
        yerr=[
            coint[sharpe_col] - coint["sharpe_net_ci_low"],
            coint["sharpe_net_ci_high"] - coint[sharpe_col],
        ],
        fmt="o",
        color="crimson",
        capsize=3,
        label="method (95% CI)",
    )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(methods)), [label(m) for m in methods], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(f"Sharpe, {net_col.replace('_', ' ')}")
    ax.set_title(f"co-integration: Sharpe ratio with CI against random-pairs placebos (violins), {basis} "
                 "capital")
    ax.legend()

    def cell(x: float, fmt: str) -> str:
        return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)

    def top(r: Any) -> str:  # the top stock and its P&L share; NaN when nothing traded
        if not isinstance(r.top_stock, str):
            return "n/a"
        return f"{_esc(r.top_stock)} ({cell(r.top_stock_pnl_share, '.0%')})"

    rows = "".join(
        f"<tr><td>{_esc(label(r.method))}</td><td>{_esc(r.strategy)}</td>"
        f"<td>{cell(r.sharpe_gross, '.2f')}</td>"
        f"<td>{cell(getattr(r, sharpe_col), '.2f')} [{cell(r.sharpe_net_ci_low, '.2f')}, "
        f"{cell(r.sharpe_net_ci_high, '.2f')}]</td><td>{cell(r.bp_month_net, '.0f')}</td>"
        f"<td>{cell(r.random_pairs_percentile, '.0f')}</td><td>{r.pairs_traded}</td>"
        f"<td>{r.distinct_stocks}</td>"
        f"<td>{top(r)}</td>"
        f"<td>{cell(r.ex_top_sharpe_net, '.2f')}</td></tr>"
        for r in s.itertuples()
    )
    table = ("<table><tr><th>method</th><th>strategy</th><th>Sharpe gross</th><th>Sharpe net [95% CI]</th>"
             "<th>bp/month net</th><th>random pairs pct</th><th>pairs traded</th><th>stocks</th>"
             f"<th>top stock (P&amp;L share)</th><th>Sharpe net without it</th></tr>{rows}</table>")
    note = (
        f'<p class="note">{_esc(basis)} capital (the headline basis); costs {net_col[4:]} per traded '
        "notional. The full tables, both capital bases, are in table.md of the backtest folder.</p>"
    )
    return (f'<section id="pairs"><h2>Pairs trading inside peer groups</h2>{table}{note}{curves}{_png(fig)}'
            "</section>")


def _sizes_section(g: pd.DataFrame, names: tuple[str, ...], level: str) -> str:
    import matplotlib.pyplot as plt

    if g.empty or not names:
        return ""
    fig, ax = plt.subplots(figsize=(9, 3.5))
    bins = np.unique(np.round(np.logspace(0, 3, 20))).tolist()
    for name in names:
        sizes = g[g["name"] == name]["group"].value_counts()
        if len(sizes):
            ax.hist(sizes, bins=bins, histtype="step", lw=1.5, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("group size (companies)")
    ax.set_ylabel("groups")
    ax.legend(fontsize=7)
    ax.set_title(f"Group size distribution (matched at {_name(level)})")
    return f'<section id="sizes"><h2>Group sizes</h2>{_png(fig)}</section>'


def _groups_section(expl: ExplanationResult | None, section: str = "groups") -> str:
    if expl is None:
        return (f'<section id="{section}"><h2>Groups and their explanations</h2><p class="note">No '
                "explanations given (finsae explain, then finsae report --explanations DIR).</p></section>")
    g = expl.groups
    f = expl.faithfulness.set_index("group")
    items = []
    for group in f.sort_values("n_members", ascending=False).index:
        rows = g[g["group"] == group].sort_values("rank")
        absent = " <i>(absent: the members lack it)</i>"
        latents = "".join(f"<tr><td>{int(r.latent)}</td><td>{_esc(r.label)}"
                          f"{absent if getattr(r, 'evidence', '') == 'absent' else ''}"
                          f"</td><td>{r.p_in:.0%}</td><td>{r.p_out:.1%}</td><td>{r.lift:.1f}</td></tr>"
                          for r in rows.itertuples())
        first = rows.iloc[0] if len(rows) else None
        fa = f.loc[group]
        rule = (f"<p>Rule (precision {first.precision:.2f}, recall {first.recall:.2f}):</p>"
                f"<pre>{_esc(first.rule)}</pre>") if first is not None else ""
        items.append(
            f"<details><summary><b>{_esc(group)}</b> ({int(fa['n_members'])} companies): "
            f"{_esc(', '.join(rows['label'].head(3)))}</summary>"
            f"<p>Members: {_esc(fa['members'])}</p>"
            "<table><tr><th>latent</th><th>label</th><th>in group</th><th>outside</th><th>lift</th></tr>"
            f"{latents}</table>{rule}"
            "<p class='note'>Faithfulness: ablating the top latents lowers the within-group cosine by "
            f"{fa['drop_explaining']:.3f}, random latents of similar frequency by "
            f"{fa['drop_random_mean']:.3f} (95th pct {fa['drop_random_p95']:.3f}): "
            f"{'faithful' if fa['faithful'] else 'not faithful'}.</p></details>")
    share = float(f["faithful"].mean())
    sae = f' <span class="note">(latents of the SAE {_esc(expl.sae)})</span>' if expl.sae else ""
    return (f'<section id="{section}"><h2>Groups and their explanations: <code>{_esc(expl.grouping)}'
            f"</code>{sae}</h2><p>{len(f)} groups; the explaining latents are faithful for "
            f"<b>{share:.0%}</b> of them; <b>{expl.content_top_share:.0%}</b> have a top latent whose label "
            f"is made of business words.</p>{''.join(items)}</section>")


def _learned_neighbours(nb: pd.DataFrame, expl: ExplanationResult | None,
                        headline: str | None) -> dict[str, list[str]]:
    """Ticker -> its nearest peers by the headline's learned similarity (the neighbours table), each as
    ``PEER (label +contribution, ...)``; labels from the explanation's latent labels when given."""
    if nb.empty:
        return {}
    method = headline if headline in set(nb["method"]) else str(nb["method"].iloc[0])
    nb = nb[nb["method"] == method]
    labels: dict[int, str] = {}
    lab = expl.labels.table if expl is not None else None
    if lab is not None and {"latent", "label"} <= set(lab.columns):
        labels = dict(zip(lab["latent"].astype(int), lab["label"].astype(str), strict=True))
    out: dict[str, list[str]] = {}
    for r in nb.itertuples(index=False):
        why = ", ".join(f"{labels.get(int(j), f'latent {int(j)}')} {c:+.3f}"
                        for j, c in zip(r.latents, r.contributions, strict=True))
        out.setdefault(str(r.ticker), []).append(f"{r.peer} ({why})")
    return out


def _lookup_section(inputs: ReportInputs) -> str:
    g, names, expl = inputs.groups, list(inputs.names), inputs.explanation
    if g.empty:
        return ""
    peers: dict[str, dict[str, list[str]]] = {}
    for name in names:
        rows = g[g["name"] == name]
        members = rows.groupby("group")["ticker"].apply(list)
        for ticker, group in zip(rows["ticker"], rows["group"], strict=True):
            if pd.notna(group):
                others = [t for t in members[group] if t != ticker]
                peers.setdefault(ticker, {})[name] = others[:25] + (["..."] if len(others) > 25 else [])
    why: dict[str, str] = {}
    if expl is not None:
        e = expl.groups
        top = e[e["rank"] < 3].groupby("group")["label"].apply(lambda x: "; ".join(x))
        rows = g[g["name"] == expl.grouping]
        for ticker, group in zip(rows["ticker"], rows["group"], strict=True):
            if group in top.index:
                why[ticker] = str(top[group])
    nearest = _learned_neighbours(inputs.neighbours, expl, inputs.headline_method)
    data = json.dumps({"peers": peers, "why": why, "names": names, "nearest": nearest}).replace("</", "<\\/")
    options = "".join(f'<option value="{_esc(t)}">' for t in sorted(peers))
    script = """
<script>
const LOOKUP = __DATA__;
function showPeers() {
  const t = document.getElementById('ticker').value.trim().toUpperCase();
  const out = document.getElementById('lookup-out');
  const p = LOOKUP.peers[t];
  if (!p) { out.textContent = t ? ('No peers for ' + t + ' (unknown ticker or no text).') : ''; return; }
  let rows = '';
  for (const n of LOOKUP.names) { rows += '<tr><td>' + n + '</td><td>' + ((p[n] || []).join(', ') || \
'(alone)') + '</td></tr>'; }
  const near = LOOKUP.nearest[t] ? '<p>Nearest by the learned similarity, with the latents of largest \
weighted '
    + 'contribution to each pair: ' + LOOKUP.nearest[t].join('; ').replace(/</g, '&lt;') + '</p>' : '';
  const why = LOOKUP.why[t] ? '<p>Why (top latents of its SAE group): ' + LOOKUP.why[t].replace(/</g, \
'&lt;') + '</p>' : '';
  out.innerHTML = '<table><tr><th>method</th><th>peers</th></tr>' + rows + '</table>' + near + why;
}
document.getElementById('ticker').addEventListener('input', showPeers);
showPeers();
</script>""".replace("__DATA__", data)
    return (f'<section id="lookup"><h2>Company lookup</h2><label>Ticker: <input id="ticker" list="tickers" '
            f'value="JPM"></label><datalist id="tickers">{options}</datalist><div id="lookup-out"></div>'
            f"{script}</section>")


def render_report(inputs: ReportInputs, title: str = "finsae report") -> str:
    """The report's HTML (see the module docstring)."""
    bench = inputs.benchmark
    sections = [_answer_section(bench, inputs.headline_registered), _benchmark_section(bench),
                _ranking_section(bench),
                _pairs_section(inputs.pairs), _sizes_section(inputs.groups, inputs.names, inputs.level),
                _groups_section(inputs.explanation),
                *(_groups_section(e, f"groups-{i + 2}") for i, e in enumerate(inputs.more_explanations)),
                _lookup_section(inputs)]
    more = tuple(f"groups-{i + 2}" for i in range(len(inputs.more_explanations)))
    nav = "".join(
        f'<a href="#{s}">{s}</a>'
        for s in ("benchmark", "ranking", "pairs", "sizes", "groups", *more, "lookup")
    )
    pairs = f" and <code>{_esc(inputs.pairs_source)}</code>" if inputs.pairs_source else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body><h1>{_esc(title)}</h1><p class='note'>From <code>{_esc(inputs.source)}</code>"
            f"{pairs}.</p><nav>{nav}</nav>{''.join(sections)}</body></html>")
