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
import trafilatura
from trafilatura.utils import load_html

from copydesk.schemas.reasons import Reason, Stage
from copydesk.schemas.records import ArticleRecord, DeadLetter, FetchedPage, WireInfo
from copydesk.transforms.extract.clean import clean_authors, clean_text
from copydesk.transforms.extract.prune import embedded_body_html, page_headlines, prune_tree
from copydesk.transforms.extract.wire import detect_wire

#: Environment variable that enables the test hooks in :func:`extract_article` (and so in
#: pool workers, which inherit the environment). Never set in production.
TEST_HOOKS_ENV = "COPYDESK_EXTRACT_TEST_HOOKS"


@dataclass(slots=True, frozen=True, kw_only=True)
class ExtractConfig:
    """Extraction options. Defaults are the measured best on the fundus pages (docs/extract.md).

    ``fast=True`` skips trafilatura's fallback extractors: ~17% more pages/s (CPU time) but
    recall drops from 0.971 to 0.960 (F1 0.966 -> 0.959) on the fundus pages, so it is off.
    ``favor_precision`` / ``favor_recall`` / ``include_tables=False`` / ``deduplicate`` all
    scored lower. ``prune``: HTML-level pruning of fact boxes, author bios, social embeds and
    aria-labelled newsletter/related blocks before trafilatura (copydesk.transforms.extract.prune).
    """

    fast: bool = False
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


def _bare(html, url: str | None, config: ExtractConfig, *, favor_recall: bool | None = None):
    return trafilatura.bare_extraction(
        html,
        url=url,
        with_metadata=True,
        include_comments=False,
        fast=config.fast,
        favor_precision=config.favor_precision and not favor_recall,
        favor_recall=config.favor_recall if favor_recall is None else favor_recall,
        include_tables=config.include_tables,
        deduplicate=config.deduplicate,
        as_dict=False,
    )


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


def extract_article(html: str, url: str | None = None, config: ExtractConfig = ExtractConfig()) -> Extracted:
    """Extract the article body and metadata from one page; raise ExtractionError(empty) if none.

    Steps: trafilatura (metadata on, comments off); if the body is very short, retry with
    ``favor_recall`` and then ``trafilatura.baseline`` (JSON-LD articleBody / paragraphs)
    and keep the longest; wire attribution is read from the *raw* text (cleaning removes
    the sign-offs it looks at); then post-cleaning removes leaked boilerplate and keeps
    photo credits aside. Text is NFC-normalised like ``trafilatura.extract`` output.
    """
    if len(html) > config.max_html_chars:
        raise ExtractionError(Reason.TOO_LARGE, f"page has {len(html)} characters (max {config.max_html_chars})")
    _test_hook(html)
    source, headlines = html, []
    if config.prune:
        tree = load_html(html)
        if tree is not None:
            prune_tree(tree)
            headlines = page_headlines(tree)
            source = tree  # trafilatura copies a tree it is given, so it can be reused below
    doc = _bare(source, url, config)
    raw = unicodedata.normalize("NFC", (doc.text if doc is not None else None) or "").strip()
    if len(raw) < config.recover_below_chars:
        again = _bare(source, url, config, favor_recall=True)
        alt = unicodedata.normalize("NFC", (again.text if again is not None else None) or "").strip()
        if len(alt) > len(raw):
            raw = alt
            doc = doc if doc is not None else again
        if len(raw) < config.recover_below_chars:
            try:
                _, base_text, _ = trafilatura.baseline(html)
            except Exception:  # the fallback must never turn a short page into an error
                base_text = ""
            base_text = unicodedata.normalize("NFC", base_text or "").strip()
            if len(base_text) > max(len(raw), 2 * config.min_text_chars):
                raw = base_text
        if len(raw) < config.recover_below_chars:  # client-rendered: the body is in script data
            page = source if not isinstance(source, str) else load_html(html)
            embedded = embedded_body_html(page) if page is not None else None
            hydrated = _bare(embedded, url, config, favor_recall=True) if embedded else None
            alt = unicodedata.normalize("NFC", (hydrated.text if hydrated is not None else None) or "").strip()
            if len(alt) > len(raw):
                raw = alt
    if len(raw) < config.min_text_chars:
        raise ExtractionError(Reason.EMPTY, "no article text found")

    raw_authors = [a.strip() for a in ((doc.author if doc is not None else None) or "").split(";") if a.strip()]
    site_name = doc.sitename if doc is not None else None
    authors, author_agencies = clean_authors(raw_authors, site_name=site_name)
    title = doc.title if doc is not None else None
    wire = WireInfo()
    if config.wire:
        wire = detect_wire(raw, authors=raw_authors, title=title, html=html, site=url)
        for code in author_agencies:
            if code not in wire.agencies:
                wire.agencies.append(code)
    language = doc.language if doc is not None else None
    if not language:
        language = page_language(source if not isinstance(source, str) else load_html(html))
    text, credits = raw, []
    if config.clean:
        cleaned = clean_text(raw, title=title, authors=authors, headlines=headlines)
        if len(cleaned.text) >= config.min_text_chars:
            text, credits = cleaned.text, cleaned.photo_credits
    return Extracted(
        text=text,
        title=title,
        authors=authors,
        published_at=doc.date if doc is not None else None,
        language=language,
        site_name=site_name,
        description=doc.description if doc is not None else None,
        canonical_url=doc.url if doc is not None and doc.url and doc.url != url else None,
        categories=_split_list(doc.categories if doc is not None else None),
        tags=_split_list(doc.tags if doc is not None else None),
        image=doc.image if doc is not None else None,
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
        from copydesk.transforms.stage_metrics import ExtractMetrics

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
