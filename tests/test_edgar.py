"""finsae.data.edgar: Item 1 of real 10-K fixtures, bad inputs, metadata, the universe table, the CLI, and the
EDGAR client's User-Agent, rate limit, cache and unreachable-host failure (fake transport, no network)."""

from __future__ import annotations

import csv
import html
import lzma
import re
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from finsae.cli import cli
from finsae.data import load_universe, universe_from_frame
from finsae.data.edgar import EdgarClient, RateLimiter, load_cik_map, read_filing, read_filings
from finsae.data.edgar.download import FilingRef
from finsae.errors import DataError, ProviderError

FIXTURES = Path(__file__).parent / "fixtures" / "edgar_10k"
MANIFEST = list(csv.DictReader((FIXTURES / "manifest.csv").open(encoding="utf-8")))


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(text).replace("\xa0", " ")).strip()


def fixture(name: str) -> Path:
    return FIXTURES / f"{name}.xz"


def matches(text: str, row: dict[str, str], alt: bool = False) -> bool:
    t = norm(text)
    ends = [norm(row["alt_last_words_excluding_exec_officers"])] if alt else [norm(row["item1_last_words"])]
    return t.startswith(norm(row["item1_first_words"])) and any(t.endswith(e) for e in ends)


@pytest.fixture(scope="module")
def batch():
    return read_filings(
        [fixture(r["file_name"]) for r in MANIFEST], tickers=load_cik_map(FIXTURES / "tickers.csv")
    )


# --- the 26 real filings ------------------------------------------------------------------------------------


def test_every_fixture_is_right_or_not_ok(batch):
    """At least 24 of 26 extractions start and end with the manifest's words; any other is not 'ok'."""
    assert len(batch.results) == len(MANIFEST) == 26
    correct, wrong_ok = [], []
    for row, res in zip(MANIFEST, batch.results, strict=True):
        if matches(res.text, row):
            correct.append(row["file_name"])
        elif res.status == "ok":
            wrong_ok.append((row["file_name"], norm(res.text)[:80], norm(res.text)[-80:]))
    assert not wrong_ok, wrong_ok
    assert len(correct) >= 24, [r.path for r in batch.results if Path(r.path).name[:-3] not in correct]
    by_name = {Path(r.path).name[:-3]: r for r in batch.results}
    assert by_name["TGT_2002_10-K.htm"].status == "incorporated_by_reference"  # a pointer 10-K: said so
    assert sum(r.status == "ok" for r in batch.results) >= 24


def test_executive_officers_drop_cuts_at_the_subheading():
    rows = [r for r in MANIFEST if r["alt_last_words_excluding_exec_officers"]]
    assert len(rows) >= 5
    for row in rows:
        res = read_filing(fixture(row["file_name"]), executive_officers="drop")
        assert res.status == "ok" and res.exec_officers_dropped, row["file_name"]
        assert matches(res.text, row, alt=True), (row["file_name"], norm(res.text)[-120:])


def test_metadata_from_header_dei_and_cover(batch):
    by_name = {Path(r.path).name[:-3]: r for r in batch.results}
    mrk = by_name["MRK_1995_10-K405.txt"]
    assert (mrk.cik, mrk.form, mrk.sic, mrk.accession) == (64978, "10-K405", "2834", "0000950130-96-000896")
    assert (
        str(mrk.period) == "1995-12-31" and str(mrk.filed) == "1996-03-20" and str(mrk.as_of) == "1996-03-20"
    )
    assert mrk.as_of_source == "filing_date" and mrk.fiscal_year == 1995 and mrk.company == "MERCK & CO INC"
    aapl = by_name["AAPL_2025_10-K.htm"]
    assert (aapl.cik, aapl.form, aapl.fiscal_year, str(aapl.period)) == (320193, "10-K", 2025, "2025-09-27")
    assert aapl.filed is None and aapl.as_of_source == "signature_date+margin"
    assert str(aapl.as_of) == "2025-11-07"  # signed 2025-10-31 (filed that day) + 7 days
    gme = by_name["GME_2023_10-K.html"]
    assert gme.fiscal_year == 2023 and str(gme.period) == "2024-02-03"  # dei fiscal year, 53-week year
    cigf = by_name["CIGF5_2015_10-K.html"]  # no header, no dei: the cover page
    assert cigf.cik is None and cigf.form == "10-K" and str(cigf.period) == "2015-12-31"
    assert (cigf.company or "").lower() == "commonwealth income & growth fund v"
    for row in MANIFEST:
        res = by_name[row["file_name"]]
        if row["cik"] and res.cik is not None:
            assert res.cik == int(float(row["cik"])), row["file_name"]
        assert res.form == row["form_type"], row["file_name"]
        if res.period is not None:
            assert str(res.period) == row["period_end"], row["file_name"]
        if res.as_of is not None and res.period is not None:
            assert res.as_of > res.period


# --- bad inputs: each a clear per-file status, the batch goes on --------------------------------------------


def _doc(form: str, body: str) -> str:
    return (f"<html><body><p>UNITED STATES SECURITIES AND EXCHANGE COMMISSION</p><p>FORM {form}</p>"
            f"<p>Example Corp (Exact name of registrant as specified in its charter)</p>{body}</body></html>")


ITEM1 = " ".join(["Example Corp makes widgets for industrial customers in North America and Europe."] * 8)
GOOD_10K = _doc("10-K", "<p>ANNUAL REPORT PURSUANT TO SECTION 13 OR 15(d)</p><p>PART I</p><p>Item 1. "
                        f"Business</p><p>{ITEM1}</p><p>See Item 1A. Risk Factors for more.</p><p>Item 1A. "
                        "Risk Factors</p><p>Risks.</p><p>Item 2. Properties</p><p>None.</p>")


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "q.htm").write_text(_doc("10-Q", "<p>QUARTERLY REPORT PURSUANT TO SECTION 13</p><p>Item 1. "
                                               "Financial Statements</p><p>Numbers.</p>"))
    (folder / "8k.txt").write_text("FORM 8-K\n\nCURRENT REPORT PURSUANT TO SECTION 13 OR 15(d)\n\n"
                                   "Item 5. Other Events\n\nSomething happened.\n")
    (folder / "empty.htm").write_bytes(b"")
    (folder / "blob.bin").write_bytes(bytes(range(256)) * 40)
    (folder / "image.htm").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    gme = lzma.decompress(fixture("GME_2023_10-K.html").read_bytes())
    start = gme.find(b"offers games")  # Item 1's first sentence; cut 20 kB later, inside Item 1
    assert start > 0
    (folder / "truncated.html").write_bytes(gme[: start + 20000])
    latin = GOOD_10K.replace("widgets", "caf\u00e9 widgets \u201cquoted\u201d")
    (folder / "latin1.htm").write_bytes(latin.encode("cp1252"))
    (folder / "good.htm").write_text(GOOD_10K)
    (folder / "sub").mkdir()
    (folder / "sub" / "utf16.htm").write_bytes(GOOD_10K.encode("utf-16"))
    (folder / ".hidden.htm").write_text(GOOD_10K)
    return folder


def test_bad_inputs_get_clear_statuses_and_the_batch_continues(mixed: Path):
    batch = read_filings([mixed])
    got = {Path(r.path).name: r for r in batch.results}
    assert ".hidden.htm" not in got and len(got) == 9
    assert got["q.htm"].status == "not_a_10k" and "10-Q" in got["q.htm"].detail
    assert got["8k.txt"].status == "not_a_10k" and "8-K" in got["8k.txt"].detail
    assert got["empty.htm"].status == "unreadable" and "empty" in got["empty.htm"].detail
    assert got["blob.bin"].status == "unreadable" and "binary" in got["blob.bin"].detail
    assert got["image.htm"].status == "unreadable" and "PNG" in got["image.htm"].detail
    assert got["truncated.html"].status == "not_found" and "truncated" in got["truncated.html"].detail
    assert got["latin1.htm"].status == "ok" and got["latin1.htm"].encoding == "cp1252"
    assert "caf\u00e9 widgets \u201cquoted\u201d" in got["latin1.htm"].text
    assert got["utf16.htm"].status == "ok" and got["utf16.htm"].encoding == "utf-16"
    good = got["good.htm"]
    assert (
        good.status == "ok" and good.text.startswith("Example Corp makes") and good.text.endswith("for more.")
    )
    report = batch.to_frame()
    assert list(report["status"].value_counts().sort_index().index) == sorted(
        {"ok", "not_a_10k", "unreadable", "not_found"})
    assert (report["n_words"] > 0).sum() == 3  # the three good ones; not_found keeps no text here
    assert read_filing(mixed / "does-not-exist.htm").status == "unreadable"
    with pytest.raises(DataError, match="no such file"):
        read_filings([mixed / "missing"])


def test_plain_text_rules():
    wrapped = ("FORM 10-K\n\nANNUAL REPORT PURSUANT TO SECTION 13 OR 15(d)\n\n"
               "                     TABLE OF CONTENTS\n\nItem 1.  Business ........ 3\nItem 2. Properties "
               ".... 9\n\nPART I\n\nITEMS 1 AND 2.   BUSINESS AND PROPERTIES\n\n"
               + "The Company makes things. Risks are described in\nItem 1A. Risk Factors, below, and in\n"
                 "Item 7, \"Management's Discussion\" of this report.\n" * 6
               + "\n                                  12\n\nITEM 3. LEGAL PROCEEDINGS\n\nNone.\n")
    res = read_filing("x.txt", data=wrapped.encode())
    assert res.status == "ok", res.detail
    assert res.text.startswith("The Company makes things.") and res.text.endswith("of this report.")
    # an Item 1 that points elsewhere is said to
    pointer = ("FORM 10-K\n\nItem 1. Business\n\nThe information required by this item is incorporated "
               "herein by reference to pages 2 to 9 of the Annual Report to Shareholders, filed as Exhibit "
               "13.\n\nItem 2. Properties\n\nSee page 10.\n")
    res = read_filing("p.txt", data=pointer.encode())
    assert res.status == "incorporated_by_reference" and "incorporated" in res.text
    # runs into a heading that cannot follow Item 1: no confidence
    gap = (
        f"FORM 10-K\n\nItem 1. Business\n\n{ITEM1}\n\nItem 7. Management's Discussion and Analysis\n\nText.\n"
    )
    res = read_filing("g.txt", data=gap.encode())
    assert res.status == "not_found" and "7" in res.detail
    assert read_filing("n.txt", data=b"FORM 10-K\n\nNothing here.\n").status == "not_found"


# --- universe, CLI and benchmark ----------------------------------------------------------------------------


def test_universe_table_reads_as_a_dated_universe(batch):
    frame = batch.universe_frame()
    assert list(frame.columns) == ["ticker", "cik", "name", "sic", "description", "as_of"]
    report = batch.to_frame()
    assert report["in_universe"].sum() == len(frame)
    left_out = report.loc[~report["in_universe"], "universe_note"]
    assert (left_out == "status incorporated_by_reference").sum() == 1  # TGT
    assert left_out.str.startswith("no ticker and no CIK").sum() == 3  # three shells not in tickers.csv
    u = universe_from_frame(frame, "edgar")
    assert {"AAPL", "IBM", "MRK", "WFC", "KO"} <= set(u.tickers)
    assert len(u.texts) == len(frame) and "1996-03-20" in u.vintages
    assert u.vintages["1996-03-20"].published == pd.Timestamp("1996-03-20")
    # without a map: dei tickers, the CIK's other filings' ticker, placeholders; filings without CIK left out
    plain = read_filings(
        [
            fixture(n)
            for n in ("IBM_1997_10-K405.txt", "IBM_2024_10-K.html", "KO_1997_10-K.txt", "BA_2003_10-K.htm")
        ]
    )
    f2 = plain.universe_frame()
    assert sorted(f2["ticker"]) == ["CIK21344", "IBM", "IBM"]  # IBM 1997 takes the ticker of IBM 2024's dei
    assert "no ticker and no CIK" in plain.to_frame().set_index("path").loc[str(fixture("BA_2003_10-K.htm")),
                                                                           "universe_note"]


def test_cli_writes_universe_that_benchmark_accepts(tmp_path: Path):
    out = tmp_path / "universe.parquet"
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "data",
            "edgar",
            *[str(fixture(r["file_name"])) for r in MANIFEST],
            "--out",
            str(out),
            "--tickers",
            str(FIXTURES / "tickers.csv"),
            "--workers",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "26 file(s): ok 25, incorporated_by_reference 1" in res.output
    report = pd.read_csv(tmp_path / "universe.report.csv")
    assert len(report) == 26 and set(report["status"]) == {"ok", "incorporated_by_reference"}
    u = load_universe(out)
    assert len(u.texts) == 22  # 25 ok, less three shell companies that have neither a CIK nor a mapped ticker
    cfg = (Path(__file__).parents[1] / "backtests" / "edgar_fixtures.yaml").read_text()
    cfg = cfg.replace("../results/edgar_fixtures/universe.parquet", str(out)).replace(
        "output_dir: results", f"output_dir: {tmp_path}"
    )
    cfg = cfg.replace("null_draws: 100", "null_draws: 10").replace(
        "bootstrap_draws: 200", "bootstrap_draws: 10"
    )
    (tmp_path / "cfg.yaml").write_text(cfg)
    res = runner.invoke(cli, ["benchmark", "--config", str(tmp_path / "cfg.yaml")])
    assert res.exit_code == 0, res.output
    assert "All pairs" in res.output and "companies with usable returns" in res.output


def test_cli_needs_inputs_and_reports_a_batch_without_usable_filings(tmp_path: Path, mixed: Path):
    runner = CliRunner()
    res = runner.invoke(cli, ["data", "edgar", "--out", str(tmp_path / "u.parquet")])
    assert res.exit_code != 0 and "give filings" in res.output
    (mixed / "good.htm").unlink()
    (mixed / "latin1.htm").unlink()
    (mixed / "sub" / "utf16.htm").unlink()
    res = runner.invoke(cli, ["data", "edgar", str(mixed), "--out", str(tmp_path / "u.parquet")])
    assert res.exit_code == 2 and "none of the 6 filing(s)" in res.output
    assert "not_a_10k" in res.output and (tmp_path / "u.report.csv").is_file()


# --- EDGAR client: User-Agent, rate limit, cache, unreachable host ------------------------------------------


class FakeTransport:
    def __init__(self, pages: dict[str, bytes], clock: list[float]) -> None:
        self.pages, self.clock, self.calls = pages, clock, []

    def __call__(self, url: str, headers: dict[str, str], timeout: float) -> bytes:
        self.calls.append((url, dict(headers), self.clock[0]))
        return self.pages[url]


def test_rate_limiter_spaces_calls():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    lim = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    stamps = []
    for _ in range(25):
        lim.wait()
        stamps.append(now[0])
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= 0.1 - 1e-9 and stamps[-1] == pytest.approx(2.4)
    now[0] += 5.0  # idle time is not banked into a burst
    lim.wait()
    lim.wait()
    assert now[0] - stamps[-1] == pytest.approx(5.1)
    real = RateLimiter(50)
    t0 = time.monotonic()
    for _ in range(6):
        real.wait()
    assert time.monotonic() - t0 >= 5 / 50 - 1e-3


def test_client_user_agent_rate_and_cache(tmp_path: Path):
    with pytest.raises(ProviderError, match="User-Agent"):
        EdgarClient(None, cache=tmp_path)
    with pytest.raises(ProviderError, match="at most 10"):
        EdgarClient("A b@c.org", cache=tmp_path, rate=20)
    sub = {"filings": {"recent": {
        "accessionNumber": ["0000000001-24-000001", "0000000001-24-000002", "0000000001-23-000003"],
        "form": ["10-K", "8-K", "10-K"], "filingDate": ["2024-02-01", "2024-03-01", "2023-02-01"],
        "reportDate": ["2023-12-31", "2024-03-01", "2022-12-31"]}, "files": []}}
    import json

    filing = GOOD_10K.encode()
    pages = {"https://www.sec.gov/files/company_tickers.json": json.dumps(
                 {"0": {"cik_str": 1, "ticker": "EXMP", "title": "Example"}}).encode(),
             "https://data.sec.gov/submissions/CIK0000000001.json": json.dumps(sub).encode(),
             FilingRef(1, "0000000001-24-000001", "10-K", "", "").url: filing,
             FilingRef(1, "0000000001-23-000003", "10-K", "", "").url: filing}
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    fake = FakeTransport(pages, now)
    client = EdgarClient("Jane Doe jane@example.com", cache=tmp_path, transport=fake, host=None,
                         limiter=RateLimiter(10, clock=lambda: now[0], sleep=sleep))
    paths = client.download("EXMP", (2022, 2023))
    assert len(paths) == 2 and all(p.is_file() and p.read_bytes() == filing for p in paths)
    assert all(h["User-Agent"] == "Jane Doe jane@example.com" for _, h, _ in fake.calls)
    times = [t for _, _, t in fake.calls]
    assert len(times) == 4 and min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.1 - 1e-9
    assert client.download("1", (2023, 2023)) == [paths[1]]  # all from the cache: no new request
    assert len(fake.calls) == 4
    assert read_filing(paths[0]).status == "ok"
    with pytest.raises(ProviderError, match="no ticker 'NOPE'"):
        client.cik_for("NOPE")


def test_unreachable_edgar_fails_fast_and_says_how_to_pass_files(tmp_path: Path):
    with socket.socket() as s:  # a closed local port: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = EdgarClient("Jane Doe jane@example.com", cache=tmp_path, timeout=1.0, host=("127.0.0.1", port))
    t0 = time.monotonic()
    with pytest.raises(ProviderError, match="cannot be reached.*local filings"):
        client.download("AAPL", (2020, 2021))
    assert time.monotonic() - t0 < 3
    res = CliRunner().invoke(cli, ["data", "edgar", "--company", "AAPL", "--out", str(tmp_path / "u.parquet"),
                                   "--user-agent", "Jane Doe jane@example.com", "--timeout", "1",
                                   "--cache", str(tmp_path / "c")])
    assert res.exit_code == 2 and "EDGAR" in res.output and "finsae data edgar FILE_OR_FOLDER" in res.output
