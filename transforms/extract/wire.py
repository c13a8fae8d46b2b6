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

from copydesk.schemas.records import WireInfo
from copydesk.transforms import agencies

__all__ = ["AGENCIES", "detect_wire", "agency_code", "SITE_AGENCIES"]

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


_META_AUTHOR = re.compile(
    r"<meta\s+[^>]*(?:name|property)=[\"'](?:author|article:author|byl|dc\.creator|sailthru\.author|"
    r"parsely-author|cXenseParse:author|articleAuthor)[\"'][^>]*content=[\"']([^\"']{1,80})[\"']",
    re.IGNORECASE,
)
_JSONLD_AUTHOR = re.compile(
    r"\"author\"\s*:\s*\[?\s*\{[^{}]{0,300}?\"name\"\s*:\s*\"([^\"]{1,80})\"", re.IGNORECASE
)
# A page element whose whole text is an agency byline: <div class="author">Von DPA</div>,
# <p>AFP, MANILA</p>. Elements that are photo captions/credits are skipped by class name.
_HTML_BYLINE = re.compile(
    rf"<(?P<tag>div|span|p|address|dd|strong|b)(?P<attrs>[^>]*)>\s*(?:(?:by|von|por|par)\s+)?"
    rf"(?P<txt>{_AG}(?:\s*,\s*[A-ZÀ-Ý][A-ZÀ-Ý .'-]{{2,40}})?)\s*</(?P=tag)>",
    re.IGNORECASE,
)
# "Diana Resnik</a> mit&nbsp;<b>AP</b>": a byline "Author with Agency" split over elements
_HTML_WITH = re.compile(
    rf"</a>\s*(?:with|mit|avec|con|et|und|and)(?:&nbsp;|\s)+(?:<(?:b|strong|span|a)[^>]*>\s*)?(?P<txt>{_AG})\s*<",
    re.IGNORECASE,
)
_PHOTO_ATTR = re.compile(r"caption|credit|photo|image|img|media|pict|distributor|copyright|figure|gallery|"
                         r"video|foto|bild|logo|nav|menu|footer|avatar|initials|teaser|related", re.IGNORECASE)
_HTML_MAX_SCAN = 600_000
_AFTER_IMAGE = re.compile(r"<img\b|</picture>|<figcaption\b", re.IGNORECASE)


_ATTR_VALUES = re.compile(r"(?:class|id|itemprop|title|data-[\w-]+)=[\"']([^\"']*)[\"']", re.IGNORECASE)


def _body_start(html: str, text: str) -> int:
    """Where the story's first long paragraph starts in the HTML (-1 if not found).

    A byline precedes the story; agency names in elements after that point are teasers
    of other articles, captions or footers.
    """
    body = max(html.find("<body"), 0)  # the lead also stands in <head> (meta description, JSON-LD)
    found = []
    for line in text.split("\n"):
        line = line.strip()
        if len(line) >= 60:
            at = html.find(line[:30], body)
            if at >= 0:
                found.append(at)
            if len(found) == 3:
                break
    # A byline can follow a standfirst/lead paragraph or two ("Tausende sind ..." / byline /
    # story): scan up to the third long paragraph of the story, not the first.
    return max(found) if found else -1


def _from_html(html: str, text: str = "") -> tuple[list[str], str | None]:
    """Agencies given as the page's author (meta/JSON-LD) or in a byline element."""
    head = html[:_HTML_MAX_SCAN]
    found: list[str] = []
    attribution: str | None = None
    for rx in (_META_AUTHOR, _JSONLD_AUTHOR):
        for m in rx.finditer(head):
            name = _html.unescape(m.group(1)).strip()
            if "/" in name:
                continue  # "EFE/ J.J. Guillén": an image's author, i.e. a photo credit
            for part in re.split(r"\s*[,;]\s*|\s+(?:with|mit|avec|et|and|und)\s+", name):
                code = agency_code(part)
                if code and code != "CP" and code not in found:
                    found.append(code)
                    attribution = attribution or name
    end = _body_start(head, text) if text else -1
    for m in _HTML_BYLINE.finditer(head, 0, max(end, 0)):
        ctx = " ".join(_ATTR_VALUES.findall(head[max(0, m.start() - 160):m.start()]))
        if _PHOTO_ATTR.search(m.group("attrs") or "") or _PHOTO_ATTR.search(ctx):
            continue  # a credit inside a figure/caption, an avatar, navigation
        if m.group("txt") == m.group(0)[m.group(0).find(">") + 1:].split("<")[0].strip() and \
                _AFTER_IMAGE.search(head, max(0, m.start() - 300), m.start()):
            continue  # a bare agency name just after a picture (class names obfuscated): its credit
        txt = m.group("txt")
        first = txt.split(",")[0].strip()
        if len(first) <= 2:
            continue  # two-letter codes (AP, PA, AA, TT) in page chrome are too ambiguous
        codes = _codes_in(txt)
        if codes:
            for c in codes:
                if c not in found:
                    found.append(c)
            attribution = attribution or re.sub(r"\s+", " ", txt)
    for m in _HTML_WITH.finditer(head, 0, max(end, 0)):
        codes = _codes_in(m.group("txt"))
        if codes:
            for c in codes:
                if c not in found:
                    found.append(c)
            attribution = attribution or re.sub(r"\s+", " ", m.group("txt"))
    return found, attribution


def detect_wire(
    text: str,
    *,
    authors: Iterable[str] = (),
    title: str | None = None,
    html: str | None = None,
    site: str | None = None,
    edge_lines: int = 6,
) -> WireInfo:
    """Find the agencies a story is credited to; return codes, the credit as printed, dateline.

    ``text`` is the extracted text *before* post-cleaning (cleaning removes the sign-off
    lines this looks at). ``authors`` are the raw byline names, ``site`` the page URL or
    host (an agency's own site counts as that agency), ``html`` the page, for author
    metadata and byline elements that did not make it into the text. ``title`` is
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
    if html:
        codes, printed = _from_html(html, text or "")
        add(codes, printed)
    code = _site_agency(site)
    if code:
        add([code], None)
    return WireInfo(agencies=agencies, attribution=attribution, dateline=dateline)
