"""Fuzz-style: random small universes and price tables (gaps, NaN, jumps, duplicate dates, odd tickers and
scripts) through load_universe, load_prices, log_returns and a taxonomy benchmark. Every failure must be a
finsae error (one line, no traceback from inside a library) and no reported figure may be NaN. Bounded: a
fixed number of seeded cases, well under 30 s."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finsae.config import load_benchmark_config
from finsae.data import load_prices, load_universe, log_returns
from finsae.errors import FinsaeError
from finsae.pipeline.benchmark import run_benchmark

CASES = 40
ODD = ["ÄPPLE", "A" * 40, "brk.b", " msft ", "银行", "-X", "BF/A", "T1", "t1", "", "A B", "^GSPC"]
TEXTS = ["Banks lend money.", "中国银行是一家银行", "شركة مصرفية", "   ", "", "Oil and gas drilling.", None]
SIC = ["6021", "6022", "1311", "1381", "7372", "100"]  # valid (100 is 0100)
BAD_SIC = ["0500", "73A2", "99999"]

CONFIG = """\
name: fuzz
data: {{companies: companies.csv, prices: prices.csv, splits: {splits}}}
designs:
  - {{name: d, text_vintage: description, start: {start}, end: {end}, frequencies: [{freq}]}}
taxonomies: [all_pairs, sic2]
evaluation: {{null_draws: 5, bootstrap_draws: 5, min_obs_share: {obs}, max_drop_share: {drop}}}
"""


def _case(rng: np.random.Generator, folder: Path) -> Path:
    n = int(rng.integers(1, 10))
    tickers = [f"T{i}" for i in range(n)]
    for k in range(n):
        if rng.random() < 0.04:
            tickers[k] = str(rng.choice(ODD))
    companies = pd.DataFrame(
        {
            "ticker": tickers,
            "description": [str(rng.choice(TEXTS[:-1])) if rng.random() < 0.9 else None for _ in tickers],
            "sic": [
                str(rng.choice(SIC))
                if rng.random() < 0.93
                else (None if rng.random() < 0.5 else str(rng.choice(BAD_SIC)))
                for _ in tickers
            ],
        }
    )
    companies.to_csv(folder / "companies.csv", index=False)
    days = int(rng.integers(2, 400))
    dates = pd.bdate_range("2018-01-01", periods=days)
    if rng.random() < 0.05:
        dates = dates.append(dates[:1])  # a duplicate date
    price_tickers = list(tickers) if rng.random() < 0.9 else [f"Z{i}" for i in range(n)]
    close = 40 * np.exp(np.cumsum(rng.normal(0, rng.choice([0.0, 0.01, 0.2]), (len(dates), n)), axis=0))
    close[rng.random(close.shape) < rng.choice([0.0, 0.02, 0.05, 0.6])] = np.nan
    if rng.random() < 0.3:
        close[int(rng.integers(0, len(dates))):, int(rng.integers(0, n))] *= rng.choice([0.1, 0.5, 3.0])
    if rng.random() < 0.05:
        close[0, 0] = -1.0
    frame = pd.DataFrame(close, index=dates, columns=price_tickers).rename_axis("date").reset_index()
    frame.to_csv(folder / "prices.csv", index=False)
    start = dates[int(rng.integers(0, max(1, len(dates) // 3)))]
    end = start + pd.Timedelta(days=int(rng.integers(1, 500)))
    (folder / "cfg.yaml").write_text(CONFIG.format(
        splits=rng.choice(["raise", "repair", "keep"]), start=start.date(), end=end.date(),
        freq=rng.choice(["daily", "monthly"]), obs=rng.choice([0.5, 0.9]), drop=rng.choice([0.25, 1.0])))
    return folder / "cfg.yaml"


def _figures(frame: pd.DataFrame) -> pd.DataFrame:
    num = frame.select_dtypes("number")
    return num[
        [c for c in ("pair_weighted", "pair_density", "n_pairs", "n_groups", "n_companies") if c in num]
    ]


@pytest.mark.parametrize("seed", [0])
def test_random_inputs_give_finsae_errors_or_clean_numbers(tmp_path, seed):
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    outcomes: dict[str, int] = {}
    for case in range(CASES):
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        cfg = _case(rng, folder)
        try:
            universe = load_universe(folder / "companies.csv")
            prices = load_prices(folder / "prices.csv", splits="keep")
            log_returns(prices, prices.start, prices.end, "daily", max_drop_share=1.0)
            result = run_benchmark(load_benchmark_config(cfg), folder / "out")
        except FinsaeError as exc:
            assert "\n" not in str(exc).strip() or "config" in str(exc), str(exc)
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            continue
        assert len(universe) >= 1
        figures = _figures(result.table)
        assert not figures.isna().to_numpy().any(), (case, figures)
        outcomes["ok"] = outcomes.get("ok", 0) + 1
    assert time.perf_counter() - t0 < 30
    assert outcomes.get("ok", 0) >= 1 and len(outcomes) >= 2, outcomes  # both paths exercised
