"""Inputs, results and exports that defend themselves (issue #13): nothing the user had is deleted or mixed,
nothing silently wrong. Built on a small TF-IDF benchmark on synthetic data (no language model)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from finsae._io import file_sha256, parquet_run_id
from finsae.config import load_benchmark_config
from finsae.errors import ConfigError, DataError
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


# ----------------------------------------------------------------- 2. a results folder is one run, never a mix

_KILL_SECOND_WINDOW = textwrap.dedent("""
    import os, signal, sys
    import finsae.evaluate.benchmark as b
    from finsae.config import load_benchmark_config

    calls = []
    run_window = b._run_window

    def killed_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return run_window(*args, **kwargs)

    b._run_window = killed_on_the_second
    b.run_benchmark(load_benchmark_config(sys.argv[1]), sys.argv[2])
""")


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _two_window_config(bench: dict[str, Path]) -> Path:
    """The fixture's config with another transform and two windows (daily, monthly)."""
    text = bench["cfg"].read_text().replace("transform: idf\n", "transform: binary\n")
    cfg = bench["tmp"] / "two_windows.yaml"
    cfg.write_text(text.replace("frequencies: [daily]", "frequencies: [daily, monthly]"))
    return cfg


def test_a_killed_benchmark_leaves_the_old_run_and_export_refuses_a_mix(bench, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(bench["bench"], results)
    before = _snapshot(results)
    run_id = json.loads((results / "manifest.json").read_text())["run_id"]
    assert all(parquet_run_id(p) == run_id for p in results.glob("*.parquet"))
    r = subprocess.run([sys.executable, "-c", _KILL_SECOND_WINDOW, str(_two_window_config(bench)), str(results)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert _snapshot(results) == before  # the old run, whole
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".results.") and p.name.endswith(".partial")]
    assert len(partial) == 1 and (partial[0] / "comovement.parquet").is_file()  # the new run's first window
    assert not (partial[0] / "manifest.json").exists()
    export_run(results, tmp_path / "export", k=2)  # the old run exports
    # the mix the old code made: a new run's table beside the old manifest; export refuses it
    shutil.copy(partial[0] / "comovement.parquet", results / "comovement.parquet")
    with pytest.raises(DataError, match=r"comovement.parquet comes from another run .* mixes runs"):
        export_run(results, tmp_path / "export2", k=2)
    assert not (tmp_path / "export2").exists()


def test_a_failed_benchmark_keeps_its_windows_aside_and_a_rerun_keeps_what_is_not_its_own(bench, tmp_path,
                                                                                         monkeypatch):
    import finsae.evaluate.benchmark as b

    results = tmp_path / "results"
    shutil.copytree(bench["bench"], results)
    (results / "explanations" / "g").mkdir(parents=True)
    (results / "explanations" / "g" / "manifest.json").write_text("{}")
    (results / "notes.txt").write_text("mine")
    before = _snapshot(results)
    calls = []
    run_window = b._run_window

    def fail_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk gone")
        return run_window(*args, **kwargs)

    monkeypatch.setattr(b, "_run_window", fail_on_the_second)
    cfg = load_benchmark_config(_two_window_config(bench))
    with pytest.raises(RuntimeError, match="disk gone"):
        run_benchmark(cfg, results)
    assert _snapshot(results) == before
    failed = [p for p in tmp_path.iterdir() if p.name.startswith("results.failed-")]
    assert len(failed) == 1 and (failed[0] / "comovement.parquet").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    monkeypatch.setattr(b, "_run_window", run_window)
    res = run_benchmark(cfg, results)  # succeeds: swapped in whole; the user's entries move along
    manifest = json.loads((results / "manifest.json").read_text())
    assert manifest["run_id"] != json.loads((bench["bench"] / "manifest.json").read_text())["run_id"]
    assert all(parquet_run_id(p) == manifest["run_id"] for p in results.glob("*.parquet"))
    assert (results / "notes.txt").read_text() == "mine" and (results / "explanations" / "g").is_dir()
    assert set(res.table["frequency"]) == {"daily", "monthly"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".results.")]


def test_a_benchmark_refuses_a_folder_that_is_not_a_results_folder(bench, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "portfolio.parquet").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"not a finsae results folder .*portfolio.parquet"):
        run_benchmark(load_benchmark_config(bench["cfg"]), folder)
    assert (folder / "portfolio.parquet").read_bytes() == b"x"


def test_export_refuses_explanations_of_another_run(bench, tmp_path):
    expl = tmp_path / "expl"
    expl.mkdir()
    (expl / "manifest.json").write_text(json.dumps({"grouping": "x", "results_run_id": "19990101T000000-deadbeef"}))
    with pytest.raises(DataError, match="another benchmark run"):
        export_run(bench["bench"], tmp_path / "e", explanations=[expl], k=2)


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
