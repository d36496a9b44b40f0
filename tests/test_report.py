"""The HTML report, opened in headless Chromium: renders with no console errors, sections and plots present,
the company lookup works. Built from a small benchmark + backtest + explanation run on synthetic data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from finsae.config import load_benchmark_config, load_pairs_config
from finsae.pipeline.backtest import run_pairs_backtest
from finsae.pipeline.benchmark import run_benchmark
from finsae.pipeline.report import build_report, write_report

from .conftest import synthetic_prices
from .test_backtest_run import CONFIG as PAIRS_CONFIG
from .test_groups import _text_files

SECTIONS = ("benchmark", "ranking", "pairs", "sizes", "groups", "lookup")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("report")
    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=3)
    cfg = _text_files(tmp, prices.close)
    text = cfg.read_text().replace("levels: [sic2, gics_industry]", "levels: [gics_sector, gics_industry]")
    cfg.write_text(text)
    bench = tmp / "bench"
    run_benchmark(load_benchmark_config(cfg), bench)
    pairs_cfg = PAIRS_CONFIG.replace(
        "start: 2015-07-01\nend: 2016-06-30", "start: 2016-06-01\nend: 2017-12-31"
    )
    pairs_cfg = pairs_cfg.replace(
        "methods: [all_pairs, sic2, gics_sector]", "methods: [all_pairs, gics_industry]"
    )
    pairs_cfg += (
        "text_groups: {file: bench/groups_2016-01-01.parquet, names: [tfidf@gics_industry:density]}\n"
    )
    (tmp / "pairs.yaml").write_text(pairs_cfg)
    run_pairs_backtest(load_pairs_config(tmp / "pairs.yaml"), tmp / "pairs")
    return {"bench": bench, "pairs": tmp / "pairs", "tmp": tmp}


def test_report_has_every_section_and_plot(results):
    page = build_report(results["bench"], pairs=results["pairs"])
    for section in SECTIONS:
        assert f'id="{section}"' in page
    assert page.count("data:image/png;base64,") >= 5
    assert "tfidf@gics_industry:density" in page


def test_report_errors_name_the_folder(tmp_path):
    from finsae.errors import ConfigError

    with pytest.raises(ConfigError, match="not a benchmark results folder.*rerun finsae benchmark"):
        build_report(tmp_path)


@pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                    reason="needs Debian packages chromium and chromium-driver (.ci/run installs them)")
def test_report_renders_in_headless_chromium_without_console_errors(results):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    out = write_report(results["bench"], results["tmp"] / "report.html", pairs=results["pairs"])
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        driver.get(out.resolve().as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        for section in SECTIONS:
            assert driver.find_element(By.ID, section).is_displayed()
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 5
        assert all(driver.execute_script("return arguments[0].naturalWidth", img) > 100 for img in images)
        box = driver.find_element(By.ID, "ticker")
        box.clear()
        box.send_keys("T03")
        assert "tfidf@gics_industry:density" in driver.find_element(By.ID, "lookup-out").text
        box.clear()
        box.send_keys("NOPE")
        assert "No peers for NOPE" in driver.find_element(By.ID, "lookup-out").text
        assert not [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        np.testing.assert_equal(driver.title, "finsae report")
    finally:
        driver.quit()


def test_learned_group_explanations_list_shared_latents_first_and_mark_absent_ones(tmp_path):
    """On ``make run``'s golden ``sae_sup`` explanation: in every group the latents its members share come
    before those they lack (``evidence`` by rank); the markdown and HTML renderers mark the absent ones."""
    import dataclasses
    import json

    from finsae.pipeline.explain import load_explanation
    from finsae.report.html import _groups_section
    from finsae.report.markdown import explanation_markdown

    golden = Path(__file__).parent / "golden" / "make_run_forward_2017" / "explanations"
    src = golden / "sae_sup@gics_industry_density"
    for name in ("groups.parquet", "faithfulness.parquet", "latent_labels.parquet"):
        shutil.copy(src / name, tmp_path / name)
    (tmp_path / "manifest.json").write_text(json.dumps({"grouping": "sae_sup@gics_industry:density"}))
    expl = load_explanation(tmp_path)
    g = expl.groups
    tiers = {"shared": 0, "absent": 1, "none": 2}
    for _, rows in g.sort_values("rank").groupby("group"):
        assert rows["evidence"].map(tiers).is_monotonic_increasing
    assert (g.loc[g["evidence"] == "absent", "weight"] < 0).all()
    assert (g.loc[g["rank"] == 0, "evidence"] == "shared").all()  # every group has latents its members share
    assert "[absent]" not in explanation_markdown(expl, max_groups=100)
    # a group whose second latent is one its members lack (14 of 30 top latents were, under the excess order)
    g = g.copy()
    hit = (g["group"] == g["group"].iloc[0]) & (g["rank"] == 1)
    g.loc[hit, "evidence"] = "absent"
    marked = dataclasses.replace(expl, groups=g)
    assert explanation_markdown(marked, max_groups=100).count("[absent]") == 1
    assert _groups_section(marked).count("(absent: the members lack it)") == 1


def test_answer_sentence_uses_the_levels_there_are_says_who_chose_the_headline_and_marks_look_ahead():
    import pandas as pd

    from finsae.evaluate.results import BenchmarkResult, DesignInfo
    from finsae.report.html import _answer_section

    rows = [{"design": "f", "frequency": "monthly", "level": lv, "comparison": "taxonomy",
             "a": f"m@{lv}:density", "b": lv, "difference": d, "ci_low": d - 0.1, "ci_high": d + 0.1}
            for lv, d in (("sic2", 0.05), ("sic4", -0.02))]
    empty = pd.DataFrame()

    def bench(ahead: bool) -> BenchmarkResult:
        info = DesignInfo("f", "v", None, pd.Timestamp("2017-06-01"), pd.Timestamp("2019-06-30"), ahead, "")
        return BenchmarkResult("b", empty, empty, empty, (info,), None, two_way=pd.DataFrame(rows))

    page = _answer_section(bench(False), registered=False)
    assert "SIC 2-digit +0.050 [-0.050, +0.150]; SIC 4-digit -0.020 [-0.120, +0.080]" in page
    assert "Headline (the config's first text method" in page and "Pre-registered" not in page
    assert "LOOK-AHEAD" not in page
    page = _answer_section(bench(True), registered=True)
    assert "Pre-registered <code>m</code>" in page and "<b>LOOK-AHEAD</b>" in page


def test_report_marks_look_ahead_books_and_refuses_a_backtest_of_another_universe(results, tmp_path):
    import json

    from finsae.errors import DataError

    pairs = tmp_path / "pairs"
    shutil.copytree(results["pairs"], pairs)
    summary = pairs / "summary.parquet"
    import pandas as pd

    s = pd.read_parquet(summary)
    s["look_ahead"] = s["method"] == "tfidf@gics_industry:density"
    manifest = json.loads((pairs / "manifest.json").read_text())
    manifest.pop("run_id", None)  # the edited tables are not the run's any more: no run id to check
    (pairs / "manifest.json").write_text(json.dumps(manifest))
    s.to_parquet(summary)
    page = build_report(results["bench"], pairs=pairs)
    assert "tfidf@gics_industry:density (LOOK-AHEAD)" in page
    manifest["data"]["companies"]["sha256"] = "0" * 64
    (pairs / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="ran on companies table .* give a backtest of the benchmark's"):
        build_report(results["bench"], pairs=pairs)
