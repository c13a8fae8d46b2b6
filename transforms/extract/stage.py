"""Article extraction: trafilatura with metadata (pure function) and the Beam stage.

``extract_article`` is the one extraction function; ``copydesk extract`` and the streaming
pipeline both call it.
"""

from __future__ import annotations

import os
import re
import time
import unicodedata
from dataclasses import dataclass, field

import apache_beam as beam
from trafilatura.baseline import baseline
from trafilatura.utils import load_html

from copydesk.schemas.reasons import Reason, Stage
from copydesk.schemas.records import ArticleRecord, DeadLetter, FetchedPage, WireInfo
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


class _ExtractDoFn(beam.DoFn):
    """Extract pages on the supervised pool (all cores) while the bundle goes on.

    ``process`` hands each page to the pool and returns at once, emitting whatever pages
    have finished meanwhile; it waits only when ``max_buffer`` pages are in flight.
    ``finish_bundle`` waits for the rest. So the workers extract while the stages before
    this one read and parse the next messages, instead of in turns with them. Results come
    out in the order they finish; each keeps its input's window and timestamp. The pool is
    leased in ``setup`` and given back in ``teardown`` (pool.lease/release): the next
    micro-batch of the local runner reuses its workers. Beam metrics: see
    :mod:`copydesk.transforms.stage_metrics` (pages whose text is under ``short_chars``
    count as short for the per-domain extraction health).
    """

    DEAD = "dead_letter"

    def __init__(self, config: ExtractConfig, workers: int | None = None, max_buffer: int = 64,
                 short_chars: int = 250) -> None:
        self.config = config
        self.workers = workers
        self.max_buffer = max_buffer
        self.short_chars = short_chars
        self._pool = None
        self._inflight: dict = {}
        self._next = 0
        self._metrics = None

    def setup(self) -> None:
        from copydesk.transforms.extract.pool import lease
        from copydesk.transforms.extract.metrics import ExtractMetrics

        self._pool = lease(self.config, self.workers)
        self._metrics = ExtractMetrics(short_chars=self.short_chars)

    def teardown(self) -> None:
        if self._pool is not None:
            from copydesk.transforms.extract.pool import release

            release(self._pool)
            self._pool = None

    def start_bundle(self) -> None:
        if self._pool is not None and (self._inflight or self._pool.pending):
            self._pool.close()  # a failed bundle left pages in it: drop them (new workers on demand)
        self._inflight = {}

    def process(self, page: FetchedPage, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        if self._pool is None or self._metrics is None:
            self.setup()
        tag, self._next = self._next, self._next + 1
        self._inflight[tag] = (page, timestamp, window)
        self._metrics.pages(1)
        self._pool.submit(page.html, page.final_url or page.message.url, tag=tag)
        yield from self._emit(self._pool.results(wait=len(self._inflight) >= self.max_buffer))

    def finish_bundle(self):
        while self._inflight:
            yield from self._emit(self._pool.results(wait=True))

    def _emit(self, done):
        import logging

        from apache_beam.utils.windowed_value import WindowedValue

        from copydesk.schemas.codec import dead_letter
        from copydesk.transforms.extract.article import build_article
        from copydesk.transforms.extract.pool import ExtractFailure
        from copydesk.transforms.stage_metrics import log_fields
        from copydesk.transforms.urls import domain_of

        log = logging.getLogger(__name__)
        m = self._metrics
        for tag, res, seconds in done:
            page, ts, win = self._inflight.pop(tag)
            msg = page.message
            domain = domain_of(page.final_url or msg.url)
            m.seconds(seconds)
            if isinstance(res, ExtractFailure):
                m.dead(domain, res.reason)
                if res.reason != Reason.EMPTY:  # empty pages are routine; timeouts/crashes are not
                    log.warning("extraction failed (%s): %s", res.reason, res.message,
                                extra=log_fields(msg.ref, url=msg.url, reason=str(res.reason), stage="extract"))
                yield beam.pvalue.TaggedOutput(self.DEAD, WindowedValue(dead_letter(
                    Stage.EXTRACT, res.reason, res.message, ref=msg.ref, raw=msg.raw, url=msg.url), ts, [win]))
                continue
            try:
                article = build_article(page, res)
            except Exception as exc:  # a record-building bug must not fail the bundle
                m.dead(domain, Reason.EXTRACT_ERROR)
                log.warning("building the article record failed: %s: %s", type(exc).__name__, exc, exc_info=True,
                            extra=log_fields(msg.ref, url=msg.url, reason=str(Reason.EXTRACT_ERROR), stage="extract"))
                yield beam.pvalue.TaggedOutput(self.DEAD, WindowedValue(dead_letter(
                    Stage.EXTRACT, Reason.EXTRACT_ERROR, f"{type(exc).__name__}: {exc}", ref=msg.ref,
                    raw=msg.raw, url=msg.url), ts, [win]))
                continue
            m.article(domain, article.text)
            yield WindowedValue(article, ts, [win])


class ExtractArticles(beam.PTransform):
    """FetchedPage -> (ArticleRecord, DeadLetter), extraction on a supervised process pool.

    ``workers``: pool size (None = one per core, 0 = in-process, for tests/tiny runs).
    """

    def __init__(self, config: ExtractConfig = ExtractConfig(), workers: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.workers = workers

    def expand(self, pages):
        out = pages | "Extract" >> beam.ParDo(_ExtractDoFn(self.config, self.workers)).with_outputs(
            _ExtractDoFn.DEAD, main="articles")
        return out.articles, out[_ExtractDoFn.DEAD]
