"""Wire attribution: which news agencies a story is credited to, as printed.

A story is wire copy when the page *credits* an agency for it: in the dateline
("KABUL, Afghanistan (AP) —", "Berlin (dpa) -"), in the byline ("By Euronews with AP",
"Von dpa", "Le Figaro et AFP"), in a credit line at the end ("(dpa)", "SDA/sep",
"— Agence France-Presse", "mit Material von dpa", "With files from The Associated Press",
"Con información de EFE"), in the author metadata (an agency given as the author), or
because the page is on the agency's own site (apnews.com, reuters.com, afp.com, dpa.com).

What is *not* attribution, and is deliberately not matched:
* photo credits ("Copyright Mirwais Najand/AP", "Foto: dpa", "Photo: Reuters",
  "STR/AFP via Getty Images") -- they credit a picture, not the story;
* mentions in the body ("Reuters reported that ...", "told The Associated Press") -- the
  patterns below only accept the fixed shapes credits are printed in, and only in the
  first or last lines of the text where datelines, bylines and sign-offs live.

Agencies are reported with canonical codes (see ``AGENCIES``). Besides the ten required
ones (AP, Reuters, AFP, dpa, EFE, ANSA, PA, Kyodo, Xinhua, Anadolu) the table covers the
other national agencies whose credits appear on European and international pages (KNA,
epd, APA, SDA, Belga, ANP, TT, NTB, Ritzau, Europa Press, Yonhap, AAP, CP, UPI, SID) and
Bloomberg (its newswire is syndicated like agency copy; only counted when credited the
same way, e.g. "(Bloomberg) --").
"""

from __future__ import annotations

import html as _html
import re
from typing import Iterable
from urllib.parse import urlsplit

from lxml.etree import XPath
from trafilatura.utils import load_html

from copydesk.schemas.records import WireInfo
from copydesk.transforms import agencies

__all__ = ["AGENCIES", "detect_wire", "agency_code", "page_agencies", "SITE_AGENCIES"]

# code -> name pattern (regex alternatives): the one table in transforms/agencies.py
AGENCIES: dict[str, str] = agencies.NAME_PATTERNS
_ORDER = list(AGENCIES)
_ALT = "|".join(f"(?P<a{k}>{pat})" for k, pat in enumerate(AGENCIES.values()))
_AG = "(?:" + "|".join(f"(?:{pat})" for pat in AGENCIES.values()) + ")"  # no groups: reusable
_AG_RE = re.compile(rf"^\s*(?:{_ALT})\s*$", re.IGNORECASE)
_AG_SEARCH = re.compile(rf"(?<![\w-])(?:{_ALT})(?![\w-])", re.IGNORECASE)

SITE_AGENCIES: dict[str, str] = agencies.DOMAIN_CODES

_DASH = r"[—–-]{1,2}"
# "KABUL, Afghanistan (AP) —", "WASHINGTON, March 7 (Reuters) -", "Berlin (dpa) -",
# "Madrid, 12 ene (EFE).-", "(ANSA) - ROMA"
_DATELINE = re.compile(
    rf"^(?P<dl>(?P<place>[^\n()]{{0,80}}?)\s*\((?P<ags>{_AG}(?:\s*[/,]\s*{_AG})*)\)\s*(?:\.?\s*{_DASH}|:))",
    re.IGNORECASE,
)
# "By Euronews with AP", "Diana Resnik mit AP", "Le Figaro et AFP", "Redaktion mit dpa"
_BYLINE_WITH = re.compile(
    rf"^(?:(?:by|von|par|por|di)\s+)?(?:[^\n.!?]{{1,60}}?\s+)?(?:with|mit|avec|con|and|und|et|y|&)\s+"
    rf"(?P<ags>{_AG}(?:\s*(?:,|and|und|et|y|&)\s*{_AG})*)\s*\.?$",
    re.IGNORECASE,
)
# "Reuters", "Von dpa", "AFP, MANILA", "By Associated Press", "Associated Press in Valencia"
_BYLINE_ONLY = re.compile(
    rf"^(?:{_DASH}\s*)?(?:(?:by|von|par|por|di|fuente|quelle|source)\s*:?\s+)?(?P<ags>{_AG}(?:\s*[/,]\s*{_AG})*)"
    rf"(?:\s*,\s*[A-ZÀ-Ý][A-ZÀ-Ý .'-]{{2,40}}|\s+in\s+[A-Z][\w .'-]{{2,40}})?\s*\.?$",
    re.IGNORECASE,
)
# "(dpa)", "— Agence France-Presse", "SDA/sep", "afp/dpa/sep", "(Quelle: APA/sda/dpa)"
_SIGNOFF = re.compile(
    rf"^(?:{_DASH}\s*)?\(?\s*(?:(?:quelle|source|fuente|fonte)\s*:\s*)?"
    rf"(?P<codes>[\w-]{{2,30}}(?:\s*[/,]\s*[\w-]{{2,30}}){{0,5}})\s*\)?\.?$",
    re.IGNORECASE,
)
# "mit Material von dpa", "With files from The Associated Press and X", "Con información de EFE",
# "With reporting by Associated Press writer X", "Additional reporting from PA", "avec AFP"
_CREDIT_PHRASE = re.compile(
    r"(?:(?:with|mit|avec|con)\s+(?:material|files|reporting|informaci[óo]n|informations?|agenturmaterial|"
    r"contributions?|additional reporting)\s+(?:von|from|by|de|der|of)\s+|additional reporting\s+(?:from|by)\s+|"
    r"(?:^|[\s(])(?:avec|mit|con)\s+(?=\S+\s*\)?\.?$)|"
    r"mit informationen\s+.{0,120}?(?:nachrichtenagenturen|agenturen)\s+|"
    r"(?:d['’]apr[eè]s|selon)\s+(?:l['’]agence\s+)?(?=\S+\s*\)?\.?$))"
    r"(?P<rest>.{1,200})$",
    re.IGNORECASE,
)
_CONTRIBUTED = re.compile(
    rf"(?P<ags>{_AG})\s+(?:writers?|reporters?|correspondents?|journalists?)\b.{{0,200}}\bcontributed",
    re.IGNORECASE,
)
_INFOCOM = re.compile(r"dpa-infocom|\bdpa:\d{6}-", re.IGNORECASE)
_PHOTO = re.compile(
    r"(?:^|\s|\()(?:copyright|©|photos?|fotos?|fotoğraf|bild(?:er)?|images?|pictures?|cr[ée]dits?|imagen|"
    r"foto de)\b\s*:?|via getty|getty images|/\s*(?:AP|AFP|Reuters|dpa|EPA|EFE)\s*(?:photo)?\s*$|"
    r"\b(?:AP|AFP|Reuters|EFE|dpa|EPA) ?(?:Photo|Foto|/)",
    re.IGNORECASE,
)


def agency_code(name: str) -> str | None:
    """Canonical code of an agency name as printed ("Associated Press" -> "AP"), else None."""
    m = _AG_RE.match(name or "")
    return _code_of(m) if m else None


def _code_of(m: re.Match[str]) -> str | None:
    for k, code in enumerate(_ORDER):
        if m.group(f"a{k}"):
            return code
    return None


def _codes_in(s: str) -> list[str]:
    out: list[str] = []
    for m in _AG_SEARCH.finditer(s):
        code = _code_of(m)
        if code and code not in out:
            out.append(code)
    return out


def _site_agency(site: str | None) -> str | None:
    if not site:
        return None
    host = (urlsplit(site).hostname if "//" in site else site.split("/")[0]) or ""
    return agencies.code_for_domain(host)


# author metadata naming an agency: <meta name="author" content="AFP">, JSON-LD "author": {"name": "dpa"}
_META_AUTHOR_NAMES = frozenset((
    "author", "article:author", "byl", "dc.creator", "sailthru.author", "parsely-author", "cxenseparse:author",
    "articleauthor"))
_JSONLD_AUTHOR = re.compile(
    r"\"author\"\s*:\s*\[?\s*\{[^{}]{0,300}?\"name\"\s*:\s*\"([^\"]{1,80})\"", re.IGNORECASE
)
# A page element whose whole text is an agency byline: <div class="author">Von DPA</div>,
# <p>AFP, MANILA</p>. Elements that are photo captions/credits are skipped by class name.
_BYLINE_TAGS = ("div", "span", "p", "address", "dd", "strong", "b")
_ELEMENT_BYLINE = re.compile(
    rf"^\s*(?:(?:by|von|por|par)\s+)?(?P<txt>{_AG}(?:\s*,\s*[A-ZÀ-Ý][A-ZÀ-Ý .'-]{{2,40}})?)\s*$",
    re.IGNORECASE,
)
# "<a>Diana Resnik</a> mit&nbsp;<b>AP</b>": a byline "Author with Agency" split over elements
_WITH_TAIL = re.compile(rf"^\s*(?:with|mit|avec|con|et|und|and)\s+(?P<txt>{_AG})?\s*$", re.IGNORECASE)
_WITH_NEXT = frozenset(("b", "strong", "span", "a"))
_PHOTO_ATTR = re.compile(r"caption|credit|photo|image|img|media|pict|distributor|copyright|figure|gallery|"
                         r"video|foto|bild|logo|nav|menu|footer|avatar|initials|teaser|related", re.IGNORECASE)
_CONTEXT_ATTRS = ("class", "id", "itemprop", "title")
# a bare agency name this close after a picture is its credit
_AFTER_IMAGE = XPath("preceding::*[position() <= 4][self::img or self::picture or self::figcaption]")
_STORY_TEXT = "::text()[contains(., $prefix)][not(parent::script or parent::style)][ancestor::body]"
_STORY_AFTER, _STORY_BEFORE = XPath("following" + _STORY_TEXT), XPath("preceding" + _STORY_TEXT)


def _attr_text(el) -> str:
    """The element's naming attributes (class, id, itemprop, title, data-*), joined."""
    return " ".join(v for k, v in el.attrib.items() if k in _CONTEXT_ATTRS or k.startswith("data-"))


def _in_photo_context(el) -> bool:
    """The element, its two nearest ancestors or the element before it is named as a picture,
    caption, avatar, navigation or teaser part."""
    near = [el, *list(el.iterancestors())[:2]]
    prev = el.getprevious()
    if prev is not None:
        near.append(prev)
    return any(_PHOTO_ATTR.search(_attr_text(e)) for e in near if isinstance(e.tag, str))


def _story_prefixes(text: str) -> list[str]:
    """The openings of the story's first three long paragraphs (a byline precedes one of them)."""
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if len(line) >= 60:
            out.append(line[:30])
            if len(out) == 3:
                break
    return out


def _before_story(el, prefixes: list[str]) -> bool:
    """``el`` stands before (the first place in ``<body>`` of) one of the story's first three long
    paragraphs.

    A byline can follow a standfirst/lead paragraph or two ("Tausende sind ..." / byline /
    story), so it counts up to the third long paragraph, not the first; agency names after
    the story are teasers of other articles, captions or footers.
    """
    return any(_STORY_AFTER(el, prefix=p) and not _STORY_BEFORE(el, prefix=p) for p in prefixes)


def page_agencies(tree, text: str = "") -> tuple[list[str], str | None]:
    """Agencies given as the page's author (meta/JSON-LD) or in a byline element, from the tree."""
    found: list[str] = []
    attribution: str | None = None

    def add(codes, printed: str) -> None:
        nonlocal attribution
        for c in codes:
            if c not in found:
                found.append(c)
                attribution = attribution or re.sub(r"\s+", " ", printed)

    names = [m.get("content") or "" for m in tree.iter("meta")
             if (m.get("name") or m.get("property") or "").lower() in _META_AUTHOR_NAMES]
    for script in tree.iter("script"):
        if script.text and '"author"' in script.text:
            names += _JSONLD_AUTHOR.findall(script.text)
    for name in names:
        name = _html.unescape(name).strip()
        if not name or len(name) > 80 or "/" in name:
            continue  # "EFE/ J.J. Guillén": an image's author, i.e. a photo credit
        for part in re.split(r"\s*[,;]\s*|\s+(?:with|mit|avec|et|and|und)\s+", name):
            code = agency_code(part)
            if code and code != "CP":
                add([code], name)
    prefixes = _story_prefixes(text) if text else []
    if not prefixes:
        return found, attribution
    body = tree.find(".//body")
    for el in (body.iter(*_BYLINE_TAGS) if body is not None else ()):
        txt = el.text
        if not txt or len(txt) >= 90 or len(el):
            continue  # a byline element holds only its short text
        m = _ELEMENT_BYLINE.match(txt)
        if not m or len(m.group("txt").split(",")[0].strip()) <= 2:
            continue  # two-letter codes (AP, PA, AA, TT) in page chrome are too ambiguous
        if _in_photo_context(el):
            continue  # a credit inside a figure/caption, an avatar, navigation
        if m.group("txt").strip() == txt.strip() and _AFTER_IMAGE(el):
            continue  # a bare agency name just after a picture (class names obfuscated): its credit
        if _before_story(el, prefixes):
            add(_codes_in(m.group("txt")), m.group("txt"))
    for a in (body.iter("a") if body is not None else ()):
        tail = a.tail
        if not tail or len(tail) > 40:
            continue
        m = _WITH_TAIL.match(tail)
        if not m:
            continue
        txt = m.group("txt")
        if not txt:
            nxt = a.getnext()
            if nxt is None or nxt.tag not in _WITH_NEXT or len(nxt) or not _AG_RE.match(nxt.text or ""):
                continue
            txt = nxt.text.strip()
        if _before_story(a, prefixes):
            add(_codes_in(txt), txt)
    return found, attribution


def detect_wire(
    text: str,
    *,
    authors: Iterable[str] = (),
    title: str | None = None,
    html: str | None = None,
    tree=None,
    site: str | None = None,
    edge_lines: int = 6,
) -> WireInfo:
    """Find the agencies a story is credited to; return codes, the credit as printed, dateline.

    ``text`` is the extracted text *before* post-cleaning (cleaning removes the sign-off
    lines this looks at). ``authors`` are the raw byline names, ``site`` the page URL or
    host (an agency's own site counts as that agency), ``tree`` the parsed page (or ``html``,
    parsed here), for author metadata and byline elements that did not make it into the
    text (read from the tree, no regex over the raw page). ``title`` is
    accepted for callers that have it; a headline never carries attribution, so it is
    not searched (a headline mentioning Reuters is a mention).
    """
    del title
    agencies: list[str] = []
    attribution: str | None = None
    dateline: str | None = None

    def add(codes: Iterable[str], printed: str | None) -> None:
        nonlocal attribution
        new = False
        for c in codes:
            if c and c not in agencies:
                agencies.append(c)
                new = True
        if new and printed and attribution is None:
            attribution = re.sub(r"\s+", " ", printed).strip()

    lines = [ln.strip() for ln in (text or "").split("\n") if ln.strip()]
    n = len(lines)
    for idx, line in enumerate(lines):
        head, tail = idx < edge_lines, idx >= n - edge_lines
        if not (head or tail):
            continue
        body = re.sub(r"\s+", " ", re.sub(r"^[-•*]\s+", "", line))
        if head and dateline is None:
            m = _DATELINE.match(body)
            if m and len(m.group("place")) <= 80:
                dateline = m.group("dl").strip()
                add(_codes_in(m.group("ags")), None)
                continue
        if len(body) > 300:
            continue
        if _PHOTO.search(body):
            continue  # photo credits and captions are not story attribution
        if len(body) <= 80:
            m = _BYLINE_WITH.match(body) or _BYLINE_ONLY.match(body)
            if m:
                add(_codes_in(m.group("ags")), body)
                continue
        if tail and len(body) <= 60:
            m = _SIGNOFF.match(body)
            if m:
                parts = re.split(r"\s*[/,]\s*", m.group("codes"))
                codes = [agency_code(p) for p in parts]
                if any(codes) and all(len(p) <= 6 for p in parts):
                    # lowercase desk codes ("sep") are editors' initials next to the agency
                    add([c for c in codes if c], body)
                    continue
        m = _CREDIT_PHRASE.search(body)
        if m:
            codes = [c for c in _codes_in(m.group("rest")) if c != "CP" or "Canadian" in m.group("rest")]
            if codes:
                add(codes, body)
                continue
        m = _CONTRIBUTED.search(body)
        if m and tail:
            add(_codes_in(m.group("ags")), body)
            continue
        if tail and _INFOCOM.search(body):
            add(["dpa"], body)
            continue

    for a in authors or ():
        for part in re.split(r"\s*[;,/]\s*|\s+(?:with|mit|avec|et|and|und|y)\s+", a or ""):
            part = re.sub(r"^(?:by|von|par|por)\s+", "", part.strip(), flags=re.IGNORECASE)
            code = agency_code(part)
            if code:
                add([code], a)
    if tree is None and html:
        tree = load_html(html)
    if tree is not None:
        codes, printed = page_agencies(tree, text or "")
        add(codes, printed)
    code = _site_agency(site)
    if code:
        add([code], None)
    return WireInfo(agencies=agencies, attribution=attribution, dateline=dateline)
