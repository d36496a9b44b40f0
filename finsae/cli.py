"""The ``finsae`` command line: a thin layer over the library. Errors print one clear line, no traceback."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import finsae
from finsae.errors import FinsaeError

if TYPE_CHECKING:  # the extract stage loads lazily: the command line starts fast
    from finsae.extract.spec import Execution, ExtractionSpec


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FinsaeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(finsae.__version__, prog_name="finsae")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """finsae: company peer groups from language-model features, benchmarked on returns."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.group()
def data() -> None:
    """Inspect the universe and prices; fetch prices from Yahoo Finance; read 10-K filings (edgar)."""


@data.command("info")
@click.option(
    "--companies", type=click.Path(path_type=Path), default=None, help="Universe table (default: bundled)."
)
@click.option(
    "--prices", type=click.Path(path_type=Path), default=None, help="Prices table (default: bundled)."
)
@_friendly
def data_info(companies: Path | None, prices: Path | None) -> None:
    """Summary of the universe, its text vintages, codes and prices, and the data's known limits."""
    import pandas as pd

    from finsae.data import BUNDLED_DATA_LIMITS, load_prices, load_universe, log_returns

    u = load_universe(companies)
    p = load_prices(prices)
    click.echo(f"Universe: {len(u)} companies from {u.source}")
    for name, v in u.vintages.items():
        pub = "date unknown" if v.published is None else f"published by {v.published:%Y-%m-%d}"
        click.echo(f"  text {name:<16} {len(u.descriptions(name)):>5} with text, "
                   f"{len(u.missing_text(name)):>4} missing; {pub} ({v.source})")
        shared = u.shared_descriptions(name)
        if shared:
            text, tickers = max(shared.items(), key=lambda kv: len(kv[1]))
            n = sum(len(t) for t in shared.values())
            click.echo(f"    {n} companies share {len(shared)} text(s) with another company (identical to "
                       f"every text method), e.g. {', '.join(tickers[:8])}: {text[:50]!r}")
    c = u.companies
    for col, label in (
        ("sic", "SIC 4-digit"),
        ("gics", "GICS sub-industry"),
        ("yahoo_industry", "Yahoo industry"),
    ):
        click.echo(f"  {label:<18} {c[col].notna().sum():>5} coded, {c[col].nunique():>4} distinct")
    priced = u.tickers.intersection(p.tickers)
    click.echo(f"Prices: {p.close.shape[1]} tickers, {len(p.close)} trading days {p.start:%Y-%m-%d} to "
               f"{p.end:%Y-%m-%d} ({p.source})")
    click.echo(f"  universe tickers with a price column: {len(priced)} of {len(u)}")
    if len(p.bad_ticks):
        ticks = ", ".join(f"{r.ticker} {r.date:%Y-%m-%d}" for r in p.bad_ticks.itertuples())
        click.echo(f"  bad ticks set missing (one-day spikes of 2x or more that revert): {len(p.bad_ticks)}: "
                   f"{ticks}")
    if len(p.sparse_dates):
        dates = ", ".join(f"{r.date:%Y-%m-%d} ({r.priced} of {r.live} priced, {r.action})"
                          for r in p.sparse_dates.itertuples())
        click.echo(f"  sparse dates (fewer than half of the listed tickers priced): {dates}")
    try:
        monthly = log_returns(
            p, p.start, p.end, "monthly", tickers=priced, min_obs_share=1.0, max_drop_share=1.0
        )
        click.echo(f"  with every monthly return {pd.Timestamp(p.start):%Y-%m} to {p.end:%Y-%m}: "
                   f"{monthly.returns.shape[1]}")
    except FinsaeError as exc:
        click.echo(f"  monthly returns: {exc}")
    if companies is None:
        click.echo("Known limits of the bundled data:")
        for line in BUNDLED_DATA_LIMITS:
            click.echo(f"  - {line}")


@data.command("fetch-prices")
@click.option("--tickers", default=None, help="Comma-separated tickers.")
@click.option("--universe", "universe_path", type=click.Path(path_type=Path), default=None,
              help="Take the tickers of this universe table.")
@click.option("--start", required=True, help="First date, YYYY-MM-DD.")
@click.option("--end", required=True, help="Last date, YYYY-MM-DD.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Write the wide prices table here (.parquet or .csv).",
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds allowed to reach Yahoo.")
@_friendly
def data_fetch_prices(
    tickers: str | None, universe_path: Path | None, start: str, end: str, out: Path, timeout: float
) -> None:
    """Download adjusted closes from Yahoo Finance (cached), and save them as a prices file."""
    from finsae._io import atomic_write
    from finsae.data import load_universe
    from finsae.data.yahoo import YahooPriceProvider

    if (tickers is None) == (universe_path is None):
        raise click.UsageError("give exactly one of --tickers or --universe")
    names = tickers.split(",") if tickers else list(load_universe(universe_path).tickers)
    prices = YahooPriceProvider(timeout=timeout).fetch(names, start, end)
    frame = prices.close.reset_index()
    if out.suffix.lower() == ".csv":
        atomic_write(out, lambda p: frame.to_csv(p, index=False))
    else:
        atomic_write(out, lambda p: frame.to_parquet(p, index=False))
    click.echo(f"wrote {prices.close.shape[1]} tickers x {len(prices.close)} days to {out}")


@data.command("edgar")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Universe table to write (.parquet or .csv); finsae benchmark reads it as data.companies.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), default=None,
              help="Per-file status report (default: <out stem>.report.csv beside --out).")
@click.option("--tickers", "cik_map", type=click.Path(path_type=Path), default=None,
              help="Ticker map: a CSV or parquet table with ticker and cik (or file name) columns.")
@click.option("--executive-officers", type=click.Choice(["keep", "drop"]), default="keep", show_default=True,
              help="Keep or drop an unnumbered 'Executive Officers' subsection that ends Item 1.")
@click.option("--include-incorporated", is_flag=True,
              help="Put pointer-style Item 1s (incorporated by reference) into the universe too.")
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Processes reading filings (0 = one per CPU)."
)
@click.option("--company", "companies", multiple=True,
              help="Download this company's 10-Ks from EDGAR first (CIK or ticker; repeatable).")
@click.option("--years", default=None, help="Year range of the periods to download, e.g. 2015-2020.")
@click.option("--user-agent", envvar="FINSAE_EDGAR_USER_AGENT", default=None,
              help="'Name e-mail' sent to EDGAR, required by the SEC (or FINSAE_EDGAR_USER_AGENT).")
@click.option(
    "--cache", "cache", type=click.Path(path_type=Path), default=None, help="EDGAR download cache folder."
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds allowed to reach EDGAR.")
@_friendly
def data_edgar(paths: tuple[Path, ...], out: Path, report_path: Path | None, cik_map: Path | None,
               executive_officers: str, include_incorporated: bool, workers: int, companies: tuple[str, ...],
               years: str | None, user_agent: str | None, cache: Path | None, timeout: float) -> None:
    """Item 1 (Business) of 10-K filings (files or folders, and/or downloaded from EDGAR) as a universe
    table."""
    from finsae._io import atomic_write
    from finsae.data.edgar import EdgarClient, load_cik_map, read_filings

    if not paths and not companies:
        raise click.UsageError("give filings (files or folders) and/or --company to download from EDGAR")
    span = None
    if years:
        parts = years.split("-")
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            raise click.UsageError(f"--years takes YEAR or FIRST-LAST, got {years!r}")
        span = (int(parts[0]), int(parts[-1]))
    files: list[Path] = list(paths)
    if companies:
        client = EdgarClient(user_agent, cache=cache, timeout=timeout)
        for company in companies:
            got = client.download(company, span)
            click.echo(f"{company}: {len(got)} 10-K filing(s) from EDGAR (cache {client.cache})")
            files += got
    batch = read_filings(files, executive_officers=executive_officers,  # type: ignore[arg-type]
                         tickers=load_cik_map(cik_map) if cik_map else None,
                         include_incorporated=include_incorporated, workers=None if workers == 0 else workers)
    report = batch.to_frame()
    report_path = report_path or out.with_name(f"{out.stem}.report.csv")
    atomic_write(report_path, lambda p: report.to_csv(p, index=False))
    counts = ", ".join(f"{k} {v}" for k, v in batch.counts().items() if v)
    click.echo(f"{len(report)} file(s): {counts}; report written to {report_path}")
    for row in report[report["status"] != "ok"].itertuples():
        click.echo(f"  {row.status:<26} {row.path}: {row.detail}")
    frame = batch.universe_frame()
    if out.suffix.lower() == ".csv":
        atomic_write(out, lambda p: frame.to_csv(p, index=False))
    else:
        atomic_write(out, lambda p: frame.to_parquet(p, index=False))
    click.echo(f"wrote {len(frame)} filing(s) of {frame['ticker'].nunique()} companies to {out}")


def _config_and_output(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--config`` (a ``kind`` config, YAML) and ``--output`` options of a command that writes a results
    folder."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option("--output", type=click.Path(path_type=Path), default=None,
                          help="Results folder (default: output_dir/name from the config).")(fn)
        return click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
                            help=f"{kind} config (YAML).")(fn)

    return decorate


def _results_and_pairs(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--results`` (benchmark) and ``--pairs`` (pairs backtest) folder options of report and export."""
    fn = click.option("--pairs", type=click.Path(path_type=Path), default=None,
                      help="Pairs backtest results folder.")(fn)
    return click.option("--results", type=click.Path(path_type=Path), default=Path("results/forward_2017"),
                        show_default=True, help="Benchmark results folder.")(fn)


@cli.command()
@_config_and_output("Benchmark")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Windows scored at once (default: one per CPU, at most 4; tables do not depend on it).")
@_friendly
def benchmark(config_path: Path, output: Path | None, threads: int | None) -> None:
    """Score every grouping of a config on return co-movement; write a results folder and print the table."""
    from finsae.config import load_benchmark_config
    from finsae.pipeline.benchmark import run_benchmark
    from finsae.report.markdown import benchmark_markdown

    cfg = load_benchmark_config(config_path)
    result = run_benchmark(cfg, output, threads=threads)
    click.echo(benchmark_markdown(result))
    click.echo(f"results written to {result.output_dir}")


@cli.command()
@_config_and_output("Pairs backtest")
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="Run pair tests and placebo draws locally or as Ray tasks (default: the config's backend).",
)
@click.option("--workers", type=int, default=None, help="Ray tasks at once (default: the cluster's CPUs).")
@click.option("--address", default=None, help="Ray cluster address (default: a local cluster).")
@_friendly
def backtest(config_path: Path, output: Path | None, backend: str | None, workers: int | None,
             address: str | None) -> None:
    """Walk-forward pairs trading inside each method's peer groups, with costs and placebos."""
    from finsae.config import load_pairs_config
    from finsae.pipeline.backtest import run_pairs_backtest
    from finsae.report.markdown import backtest_markdown

    cfg = load_pairs_config(config_path)
    if backend or workers or address:
        update = {
            k: v for k, v in (("kind", backend), ("workers", workers), ("address", address)) if v is not None
        }
        cfg = cfg.model_copy(update={"backend": cfg.backend.model_copy(update=update)})
    result = run_pairs_backtest(cfg, output)
    click.echo(backtest_markdown(result))
    click.echo(f"results written to {result.output_dir}")


def _sae_source(sae: str | None) -> Path:
    from finsae.extract.sae import DEFAULT_SAE_DIR

    path = Path(sae) if sae else DEFAULT_SAE_DIR
    if not (path / "cfg.json").is_file():
        raise click.UsageError(f"no SAE at {path}: pass --sae DIR (a sae_lens folder), or train one with "
                               "finsae train-sae")
    return path


#: The options of ``finsae extract`` that make its extraction spec (``finsae.extract.ExtractionSpec``).
_SPEC_OPTIONS = (
    click.option("--model", "model", default="gemma-3-270m", show_default=True,
                 help="Default name, a local Hugging Face directory, or an official TransformerLens name "
                      "(hub)."),
    click.option("--tl-name", default=None,
                 help="TransformerLens architecture name for a local model directory."),
    click.option("--sae", default=None, help="sae_lens SAE folder (default: the shipped SAE)."),
    click.option("--pooling", type=click.Choice(["sum", "mean", "max", "binary", "count"]), default="sum",
                 show_default=True),
    click.option("--max-length", type=int, default=None,
                 help="Tokens per chunk (default: the SAE's context size)."),
    click.option("--overlap", type=int, default=0, show_default=True,
                 help="Context tokens shared by consecutive chunks."),
    click.option("--batch-tokens", type=int, default=8192, show_default=True),
    click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True),
    click.option("--compile", "compile", is_flag=True,
                 help="Run the blocks through torch.compile (about 1.4x faster on CPU; features cached "
                      "apart)."),
)
#: The options of ``finsae extract`` that say where missing shards are computed
#: (``finsae.extract.Execution``).
_EXECUTION_OPTIONS = (
    click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="ray: missing shards on a Ray cluster, one model replica per worker."),
    click.option("--workers", type=int, default=None,
                 help="Ray workers (default: one per GPU, else one per CPU)."),
    click.option("--address", default=None, help="Ray cluster address (default: a local cluster)."),
)


def _extraction_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the spec and execution options to a command, and hand them to it as one ``spec``
    (``ExtractionSpec``, its SAE folder checked) and one ``run`` (``Execution``, with progress bars)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **options: Any) -> Any:
        from finsae.extract.spec import Execution, ExtractionSpec

        spec_fields = {name: options.pop(name) for name in ExtractionSpec.__dataclass_fields__}
        spec_fields["sae"] = str(_sae_source(spec_fields["sae"]))
        where = {name: options.pop(name) for name in ("backend", "workers", "address")}
        run = Execution(**where, progress=True)
        return fn(*args, spec=ExtractionSpec(**spec_fields), run=run, **options)

    for option in reversed((*_SPEC_OPTIONS, *_EXECUTION_OPTIONS)):
        wrapper = option(wrapper)
    return wrapper


@cli.command()
@click.option("--companies", type=click.Path(path_type=Path), default=None,
              help="Universe table (default: bundled).")
@click.option("--vintage", default="2017", show_default=True, help="Text vintage to encode.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results/features"), show_default=True)
@_friendly
@_extraction_options
def extract(companies: Path | None, vintage: str, out: Path, spec: ExtractionSpec, run: Execution) -> None:
    """Pooled SAE features of a universe's descriptions (cached: a second run is a cache hit)."""
    import json

    import scipy.sparse as sp

    from finsae._io import atomic_write, write_json, write_parquet
    from finsae.data import load_universe
    from finsae.extract import cached_extract

    universe = load_universe(companies)
    texts = universe.descriptions(vintage)
    fs = cached_extract(spec.load_model(), spec.sae_source(), list(texts), list(texts.index), spec, run)

    def save_matrix(path: Path) -> None:
        with open(path, "wb") as fh:  # a file handle: save_npz would append ".npz" to the temporary name
            sp.save_npz(fh, fs.matrix)

    atomic_write(out / "features.npz", save_matrix)
    write_parquet(fs.to_frame(), out / "documents.parquet")
    write_json({**fs.manifest, "sae": spec.sae, "vintage": vintage, "skipped": fs.skipped,
                "missing_text": list(universe.missing_text(vintage))}, out / "manifest.json")
    m = fs.manifest
    rate = f", {m['tokens'] / m['compute_seconds']:.0f} tokens/s" if m.get("compute_seconds") else ""
    if m.get("wall_seconds"):
        rate += f" per worker, {m['workers']} Ray workers, {m['wall_seconds']:.0f} s wall"
    without = len(universe.missing_text(vintage))
    click.echo(f"{m['documents']} documents, {m['tokens']} tokens, {m['shards_from_cache']}/{m['shards']} "
               f"shards from cache{rate}; {without} companies without {vintage} text")
    shape = json.dumps({"shape": list(fs.matrix.shape), "nnz": int(fs.matrix.nnz)})
    click.echo(f"features written to {out} ({shape})")


@cli.command("train-sae")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Sweep folder: corpus, activations, candidates, figures, sweep.parquet and the chosen SAE "
                   "(sae/). An interrupted run resumes from what it wrote.")
@click.option("--companies", type=click.Path(path_type=Path), default=None,
              help="Universe whose 2017 descriptions join the corpus and are scored (default: bundled).")
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Profile texts (parquet with a 'text' column; default: the bundled corpus_2017).")
@click.option("--prices", type=click.Path(path_type=Path), default=None)
@click.option("--model", "model_source", default="gemma-3-270m", show_default=True)
@click.option("--tl-name", default=None)
@click.option("--dtype", default="bfloat16", show_default=True,
              help="The language model's dtype for the activation pass (bfloat16: 2x faster on this CPU).")
@click.option("--layers", default="3,6,9,12", show_default=True, help="Stage-1 layers (comma-separated).")
@click.option("--token-budget", type=int, default=1_000_000, show_default=True,
              help="Tokens of text (descriptions first, then profiles) read by the sweep.")
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--stages", default="1,2", show_default=True, help="1: layers; 2: widths, k and BatchTopK.")
@click.option("--forward", is_flag=True,
              help="After the choice is written: add the forward-window figures of every SAE of the sweep.")
@click.option("--reference", "references", multiple=True,
              help="NAME=FOLDER of an SAE measured beside the grid; the first is the shipped default the "
                   "choice must match (default: the recorded sweep's: the layer-3 2,048- and 5,120-latent "
                   "SAEs).")
@_friendly
def train_sae(out: Path, companies: Path | None, corpus: Path | None, prices: Path | None,
              model_source: str, tl_name: str | None, dtype: str, layers: str, token_budget: int,
              epochs: int, stages: str, forward: bool, references: tuple[str, ...]) -> None:
    """Run the pre-registered SAE sweep (docs/sae_sweep_rule.md) with sae_lens and choose by its rule."""
    from finsae.data import load_prices, load_universe
    from finsae.extract import load_model
    from finsae.extract.sae import DEFAULT_SAE_DIR
    from finsae.pipeline.sae_selection import Sweep, SweepPlan, load_profiles

    refs: dict[str, Path] = {}
    for r in references:
        name, sep, folder = r.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"{r!r} is not NAME=FOLDER", param_hint="--reference")
        refs[name] = Path(folder)
    if not refs:
        # the references of the recorded sweep (the default before it, then the 5,120-latent SAE)
        refs = {"shipped-L3-2048": DEFAULT_SAE_DIR.parent / "gemma-3-270m-l3-2048",
                "L3-5120": DEFAULT_SAE_DIR.parent / "gemma-3-270m-l3-5120"}
    try:
        plan = SweepPlan(layers=tuple(int(x) for x in layers.split(",")), token_budget=token_budget,
                         epochs=epochs, stages=tuple(int(x) for x in stages.split(",")))
    except ValueError:
        raise click.BadParameter(f"{layers!r} / {stages!r}: comma-separated integers") from None
    loaded = load_model(model_source, tl_name=tl_name, dtype=dtype)
    sweep = Sweep(plan, out, loaded, load_universe(companies), load_prices(prices),
                  profiles=load_profiles(corpus), references=refs, progress=True)
    table = sweep.forward() if forward else sweep.run()
    cols = ["candidate", "stage", "explained_variance", "loss_recovered", "dead_share", "M",
            "content_share", "chosen"] + (["fwd_sup_gics_industry", "fwd_sup_gics_sub_industry", "top10",
                                           "top10_gics_sub"] if forward else [])
    click.echo(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    click.echo(f"chosen SAE written to {out / 'sae'}")


@cli.command()
@click.option(
    "--results",
    type=click.Path(path_type=Path),
    default=Path("results/forward_2017"),
    show_default=True,
    help="A benchmark results folder (its run store says how every grouping was formed).",
)
@click.option("--grouping", default="sae@gics_industry:density", show_default=True,
              help="Which SAE grouping to explain (a name in the groups file); its SAE, model and features "
                   "come from the run store.")
@click.option("--companies", type=click.Path(path_type=Path), default=None,
              help="Universe (default: the one the benchmark ran on).")
@click.option("--top", type=int, default=8, show_default=True, help="Explaining latents per group.")
@click.option("--draws", type=int, default=50, show_default=True, help="Random-latent ablations per group.")
@_friendly
def explain(results: Path, grouping: str, companies: Path | None, top: int, draws: int) -> None:
    """Explain every group of an SAE grouping by its latents (labels, rules) and check faithfulness."""
    from finsae.pipeline.explain import explain_grouping
    from finsae.report.markdown import explanation_markdown

    res = explain_grouping(results, grouping, companies=companies, top=top, draws=draws, progress=True)
    click.echo(explanation_markdown(res))
    click.echo(f"explanations written to {res.output_dir}")


@cli.command()
@_results_and_pairs
@click.option("--explanations", type=click.Path(path_type=Path), multiple=True,
              help="Explanations folder (from finsae explain); repeat for several groupings, each shown in "
                   "a section of its own (the first one's labels also serve the company lookup).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("results/report.html"), show_default=True
)
@_friendly
def report(results: Path, pairs: Path | None, explanations: tuple[Path, ...], out: Path) -> None:
    """Write one self-contained HTML report (plots embedded) from results folders."""
    from finsae.pipeline.report import write_report

    path = write_report(results, out, pairs=pairs, explanations=list(explanations))
    click.echo(f"report written to {path.resolve()}")


@cli.command()
@_results_and_pairs
@click.option("--explanations", type=click.Path(path_type=Path), multiple=True,
              help="Explanations folder(s) from finsae explain (repeatable; default: every folder under "
                   "<results>/explanations).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Export folder to write (default: exports/<results folder name>).")
@click.option("--k", type=int, default=20, show_default=True, help="Peers per company in peers.parquet.")
@click.option("--vintage", default=None, help="Formation text vintage (default: the first design's).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing export folder (only one finsae export wrote, holding only export "
                   "files).")
@_friendly
def export(results: Path, pairs: Path | None, explanations: tuple[Path, ...], out: Path | None, k: int,
           vintage: str | None, overwrite: bool) -> None:
    """Write a versioned export (parquet tables + manifest.json, schema-checked) any tool can read."""
    from finsae.pipeline.export import export_run

    found = list(explanations) or sorted(p.parent for p in (results / "explanations").glob("*/manifest.json"))
    out = out or Path("exports") / results.name
    res = export_run(results, out, pairs=pairs, explanations=found, k=k, vintage=vintage,
                     overwrite=overwrite)
    click.echo(res.to_frame().to_string(index=False))
    click.echo(f"export (schema {res.manifest['schema_version']}) written to {res.path}")


@cli.command()
@click.option(
    "--export", "export_dir", type=click.Path(path_type=Path), required=True, help="Export folder to serve."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--api-key-file", type=click.Path(path_type=Path), default=None,
              help="File whose first line is the API key (default: the FINSAE_API_KEY environment variable).")
@_friendly
def serve(export_dir: Path, host: str, port: int, api_key_file: Path | None) -> None:
    """Serve peers, similarities and explanations of an export over HTTP (read-only, API key required)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise click.UsageError(f"finsae serve needs the serve extra ({exc.name} is missing): "
                               "pip install 'finsae[serve]'") from None
    from finsae.serve import read_api_key
    from finsae.serve import serve as run_service

    key = read_api_key(api_key_file)
    run_service(export_dir, host=host, port=port, api_key=key)


@cli.command("sae-eval")
@click.option("--sae", default=None, help="sae_lens SAE folder (default: the shipped SAE).")
@click.option("--model", "model_source", default="gemma-3-270m", show_default=True)
@click.option("--tl-name", default=None)
@click.option("--companies", type=click.Path(path_type=Path), default=None)
@click.option("--vintage", default="2017", show_default=True)
@click.option(
    "--docs",
    type=int,
    default=60,
    show_default=True,
    help="Documents evaluated (the last ones of the corpus).",
)
@_friendly
def sae_eval(
    sae: str | None, model_source: str, tl_name: str | None, companies: Path | None, vintage: str, docs: int
) -> None:
    """Explained variance, L0, dead latents and LM loss recovered (spliced from position 1) against the
    floor."""
    from finsae.data import load_universe
    from finsae.extract import load_model, load_sae
    from finsae.extract.train import evaluate_sae

    texts = list(load_universe(companies).descriptions(vintage))[-docs:]
    loaded = load_model(model_source, tl_name=tl_name)
    q = evaluate_sae(loaded.model, load_sae(_sae_source(sae)), texts)
    for key, value in q.to_dict().items():
        click.echo(f"{key:<20} {value:.4f}" if isinstance(value, float) else f"{key:<20} {value}")
    floor = q.meets_floor()
    click.echo("quality floor (EV >= 0.80, loss recovered >= 85%, dead <= 50%): "
               f"{'met' if floor else 'NOT met'}")
    if not floor:
        sys.exit(1)


def main() -> None:
    cli(prog_name="finsae")


if __name__ == "__main__":
    main()
