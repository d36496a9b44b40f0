"""Bytes of a filing to lines of clean text: decompression, decoding, SGML documents, HTML and plain text.

A filing's text is returned as a list of lines, each with runs of whitespace (non-breaking, thin and other
Unicode spaces included) collapsed to one space and zero-width characters removed. HTML is parsed with lxml (a
forgiving libxml2 parser: truncated or malformed markup still yields text); every block element (paragraph,
``div``, table row, list item, heading, ``br``) starts a new line, table cells on one row are joined by a
space, and inline elements add no space. Scripts, styles, comments, the inline XBRL header (``ix:header``) and
elements styled ``display:none`` are dropped. Plain-text documents (1990s filings) keep their hard line wraps,
one line per source line, with blank lines kept as empty strings so paragraph breaks stay visible; SGML page
tags are removed.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
from dataclasses import dataclass

from lxml import etree

#: Characters removed outright (zero-width spaces and joiners, word joiner, BOM, soft hyphen).
_ZERO_WIDTH_CHARS = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
_WS = re.compile(r"\s+")

_BLOCK_TAGS = frozenset(
    (
        "p div br tr li ul ol dl dt dd table thead tbody tfoot caption h1 h2 h3 h4 h5 h6 hr center "
        "blockquote pre section article header footer nav aside main form fieldset address title body page"
    ).split()
)
_CELL_TAGS = frozenset(("td", "th"))
_SKIP_TAGS = frozenset(("script", "style", "head", "noscript", "template", "ix:header", "xbrli:context"))
#: Marks block boundaries while the text is assembled (source newlines are plain whitespace in HTML); a
#: private-use character, so libxml2 accepts it in text nodes.
_BREAK = "\ue000"
_HIDDEN = re.compile(r"display\s*:\s*none", re.I)
_SGML_TAG_LINE = re.compile(
    r"</?(?:page|s|c|table|caption|fn|f\d+|r|pre|text|type|sequence|filename|description)>", re.I
)


@dataclass(frozen=True)
class Decoded:
    """A file's text and how it was obtained."""

    text: str
    encoding: str
    compression: str | None


class UnreadableError(ValueError):
    """The bytes are not a text document (empty, binary, or undecodable)."""


def decompress(data: bytes) -> tuple[bytes, str | None]:
    """Undo gzip, xz or bzip2 compression recognised by its magic bytes (else the bytes unchanged)."""
    try:
        if data[:2] == b"\x1f\x8b":
            return gzip.decompress(data), "gzip"
        if data[:6] == b"\xfd7zXZ\x00":
            return lzma.decompress(data), "xz"
        if data[:3] == b"BZh":
            return bz2.decompress(data), "bzip2"
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise UnreadableError(f"corrupt compressed file: {exc}") from None
    return data, None


_BINARY_MAGIC = {
    b"%PDF": "a PDF file",
    b"PK\x03\x04": "a ZIP archive",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\xd0\xcf\x11\xe0": "an OLE (MS Office) file",
}


def decode(data: bytes) -> Decoded:
    """Decompress and decode a filing: UTF-8 (with or without BOM), UTF-16 with a BOM, else Windows-1252 (a
    superset of Latin-1 for text), else Latin-1. Raises :class:`UnreadableError` for empty or binary input."""
    data, compression = decompress(data)
    if not data.strip():
        raise UnreadableError("empty file")
    for magic, what in _BINARY_MAGIC.items():
        if data.startswith(magic):
            raise UnreadableError(f"binary file ({what}), not a text or HTML filing")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return Decoded(data.decode("utf-16"), "utf-16", compression)
        except UnicodeDecodeError as exc:
            raise UnreadableError(f"bad UTF-16 text: {exc}") from None
    head = data[:65536]
    controls = sum(head.count(bytes([b])) for b in (*range(0, 9), 11, 12, *range(14, 27), *range(28, 32)))
    if b"\x00" in head or controls > 0.01 * len(head):
        raise UnreadableError(f"binary file ({controls} control bytes in the first {len(head)}), "
                              "not a text or HTML filing")
    try:
        return Decoded(data.decode("utf-8-sig"), "utf-8", compression)
    except UnicodeDecodeError:
        pass
    try:
        return Decoded(data.decode("cp1252"), "cp1252", compression)
    except UnicodeDecodeError:
        return Decoded(data.decode("latin-1"), "latin-1", compression)


def _strip_zero_width(text: str) -> str:
    for ch in _ZERO_WIDTH_CHARS:  # str.replace runs in C; str.translate with a dict does not
        if ch in text:
            text = text.replace(ch, "")
    return text


def clean_line(text: str) -> str:
    """One line with zero-width characters removed and all whitespace collapsed to single spaces."""
    return _WS.sub(" ", _strip_zero_width(text)).strip()


def looks_like_html(text: str) -> bool:
    """Whether a document is HTML (SGML ``<TABLE>``/``<PAGE>`` tags of plain-text filings do not count)."""
    head = text[:50000].lower()
    if "<html" in head or "<body" in head or "<?xml" in head:
        return True
    return sum(head.count(tag) for tag in ("<p>", "<p ", "<div", "<font", "<br", "<td")) >= 3


_PARSER = etree.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, recover=True,
                           huge_tree=True, no_network=True, default_doctype=False)


def _drop(el: etree._Element) -> None:
    """Remove ``el`` and its subtree, keeping the text that follows it (its tail)."""
    parent = el.getparent()
    if parent is None:
        return
    tail = el.tail
    if tail:
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(el)




def html_lines(html: str) -> list[str]:
    """The text of an HTML (or inline XBRL) document, one line per block, cleaned (see module docs)."""
    start = html.find("<")
    if start > 0:
        html = html[start:]
    root = etree.fromstring(html.encode("utf-8", "surrogatepass"), _PARSER)
    if root is None:
        return []
    for el in list(root.iter(*_SKIP_TAGS)):
        _drop(el)
    for el in list(root.iterfind(".//*[@style]")):
        style = el.get("style") or ""
        if "none" in style and _HIDDEN.search(style):
            _drop(el)
    # mark block boundaries and cell gaps in the tree, then let libxml2 serialise the text
    for el in root.iter(*_BLOCK_TAGS):
        el.text = _BREAK + (el.text or "")
        el.tail = _BREAK + (el.tail or "")
    for el in root.iter(*_CELL_TAGS):
        el.tail = " " + (el.tail or "")
    text = etree.tostring(root, method="text", encoding="unicode", with_tail=False)
    text = _WS.sub(" ", _strip_zero_width(text))
    return [line for raw in text.split(_BREAK) if (line := raw.strip())]


def text_lines(text: str) -> list[str]:
    """The lines of a plain-text document, cleaned; blank lines are kept as ``""`` (paragraph breaks), SGML
    markup lines (``<PAGE>``, ``<TABLE>``, ...) become blank."""
    out = []
    for raw in text.splitlines():
        if "<" in raw:
            raw = _SGML_TAG_LINE.sub(" ", raw)
        out.append(clean_line(raw))
    return out
