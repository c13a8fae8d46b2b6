"""The one place records become bytes: orjson with fixed options.

``encode`` produces the JSON written to the output and dead-letter topics (or files),
``encode_doc`` every other document copydesk writes; ``validate_*`` check a decoded record against the versioned
JSON Schema files beside this module.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
from importlib import resources
from typing import Any

import orjson

from copydesk.schemas.records import (
    MAX_DEAD_INPUT,
    ArticleRecord,
    DeadLetter,
    FetchedPage,
    InputMessage,
    SourceRef,
)

_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def now_iso() -> str:
    """UTC now as ISO-8601 with milliseconds and a ``Z``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(record: ArticleRecord | DeadLetter) -> bytes:
    """An article record or a dead letter as the JSON written to its topic or file."""
    return orjson.dumps(record.to_dict(), option=_OPTS)


def encode_doc(doc: dict[str, Any]) -> bytes:
    """Any other document copydesk writes (fingerprint and raw-page archive entries, attempt
    markers), with the same options."""
    return orjson.dumps(doc, option=_OPTS)


def decode(data: bytes | str) -> dict[str, Any]:
    return orjson.loads(data)


def dead_letter(
    stage: str,
    reason: str,
    message: str,
    *,
    ref: SourceRef | None = None,
    raw: str | bytes | None = None,
    url: str | None = None,
    attempts: int = 1,
    detail: dict[str, Any] | None = None,
) -> DeadLetter:
    """Build a dead letter that carries the input (truncated) and its source topic/partition/offset
    (from ``ref``; a stage sends it on in an ``Envelope`` with ``ref``, for the commit)."""
    size: int | None = None
    text: str | None = None
    if raw is not None:
        if isinstance(raw, bytes):
            size = len(raw)
            text = raw[: MAX_DEAD_INPUT * 4].decode("utf-8", errors="replace")[:MAX_DEAD_INPUT]
        else:
            size = len(raw.encode("utf-8", errors="replace")) if len(raw) <= MAX_DEAD_INPUT * 4 else len(raw)
            text = raw[:MAX_DEAD_INPUT]
    ref = ref or SourceRef()
    return DeadLetter(
        stage=str(stage),
        reason=str(reason),
        message=message[:2000],
        input=text,
        input_size=size,
        url=url,
        topic=ref.topic,
        partition=ref.partition,
        offset=ref.offset,
        attempts=attempts,
        failed_at=now_iso(),
        detail=detail or {},
    )


@functools.cache
def _schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("copydesk.schemas").joinpath(name).read_text("utf-8"))


@functools.cache
def _validator(name: str):
    import jsonschema

    schema = _schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@functools.cache
def _fast_validator(name: str):
    """The schema compiled by ``jsonschema_rs`` (Rust), or None without it: its yes on a valid
    record takes ~1/20 of the reference validator's time."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    return jsonschema_rs.validator_for(_schema(name))


def _validate(name: str, doc: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` fails schema ``name``. A record the fast
    validator accepts is valid; anything else (refused, or a value it cannot take, such as a
    lone surrogate) is for the reference validator to decide, and to say why."""
    fast = _fast_validator(name)
    if fast is not None:
        try:
            if fast.is_valid(doc):
                return
        except Exception:  # noqa: BLE001 - not for the fast validator: the reference one decides
            pass
    _validator(name).validate(doc)


def article_schema() -> dict[str, Any]:
    return _schema("article.schema.json")


def dead_letter_schema() -> dict[str, Any]:
    return _schema("deadletter.schema.json")


def validate_article(doc: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` is not a valid article record."""
    _validate("article.schema.json", doc)


def validate_dead_letter(doc: dict[str, Any]) -> None:
    _validate("deadletter.schema.json", doc)


# -- the raw-pages archive (--raw-pages-topic): one entry per fetched page -----------------

RAW_RECORD_VERSION = 1


def raw_page_record(page: FetchedPage) -> dict[str, Any]:
    """A fetched page as a JSON-able dict for the raw-pages topic (re-extraction without fetching).

    The body is the decoded HTML text, so re-extraction needs no charset guessing again.
    """
    msg = page.message
    ref = msg.ref or SourceRef()
    return {
        "schema_version": RAW_RECORD_VERSION,
        "url": msg.url,
        "final_url": page.final_url,
        "status": page.status,
        "headers": dict(page.headers),
        "body": page.html,
        "encoding": page.encoding,
        "fetched_at": page.fetched_at,
        "elapsed_ms": page.elapsed_ms,
        "redirects": list(page.redirects),
        "body_bytes": page.body_bytes,
        "prescraped": page.prescraped,
        "input_id": msg.id,
        "input_source": msg.source,
        "discovered_at": msg.discovered_at,
        "topic": ref.topic,
        "partition": ref.partition,
        "offset": ref.offset,
    }


def page_from_raw_record(d: dict[str, Any]) -> FetchedPage:
    """Inverse of :func:`raw_page_record`: a FetchedPage ready for the extract stage."""
    ref = SourceRef(topic=d.get("topic"), partition=d.get("partition"), offset=d.get("offset"))
    msg = InputMessage(
        url=d["url"], ref=ref, id=d.get("input_id"), source=d.get("input_source"),
        discovered_at=d.get("discovered_at"),
    )
    return FetchedPage(
        message=msg,
        final_url=d.get("final_url") or d["url"],
        html=d.get("body") or "",
        status=int(d.get("status") or 200),
        headers=dict(d.get("headers") or {}),
        encoding=d.get("encoding"),
        fetched_at=d.get("fetched_at"),
        elapsed_ms=float(d.get("elapsed_ms") or 0.0),
        prescraped=bool(d.get("prescraped", False)),
        redirects=list(d.get("redirects") or []),
        body_bytes=int(d.get("body_bytes") or 0),
    )
