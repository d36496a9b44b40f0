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

import numpy as np
import pandas as pd
import pytest

from finsae._io import file_sha256, parquet_run_id
from finsae.config import load_benchmark_config
from finsae.data import log_returns, prices_from_frame
from finsae.errors import ConfigError, DataError
from finsae.export import EXPORT_MARKER, validate_export
from finsae.pipeline.benchmark import run_benchmark
from finsae.pipeline.export import export_run

from .conftest import synthetic_prices
from .test_groups import _text_files


def _small_config(folder: Path) -> Path:
    prices = synthetic_prices(n_tickers=30, n_days=780, n_factors=5, seed=3)
    cfg = _text_files(folder, prices.close)
    text = cfg.read_text().replace("levels: [sic2, gics_industry]", "levels: [gics_sector, gics_industry]")
    text = text.replace("transform: select\n", "transform: idf\n").replace(
        "clusterer: select\n", "clusterer: average\n"
    )
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


# ---------------------------------------------------------------- 2. a results folder is one run, never a mix

_KILL_SECOND_WINDOW = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    import finsae.pipeline.benchmark as b
    from finsae.config import load_benchmark_config

    calls = []
    run_window = b._run_window
    out = Path(sys.argv[2])

    def killed_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # once the first window's tables are written (windows may run side by side)
            deadline = time.time() + 120
            while not list(out.parent.glob(f".{out.name}.*.partial/comovement.parquet")) \\
                    and time.time() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
        return run_window(*args, **kwargs)

    b._run_window = killed_on_the_second
    b.run_benchmark(load_benchmark_config(sys.argv[1]), sys.argv[2], threads=int(sys.argv[3]))
""")


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _two_window_config(bench: dict[str, Path]) -> Path:
    """The fixture's config with another transform and two windows (daily, monthly)."""
    text = bench["cfg"].read_text().replace("transform: idf\n", "transform: binary\n")
    cfg = bench["tmp"] / "two_windows.yaml"
    cfg.write_text(text.replace("frequencies: [daily]", "frequencies: [daily, monthly]"))
    return cfg


@pytest.mark.parametrize("threads", [1, 2])
def test_a_killed_benchmark_leaves_the_old_run_and_export_refuses_a_mix(bench, tmp_path, threads):
    results = tmp_path / "results"
    shutil.copytree(bench["bench"], results)
    before = _snapshot(results)
    run_id = json.loads((results / "manifest.json").read_text())["run_id"]
    assert all(parquet_run_id(p) == run_id for p in results.glob("*.parquet"))
    r = subprocess.run(
        [sys.executable, "-c", _KILL_SECOND_WINDOW, str(_two_window_config(bench)), str(results),
         str(threads)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert _snapshot(results) == before  # the old run, whole
    partial = [
        p for p in tmp_path.iterdir() if p.name.startswith(".results.") and p.name.endswith(".partial")
    ]
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
    import finsae.pipeline.benchmark as b

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
    (expl / "manifest.json").write_text(
        json.dumps({"grouping": "x", "results_run_id": "19990101T000000-deadbeef"})
    )
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


# ------------------------------------------------------------------------- 3. no silently wrong numbers

def _wide(close: np.ndarray, tickers: list[str] | None = None) -> pd.DataFrame:
    dates = pd.bdate_range("2018-01-01", periods=close.shape[0], name="date")
    cols = tickers or [f"T{i}" for i in range(close.shape[1])]
    return pd.DataFrame(close, index=dates, columns=cols).reset_index()


def _walk(n_days: int = 120, n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_days, n)), axis=0))


def test_an_unadjusted_split_is_an_error_naming_ticker_and_date_or_repaired_on_request():
    close = _walk()
    close[60:, 1] /= 10  # an unadjusted 10:1 split of T1 on day 60
    table = _wide(close)
    day = table["date"].iloc[60]
    with pytest.raises(DataError, match=rf"T1 on {day:%Y-%m-%d} moves .* unadjusted 10:1 "
                                        r"split.*splits='repair'"):
        prices_from_frame(table, "p.csv")
    fixed = prices_from_frame(table, "p.csv", splits="repair")
    assert np.allclose(fixed.close["T1"].to_numpy(), np.r_[close[:60, 1] / 10, close[60:, 1]])
    assert list(fixed.jumps["action"]) == ["repaired"] and fixed.jumps["ratio"].iloc[0] == pytest.approx(0.1)
    r = log_returns(fixed, fixed.start, fixed.end, "daily").returns["T1"]
    assert r.abs().max() < 0.1  # the jump is gone from the returns
    kept = prices_from_frame(table, "p.csv", splits="keep")
    assert kept.close["T1"].iloc[0] == close[0, 1] and list(kept.jumps["action"]) == ["kept"]
    # a reverse split (1:5), and a one-day reverting spike is a bad tick, not a split
    close2 = _walk(seed=1)
    close2[80:, 0] *= 5
    with pytest.raises(DataError, match="T0 on .* like an unadjusted 1:5 split"):
        prices_from_frame(_wide(close2), "p.csv")
    close3 = _walk(seed=2)
    close3[50, 2] *= 10
    p = prices_from_frame(_wide(close3), "p.csv")
    assert p.jumps.empty and len(p.bad_ticks) == 1


def test_bundled_prices_keep_their_reviewed_jumps_unchanged(prices):
    from finsae.data.prices import BUNDLED_PRICE_JUMPS, find_split_jumps

    assert {(t, f"{d:%Y-%m-%d}") for t, d in zip(prices.jumps["ticker"], prices.jumps["date"], strict=True)} \
        == set(BUNDLED_PRICE_JUMPS)
    assert set(prices.jumps["action"]) == {"kept (reviewed)"}
    # kept: the closes are as in the file
    assert len(find_split_jumps(prices.close)) == len(BUNDLED_PRICE_JUMPS)
    assert prices.close.at[pd.Timestamp("2010-08-23"), "CPF"] == pytest.approx(1.3139, rel=1e-4)


def test_tfidf_reads_any_script_and_english_as_before():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from finsae.extract.featurizers import tfidf_vectorizer, tokenize_any_script

    assert tokenize_any_script("the bank's café lends money") == ["the", "bank", "lends", "money"]
    english = [
        "banks lend money to customers in ohio",
        "the company sells phones and chips",
        "café owner's shop",
    ]
    old = TfidfVectorizer(token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b", stop_words="english")
    new = TfidfVectorizer(tokenizer=tokenize_any_script, token_pattern=None, stop_words="english")
    assert (old.fit_transform(english) != new.fit_transform(english)).nnz == 0
    assert tokenize_any_script("中国银行 是 一家 银行") == ["中国", "国银", "银行", "是", "一家", "银行"]
    assert tokenize_any_script("شركة مصرفية kapital") == ["kapital", "شركة", "مصرفية"]
    texts = [
        "中国银行是一家银行",
        "招商银行是一家银行",
        "中国石油公司",
        "中国石化公司",
        "tech software cloud",
        "tech software chips",
        "banks lend money",
        "banks take deposits",
        "oil gas drilling",
        "oil gas pipes",
    ]
    m = tfidf_vectorizer().fit_transform(texts)
    assert (np.diff(m.tocsr().indptr) > 0).all()  # every text, Chinese too, has a non-zero vector
    sims = (m @ m.T).toarray()
    assert sims[0, 1] > 0.1 and sims[2, 3] > 0.1 and sims[0, 4] == 0


def test_tfidf_with_too_few_or_no_usable_texts_is_a_clear_error(caplog):
    from finsae.extract.featurizers import fit_tfidf

    with pytest.raises(DataError, match="TF-IDF needs at least 8 descriptions.*got 5"):
        fit_tfidf(["a b"] * 5, list("abcde"))
    with pytest.raises(DataError, match="no usable word"):
        fit_tfidf(["the and of"] * 10, [str(i) for i in range(10)])
    texts = ["oil gas", "oil gas", "bank loans", "bank loans", "tech chips", "tech chips", "food drinks",
             "food drinks", "unique words nowhere"]
    with caplog.at_level("WARNING"):
        m, _ = fit_tfidf(texts, [f"C{i}" for i in range(9)])
    assert "C8" in caplog.text and "vectors are zero" in caplog.text and m[8].nnz == 0


def test_config_booleans_for_numbers_and_duplicate_keys_are_errors(bench, tmp_path):
    text = bench["cfg"].read_text()
    bad = tmp_path / "b.yaml"
    bad.write_text(text.replace("null_draws: 10", "null_draws: true"))
    with pytest.raises(ConfigError, match="null_draws must be a number, not the boolean true"):
        load_benchmark_config(bad)
    bad.write_text(text.replace("null_draws: 10", "null_draws: 10\n  null_draws: 20"))
    with pytest.raises(ConfigError, match=r"duplicate key 'null_draws' \(first on line \d+\)"):
        load_benchmark_config(bad)
    bad.write_text(text + "name: again\n")
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        load_benchmark_config(bad)


def test_sae_for_another_model_or_with_nan_weights_is_refused(sae, tmp_path):
    import torch

    from finsae.extract.identity import config_key
    from finsae.extract.model import LoadedModel
    from finsae.extract.sae import SAEHandle, load_sae
    from finsae.extract.shards import plan_shards

    folder = tmp_path / "sae"
    sae.save_model(str(folder))
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"]["model_name"] = "gpt2-small"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    loaded = LoadedModel(None, "tiny", "w0", loader=lambda: pytest.fail("model loaded"))
    with pytest.raises(DataError, match="trained on model 'gpt2-small'.*not on 'tiny'"):
        plan_shards(loaded, SAEHandle(folder), ["a b"], ["d0"])
    nan_dir = tmp_path / "nan"
    with torch.no_grad():
        w = sae.W_enc.clone()
        sae.W_enc[0, 0] = float("nan")
        sae.save_model(str(nan_dir))
        sae.W_enc.copy_(w)
    with pytest.raises(DataError, match="NaN or infinite value.*W_enc"):
        load_sae(nan_dir)
    # the batch size is part of the cache key, except the default's (existing caches stay valid)
    key = config_key("m", "w", "s", "sum", 16, 0)
    assert key == config_key("m", "w", "s", "sum", 16, 0, batch_tokens=4096)
    assert key != config_key("m", "w", "s", "sum", 16, 0, batch_tokens=8192)


# --------------------------------------------------------------- 4. failures that say what is wrong

def test_prices_for_another_universe_nonnumeric_prices_and_short_gics(bench, tmp_path):
    from finsae.data import priced_tickers, universe_from_frame

    table = _wide(_walk(), ["AAA", "BBB", "CCC"])
    p = prices_from_frame(table, "p.csv")
    with pytest.raises(DataError, match=r"share 0 of the 2 tickers of universe u \(e.g. \['XXX', 'YYY'\]"):
        priced_tickers(pd.Index(["XXX", "YYY"]), p, "universe u")
    assert list(priced_tickers(["BBB", "ZZZ"], p)) == ["BBB"]
    table["BBB"] = table["BBB"].astype(object)
    table.loc[5, "BBB"] = "12,5"
    with pytest.raises(DataError, match=r"non-numeric price '12,5' for BBB on "
                                        rf"{table['date'].iloc[5]:%Y-%m-%d}"):
        prices_from_frame(table, "p.csv")
    u = pd.DataFrame({"ticker": ["A", "B"], "description": ["x", "y"], "gics": ["451020", "45102010"]})
    with pytest.raises(DataError, match=r"8-digit sub-industry codes.*A: 451020 \(6 digits\)"):
        universe_from_frame(u, "u.csv")
    # the benchmark says the prices share no ticker, not that the window is empty
    folder = tmp_path / "other"
    folder.mkdir()
    cfg = _small_config(folder)
    pd.read_parquet(folder / "prices.parquet").rename(columns=lambda c: c if c == "date" else f"X{c}") \
        .to_parquet(folder / "prices.parquet")
    with pytest.raises(DataError, match="share 0 of the 30 tickers of universe"):
        run_benchmark(load_benchmark_config(cfg), folder / "out")
    assert not (folder / "out").exists()


def test_a_mistyped_sae_path_is_reported_before_anything_loads(bench, tmp_path, monkeypatch):
    import finsae.extract.model as model

    monkeypatch.setattr(model, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    text = bench["cfg"].read_text().replace("text_methods:\n", "text_methods:\n  - name: sae\n    features: "
                                                                "sae\n    sae: no/such/sae\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text.replace("companies: companies.csv", f"companies: {bench['tmp'] / 'companies.csv'}")
                   .replace("prices: prices.parquet", f"prices: {bench['tmp'] / 'prices.parquet'}"))
    with pytest.raises(DataError, match=r"text method 'sae': no sae_lens SAE in .*no/such/sae"):
        run_benchmark(load_benchmark_config(cfg), tmp_path / "out")


def test_api_key_files_and_a_full_disk_are_one_line_errors(tmp_path, monkeypatch):
    from finsae._io import write_text
    from finsae.serve import read_api_key

    key = tmp_path / "key"
    for text in ("", "   \n\t\n", "short\n", "a" * 32, "12341234123412341234"):
        key.write_text(text)
        short = "shorter than 16 characters or has fewer than 8"
        want = "API key file .* is empty" if not text.strip() else short
        with pytest.raises(ConfigError, match=want):
            read_api_key(key)
    key.write_text("  s3cr3t-K3y-0123456789abcdef  \nsecond line\n")
    assert read_api_key(key) == "s3cr3t-K3y-0123456789abcdef"

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DataError, match=r"cannot write .*out.txt: No space left on device"):
        write_text("x", tmp_path / "out.txt")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.txt")]  # no temporary file left


# -------------------------------------------------------------- 5. exports whose contents are checked

def _tampered(bench: dict[str, Path], tmp_path: Path, table: str, edit) -> Path:
    """A copy of the fixture's export with ``edit`` applied to one table (or the manifest) and the hashes
    re-computed, as a careless or malicious edit would."""
    out = tmp_path / f"tampered_{table}"
    shutil.copytree(bench["out"], out)
    manifest = json.loads((out / "manifest.json").read_text())
    if table == "manifest":
        edit(manifest)
    else:
        frame = edit(pd.read_parquet(out / f"{table}.parquet"))
        frame.to_parquet(out / f"{table}.parquet", index=False)
        manifest["tables"][table]["sha256"] = file_sha256(out / f"{table}.parquet")
        manifest["tables"][table]["rows"] = len(frame)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _nan_first(v: pd.DataFrame) -> pd.DataFrame:
    v.loc[len(v) - 1, "value"] = np.nan  # beyond the rows jsonschema samples
    return v


@pytest.mark.parametrize(
    ("table", "edit", "pattern"),
    [
        ("vectors", _nan_first, r"'vectors': non-finite value for"),
        ("vectors", lambda v: pd.concat([v, v.iloc[:5]], ignore_index=True), "more than once"),
        ("vectors", lambda v: v.assign(dim=v["dim"].where(v.index > 0, 10**6)), "outside method 'tfidf'"),
        ("vectors", lambda v: v.assign(value=v["value"] * 2), "has length"),
        ("vectors", lambda v: v.assign(ticker=v["ticker"].where(v.index > 0, "ZZZZ")),
         r"'vectors': tickers \['ZZZZ'\] are not in companies"),
        ("peers", lambda p: p.assign(peer=p["peer"].where(p.index > 0, "ZZZZ")),
         r"'peers': tickers \['ZZZZ'\] are not in companies"),
        (
            "peers",
            lambda p: p.assign(similarity=p["similarity"].where(p.index > 0, np.inf)),
            "non-finite similarity",
        ),
        (
            "manifest",
            lambda m: m.update(headline_method="bert"),
            "headline_method 'bert' is not one of the methods",
        ),
        ("manifest", lambda m: m.update(default_grouping="nope"), "default_grouping 'nope'"),
        (
            "companies",
            lambda c: c.assign(ticker=c["ticker"].where(c.index > 0, "ÄPPLE")),
            r"\['ÄPPLE'\] break the",
        ),
    ],
)
def test_validate_export_checks_contents_not_only_hashes(bench, tmp_path, table, edit, pattern):
    from finsae.export import ExportError

    with pytest.raises(ExportError, match=pattern):
        validate_export(_tampered(bench, tmp_path, table, edit), sample_rows=0)  # beyond any row sample


def test_tickers_follow_one_rule_in_universe_and_api(bench):
    from finsae import api
    from finsae.data import universe_from_frame

    for odd in ("ÄPPLE", "A" * 40, "-X", "A B"):
        table = pd.DataFrame({"ticker": [odd, "B"], "description": ["x", "y"]})
        with pytest.raises(DataError, match="not tickers"):
            universe_from_frame(table, "u.csv")
    assert list(universe_from_frame(pd.DataFrame({"ticker": ["brk.b", "bf/a"], "description": ["x", "y"]}),
                                    "u.csv").tickers) == ["BRK-B", "BF-A"]
    run = api.load_run(bench["out"])
    with pytest.raises(api.UnknownTickerError, match="is not a ticker"):
        run.peers("ÄPPLE")
    with pytest.raises(api.UnknownTickerError, match="not among the 30 companies"):
        run.peers("ZZZ")
    assert run.peers("t00", k=1).ticker == "T00"


# -------------------------------------------------------------------------------- 6. the service

def test_service_protects_its_docs_slows_wrong_keys_and_says_a_busy_port_first(bench, monkeypatch):
    import socket
    import time

    from fastapi.testclient import TestClient

    import finsae.serve.app as app_module
    from finsae.serve import create_app

    key = "s3cr3t-K3y-0123456789abcdef"
    client = TestClient(create_app(bench["out"], key))
    assert client.get("/health").status_code == 200
    for path in ("/openapi.json", "/docs"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"X-API-Key": key}).status_code == 200
    t0 = time.perf_counter()
    assert client.get("/peers/T00", headers={"X-API-Key": key[:-1] + "x"}).status_code == 401
    assert time.perf_counter() - t0 >= app_module.WRONG_KEY_DELAY
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setattr(app_module, "ExportedRun", lambda *a: pytest.fail("export loaded"))
        with pytest.raises(ConfigError, match=rf"cannot serve on 127.0.0.1:{port}: .*--port"):
            app_module.serve(bench["out"], port=port, api_key=key)


# ------------------------------------------------------------------- other data: dates, coverage, config keys

def test_timezone_aware_and_timestamped_dates_are_read_as_local_trading_dates():
    """A vendor's ``America/New_York`` closes (or closes stamped 16:00) give the same prices and daily returns
    as plain dates, instead of a pandas comparison error in every window."""
    table = _wide(_walk(n=4))
    plain = prices_from_frame(table, "p.csv")
    aware = table.assign(date=table["date"].dt.tz_localize("America/New_York"))
    stamped = table.assign(date=table["date"] + pd.Timedelta(hours=16))
    for other in (aware, stamped):
        p = prices_from_frame(other, "p.csv")
        pd.testing.assert_frame_equal(p.close, plain.close, check_freq=False)
        a = log_returns(p, "2018-02-01", "2018-04-30", "daily").returns
        b = log_returns(plain, "2018-02-01", "2018-04-30", "daily").returns
        pd.testing.assert_frame_equal(a, b, check_freq=False)


def test_a_sparse_date_is_dropped_kept_or_refused_and_the_bundled_one_is_reviewed(prices, caplog):
    """One ticker's close on a Saturday would cost every other ticker Monday's daily return; it is dropped
    with a warning (default), kept, or an error naming the date; the bundled prices keep their one reviewed
    sparse date."""
    from finsae.data.prices import BUNDLED_SPARSE_DATES, find_sparse_dates

    table = _wide(_walk(n=6))
    friday = table["date"][table["date"].dt.day_of_week == 4].iloc[3]
    stray = pd.DataFrame({"date": [friday + pd.Timedelta(days=1)], "T0": [table.loc[3, "T0"]]})
    bad = pd.concat([table, stray], ignore_index=True)
    clean = prices_from_frame(table, "p.csv")
    with caplog.at_level("WARNING"):
        dropped = prices_from_frame(bad, "p.csv")
    saturday = f"{friday + pd.Timedelta(days=1):%Y-%m-%d}"
    assert "dropped 1 sparse date(s)" in caplog.text and saturday in caplog.text
    pd.testing.assert_frame_equal(dropped.close, clean.close)
    assert dropped.sparse_dates[["priced", "live", "action"]].values.tolist() == [[1, 6, "dropped"]]
    kept = prices_from_frame(bad, "p.csv", sparse_dates="keep")
    monday = friday + pd.Timedelta(days=3)
    r = log_returns(kept, table["date"].iloc[0], table["date"].iloc[-1], "daily", max_drop_share=1).returns
    assert r.loc[monday, ["T1", "T2"]].isna().all()  # what the stray row costs
    r = log_returns(dropped, table["date"].iloc[0], table["date"].iloc[-1], "daily").returns
    assert r.loc[monday].notna().all()
    with pytest.raises(DataError, match=rf"fewer than half .*{friday + pd.Timedelta(days=1):%Y-%m-%d} "
                                        r"\(1 of 6 tickers\).*data.sparse_dates"):
        prices_from_frame(bad, "p.csv", sparse_dates="raise")
    # a gap in a few series is not a sparse date; nor is a day before most tickers list
    gappy = table.copy()
    gappy.loc[10, ["T0", "T1"]] = np.nan
    gappy.loc[:20, ["T2", "T3", "T4"]] = np.nan
    assert find_sparse_dates(prices_from_frame(gappy, "p.csv").close).empty
    found = prices.sparse_dates
    assert found["date"].dt.strftime("%Y-%m-%d").tolist() == sorted(BUNDLED_SPARSE_DATES)
    assert (found["action"] == "kept (reviewed)").all() and prices.close.shape == (2553, 1542)


def test_a_window_longer_than_the_prices_is_named_in_a_warning(caplog):
    p = prices_from_frame(_wide(_walk(n_days=300)), "p.csv")  # 2018-01-01 .. 2019-02
    with caplog.at_level("WARNING"):
        r = log_returns(p, "2016-01-01", "2018-12-31", "monthly")
    assert "monthly window 2016-01-01..2018-12-31: the prices (p.csv) start 2018-01-01" in caplog.text
    assert f"its {r.n_periods} returns run only from 2018-02-28 to 2018-12-31" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        log_returns(p, "2018-01-01", "2019-02-15", "monthly")  # within a month of both ends: no warning
    assert "returns run only" not in caplog.text


def test_levels_a_universe_has_no_codes_for_name_the_config_key(bench, tmp_path):
    """A SIC-only universe: the error names the key that asks for GICS (the default selection.level, or
    hybrid.parent) and the levels the universe can serve, before any work."""
    folder = tmp_path / "sic"
    folder.mkdir()
    cfg = _small_config(folder)
    companies = pd.read_csv(folder / "companies.csv", dtype=str).drop(columns=["gics"])
    companies.to_csv(folder / "companies.csv", index=False)
    text = cfg.read_text().replace("taxonomies: [all_pairs, sic2, gics_industry]",
                                   "taxonomies: [all_pairs, sic2]")
    text = text.replace("levels: [gics_sector, gics_industry]", "levels: [sic2]")
    text = text.replace("transform: idf\n", "transform: select\n")  # chosen at selection.level
    cfg.write_text(text.replace("  parent: gics_sector\n", "  parent: sic2\n"))
    with pytest.raises(ConfigError, match=r"selection.level: 'gics_industry' needs 'gics' codes, .* has "
                                          r"none; use levels it has codes for: \['sic2', 'sic3', 'sic4'\]"):
        run_benchmark(load_benchmark_config(cfg), folder / "out")
    cfg.write_text(cfg.read_text().replace("  level: gics_industry\n", "  level: sic2\n")
                   .replace("  parent: sic2\n", "  parent: gics_sector\n"))
    with pytest.raises(ConfigError, match=r"hybrid.parent: 'gics_sector' needs 'gics' codes"):
        run_benchmark(load_benchmark_config(cfg), folder / "out")
    assert not (folder / "out").exists()


def test_rolling_windows_that_could_never_reach_min_months_are_refused(tmp_path):
    cfg = tmp_path / "roll.yaml"
    cfg.write_text("name: r\nrolling: [{name: roll, every_months: 4}]\ntaxonomies: [all_pairs]\n")
    with pytest.raises(ConfigError, match=r"every_months 4 is less than min_months 6"):
        load_benchmark_config(cfg)


def test_thin_taxonomy_comparisons_and_shared_descriptions_are_flagged(bench, tmp_path, caplog):
    """GICS known for 6 of 30 companies (6 within-group pairs): the verdict says the comparison is thin; 5
    companies with one placeholder text: a warning names it and them."""
    from finsae.report.markdown import text_benchmark_markdown

    folder = tmp_path / "thin"
    folder.mkdir()
    cfg = _small_config(folder)
    companies = pd.read_csv(folder / "companies.csv", dtype=str)
    companies.loc[~companies.index.isin([0, 10, 20, 1, 11, 21]), "gics"] = np.nan
    companies.loc[:4, "description"] = "Company description not available."
    companies.to_csv(folder / "companies.csv", index=False)
    with caplog.at_level("WARNING"):
        res = run_benchmark(load_benchmark_config(cfg), folder / "out")
    assert "5 companies share 1 description(s)" in caplog.text
    assert "'Company description not available.': T00, T01, T02, T03, T04" in caplog.text
    md = text_benchmark_markdown(res)
    assert "**Thin comparison**: GICS industry covers 20% of the window's companies" in md
    assert "Thin comparison**: SIC" not in md


def test_a_design_on_each_companys_latest_text_as_of_a_date(tmp_path):
    """``text_as_of``: peers from every company's latest text published by the date (10-K filings each have
    their own date); a text published later is never used; explain/export read the same snapshot back."""
    from finsae.api import load_run
    from finsae.data import load_universe
    from finsae.pipeline.store import BenchmarkRun

    folder = tmp_path / "asof"
    folder.mkdir()
    cfg = _small_config(folder)
    companies = pd.read_csv(folder / "companies.csv", dtype=str)
    companies.loc[:9, "as_of"] = "2015-11-16"  # filed earlier: still the latest by 2016-01-01
    later = companies.loc[:4].assign(as_of="2016-03-01", description="retail stores food drinks groceries")
    pd.concat([companies, later], ignore_index=True).to_csv(folder / "companies.csv", index=False)
    text = cfg.read_text().replace('text_vintage: "2016-01-01"', "text_as_of: 2016-01-01")
    cfg.write_text(text)
    res = run_benchmark(load_benchmark_config(cfg), folder / "out")
    assert [d.text_vintage for d in res.designs] == ["asof_2016-01-01"]
    assert res.designs[0].text_published == pd.Timestamp("2016-01-01") and not res.designs[0].text_look_ahead
    run = BenchmarkRun.load(folder / "out")
    u = run.universe()
    texts = u.descriptions("asof_2016-01-01")
    own = load_universe(folder / "companies.csv")
    assert len(texts) == 30 and (texts.loc["T00"] == own.descriptions("2015-11-16").loc["T00"])
    assert "groceries" not in " ".join(texts)  # published after the date: never used
    export_run(folder / "out", folder / "export", k=3)
    assert len(load_run(folder / "export").peers("T00", k=3).to_frame()) == 3
    manifest = json.loads((folder / "export" / "manifest.json").read_text())
    assert [d["text_vintage"] for d in manifest["data"]["designs"]] == ["asof_2016-01-01"]
    both = text.replace("text_as_of: 2016-01-01", 'text_as_of: 2016-01-01\n    text_vintage: "2016-01-01"')
    cfg.write_text(both)
    with pytest.raises(ConfigError, match="exactly one of text_vintage"):
        load_benchmark_config(cfg)


def test_a_window_that_loses_too_many_companies_names_its_config_keys(tmp_path):
    """Prices that start after the selection window does: the error says which window (and its keys), the
    kinds of reason once each, how many periods were needed and what to change."""
    folder = tmp_path / "late"
    folder.mkdir()
    cfg = _small_config(folder)
    cfg.write_text(cfg.read_text().replace("transform: idf\n", "transform: select\n"))
    prices = pd.read_parquet(folder / "prices.parquet")
    prices.loc[prices["date"] < "2015-09-01", prices.columns[4:]] = np.nan  # 27 of 30 list in September
    prices.to_parquet(folder / "prices.parquet")
    with pytest.raises(DataError, match=r"the selection window \(selection.start..selection.end.*\): 27 of "
                                        r"30 tickers .*too few observations: 27 \(at least \d+ of \d+ "
                                        r"periods needed\).*evaluation.max_drop_share"):
        run_benchmark(load_benchmark_config(cfg), folder / "out")


def test_booleans_inside_number_lists_and_distance_thresholds_are_config_errors(tmp_path):
    """``costs_bps: [true, 10]`` would be read as 1 bp; a distance exit beyond its entry would only fail at
    run time: both are config errors naming the key."""
    import yaml

    from finsae.config import load_pairs_config

    base = yaml.safe_load((Path(__file__).parents[1] / "backtests" / "pairs.yaml").read_text())
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({**base, "costs_bps": [True, 10]}))
    with pytest.raises(ConfigError, match=r"costs_bps must be numbers, not booleans: \['true', 10\]"):
        load_pairs_config(cfg)
    cfg.write_text(yaml.safe_dump({**base, "distance": {**base["distance"], "exit_z": 3.0}}))
    with pytest.raises(ConfigError, match=r"distance: .*entry_z \(2.0\) must be greater than exit_z \(3.0\)"):
        load_pairs_config(cfg)
