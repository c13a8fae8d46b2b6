"""Page metadata for the record, read from the one parsed tree (trafilatura's readers, fewer of them).

``trafilatura.extract_metadata`` reads everything it knows. The record carries title, authors,
date, site name, description, canonical URL, image, categories and tags; this module reads
those with trafilatura's own functions and skips what the record does not carry or what costs
most for little:

* no licence search (a scan of every link);
* categories and tags only from meta tags and JSON-LD (``article:section``, ``article:tag``,
  ``keywords``, ``articleSection``), not from a scan of every link for ``/category/`` and
  ``/tag/`` paths;
* the date from htmldate's quick search (structured markup, meta tags, the URL), not its
  extensive scan of the whole page text;
* JSON-LD that ``json`` cannot parse is read by trafilatura's regex fallback only when the
  script is under :data:`MAX_BROKEN_JSON` characters (the fallback is quadratic on long
  scripts: half a second on one page).
"""

from __future__ import annotations

import json
import logging
import re
from copy import deepcopy

from courlan import extract_domain
from htmldate import find_date
from lxml.html import HtmlElement
from trafilatura.htmlprocessing import prune_unwanted_nodes
from trafilatura.json_metadata import extract_json, extract_json_parse_error, normalize_authors, normalize_json
from trafilatura.metadata import (
    JSON_MINIFY,
    META_URL,
    Document,
    examine_meta,
    extract_sitename,
    extract_title,
    extract_url,
)
from trafilatura.settings import set_date_params
from trafilatura.utils import line_processing, trim
from trafilatura.xpaths import AUTHOR_DISCARD_XPATHS

__all__ = ["MAX_BROKEN_JSON", "read_metadata"]

LOG = logging.getLogger(__name__)
MAX_BROKEN_JSON = 20_000


def _json_ld(tree: HtmlElement, md: Document) -> Document:
    for elem in tree.xpath('.//script[@type="application/ld+json" or @type="application/settings+json"]'):
        if not elem.text:
            continue
        text = normalize_json(JSON_MINIFY.sub(r"\1", elem.text))
        try:
            md = extract_json(json.loads(text, strict=False), md)
        except json.JSONDecodeError:
            if len(text) <= MAX_BROKEN_JSON:
                md = extract_json_parse_error(text, md)
    return md


# trafilatura 2.3.1 AUTHOR_XPATHS / AUTHOR_DISCARD_XPATHS as Python predicates: lxml evaluates
# their re:test() by calling back into Python for every element of the page (17 ms on a large
# page); here one pass with a substring regex per attribute finds the few candidates first.
_A1_TAGS = frozenset(("a", "address", "div", "link", "p", "span", "strong"))
_A1_CLASS = re.compile("author-?name|AuthorName|authorName")
_A2_TAGS = frozenset(("a", "div", "h3", "h4", "p", "span"))
_A2_ID = re.compile("author|zuozhe|bianji|xiaobian")
_A2_CLASS = re.compile("author|channel-name|zuozhe|bianji|xiaobian|submitted-by|posted-by|journalist-name")
_A3_ID = re.compile("[Aa]uthor")
_A3_CLASS = re.compile("[Aa]uthor|screenname|writer|[Bb]yline")
_D_TAGS = frozenset(("a", "div", "section", "span"))
_D_ID = re.compile("^comments|comment-?list|ProductReviews")
_D_CLASS = re.compile("^[Cc]omments|commentlist|comments-list|sidebar|is-hidden|quote|embedly-instagram|"
                      "article-(?:share|support)|print|category|meta-date|meta-reviewer")
# necessary substrings of the expressions' class/id tests (one regex search per attribute)
_CLASS_KEYS = re.compile("uthor|yline|writer|screenname|username|byl|BBL|zuozhe|bianji|xiaobian|channel-name|"
                         "submitted-by|posted-by|journalist-name")
_ID_KEYS = re.compile("uthor|zuozhe|bianji|xiaobian")


def _candidates(tree: HtmlElement) -> list:
    out = []
    for el in tree.iter():
        get = el.get
        cls, ident = get("class"), get("id")
        if ((cls and _CLASS_KEYS.search(cls)) or (ident and _ID_KEYS.search(ident)) or el.tag == "author"
                or "author" in (get("itemprop") or "") or get("rel") == "author"
                or (get("data-testid") or "").startswith("Author") or "Byline" in (get("data-component") or "")):
            out.append(el)
    return out


def _kind(el) -> int:
    """Which of trafilatura's three author expressions ``el`` matches first (0: none)."""
    tag, get = el.tag, el.get
    cls, ident, prop = get("class") or "", get("id") or "", get("itemprop") or ""
    if tag == "author" or (tag in _A1_TAGS and (
            get("rel") == "author" or ident == "author" or cls == "author" or prop == "author name"
            or get("data-testid") in ("AuthorCard", "AuthorURL") or _A1_CLASS.search(cls))):
        return 1
    if tag in _A2_TAGS and (cls in ("byline", "username", "byl", "BBL") or "author" in prop
                            or _A2_ID.search(ident) or _A2_CLASS.search(cls)):
        return 2
    if ("Byline" in (get("data-component") or "") or "author" in prop or _A3_ID.search(ident)
            or _A3_CLASS.search(cls)):
        return 3
    return 0


def _discarded(el) -> bool:
    tag = el.tag
    if tag in ("time", "figure"):
        return True
    if tag not in _D_TAGS:
        return False
    cls, ident = el.get("class"), el.get("id")
    return bool(ident == "comments" or cls in ("comments", "title", "date")
                or (ident and _D_ID.search(ident)) or (cls and _D_CLASS.search(cls))
                or "Figure" in (el.get("data-component") or ""))


def _author(tree: HtmlElement) -> str | None:
    """trafilatura's ``extract_author`` (same answer) without its whole-page copy and re:test.

    trafilatura deep-copies the page, deletes the author-discard sections and takes the first
    element of its first author expression that has a 3-119 character text. Here candidates
    come from one pass over the page, are sorted by expression (document order within one), and
    skipped when they stand in a discard section; one that holds a discard section is read
    from a pruned copy of itself.
    """
    ranked = sorted(((k, n, el) for n, el in enumerate(_candidates(tree)) if (k := _kind(el))),
                    key=lambda t: (t[0], t[1]))
    for _, _, el in ranked:
        if not isinstance(el.tag, str) or _discarded(el) or any(_discarded(a) for a in el.iterancestors()):
            continue
        if any(_discarded(d) for d in el.iterdescendants() if isinstance(d.tag, str)):
            el = prune_unwanted_nodes(deepcopy(el), AUTHOR_DISCARD_XPATHS)
        content = trim(" ".join(el.itertext()))
        if content and 2 < len(content) < 120:
            return normalize_authors(None, content)
    return None


def read_metadata(tree: HtmlElement, url: str | None) -> Document:
    """The record's metadata fields from ``tree`` (not modified), as ``trafilatura.Document``."""
    md = examine_meta(tree)
    if md.author and " " not in md.author:
        md.author = None  # as trafilatura: a one-word author meta is a handle or a site
    try:
        md = _json_ld(tree, md)
    except Exception as err:  # trafilatura's JSON readers have bugs on odd data
        LOG.debug("JSON-LD metadata: %s", err)
    if not md.title:
        md.title = extract_title(tree)
    if not md.author:
        md.author = _author(tree)
    if not md.url:
        md.url = extract_url(tree, url)
    if md.url:
        md.hostname = extract_domain(md.url, fast=True)
    params = set_date_params(False)
    params["url"] = md.url
    md.date = find_date(tree, **params)
    if not md.sitename:
        md.sitename = extract_sitename(tree)
    if md.sitename:
        md.sitename = md.sitename.lstrip("@")
        if md.sitename and "." not in md.sitename and not md.sitename[0].isupper():
            md.sitename = md.sitename.title()
    elif md.url:
        m = META_URL.match(md.url)
        if m:
            md.sitename = m[1]
    if not md.categories:
        md.categories = [c for c in (line_processing(v) for v in tree.xpath(
            './/head//meta[@property="article:section" or contains(@name, "subject")]/@content')) if c]
    md.filedate = params.get("max_date")
    md.clean_and_trim()
    return md
