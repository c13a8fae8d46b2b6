"""Bytes -> text for HTML pages: HTTP header charset, then ``<meta>``, then detection.

Declared charsets are often wrong (a server default of UTF-8 in front of a windows-1251
CMS is the classic), so a declaration is only believed when the body decodes with it
cleanly (or with a handful of replacement characters); otherwise the next source is tried,
and charset_normalizer's detection is the last resort. A byte-order mark beats everything,
as in browsers.
"""

from __future__ import annotations

import codecs
import re

from copydesk.schemas.reasons import Reason
from copydesk.transforms.fetch.errors import FetchFailure

META_SCAN_BYTES = 4096  # where browsers look for <meta charset> (the spec says 1024; pages overrun it)
DETECT_BYTES = 64 * 1024  # detection reads this much: enough to be sure, bounded in time
SNIFF_BYTES = 1024

_META_RE = re.compile(rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_:.\-]{1,40})", re.I)
_CT_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?\s*([A-Za-z0-9_:.\-]{1,40})", re.I)
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# WHATWG encoding labels that mean something else than Python's codec of the same name.
_WHATWG_ALIASES = {
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252",
    "ascii": "cp1252", "iso-8859-9": "cp1254", "tis-620": "cp874", "x-sjis": "shift_jis",
    "sjis": "shift_jis", "shift-jis": "shift_jis", "windows-31j": "cp932", "x-cp1251": "cp1251",
    "gb2312": "gb18030", "gbk": "gb18030", "utf8": "utf-8", "unicode-1-1-utf-8": "utf-8",
}


def _max_replacements(length: int) -> int:
    """How many U+FFFD a 'correct' decoding may contain: a stray broken byte, not a wrong codec."""
    return max(4, length // 2000)


def normalize_charset(label: str | None) -> str | None:
    """Python codec name for a charset label, or None when the label is unknown."""
    if not label:
        return None
    name = _WHATWG_ALIASES.get(label.strip().lower(), label.strip())
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def header_charset(content_type: str | None) -> str | None:
    m = _CT_CHARSET_RE.search(content_type or "")
    return m.group(1) if m else None


def meta_charset(body: bytes) -> str | None:
    m = _META_RE.search(body[:META_SCAN_BYTES])
    return m.group(1).decode("ascii", "replace") if m else None


def bom_charset(body: bytes) -> str | None:
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name
    return None


def looks_binary(body: bytes) -> bool:
    """NUL bytes near the start mean an image/PDF/archive served as text, not HTML.

    UTF-16/32 text also contains NULs; those pages announce themselves with a BOM.
    """
    return b"\x00" in body[:SNIFF_BYTES] and bom_charset(body) is None


_LATIN_CODECS = frozenset({"cp1252", "iso8859-1", "latin-1", "iso8859-15", "mac-roman"})


def _implausible(text: str, codec: str) -> bool:
    """A Latin codec that turns most letters into accented ones is decoding another script.

    No Latin-script language has a majority of non-ASCII letters, but Cyrillic or Greek bytes
    read as windows-1252 do ("Ìèíèñòåðñòâî"): the 'obviously wrong' declaration case.
    """
    if codec not in _LATIN_CODECS:
        return False
    letters = [c for c in text[:DETECT_BYTES] if c.isalpha()]
    if len(letters) < 20:
        return False
    return sum(1 for c in letters if ord(c) > 127) / len(letters) > 0.4


def _try_decode(body: bytes, codec: str) -> str | None:
    """Decode if the codec fits: strictly, or with a few replacement characters at most."""
    try:
        return body.decode(codec)
    except UnicodeDecodeError:
        text = body.decode(codec, errors="replace")
        return text if text.count("\ufffd") <= _max_replacements(len(text)) else None
    except LookupError:
        return None


def _detect(body: bytes) -> str | None:
    import charset_normalizer

    best = charset_normalizer.from_bytes(body[:DETECT_BYTES]).best()
    return normalize_charset(best.encoding) if best is not None else None


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str]:
    """Return ``(text, codec)``; raise ``FetchFailure(decode)`` when no charset fits."""
    if not body:
        return "", "utf-8"
    bom = bom_charset(body)
    if bom is not None:
        text = _try_decode(body, bom)
        if text is not None:
            return text, normalize_charset(bom) or bom
    tried: set[str] = set()
    for label in (header_charset(content_type), meta_charset(body)):
        codec = normalize_charset(label)
        if codec is None or codec in tried:
            continue
        tried.add(codec)
        text = _try_decode(body, codec)
        if text is not None and not _implausible(text, codec):
            return text, codec
    detected = _detect(body)
    for codec in (detected, "utf-8"):
        if codec is None or codec in tried:
            continue
        tried.add(codec)
        text = _try_decode(body, codec)
        if text is not None:
            return text, codec
    raise FetchFailure(Reason.DECODE, "body does not decode with the declared or a detected charset",
                       tried=sorted(tried))
