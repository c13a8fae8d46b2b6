"""trafilatura's extraction cascade on a tree that copydesk has already parsed and pruned.

``trafilatura.bare_extraction`` parses its input (or copies a tree it is given), reads all
metadata and always runs the readability/justext comparison unless ``fast`` is set. Here the
same cascade (trafilatura 2.3.1 ``trafilatura_sequence``, comments off) runs on the one tree
copydesk parsed, and the comparison runs only when the quick result *looks wrong*
(:func:`looks_wrong`): checked, not trusted, and paid for only where it can change the answer.

Stages, as in trafilatura:
1. main extractor (``extract_content``, with its wild-text recovery for short results);
2. comparison with readability/justext (``compare_extraction``): **gated** by :func:`looks_wrong`
   (trafilatura runs it on every page unless ``fast``);
3. baseline rescue on the uncleaned tree when the body is under ``min_extracted_size`` -- but not
   its whole-page dump or a link list (:func:`is_page_dump`): the caller decides what a page
   with no body gets (copydesk: its headline, the dump only as a last resort);
4. recall escalation when the body is short and covers little of the page.

Uses trafilatura internals (pinned to 2.3.1 in pyproject); a change in them fails the unit
tests, not silently.
"""

from __future__ import annotations

import re
from copy import copy
from dataclasses import dataclass

from lxml.html import HtmlElement
from trafilatura.baseline import baseline, html2txt
from trafilatura.core import (
    ESCALATION_ACCEPT_RATIO,
    ESCALATION_JUSTEXT_RATIO,
    ESCALATION_MAX_LENGTH,
    ESCALATION_PAGE_SHARE,
    _forum_thread_page,
    _prepare_tree,
)
from trafilatura.external import compare_extraction, justext_rescue
from trafilatura.main_extractor import extract_content
from trafilatura.settings import Extractor
from trafilatura.xml import delete_element, xmltotxt

__all__ = ["Cascade", "extractor_options", "is_page_dump", "looks_wrong", "run_cascade"]


def extractor_options(*, fast: bool = False, favor_recall: bool = False, favor_precision: bool = False,
                      include_tables: bool = True, deduplicate: bool = False, url: str | None = None) -> Extractor:
    """trafilatura's settings object for the cascade: text output, comments off, no metadata."""
    return Extractor(fast=fast, precision=favor_precision and not favor_recall, recall=favor_recall,
                     comments=False, tables=include_tables, dedup=deduplicate, url=url, with_metadata=False)


@dataclass(slots=True)
class Cascade:
    """The cascade's answer: the body as text (trafilatura's txt rendering) and how it got it."""

    text: str
    compared: bool = False  # stage 2 ran
    route: str = "main"  # main | compare | baseline | recall | justext


SHORT_BODY = 1000  # characters: the wrong blocks fast mode picks are 300-1,300 characters
SHORT_LINE = 60  # characters: a link, a table cell, a teaser title
SHORT_LINE_SHARE = 0.5  # of the body's characters in short lines
BLOCK_SHARE = 0.5  # of the largest block of <p> text (one parent's paragraphs) on the page
DUMP_SHARE = 0.7  # of the page's text: a rescue candidate this long is the page, not a story


# trafilatura 2.3.1 RAW_TREE_PRUNE_XPATH and REMOVE_COMMENTS_AND_LISTS_XPATH as Python predicates:
# lxml runs their re:test() by calling back into Python for every element; one pass does it all
_SCROLL = re.compile("mvp-post-add-(?:box|wrap)|infinite-?scroll")
_MVP = re.compile("mvp-post-add-(?:box|wrap)")
_COMMENT_ID = re.compile("^(?:[Cc]omment(?!ary)|comol|disqus_thread|dsq-comments)")
_COMMENT_LIST_ID = re.compile("^(?:[Cc]omment(?!ary)|comol)")
_COMMENT_CLASS = re.compile("^[Cc]omment(?!ary)|(?:article|post)-comments")
_RAW_TAGS = frozenset(("div", "section", "aside"))


def _doomed(el) -> bool:
    tag, ident, cls = el.tag, el.get("id") or "", el.get("class") or ""
    if tag in _RAW_TAGS and (_SCROLL.search(ident) or _SCROLL.search(cls)):
        if el.find(".//h1") is None or _MVP.search(ident) or _MVP.search(cls):
            return True  # an infinite-scroll container of follow-up articles
    if tag in _RAW_TAGS and "elementor-share-buttons" in cls:
        return True
    return False


def _comment_section(el) -> bool:
    ident, cls = el.get("id") or "", el.get("class") or ""
    if not (_COMMENT_ID.search(ident) or _COMMENT_CLASS.search(cls)):
        return False
    return el.tag not in ("ol", "ul") or bool(_COMMENT_LIST_ID.search(ident) or _COMMENT_CLASS.search(cls))


def prune_raw_tree(tree: HtmlElement, *, comments: bool) -> None:
    """trafilatura's raw-tree prune (infinite-scroll follow-ups, share-button blocks) and, with
    ``comments``, its comment-section prune, in one pass (same elements; their tails are kept)."""
    raw, com = [], []
    for el in tree.iter("div", "section", "aside", "details", "ol", "ul", "list"):
        if not (el.get("class") or el.get("id")):
            continue
        if _doomed(el):
            raw.append(el)
        elif comments and el.tag in _COMMENT_TAGS and _comment_section(el):
            com.append(el)
    for el in raw + com:
        delete_element(el)


_COMMENT_TAGS = frozenset(("div", "list", "section", "details", "ol", "ul"))


def _page_text_bound(tree: HtmlElement) -> int:
    """An upper bound of ``len(html2txt(tree))``, cheap: the body's text with whitespace
    collapsed, less its scripts and styles (html2txt drops them), plus two characters per
    element (html2txt spaces block boundaries).
    trafilatura's escalation test needs the exact length only when the bound lets it pass."""
    body = tree.find(".//body")
    body = tree if body is None else body
    code = sum(len(" ".join((el.text or "").split())) for el in body.iter("script", "style"))
    return len(" ".join(body.text_content().split())) - code + 2 * int(body.xpath("count(.//*)")) + 1


def _short_line_chars(text: str) -> int:
    return sum(len(ln) for ln in text.split("\n") if 0 < len(ln.strip()) < SHORT_LINE)


def is_page_dump(text: str, tree: HtmlElement) -> bool:
    """``text`` (a rescue candidate) is the page rather than a story: about as long as the page's
    whole visible text, or mostly short lines (navigation, link lists). trafilatura's baseline rescue falls
    back to the whole page's text; a plausible short body is kept over such a candidate."""
    if _short_line_chars(text) > SHORT_LINE_SHARE * len(text):
        return True
    page = len(html2txt(tree))
    # about as long as the page's visible text (a JSON-LD articleBody longer than it is not the page)
    return DUMP_SHARE * page <= len(text) <= page / DUMP_SHARE


def looks_wrong(body, text: str, cleaned: HtmlElement, rendered: str | None = None) -> bool:
    """True when the main extractor's quick result should be checked against readability/justext.

    The quick result is suspect when it is short, when it is made of short lines (link lists,
    layout-table cells and teaser blocks render as many short lines), or when it is much
    shorter than the largest block of paragraph text on the page (the main extractor took a
    side block). ``cleaned``: trafilatura's cleaned tree (before tag conversion);
    ``rendered``: the body as text (``xmltotxt``), when the caller has it.
    """
    n = len(text)
    if n < SHORT_BODY:
        return True
    if _short_line_chars(xmltotxt(body, False) if rendered is None else rendered) > SHORT_LINE_SHARE * n:
        return True
    blocks: dict = {}
    for p in cleaned.iter("p"):
        parent = p.getparent()
        if parent is not None:
            blocks[parent] = blocks.get(parent, 0) + len(p.text_content())
    return n < BLOCK_SHARE * max(blocks.values(), default=0)


def run_cascade(tree: HtmlElement, options: Extractor, *, gate: bool = True) -> Cascade:
    """Extract the body from ``tree`` (modified: comment sections pruned; copy it to keep it).

    ``gate``: run the comparison only when :func:`looks_wrong` (True), or as trafilatura does
    (False: always, unless ``options.fast``).
    """
    url = options.url
    is_forum = _forum_thread_page(tree)
    prune_raw_tree(tree, comments=not is_forum or options.focus == "precision")
    cleaned, backup = _prepare_tree(tree, options, url)
    body, text = extract_content(cleaned, options)
    compared, route = False, "main"
    quick, rendered = body, xmltotxt(body, options.formatting) if gate and not options.fast else None
    if not options.fast and (not gate or looks_wrong(body, text, backup, rendered if not options.formatting else None)):
        before = body
        body, text = compare_extraction(backup, copy(tree), body, text, options)
        compared, route = True, ("main" if body is before else "compare")
    if len(text) < options.min_extracted_size and options.focus != "precision":
        b_body, b_text, b_len = baseline(tree)
        if b_len > len(text) and not is_page_dump(b_text, tree):
            body, text, route = b_body, b_text, "baseline"
    if (options.focus == "balanced" and 0 < len(text) < ESCALATION_MAX_LENGTH
            and len(text) < ESCALATION_PAGE_SHARE * _page_text_bound(tree)
            and len(text) < ESCALATION_PAGE_SHARE * len(html2txt(tree))):
        r_options = copy(options)
        r_options.focus = "recall"
        r_text = j_text = ""
        try:
            r_cleaned, r_backup = _prepare_tree(tree, r_options, url)
            r_body, r_text = extract_content(r_cleaned, r_options)
            if not r_options.fast:
                r_body, r_text = compare_extraction(r_backup, copy(tree), r_body, r_text, r_options)
        except Exception:  # pragma: no cover  (as trafilatura: a failed retry keeps the first answer)
            r_text = ""
        if not options.fast:
            try:
                j_body, j_text = justext_rescue(copy(tree), options)
            except Exception:  # pragma: no cover
                j_text = ""
        if len(j_text) > len(r_text) and len(j_text) > ESCALATION_JUSTEXT_RATIO * len(text):
            body, text, route = j_body, j_text, "justext"
        elif len(r_text) >= options.min_extracted_size and len(r_text) > ESCALATION_ACCEPT_RATIO * len(text):
            body, text, route = r_body, r_text, "recall"
    if len(text) < options.min_output_size:
        return Cascade("", compared, route)
    return Cascade(rendered if body is quick and rendered is not None else xmltotxt(body, options.formatting),
                   compared, route)
