"""HTML-level pruning before trafilatura: page parts that are never the article body.

trafilatura already drops a long list of boilerplate containers (nav, footer, aside, share,
newsletter, related, ...). What still reaches its output on news pages are a few *kinds*
of blocks that it cannot tell from body text once they sit inside the article container:

* **fact boxes / info boxes** ("Fakta", "Info", "Das Wichtigste in Kürze" boxes);
* **author bios** ("about the author" boxes);
* **embedded social posts** (tweets, Instagram and TikTok embeds);
* elements whose ``aria-label`` names them as newsletter, related, recommended or share blocks.

The rules look at generic markup only (``aria-label`` and whole class/id *tokens*, so
"bionic" or "factory" are not "bio"/"fact"), never at a site. A candidate is kept when it holds most of the page's paragraph
text, so a wrapper that happens to carry such a class cannot take the story with it.
"""

from __future__ import annotations

import re

from lxml.html import HtmlElement

__all__ = ["embedded_body_html", "page_headlines", "prune_tree"]

# class/id tokens (split on non-letters, lower-cased) naming a fact/info box or an author bio
_BOX_TOKEN = re.compile(
    r"^(?:fact|facts|factbox|facts?box|infobox|infokasten|faktenbox|faktabox|faktaboks|faktaruta|fakta|"
    r"authorbio|authorbox|biography|bio|abouttheauthor|"
    r"twitter|tweet|instagram|tiktok)$"
)
# the same, across a token boundary: "fact-box", "info_box", "author-bio", "twitter-tweet"
_BOX_PAIR = re.compile(
    r"(?:^|[^a-z])(?:fact[s]?[-_ ]?box|info[-_ ]?box|info[-_ ]?kasten|fakten[-_ ]?box|author[-_ ]?bio|"
    r"author[-_ ]?box|about[-_ ]?(?:the[-_ ]?)?author|twitter[-_ ]?tweet|instagram[-_ ]?media|tiktok[-_ ]?embed)"
    r"(?:$|[^a-z])",
    re.IGNORECASE,
)
_ARIA_LABEL = re.compile(
    r"\b(?:newsletter|related|recommended|more (?:stories|articles|news)|read more|share|teilen|partager|"
    r"compartir|fakta|fact ?box|info ?box|about the author)\b",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"[^a-z]+")
# a class name holding one of these tokens is a taxonomy label (WordPress post_class(), CMS tags)
_TAXONOMY = re.compile(r"^(?:category|categories|cat|tag|tags|topic|topics|term|terms|label|labels|keyword|keywords|"
                       r"rubrik|ressort|format|type)$")
# cheap prefilter: a box's class/id contains one of these stems (one C-level search per element)
_STEMS = re.compile(r"fact|fakt|info|bio|author|about|tweet|twitter|instagram|tiktok", re.IGNORECASE)
_SKIP_TAGS = {"html", "body", "main", "head"}
_MAX_SHARE = 0.5  # never prune an element holding this share of the page's paragraph text


def _tokens(value: str) -> list[str]:
    return [t for t in _SPLIT.split(value.lower()) if t]


def _role_names(value: str) -> list[str]:
    """The class/id names that say what an element *is*: taxonomy names (``category-twitter``,
    ``tag-instagram``, ``entry-category-facts``) say what a post is *about* and are left out."""
    return [name for name in value.split() if not any(_TAXONOMY.match(t) for t in _tokens(name))]


def _is_box(el: HtmlElement) -> bool:
    for attr in ("class", "id"):
        value = el.get(attr)
        if not value:
            continue
        for name in _role_names(value):
            if any(_BOX_TOKEN.match(t) for t in _tokens(name)) or _BOX_PAIR.search(name):
                return True
    label = el.get("aria-label")
    return bool(label and len(label) <= 80 and _ARIA_LABEL.search(label))


def _para_chars(el: HtmlElement) -> int:
    return sum(len(p.text_content()) for p in el.iter("p"))


def page_headlines(tree: HtmlElement, limit: int = 3) -> list[str]:
    """The page's first ``<h1>`` texts (the visible headline; og:title often differs)."""
    out: list[str] = []
    for h in tree.iter("h1"):
        text = " ".join(h.text_content().split())
        if text and len(text) <= 300:
            out.append(text)
            if len(out) >= limit:
                break
    return out


def prune_tree(tree: HtmlElement) -> int:
    """Remove the blocks described in the module docstring from ``tree`` in place.

    Returns the number of elements removed (0 when nothing matched).
    """
    body = tree.find(".//body")
    if body is None:
        body = tree
    doomed: list[HtmlElement] = []
    for el in body.iter():
        if not isinstance(el.tag, str) or el.tag in _SKIP_TAGS:
            continue
        cls, ident = el.get("class"), el.get("id")
        if (
            (cls and _STEMS.search(cls)) or (ident and _STEMS.search(ident))
            or el.get("aria-label")
        ) and _is_box(el):
            doomed.append(el)
    removed = 0
    total = _para_chars(body) if doomed else 0
    for el in doomed:
        parent = el.getparent()
        if parent is None:
            continue
        if total and _para_chars(el) >= _MAX_SHARE * total:
            continue
        el.drop_tree()
        removed += 1
    return removed


# --- article body embedded in script data (client-rendered pages) -------------------------
# A JSON string literal long enough to be an article body, holding HTML paragraphs
# (escaped as "<p" or "\u003cp").
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.){400,})"')
_PARA_MARK = re.compile(r"<p[\s>]|\\u003cp[\s>\\]", re.IGNORECASE)


def embedded_body_html(tree: HtmlElement, *, min_paragraphs: int = 3) -> str | None:
    """The article body of a client-rendered page, from the JSON data in its ``<script>`` tags.

    Next.js/Nuxt-style pages ship the story as an HTML string inside hydration data
    (``"contentHtml": "<p>...</p>"``) and render nothing server-side. Returns the longest
    such HTML string with at least ``min_paragraphs`` paragraphs, wrapped as a document
    (None if there is none). Only used on the recovery path, when the page yields no body.
    """
    import json

    best: str | None = None
    for script in tree.iter("script"):
        text = script.text
        if not text or len(text) < 400 or script.get("type") in ("application/ld+json",):
            continue
        if len(_PARA_MARK.findall(text)) < min_paragraphs:
            continue
        for m in _JSON_STRING.finditer(text):
            lit = m.group(1)
            if len(_PARA_MARK.findall(lit)) < min_paragraphs or (best and len(lit) <= len(best)):
                continue
            try:
                value = json.loads(f'"{lit}"')
            except ValueError:
                continue
            if len(re.findall(r"<p[\s>]", value, re.IGNORECASE)) >= min_paragraphs:
                best = value
    return f"<html><body><article>{best}</article></body></html>" if best else None
