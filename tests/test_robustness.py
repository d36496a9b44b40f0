"""Inputs, results and exports that defend themselves (issue #13): nothing the user had is deleted or mixed,
nothing silently wrong. Built on a small TF-IDF benchmark on synthetic data (no language model)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from finsae.config import load_benchmark_config
from finsae.errors import ConfigError
from finsae.evaluate.benchmark import run_benchmark
from finsae.export import export_run, validate_export
from finsae.export.build import EXPORT_MARKER

from .conftest import synthetic_prices
from .test_groups import _text_files


def _small_config(folder: Path) -> Path:
    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=3)
    cfg = _text_files(folder, prices.close)
    text = cfg.read_text().replace("levels: [sic2, gics_industry]", "levels: [gics_sector, gics_industry]")
    text = text.replace("transform: select\n", "transform: idf\n").replace("clusterer: select\n", "clusterer: average\n")
    cfg.write_text(text)
    return cfg


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("robust")
    cfg = _small_config(tmp)
    run_benchmark(load_benchmark_config(cfg), tmp / "results" / "bench")
    export_run(tmp / "results" / "bench", tmp / "exports" / "bench", k=3)
    return {"tmp": tmp, "cfg": cfg, "bench": tmp / "results" / "bench", "out": tmp / "exports" / "bench"}


# ------------------------------------------------------------------------------- 1. --overwrite loses nothing

def test_overwrite_replaces_an_export_and_nothing_else(bench, tmp_path):
    out = tmp_path / "exp"
    export_run(bench["bench"], out, k=2)
    assert (out / EXPORT_MARKER).is_file()
    export_run(bench["bench"], out, k=3, overwrite=True)  # an export: replaced
    assert validate_export(out)["k"] == 3
    # a folder with a user's notes is not an export: refused, untouched
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ideas.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"notes is not a finsae export.*choose another --out"):
        export_run(bench["bench"], notes, k=2, overwrite=True)
    assert (notes / "ideas.txt").read_text() == "keep me"
    # an export the user added a file to: refused, the file named
    (out / "my_notes.md").write_text("mine")
    with pytest.raises(ConfigError, match=r"not part of the export \(\['my_notes.md'\]\)"):
        export_run(bench["bench"], out, k=2, overwrite=True)
    assert (out / "my_notes.md").read_text() == "mine" and validate_export(out)["k"] == 3
    # a file, not a folder
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        export_run(bench["bench"], tmp_path / "file", overwrite=True)


def test_export_out_may_not_contain_or_lie_inside_the_results(bench):
    results = bench["bench"]
    before = sorted(p.name for p in results.iterdir())
    for out in (results.parent, results, results / "export", bench["tmp"]):
        with pytest.raises(ConfigError, match="overlap"):
            export_run(results, out, k=2, overwrite=True)
    assert sorted(p.name for p in results.iterdir()) == before
    validate_export(bench["out"])


def test_legacy_export_without_marker_is_still_replaceable(bench, tmp_path):
    import shutil

    out = tmp_path / "legacy"
    shutil.copytree(bench["out"], out)
    (out / EXPORT_MARKER).unlink()
    export_run(bench["bench"], out, k=2, overwrite=True)
    assert validate_export(out)["k"] == 2 and (out / EXPORT_MARKER).is_file()


def test_cli_overwrite_refuses_the_parent_of_the_results(bench):
    cmd = [sys.executable, "-m", "finsae.cli", "export", "--results", str(bench["bench"]),
           "--out", str(bench["bench"].parent), "--overwrite"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "overlap" in r.stderr and "Traceback" not in r.stderr
    assert (bench["bench"] / "manifest.json").is_file()


# --------------------------------------------------------------------------------- 6. files follow the umask

def test_written_files_and_folders_follow_the_umask(bench, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "shared"
        export_run(bench["bench"], out, k=2)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["k"] == 2
    assert pd.read_parquet(out / "peers.parquet")["rank"].max() == 2
