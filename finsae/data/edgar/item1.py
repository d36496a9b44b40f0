"""Find "Item 1. Business" in the lines of a 10-K and cut it out, or say why not.

Rules (general, not per filing):

* **Headings.** A line is an item heading when it *starts* with ``Item N`` (``Items 1 and 2`` for a combined
  heading, an optional ``PART I`` before it), then a separator (``.``, ``:``, a dash, or nothing), then a
  title known for that item (``Business``, ``Risk Factors``, ``Properties`` ...) or, for items after Item 1, a
  short title-cased one. The title may sit on the next line (``ITEM 1.`` / ``BUSINESS``) and may be followed
  by a page number (tables of contents) or, run in, by the first sentence of the body. A comma after the
  number or lower-case words after the title (``Item 1A, "Risk Factors", of this report``) mark an in-text
  reference, not a heading; so does any line that does not start with the item marker (``See Item 1A. Risk
  Factors``).
* **Which Item 1.** Every Item 1 heading is a candidate (the table of contents, the body, an index at the
  end); each one's body runs to the next heading of any item or part. The candidate followed by the longest
  body wins, which skips tables of contents and indexes without needing their links.
* **Confidence.** The body must end at the heading of an item that may follow Item 1 (1A, 1B, 1C, 2, 3, 4 or
  Part II; 3 or later after a combined "Items 1 and 2"), and must hold at least :data:`MIN_WORDS` words;
  otherwise the result is ``not_found`` with the reason, never a guess.
* **Page furniture** inside the body is dropped: page numbers (``12``, ``- 12 -``, ``Page 12``), navigation
  lines (``Table of Contents``, ``Index to Financial Statements``, ``Back to top``) and running headers or
  footers (short lines that recur with a page number that increases through the document, such as
  ``Apple Inc. | 2025 Form 10-K | 4``).
* **Executive officers.** An Item 1 that ends with an unnumbered "Executive Officers" subsection
  (``Information about our Executive Officers``, ``Executive Officers of the Registrant``) keeps it by
  default; with ``executive_officers="drop"`` the text is cut just before that subheading.
* **Incorporated by reference.** A short Item 1 (under :data:`POINTER_MAX_WORDS` words once page furniture and
  the executive-officer list are gone) that incorporates its content from elsewhere ("incorporated herein by
  reference", page references into the annual report) is reported as ``incorporated_by_reference``, with the
  pointer text kept.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

#: A body shorter than this is no confident Item 1.
MIN_WORDS = 20
#: An Item 1 of fewer words (after furniture and officers are dropped) that points elsewhere is a pointer.
POINTER_MAX_WORDS = 450

ExecOfficers = Literal["keep", "drop"]

_MARKER = re.compile(
    r"^(?:part\s+(?:i|1)\b\s*[,.:\-–—]?\s*)?"
    r"items?\s*(\d{1,2})([a-d](?![a-z]))?"
    r"(?:\s*(?:and|&|,|through|to|-|–)\s*(\d{1,2})([a-d](?![a-z]))?(?=\W|$))?"
    r"\s*(?:[.:\-–—]+\s*)?",
    re.I,
)
_Q = "[\"“”'‘’]?"
_TITLES: dict[str, re.Pattern[str]] = {
    k: re.compile(rf"^{_Q}(?:{v}){_Q}", re.I)
    for k, v in {
        "1": r"(?:description\s+of\s+(?:the\s+)?|our\s+|the\s+)?business(?:es)?\b",
        "1a": r"risk\s+factors\b",
        "1b": r"unresolved\s+(?:sec\s+)?(?:staff\s+)?comments\b",
        "1c": r"cybersecurity\b",
        "2": r"(?:description\s+of\s+)?propert(?:y|ies)\b",
        "3": r"legal\s+proceedings\b",
        "4": r"submission\s+of\s+matters\b|mine\s+safety\b|[\[(]?\s*(?:removed\s+and\s+)?reserved\b"
        r"|\(?\s*removed\b",
        "4a": r"executive\s+officers\b",
        "5": r"market\s+for\b",
        "6": r"selected\s+(?:consolidated\s+)?financial\s+data\b|[\[(]?\s*reserved\b",
        "7": r"management['’]?s\s+discussion\b",
        "7a": r"quantitative\s+and\s+qualitative\b",
        "8": r"(?:consolidated\s+)?financial\s+statements\b",
        "9": r"changes\s+in\s+and\s+disagreements\b",
        "9a": r"controls\s+and\s+procedures\b",
        "9b": r"other\s+information\b",
        "9c": r"disclosure\s+regarding\s+foreign\b",
        "10": r"directors\b",
        "11": r"executive\s+compensation\b",
        "12": r"security\s+ownership\b",
        "13": r"certain\s+relationships\b",
        "14": r"principal\s+account",
        "15": r"exhibits\b",
        "16": r"form\s+10-k\s+summary\b",
    }.items()
}
_PART = re.compile(r"^part\s+(ii|iii|iv|2|3|4)\b\s*[.:\-–—]?\s*(?P<rest>.*)$", re.I)
_PAGE_TRAIL = re.compile(r"^[\s.·_…\-–—]*(?:page\s*)?(?:\d{1,3}|[ivx]{1,5})\s*$", re.I)
_SMALL = frozenset("a an and as at by for from in of on or the to with its our their".split())
_SUCCESSORS = frozenset(("1a", "1b", "1c", "2", "3", "4", "4a", "part2"))
_SUCCESSORS_COMBINED = frozenset(("3", "4", "4a", "part2"))

_DIGIT = re.compile(r"\d")
_DIGITS = re.compile(r"\d+")
_ALPHA = re.compile(r"[A-Za-z]")
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?[\-–—(\[]?\s*(?:\d{1,3}|[ivxlc]{1,6})\s*[\-–—)\]]?$", re.I)
_NAV = re.compile(
    r"table\s+of\s+contents|index\s+to\s+(?:consolidated\s+)?financial\s+statements|back\s+to\s+"
    r"(?:the\s+)?(?:top|contents|index|table\s+of\s+contents)|return\s+to\s+(?:the\s+)?"
    r"(?:top|index|table\s+of\s+contents)|quicklinks|\bcontents\b|\bindex\b|\bpage\b",
    re.I,
)
_NAV_REST = re.compile(r"^[\s\d|.\-–—()\[\]]*$")
_EXEC = re.compile(
    r"^(?:information\s+(?:about|regarding|concerning|on|with\s+respect\s+to)\s+)?(?:our\s+|the\s+)?"
    r"(?:current\s+)?executive\s+officers(?:\s+and\s+directors)?(?:\s+of\s+(?:the\s+)?[\w .,&'’-]{1,60}?)?"
    r"\s*(?:\([^)]{0,60}\))?\s*[:.]?$", re.I)
_POINTER = re.compile(r"incorporated\s+(?:herein\s+|in\s+this\s+\w+\s+|into\s+this\s+\w+\s+)?by\s+reference|"
                      r"\bpages?\s+\d+|—\s*pages?\s+\d|is\s+(?:included|contained|set\s+forth)\s+(?:in|on)\b",
                      re.I)


@dataclass(frozen=True)
class Heading:
    key: str          # "1", "1a", "2", ... or "part2", "part3", "part4"
    line: int         # the line the heading starts on
    body: int         # the first line after the heading
    run_in: str       # text after the title on the heading line (a run-in heading), else ""
    combined: bool    # "Items 1 and 2"


@dataclass(frozen=True)
class Span:
    """Where Item 1 was found: its heading, the heading that ends it, and its lines (furniture removed)."""

    heading: Heading
    end: Heading
    lines: tuple[str, ...]
    candidates: int


@dataclass(frozen=True)
class Item1:
    """Outcome of the search: ``status`` is ``ok``, ``not_found`` or ``incorporated_by_reference``."""

    status: str
    text: str
    detail: str
    exec_officers_dropped: bool = False


def _title_like(rest: str) -> bool:
    """Whether ``rest`` reads as a short heading title (not a sentence)."""
    words = re.findall(r"[A-Za-z][A-Za-z'’-]*", rest)
    if not words or len(rest) > 90:
        return False
    if not (rest[0].isupper() or rest[0] in "[(\"“" or words[0].lower() in _SMALL):
        return False
    if re.search(r"[,;]\s+[a-z]|\.\s+[a-z]", rest):
        return False
    capital = [w[0].isupper() for w in words if w.lower() not in _SMALL]
    return bool(capital) and sum(capital) >= 0.75 * len(capital)


def _after_title(rest: str) -> tuple[bool, str]:
    """Given the text after a matched title: (is it a heading, run-in body text)."""
    trail = rest.strip()
    trail = trail.lstrip("\"”’'")
    if not trail or re.fullmatch(r"[\s.:;)\]*]*", trail):
        return True, ""
    if _PAGE_TRAIL.match(trail):
        return True, ""
    m = re.match(r"^\s*(?:[.:]|[\-–—]\s)\s*(?=[A-Z\"“(])", trail)
    if m:
        return True, trail[m.end():]
    if len(trail) <= 60 and _title_like(trail):
        return True, ""
    return False, ""


def _next_nonblank(lines: list[str], i: int, limit: int = 3) -> int | None:
    for j in range(i + 1, min(len(lines), i + 1 + limit)):
        if lines[j]:
            return j
    return None


def heading_at(lines: list[str], i: int) -> Heading | None:
    """The item or part heading starting on line ``i``, if it is one."""
    line = lines[i]
    if not line or len(line) > 400:
        return None
    c0 = line[0]
    if c0 in "Pp":
        pm = _PART.match(line)
        if pm is not None and len(line) <= 90:
            rest = pm.group("rest")
            if not rest or _title_like(rest) or _PAGE_TRAIL.match(rest):
                num = {"ii": "2", "iii": "3", "iv": "4"}.get(pm.group(1).lower(), pm.group(1))
                return Heading(f"part{num}", i, i + 1, "", False)
    elif c0 not in "Ii":
        return None
    m = _MARKER.match(line)
    if m is None:
        return None
    key = (m.group(1).lstrip("0") + (m.group(2) or "")).lower()
    combined = m.group(3) is not None
    rest = line[m.end():]
    pattern = _TITLES.get(key)
    if not rest.strip():
        j = _next_nonblank(lines, i)
        if j is None:
            return None
        title = lines[j]
        tm = pattern.match(title) if pattern is not None else None
        if tm is not None:
            ok, run_in = _after_title(title[tm.end():])
            return Heading(key, i, j + 1, run_in, combined) if ok else None
        if key != "1" and _title_like(title) and len(title) <= 80 and not _MARKER.match(title):
            return Heading(key, i, j + 1, "", combined)
        return None
    tm = pattern.match(rest) if pattern is not None else None
    if tm is not None:
        ok, run_in = _after_title(rest[tm.end():])
        return Heading(key, i, i + 1, run_in, combined) if ok else None
    if key != "1" and _title_like(rest):
        return Heading(key, i, i + 1, "", combined)
    return None


def find_headings(lines: list[str]) -> list[Heading]:
    """Every item and part heading, in document order (a heading whose title is on the next line counts
    once)."""
    out: list[Heading] = []
    skip_to = -1
    for i, line in enumerate(lines):
        if i < skip_to or not line or line[0] not in "IiPp":
            continue
        h = heading_at(lines, i)
        if h is not None:
            out.append(h)
            skip_to = h.body
    return out


def furniture_lines(lines: list[str]) -> set[int]:
    """Indices of running headers and footers: short lines whose text, with numbers masked, recurs at least
    three times with a number that increases strictly through the document (a page number)."""
    seen: dict[str, list[tuple[int, tuple[int, ...]]]] = defaultdict(list)
    for i, line in enumerate(lines):
        if 3 <= len(line) <= 100 and _DIGIT.search(line) and _ALPHA.search(line):
            nums = tuple(int(n) for n in _DIGITS.findall(line)[:6])
            seen[_DIGITS.sub("#", line.lower())].append((i, nums))
    out: set[int] = set()
    for occ in seen.values():
        if len(occ) < 3:
            continue
        width = min(len(n) for _, n in occ)
        for slot in range(width):
            vals = [n[slot] for _, n in occ]
            if all(b > a for a, b in zip(vals, vals[1:], strict=False)):
                out.update(i for i, _ in occ)
                break
    return out


def is_furniture(line: str) -> bool:
    """Page numbers and navigation lines (``Table of Contents``, ``Index to Financial Statements``)."""
    if _PAGE_NUMBER.match(line):
        return True
    if len(line) <= 120 and _NAV.search(line):
        return bool(_NAV_REST.match(_NAV.sub(" ", line)))
    return False


def _words(lines: list[str]) -> list[int]:
    return [line.count(" ") + 1 if line else 0 for line in lines]


def locate(lines: list[str], headings: list[Heading] | None = None) -> tuple[Span | None, str]:
    """The Item 1 span of ``lines`` (None with the reason when there is no confident one)."""
    headings = find_headings(lines) if headings is None else headings
    firsts = [k for k, h in enumerate(headings) if h.key == "1"]
    if not firsts:
        return None, "no 'Item 1. Business' heading found"
    counts = _words(lines)
    prefix = [0]
    for c in counts:
        prefix.append(prefix[-1] + c)
    best: tuple[int, int] | None = None
    best_words = -1
    for k in firsts:
        h = headings[k]
        end_line = headings[k + 1].line if k + 1 < len(headings) else len(lines)
        words = prefix[end_line] - prefix[h.body] + (h.run_in.count(" ") + 1 if h.run_in else 0)
        if words > best_words:
            best, best_words = (k, end_line), words
    assert best is not None
    k, end_line = best
    h = headings[k]
    if k + 1 >= len(headings):
        return None, (f"'Item 1' heading on line {h.line + 1} is followed by no later item heading "
                      f"({len(firsts)} candidate(s)); the document may be truncated")
    end = headings[k + 1]
    allowed = _SUCCESSORS_COMBINED if h.combined else _SUCCESSORS
    if end.key not in allowed:
        return None, (f"Item 1 (line {h.line + 1}) runs into the heading 'Item {end.key.upper()}' or a part "
                      f"heading on line {end.line + 1}, not into an item that follows Item 1: headings "
                      "missing")
    furniture = furniture_lines(lines)
    body = [h.run_in] if h.run_in else []
    body += [ln for i, ln in enumerate(lines[h.body:end_line], start=h.body)
             if i not in furniture and not (ln and is_furniture(ln))]
    while body and not body[-1]:
        body.pop()
    while body and not body[0]:
        body.pop(0)
    return Span(h, end, tuple(body), len(firsts)), ""


def _paragraphs(lines: list[str], plain: bool) -> str:
    if not plain:
        return "\n".join(ln for ln in lines if ln)
    paras: list[str] = []
    cur: list[str] = []
    for ln in lines:
        if ln:
            cur.append(ln)
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n".join(paras)


def exec_officers_line(lines: tuple[str, ...] | list[str]) -> int | None:
    """Index of the first title-cased 'Executive Officers' subheading among Item 1's lines (not its first)."""
    for i, ln in enumerate(lines):
        if i > 0 and ln and len(ln) <= 120 and ln[0] in "EeIiOoTt" and _EXEC.match(ln) and _title_like(ln):
            return i
    return None


def extract_item1(
    lines: list[str], *, plain: bool = False, executive_officers: ExecOfficers = "keep"
) -> Item1:
    """Item 1 of a 10-K's lines: its text and status (see the module docs for the rules)."""
    span, why = locate(lines)
    if span is None:
        return Item1("not_found", "", why)
    body = list(span.lines)
    officers = exec_officers_line(body)
    core = body[:officers] if officers is not None else body
    dropped = False
    if executive_officers == "drop" and officers is not None:
        body, dropped = core, True
    text = _paragraphs(body, plain)
    words = len(text.split())
    where = (f"heading on line {span.heading.line + 1} (of {span.candidates} candidate(s)), ends at "
             f"'{span.end.key.upper() if not span.end.key.startswith('part') else 'PART'}' heading "
             f"on line {span.end.line + 1}")
    if words < MIN_WORDS:
        return Item1("not_found", text, f"Item 1 body has only {words} word(s): {where}")
    core_text = _paragraphs(core, plain)
    core_words = len(core_text.split())
    if core_words < POINTER_MAX_WORDS:
        pointers = len(_POINTER.findall(core_text))
        if pointers >= 1 and (core_words < 150 or pointers * 60 >= core_words):
            return Item1(
                "incorporated_by_reference",
                text,
                f"Item 1 has {core_words} word(s) and {pointers} reference(s) to content incorporated "
                f"from elsewhere: {where}",
                dropped,
            )
    return Item1("ok", text, where, dropped)
