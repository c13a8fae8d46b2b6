"""Tolerant re-parse of damaged HTML, tried before a page is given up as ``empty``.

Two kinds of damage make libxml2 lose the whole page although a one-character repair
recovers it:

* an unclosed ``<title>``: the parser reads the rest of the document as the title's text,
  so the page has no body;
* a tag run into another (``<html lang="en"<img src="t.gif" alt='<head>``): the start tag
  has no ``>``, and an attribute quote left open swallows the document up to the next quote.

:func:`repair_html` closes a title that runs into markup and ends a start tag where the next
tag begins (closing a quote left open there). It runs only on pages whose first parse gave
no text, never on every page.
"""

from __future__ import annotations

import re

__all__ = ["repair_html"]

_TITLE_OPEN = re.compile(r"<title\b[^>]*>", re.IGNORECASE)
_TITLE_CLOSE = re.compile(r"</title\s*>", re.IGNORECASE)
# markup that never stands in a title: a tag's start ("<meta", "</head", "<body", "<!--")
_MARKUP = re.compile(r"<(?:/?[a-zA-Z][\w:-]*[\s>/]|!--)")
# a start tag with no ">" before the next tag: "<html lang="en"<img" -> "<html lang="en"><img"
_RUN_IN = re.compile(r"(<[a-zA-Z][\w:-]*(?:\s[^<>]*?)?)(?=<[a-zA-Z/!])")
# an attribute quote still open where the next tag begins: alt='<head> -> alt=''><head>
_OPEN_QUOTE = re.compile(r"""(=\s*(["'])[^"'<>]*)(?=<[a-zA-Z/!])""")
_TITLE_MAX = 1000  # a real title is short; more text before markup means a swallowed page


def _close_title(html: str) -> str:
    m = _TITLE_OPEN.search(html)
    if not m:
        return html
    end = _TITLE_CLOSE.search(html, m.end())
    markup = _MARKUP.search(html, m.end())
    if markup is None or (end is not None and end.start() <= markup.start()):
        return html  # closed before any markup: a sound title
    if end is not None and end.start() - m.end() <= _TITLE_MAX and "<body" not in html[m.end():end.start()].lower():
        return html  # markup inside a short closed title: odd, but not what loses the page
    return html[:markup.start()] + "</title>" + html[markup.start():]


def repair_html(html: str) -> str:
    """``html`` with an unclosed title closed and run-in start tags ended (unchanged if sound)."""
    return _RUN_IN.sub(r"\1>", _OPEN_QUOTE.sub(r"\1\2>", _close_title(html)))
