"""Read back the raw-pages archive: re-extraction without fetching.

A job run with ``--raw-pages-topic`` writes every fetched page there
(:func:`copydesk.schemas.codec.raw_page_record`: URL, final URL, status, headers, the
decoded body, the input message's id/source and its topic/partition/offset). With
``--raw-pages-input`` (``copydesk replay --source raw-pages``) the input topic is such an
archive: each record becomes a :class:`FetchedPage` again
(:func:`copydesk.schemas.codec.page_from_raw_record`) and goes straight to the extract,
dedup and write stages; no HTTP request is made.

The page's ``ref`` is the archive record's own position (what this run read and commits),
so the article records and dead letters of such a run carry the archive's
topic/partition/offset; the archived record keeps the original input message's position
(``topic``/``partition``/``offset`` fields of the archive record, also put in a dead
letter's ``detail.archived_from``).
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from copydesk.schemas.codec import dead_letter
from copydesk.schemas.reasons import Reason, Stage
from copydesk.schemas.records import DeadLetter, Envelope, FetchedPage, SourceRef
from copydesk.schemas.codec import page_from_raw_record
from copydesk.transforms.parse.metrics import MESSAGES_REJECTED, PARSE_NS, RAW_PAGES_READ


def parse_raw_page(value: bytes | str | None, ref: SourceRef = SourceRef()) -> FetchedPage | DeadLetter:
    """One archive record -> the page as it was fetched, or a ``malformed`` dead letter."""

    def dead(message: str, url: str | None = None, detail: dict | None = None) -> DeadLetter:
        return dead_letter(Stage.PARSE, Reason.MALFORMED, message, ref=ref, raw=value, url=url, detail=detail)

    if value is None:
        return dead("empty raw-pages record (null value)")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return dead(f"raw-pages record is not JSON: {exc}")
    if not isinstance(doc, dict):
        return dead(f"raw-pages record must be a JSON object, not {type(doc).__name__}")
    url, body = doc.get("url"), doc.get("body")
    if not isinstance(url, str) or not url:
        return dead("raw-pages record has no url")
    if not isinstance(body, str):
        return dead("raw-pages record has no body (string)", url)
    try:
        page = page_from_raw_record(doc)
    except (TypeError, ValueError, KeyError) as exc:
        return dead(f"raw-pages record has a field of the wrong type: {exc}", url)
    archived_from = {k: doc.get(k) for k in ("topic", "partition", "offset")}
    raw = orjson.dumps({**{k: v for k, v in doc.items() if k not in ("body", "headers")},
                        "archived_from": archived_from}).decode()
    page.message = dataclasses.replace(page.message, ref=ref, raw=raw[:4096])
    return page


class _ParseRawPageFn(beam.DoFn):
    DEAD = "dead_letter"

    def __init__(self) -> None:
        self.pages = Metrics.counter(PARSE_NS, RAW_PAGES_READ)
        self.rejected = Metrics.counter(PARSE_NS, MESSAGES_REJECTED)

    def process(self, element):
        value, ref = element
        out = parse_raw_page(value, ref)
        if isinstance(out, DeadLetter):
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD, Envelope(out, ref))
        else:
            self.pages.inc()
            yield out


class ParseRawPages(beam.PTransform):
    """(value, SourceRef) of the raw-pages archive -> (FetchedPage, Envelope of a DeadLetter)."""

    def expand(self, pcoll):
        out = pcoll | "ParseRawPage" >> beam.ParDo(_ParseRawPageFn()).with_outputs(_ParseRawPageFn.DEAD, main="pages")
        return out.pages, out[_ParseRawPageFn.DEAD]
