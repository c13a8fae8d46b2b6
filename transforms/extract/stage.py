"""The extract stage: ``ExtractArticles``, the Beam composite that runs the one extraction
function (``core.extract_article``, which ``copydesk extract`` runs too) on the worker pool."""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from copydesk.schemas.reasons import Reason, Stage
from copydesk.schemas.records import Envelope, FetchedPage
from copydesk.transforms.extract.core import ExtractConfig


class _ExtractDoFn(beam.DoFn):
    """Extract pages on the supervised pool (all cores) while the bundle goes on.

    ``process`` hands each page to the pool and returns at once, emitting whatever pages
    have finished meanwhile; it waits only when ``max_buffer`` pages are in flight (16: some
    pages queued for each worker while the stages before this one read and parse; more only
    lengthens the drain at the bundle's end, during which nothing is read).
    ``finish_bundle`` waits for the rest. So the workers extract while the stages before
    this one read and parse the next messages, instead of in turns with them. Results come
    out in the order they finish; each keeps its input's window and timestamp. A client of
    the process's one pool is leased in ``setup`` and given back in ``teardown``
    (pool.lease/release): the next micro-batch of the local runner reuses the workers, and
    bundles of a streaming runner that run at the same time (one DoFn instance each) feed
    the same workers, each waiting only for its own pages. Beam metrics: see
    :mod:`copydesk.transforms.stage_metrics` (pages whose text is under ``short_chars``
    count as short for the per-domain extraction health).
    """

    DEAD = "dead_letter"

    def __init__(self, config: ExtractConfig, workers: int | None = None, max_buffer: int = 16,
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
            self._pool.close()  # a failed bundle left pages in it: drop their results
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
                yield beam.pvalue.TaggedOutput(self.DEAD, WindowedValue(Envelope(dead_letter(
                    Stage.EXTRACT, res.reason, res.message, ref=msg.ref, raw=msg.raw, url=msg.url), msg.ref), ts, [win]))
                continue
            try:
                article = build_article(page, res)
            except Exception as exc:  # a record-building bug must not fail the bundle
                m.dead(domain, Reason.EXTRACT_ERROR)
                log.warning("building the article record failed: %s: %s", type(exc).__name__, exc, exc_info=True,
                            extra=log_fields(msg.ref, url=msg.url, reason=str(Reason.EXTRACT_ERROR), stage="extract"))
                yield beam.pvalue.TaggedOutput(self.DEAD, WindowedValue(Envelope(dead_letter(
                    Stage.EXTRACT, Reason.EXTRACT_ERROR, f"{type(exc).__name__}: {exc}", ref=msg.ref,
                    raw=msg.raw, url=msg.url), msg.ref), ts, [win]))
                continue
            m.article(domain, article.text)
            yield WindowedValue(Envelope(article, msg.ref, force=msg.force, sketch=res.sketch), ts, [win])


class ExtractArticles(beam.PTransform):
    """FetchedPage -> (Envelope of an ArticleRecord, Envelope of a DeadLetter), extraction on a
    supervised process pool (the envelope: the page's ``SourceRef`` and ``force``).

    ``workers``: pool size (None = one per core, 0 = in-process, for tests/tiny runs).
    ``sketch``: the workers also compute each text's content hash and dedup's sketch
    (``ExtractConfig.sketch``), carried in the envelope, so the dedup stage (one process)
    need not.
    """

    def __init__(self, config: ExtractConfig = ExtractConfig(), workers: int | None = None,
                 sketch: bool = True) -> None:
        super().__init__()
        self.config = dataclasses.replace(config, sketch=sketch)
        self.workers = workers

    def expand(self, pages):
        out = pages | "Extract" >> beam.ParDo(_ExtractDoFn(self.config, self.workers)).with_outputs(
            _ExtractDoFn.DEAD, main="articles")
        return out.articles, out[_ExtractDoFn.DEAD]
