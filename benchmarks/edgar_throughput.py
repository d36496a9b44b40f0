"""Throughput of ``finsae data edgar`` on the 26 real 10-K fixtures, and how candidate parsers compare.

1. Filings per second reading every fixture (xz-compressed, as in the repository) with ``read_filings`` in one
   process and in ``--workers`` processes (best of ``--repeat`` runs), and how many extractions match the
   manifest's first and last words of Item 1.
2. ``--compare``: on the HTML fixtures, seconds to turn HTML into text with each installed candidate (lxml as
   finsae uses it, selectolax, BeautifulSoup with html.parser, the stdlib ``html.parser``), and, where
   edgartools is installed, its own Item 1 (``edgar.documents.parse_html(...).sections["part_i_item_1"]``):
   time and manifest matches. Candidates not installed are reported as such.

The one-process run also reports CPU seconds: on a machine shared with other jobs (see ``load_average_1min``)
wall time overstates the cost, and ``filings_per_cpu_second`` x cores bounds what those cores can do.

    python benchmarks/edgar_throughput.py [--workers 2] [--repeat 3] [--compare] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import html
import lzma
import os
import re
import time
from pathlib import Path

from _common import emit, machine

from finsae.data.edgar import read_filings
from finsae.data.edgar._text import html_lines

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "edgar_10k"


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(text).replace("\xa0", " ")).strip()


def correct(text: str, row: dict[str, str]) -> bool:
    t = norm(text)
    ends = [norm(row["item1_last_words"])] + ([norm(row["alt_last_words_excluding_exec_officers"])]
                                              if row["alt_last_words_excluding_exec_officers"] else [])
    return bool(t) and t.startswith(norm(row["item1_first_words"])) and any(t.endswith(e) for e in ends)


def timed_batch(files: list[Path], workers: int, repeat: int) -> tuple[float, float, object]:
    """Best wall seconds and best CPU seconds of this process (meaningful for one process) over ``repeat``
    runs: on a shared machine the CPU time shows the cost that wall time hides behind other load."""
    best, cpu, batch = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        batch = read_filings(files, workers=workers)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return best, cpu, batch


def compare(rows: list[dict[str, str]]) -> dict:
    docs = {
        r["file_name"]: lzma.decompress((FIXTURES / f"{r['file_name']}.xz").read_bytes()).decode(
            "utf-8", "replace"
        )
        for r in rows
        if r["format"] in ("html", "ixbrl")
    }
    out: dict[str, dict] = {}

    def run(name: str, fn) -> None:
        t0 = time.perf_counter()
        for text in docs.values():
            fn(text)
        out[name] = {"html_to_text_seconds": round(time.perf_counter() - t0, 3), "documents": len(docs)}

    run("lxml (finsae html_lines)", html_lines)
    try:
        from selectolax.lexbor import LexborHTMLParser

        run(
            "selectolax lexbor (.text(separator='\\n'))",
            lambda t: LexborHTMLParser(t).body.text(separator="\n"),
        )
    except ImportError as exc:
        out["selectolax"] = {"not installed": str(exc)}
    try:
        from bs4 import BeautifulSoup

        run(
            "BeautifulSoup html.parser (.get_text('\\n'))",
            lambda t: BeautifulSoup(t, "html.parser").get_text("\n"),
        )
    except ImportError as exc:
        out["beautifulsoup4"] = {"not installed": str(exc)}
    from html.parser import HTMLParser

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    def stdlib(t: str) -> str:
        p = Collect()
        p.feed(t)
        return "".join(p.parts)

    run("stdlib html.parser", stdlib)
    try:
        import logging
        import warnings

        from edgar.documents import ParserConfig, parse_html

        logging.getLogger("edgar").setLevel(logging.ERROR)
        hits, failures, t0 = 0, [], time.perf_counter()
        for row in rows:
            if row["file_name"] not in docs:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    doc = parse_html(docs[row["file_name"]], config=ParserConfig(form="10-K"))
                    sec = doc.sections.get("part_i_item_1") if doc.sections else None
                    text = sec.text() if sec is not None else ""
            except Exception as exc:  # a candidate's failure is a measurement, not a crash
                text = ""
                failures.append(f"{row['file_name']}: {type(exc).__name__}")
            hits += correct(text, row)
        import edgar

        out[f"edgartools {edgar.__version__} Item 1"] = {
            "seconds": round(time.perf_counter() - t0, 2), "documents": len(docs), "manifest_matches": hits,
            "errors": failures}
    except ImportError as exc:
        out["edgartools"] = {"not installed": str(exc)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", action="store_true", help="also time candidate parsers / edgartools")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    rows = list(csv.DictReader((FIXTURES / "manifest.csv").open(encoding="utf-8")))
    files = [FIXTURES / f"{r['file_name']}.xz" for r in rows]
    megabytes = sum(int(r["size_bytes"]) for r in rows) / 1e6
    one, one_cpu, batch = timed_batch(files, 1, args.repeat)
    many, _, _ = timed_batch(files, args.workers, args.repeat)
    hits = sum(correct(r.text, row) for r, row in zip(batch.results, rows, strict=True))  # type: ignore[union-attr]
    result = {
        "machine": machine(),
        "filings": len(files),
        "megabytes_uncompressed": round(megabytes, 1),
        "manifest_matches": hits,
        "statuses": batch.counts(),  # type: ignore[union-attr]
        "load_average_1min": round(os.getloadavg()[0], 1),
        "one_process": {
            "seconds": round(one, 2),
            "filings_per_second": round(len(files) / one, 1),
            "cpu_seconds": round(one_cpu, 2),
            "filings_per_cpu_second": round(len(files) / one_cpu, 1),
        },
        f"{args.workers}_processes": {
            "seconds": round(many, 2),
            "filings_per_second": round(len(files) / many, 1),
        },
        "target_filings_per_second_on_2_cores": 20,
    }
    if args.compare:
        result["candidates"] = compare(rows)
    emit(result, args.out)


if __name__ == "__main__":
    main()
