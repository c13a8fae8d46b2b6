"""Typed records that flow through the pipeline and leave it.

``InputMessage`` -> ``FetchedPage`` -> ``ArticleRecord`` is the happy path; any stage may
instead produce a ``DeadLetter``. The input side (``InputMessage``, and the ``FetchedPage``
that holds it) carries the ``SourceRef`` of the Kafka message (or input-file line) it came
from. The output records hold only what is written (their source topic/partition/offset are
fields of the written schema, so a failure can always be traced back); on their way to the
sinks each travels in an ``Envelope`` with its ``SourceRef``, so the committer knows which
offsets are done once it is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1


@dataclass(slots=True, frozen=True)
class SourceRef:
    """Where an input came from.

    For Kafka input: ``topic``/``partition``/``offset`` of the message. ``covers_from`` is
    the first offset this record accounts for (the previous record's offset + 1 in the
    same partition read, so gaps left by compaction or transaction markers are covered),
    and ``origin`` the offset where this run started reading the partition. Together they
    let the committer advance the group offset only over offsets whose records have all
    been written (see :mod:`copydesk.transforms.kafka.commit`).

    For file input: ``topic`` is ``file:<path>``, ``partition`` 0, ``offset`` the line index.
    """

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    covers_from: int | None = None
    origin: int | None = None
    timestamp_ms: int | None = None

    @property
    def is_kafka(self) -> bool:
        return (
            self.topic is not None
            and not self.topic.startswith("file:")
            and self.partition is not None
            and self.offset is not None
        )


@dataclass(slots=True, frozen=True)
class CheckedURL:
    """A URL as checked once at parse (``copydesk.transforms.urls.parse_url``): the stripped
    URL and the parts the fetcher keys on, so later stages need not parse or check it again."""

    url: str
    scheme: str  # "http" or "https"
    host: str  # lower-case, IPv6 literals without brackets
    port: int  # explicit or the scheme's default


@dataclass(slots=True)
class InputMessage:
    """A parsed input message: a URL, optionally with the page already scraped."""

    url: str
    ref: SourceRef = field(default_factory=SourceRef)
    html: str | None = None
    source: str | None = None
    discovered_at: str | None = None
    id: str | None = None
    force: bool = False
    raw: str | None = None  # the message as received (for dead letters), possibly truncated
    checked: CheckedURL | None = None  # what the parse stage learned of ``url``; None: not checked yet


@dataclass(slots=True)
class FetchedPage:
    """A page as fetched (or as supplied pre-scraped in the message)."""

    message: InputMessage
    final_url: str
    html: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    encoding: str | None = None
    fetched_at: str | None = None  # ISO-8601 UTC
    elapsed_ms: float = 0.0
    prescraped: bool = False
    redirects: list[str] = field(default_factory=list)
    body_bytes: int = 0


@dataclass(slots=True)
class WireInfo:
    """Wire-copy attribution: which agencies a story comes from, as printed."""

    agencies: list[str] = field(default_factory=list)  # canonical codes: AP, Reuters, AFP, dpa ...
    attribution: str | None = None  # the text as printed: "By Euronews with AP"
    dateline: str | None = None  # "KABUL, Afghanistan (AP) —"

    def to_dict(self) -> dict[str, Any]:
        return {"agencies": self.agencies, "attribution": self.attribution, "dateline": self.dateline}


@dataclass(slots=True)
class ArticleRecord:
    """One clean article: the pipeline's output record (``article.schema.json``)."""

    id: str
    url: str
    canonical_url: str
    final_url: str
    source_domain: str
    text: str
    fingerprint: str
    site_name: str | None = None
    title: str | None = None
    authors: list[str] = field(default_factory=list)
    published_at: str | None = None
    language: str | None = None
    description: str | None = None
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    image: str | None = None
    wire: WireInfo = field(default_factory=WireInfo)
    photo_credits: list[str] = field(default_factory=list)
    content_hash: str = ""
    cluster_id: str | None = None
    duplicate_of: str | None = None
    is_canonical: bool = True
    is_update: bool = False
    duplicate_kind: str | None = None  # None | "exact_url" | "exact" | "near" | "update"
    cluster_outlets: list[str] = field(default_factory=list)
    fetched_at: str | None = None
    processed_at: str | None = None
    input_id: str | None = None
    input_source: str | None = None
    discovered_at: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The record as written (a JSON document), without copying: its lists are the record's own."""
        d = {name: getattr(self, name) for name in _ARTICLE_FIELDS}
        wire = self.wire
        if isinstance(wire, WireInfo):
            d["wire"] = wire.to_dict()
        return d


@dataclass(slots=True)
class DeadLetter:
    """A message that could not become an article, and why (``deadletter.schema.json``)."""

    stage: str
    reason: str
    message: str
    input: str | None = None  # the input message as received, truncated to MAX_DEAD_INPUT chars
    input_size: int | None = None  # its size in bytes before truncation
    url: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    attempts: int = 1
    failed_at: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. {"status": 404, "final_url": ...}
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The dead letter as written (a JSON document), without copying: ``detail`` is its own."""
        return {name: getattr(self, name) for name in _DEAD_LETTER_FIELDS}


_ARTICLE_FIELDS = tuple(f.name for f in fields(ArticleRecord))
_DEAD_LETTER_FIELDS = tuple(f.name for f in fields(DeadLetter))


@dataclass(slots=True, frozen=True)
class Envelope:
    """An output record on its way to its sink, with what carries it there but is not written.

    ``record`` (an ``ArticleRecord`` or a ``DeadLetter``) is exactly what is written.
    ``ref`` is the input it accounts for: once the record is written (or deliberately
    dropped as a duplicate) the sink acks ``ref``'s offsets and the committer may advance
    over them. ``force``: the input message asked for it (dedup keeps the record even when
    ``--drop-duplicates`` would drop it). ``sketch``: what dedup keeps of the text
    (``copydesk.transforms.sketch.encode_sketch``), computed by the extraction worker.
    Stages that make output records emit them in envelopes; the pure functions they wrap
    return bare records.
    """

    record: ArticleRecord | DeadLetter
    ref: SourceRef | None = None
    force: bool = False
    sketch: bytes = b""  # dedup's sketch of the record's text, made where the text was (empty: dedup makes it)


MAX_DEAD_INPUT = 4096  # characters of the raw input kept on a dead letter
