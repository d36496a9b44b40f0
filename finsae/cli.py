"""The ``finsae`` command line: a thin layer over the library. Errors print one clear line, no traceback."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import finsae
from finsae.errors import FinsaeError


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
    """Inspect the universe and prices; fetch prices from Yahoo Finance."""


@data.command("info")
@click.option("--companies", type=click.Path(path_type=Path), default=None, help="Universe table (default: bundled).")
@click.option("--prices", type=click.Path(path_type=Path), default=None, help="Prices table (default: bundled).")
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
        click.echo(f"  text {name:<16} {len(u.descriptions(name)):>5} with text, {len(u.missing_text(name)):>4} missing; {pub} ({v.source})")
    c = u.companies
    for col, label in (("sic", "SIC 4-digit"), ("gics", "GICS sub-industry"), ("yahoo_industry", "Yahoo industry")):
        click.echo(f"  {label:<18} {c[col].notna().sum():>5} coded, {c[col].nunique():>4} distinct")
    priced = u.tickers.intersection(p.tickers)
    click.echo(f"Prices: {p.close.shape[1]} tickers, {len(p.close)} trading days {p.start:%Y-%m-%d} to {p.end:%Y-%m-%d} ({p.source})")
    click.echo(f"  universe tickers with a price column: {len(priced)} of {len(u)}")
    if len(p.bad_ticks):
        ticks = ", ".join(f"{r.ticker} {r.date:%Y-%m-%d}" for r in p.bad_ticks.itertuples())
        click.echo(f"  bad ticks set missing (one-day spikes of 2x or more that revert): {len(p.bad_ticks)}: {ticks}")
    try:
        monthly = log_returns(p, p.start, p.end, "monthly", tickers=priced, min_obs_share=1.0, max_drop_share=1.0)
        click.echo(f"  with every monthly return {pd.Timestamp(p.start):%Y-%m} to {p.end:%Y-%m}: {monthly.returns.shape[1]}")
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
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Write the wide prices table here (.parquet or .csv).")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds allowed to reach Yahoo.")
@_friendly
def data_fetch_prices(tickers: str | None, universe_path: Path | None, start: str, end: str, out: Path, timeout: float) -> None:
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


@cli.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True, help="Benchmark config (YAML).")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Results folder (default: output_dir/name from the config).")
@_friendly
def benchmark(config_path: Path, output: Path | None) -> None:
    """Score every grouping of a config on return co-movement; write a results folder and print the table."""
    from finsae.config import load_benchmark_config
    from finsae.evaluate.benchmark import run_benchmark
    from finsae.report.markdown import benchmark_markdown

    cfg = load_benchmark_config(config_path)
    result = run_benchmark(cfg, output)
    click.echo(benchmark_markdown(result))
    click.echo(f"results written to {result.output_dir}")


@cli.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True, help="Pairs backtest config (YAML).")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Results folder (default: output_dir/name from the config).")
@_friendly
def backtest(config_path: Path, output: Path | None) -> None:
    """Walk-forward pairs trading inside each method's peer groups, with costs and placebos."""
    from finsae.backtest.run import run_pairs_backtest
    from finsae.config import load_pairs_config
    from finsae.report.markdown import backtest_markdown

    cfg = load_pairs_config(config_path)
    result = run_pairs_backtest(cfg, output)
    click.echo(backtest_markdown(result))
    click.echo(f"results written to {result.output_dir}")


def main() -> None:
    cli(prog_name="finsae")


if __name__ == "__main__":
    main()
