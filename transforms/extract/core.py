"""The extractor itself, pure and Beam-free: one page's HTML in, an ``Extracted`` (or an
``ExtractionError``) out. The Beam stage (``stage.py``), the worker pool (``pool.py``) and
``copydesk extract`` all run this one function with the same ``ExtractConfig``."""

from __future__ import annotations

import os
import re
import time
import unicodedata
from dataclasses import dataclass, field

from trafilatura.baseline import baseline
from trafilatura.utils import load_html

from copydesk.schemas.reasons import Reason
from copydesk.schemas.records import WireInfo
from copydesk.transforms.extract.cascade import extractor_options, is_page_dump, run_cascade
from copydesk.transforms.extract.clean import clean_authors, clean_text
from copydesk.transforms.extract.meta import read_metadata
from copydesk.transforms.extract.prune import embedded_body_html, page_headlines, prune_tree
from copydesk.transforms.extract.repair import repair_html
from copydesk.transforms.extract.wire import detect_wire

#: Environment variable that enables the test hooks in :func:`extract_article` (and so in
#: pool workers, which inherit the environment). Never set in production.
TEST_HOOKS_ENV = "COPYDESK_EXTRACT_TEST_HOOKS"


@dataclass(slots=True, frozen=True, kw_only=True)
class ExtractConfig:
    """Extraction options. Defaults are the measured best on both page sets (docs/extract.md).

    ``compare``: when trafilatura's readability/justext comparison runs. ``"auto"`` (default):
    only when the main extractor's quick result looks wrong (short, made of short lines, or
    much shorter than the page's largest paragraph block: ``cascade.looks_wrong``);
    ``"always"``: on every page, as trafilatura's default mode (more CPU, lower F1 on both
    sets). ``favor_precision`` / ``favor_recall`` / ``include_tables=False`` / ``deduplicate``
    all scored lower. ``prune``: HTML-level pruning of fact boxes, author bios, social embeds
    and aria-labelled newsletter/related blocks (copydesk.transforms.extract.prune).
    """

    compare: str = "auto"
    favor_precision: bool = False
    favor_recall: bool = False
    include_tables: bool = True
    deduplicate: bool = False
    max_html_chars: int = 5_000_000
    min_text_chars: int = 1
    clean: bool = True  # post-cleaning (copydesk.transforms.extract.clean)
    wire: bool = True  # wire attribution (copydesk.transforms.extract.wire)
    recover_below_chars: int = 250  # retry with favor_recall, then trafilatura.baseline
    prune: bool = True  # HTML-level pruning before trafilatura (copydesk.transforms.extract.prune)
    timeout_s: float = 10.0  # per page, enforced by the extraction pool (not in-process)
    memory_mb: int = 512  # address space a worker may add for one page (pool workers only; 0 = no limit)
    sketch: bool = False  # the worker also computes the text's content hash and dedup sketch (pool._run_one)

    def __post_init__(self) -> None:
        if self.compare not in COMPARE_MODES:
            raise ValueError(f"compare must be one of {', '.join(COMPARE_MODES)}, not {self.compare!r}")


#: ``ExtractConfig.compare`` values
COMPARE_MODES = ("auto", "always")


@dataclass(slots=True)
class Extracted:
    text: str
    title: str | None = None
    authors: list[str] = field(default_factory=list)
    published_at: str | None = None
    language: str | None = None
    site_name: str | None = None
    description: str | None = None
    canonical_url: str | None = None
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    image: str | None = None
    wire: WireInfo = field(default_factory=WireInfo)
    photo_credits: list[str] = field(default_factory=list)
    # with ExtractConfig(sketch=True), set by the worker (pool._run_one): the text's content hash
    # and its dedup sketch (copydesk.transforms.sketch), from one tokenisation, where the text is made
    content_hash: str = ""
    sketch: bytes = b""


class ExtractionError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # picklable across the pool's process boundary
        return (ExtractionError, (self.reason, str(self)))


def _test_hook(html: str) -> None:
    """Misbehave on purpose for the pool's failure-mode tests, only when enabled by env.

    Markers: ``<!--copydesk-test:hang-->`` sleeps for an hour, ``:crash`` kills the
    process with ``os._exit`` (as a segfault would), ``:raise`` raises RuntimeError.
    """
    if "<!--copydesk-test:" not in html[:200] or os.environ.get(TEST_HOOKS_ENV) != "1":
        return
    if "<!--copydesk-test:hang-->" in html[:200]:
        time.sleep(3600)
    if "<!--copydesk-test:crash-->" in html[:200]:
        os._exit(139)
    if "<!--copydesk-test:raise-->" in html[:200]:
        raise RuntimeError("test hook: raise")


_LANG = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*$")


def page_language(tree) -> str | None:
    """The page's declared language as a lower-case primary subtag ("en-US" -> "en"):
    ``<html lang>`` / ``xml:lang``, else ``<meta http-equiv=content-language>``, else
    ``og:locale``. trafilatura fills ``language`` only when asked to filter by language."""
    if tree is None:
        return None
    root = tree.getroottree().getroot() if hasattr(tree, "getroottree") else tree
    values = [root.get("lang"), root.get("{http://www.w3.org/XML/1998/namespace}lang")]
    values += root.xpath('//meta[translate(@http-equiv,"CONTENTLAGU","contentlagu")="content-language"]/@content')
    values += root.xpath('//meta[@property="og:locale"]/@content')
    for v in values:
        m = _LANG.match((v or "").strip().split(",")[0].strip())
        if m:
            return m.group(1).lower()
    return None


def _split_list(value) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if v and v.strip()]


def _nfc(text: str | None) -> str:
    return unicodedata.normalize("NFC", text or "").strip()


def _options(config: ExtractConfig, url: str | None, *, favor_recall: bool | None = None):
    return extractor_options(
        fast=False, url=url, include_tables=config.include_tables, favor_precision=config.favor_precision,
        favor_recall=config.favor_recall if favor_recall is None else favor_recall, deduplicate=config.deduplicate)


def _recover(tree, url: str | None, config: ExtractConfig, raw: str, headlines: list[str]) -> str:
    """A body for a page whose extraction came out short (under ``recover_below_chars``).

    Candidates: trafilatura in recall mode, ``trafilatura.baseline`` (JSON-LD articleBody,
    ``<article>``, paragraphs, else the whole page's text) and a body in script data
    (client-rendered pages); the longest wins. A whole-page dump or a link list
    (:func:`cascade.is_page_dump`) never replaces a plausible short body, nor the headline of
    a page that has nothing else (a picture or video post): it is only the last resort.
    """
    alt = _nfc(run_cascade(tree, _options(config, url, favor_recall=True), gate=config.compare == "auto").text)
    if len(alt) > len(raw):
        raw = alt
    dump = ""
    if len(raw) < config.recover_below_chars:
        try:
            _, base_text, _ = baseline(tree)  # copies the tree
        except Exception:  # the fallback must never turn a short page into an error
            base_text = ""
        base_text = _nfc(base_text)
        if len(base_text) > max(len(raw), 2 * config.min_text_chars):
            if is_page_dump(base_text, tree):
                dump = base_text
            else:
                raw = base_text
    if len(raw) < config.recover_below_chars:  # client-rendered: the body is in script data
        embedded = embedded_body_html(tree)
        if embedded:
            page = load_html(embedded)
            hydrated = "" if page is None else run_cascade(page, _options(config, url, favor_recall=True), gate=False).text
            if len(_nfc(hydrated)) > len(raw):
                raw = _nfc(hydrated)
    if len(raw) < config.min_text_chars:
        raw = headlines[0] if headlines else dump
    return raw


def parse_page(html: str):
    """The page's tree (trafilatura's ``load_html``), or None when it does not parse."""
    return load_html(html)


def extract_article(html: str, url: str | None = None, config: ExtractConfig = ExtractConfig()) -> Extracted:
    """Extract the article body and metadata from one page; raise ExtractionError(empty) if none.

    The page is parsed once; every step works on that tree. Steps: metadata (``meta.py``), the
    page's language and visible headlines, HTML pruning, trafilatura's cascade (``cascade.py``;
    the comparison runs when the quick result looks wrong); if the body is very short, the
    recovery candidates of :func:`_recover`; wire attribution on the *raw* text (cleaning
    removes the sign-offs it looks at); then post-cleaning (photo credits kept aside). Text is
    NFC-normalised like ``trafilatura.extract`` output. A page that yields nothing is retried
    once on a repaired copy (``repair.py``: unclosed title, run-in tags) before it is empty.
    """
    if len(html) > config.max_html_chars:
        raise ExtractionError(Reason.TOO_LARGE, f"page has {len(html)} characters (max {config.max_html_chars})")
    _test_hook(html)
    try:
        return _extract_tree(parse_page(html), html, url, config)
    except ExtractionError as exc:
        if exc.reason != Reason.EMPTY:
            raise
        fixed = repair_html(html)
        if fixed == html:
            raise
        return _extract_tree(parse_page(fixed), fixed, url, config)


def _extract_tree(tree, html: str, url: str | None, config: ExtractConfig) -> Extracted:
    if tree is None:
        raise ExtractionError(Reason.EMPTY, "the page does not parse as HTML")
    doc = read_metadata(tree, url)
    language = page_language(tree)
    headlines = page_headlines(tree)
    raw_authors = [a.strip() for a in (doc.author or "").split(";") if a.strip()]
    if config.prune:
        prune_tree(tree)
    result = run_cascade(tree, _options(config, url), gate=config.compare == "auto")  # prunes comments only
    raw = _nfc(result.text)
    if len(raw) < config.recover_below_chars:
        raw = _recover(tree, url, config, raw, headlines)
    if len(raw) < config.min_text_chars:
        raise ExtractionError(Reason.EMPTY, "no article text found")

    site_name = doc.sitename
    authors, author_agencies = clean_authors(raw_authors, site_name=site_name)
    title = doc.title
    wire = WireInfo()
    if config.wire:
        wire = detect_wire(raw, authors=raw_authors, title=title, tree=tree, site=url)
        for code in author_agencies:
            if code not in wire.agencies:
                wire.agencies.append(code)
    text, credits = raw, []
    if config.clean:
        cleaned = clean_text(raw, title=title, authors=authors, headlines=headlines)
        if len(cleaned.text) >= config.min_text_chars:
            text, credits = cleaned.text, cleaned.photo_credits
        else:  # a headline-only post (a picture, a video): its headline is its text
            heads = [line for rule, line in cleaned.removed if rule in ("title", "before_title")]
            if heads:
                text, credits = "\n".join(heads), cleaned.photo_credits
    return Extracted(
        text=text,
        title=title,
        authors=authors,
        published_at=doc.date,
        language=doc.language or language,
        site_name=site_name,
        description=doc.description,
        canonical_url=doc.url if doc.url and doc.url != url else None,
        categories=_split_list(doc.categories),
        tags=_split_list(doc.tags),
        image=doc.image,
        wire=wire,
        photo_credits=credits,
    )
