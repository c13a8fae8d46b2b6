"""Parse input messages (pure function + the Beam stage).

A message is a plain URL string, or a JSON object
``{"url": ..., "html": optional pre-scraped page, "source": ..., "discovered_at": ...,
"id": ..., "force": ...}`` (a JSON string holding a URL is accepted too). Anything else is
a dead letter with a reason, never an exception.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from copydesk.schemas.codec import dead_letter
from copydesk.schemas.reasons import Reason, Stage
from copydesk.schemas.records import DeadLetter, Envelope, InputMessage, SourceRef
from copydesk.transforms.parse.metrics import MESSAGES_PARSED, MESSAGES_REJECTED, PARSE_NS
from copydesk.transforms.stage_metrics import log_fields
from copydesk.transforms.urls import InvalidURL, parse_url

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# TEST HOOK, not a feature: with COPYDESK_TEST_CRASH_ON=<substring> in the environment the
# parse stage ends the whole process (os._exit) on a message containing the substring, the
# way an OOM kill or a segfault in a C library would. It exists so tests/test_backfill.py can
# produce a real poison message for pipelines/poison.py; nothing else reads it.
TEST_CRASH_ENV = "COPYDESK_TEST_CRASH_ON"
TEST_CRASH_EXIT_CODE = 70
_OPTIONAL_STR = ("source", "discovered_at", "id", "html")


_JSON_SCALAR_START = frozenset("-0123456789tfn")  # how null, true, false and numbers begin
_JSON_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def parse_message(value: bytes | str | None, ref: SourceRef = SourceRef(),
                  max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> InputMessage | DeadLetter:
    """One message -> an :class:`InputMessage` (its URL checked, once) or a parse dead letter.

    ``malformed``: no value, empty or blank, not UTF-8 (overlong forms and encoded
    surrogates included), invalid JSON (lone ``\\u`` surrogates included), a JSON value that
    is no object or string (null, true, a number, an array), a field of the wrong type;
    ``no_url``: no or a blank ``url``; ``bad_url``/``unsupported_scheme``: see
    :func:`copydesk.transforms.urls.parse_url`; ``message_too_large``.
    """
    def dead(reason: Reason, message: str, url: str | None = None) -> DeadLetter:
        return dead_letter(Stage.PARSE, reason, message, ref=ref, raw=value, url=url)

    if value is None:
        return dead(Reason.MALFORMED, "empty message (null value)")
    if isinstance(value, str):  # tests and callers with text: the same rules as for bytes
        value = value.encode("utf-8", errors="surrogatepass")
    if len(value) > max_bytes:
        return dead(Reason.MESSAGE_TOO_LARGE, f"message is {len(value)} bytes (max {max_bytes})")
    fields: dict[str, Any] | None = None
    if value[:1] == b"{" or value.lstrip()[:1] == b"{":
        # The common case, a JSON object: orjson parses the bytes as they are (it checks
        # UTF-8 itself), without a decoded and a stripped copy of a page-sized message
        # first. Anything it refuses takes the path below, which says why.
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            fields = doc
    if fields is not None:
        return _message(fields, value, ref, dead)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return dead(Reason.MALFORMED, f"message is not UTF-8: {exc}")
    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        return dead(Reason.MALFORMED, "empty message" if not value else "blank message (only white space)")
    if stripped[0] in "{[\"" or stripped[0] in _JSON_SCALAR_START:
        try:
            doc = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            if stripped[0] in "{[\"" or _JSON_NUMBER.fullmatch(stripped):  # (a number too big for orjson)
                return dead(Reason.MALFORMED, f"invalid JSON: {exc}")
            doc = stripped  # not a JSON literal after all: a bare URL (or garbage) string
        if isinstance(doc, str):
            fields = {"url": doc}
        elif isinstance(doc, dict):
            fields = doc
        else:
            kind = "null" if doc is None else type(doc).__name__
            return dead(Reason.MALFORMED, f"JSON message must be an object or a string, not {kind}")
    else:
        fields = {"url": stripped}
    return _message(fields, stripped, ref, dead)


def _message(fields: dict[str, Any], raw: bytes | str, ref: SourceRef, dead) -> InputMessage | DeadLetter:
    """The message's fields checked -> an :class:`InputMessage` or a parse dead letter.
    ``raw``: the message (its stripped text, or the bytes as received) for ``InputMessage.raw``."""
    url = fields.get("url")
    if url is None or (isinstance(url, str) and not url.strip()):
        return dead(Reason.NO_URL, "message has no url")
    if not isinstance(url, str):
        return dead(Reason.MALFORMED, f"url must be a string, not {type(url).__name__}")
    for name in _OPTIONAL_STR:
        if fields.get(name) is not None and not isinstance(fields[name], str):
            return dead(Reason.MALFORMED, f"{name} must be a string, not {type(fields[name]).__name__}", url[:2048])
    force = fields.get("force", False)
    if not isinstance(force, bool):
        return dead(Reason.MALFORMED, f"force must be true or false, not {force!r}"[:2000], url[:2048])
    try:
        checked = parse_url(url)
    except InvalidURL as exc:
        return dead(Reason(exc.reason), str(exc), url[:2048])
    return InputMessage(
        url=checked.url,
        ref=ref,
        html=fields.get("html"),
        source=fields.get("source"),
        discovered_at=fields.get("discovered_at"),
        id=fields.get("id"),
        force=force,
        raw=_raw_text(raw) if fields.get("html") is None else orjson.dumps(
            {k: v for k, v in fields.items() if k != "html"}).decode(),
        checked=checked,
    )


def _raw_text(raw: bytes | str) -> str:
    """The first 4,096 characters of the message as received, stripped (as on a dead letter)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8").lstrip("\ufeff").strip()
    return raw[:4096]


class _ParseFn(beam.DoFn):
    DEAD = "dead_letter"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.parsed = Metrics.counter(PARSE_NS, MESSAGES_PARSED)
        self.rejected = Metrics.counter(PARSE_NS, MESSAGES_REJECTED)

    def setup(self) -> None:
        crash_on = os.environ.get(TEST_CRASH_ENV) or None
        self._crash_on = crash_on.encode("utf-8") if crash_on else None

    def process(self, element):
        value, ref = element
        crash_on = getattr(self, "_crash_on", None)
        if crash_on and value is not None and crash_on in (value if isinstance(value, bytes) else value.encode(errors="surrogatepass")):
            logging.getLogger(__name__).critical("%s test hook: ending the process on %s:%s offset %s",
                                                 TEST_CRASH_ENV, ref.topic, ref.partition, ref.offset)
            os._exit(TEST_CRASH_EXIT_CODE)
        try:
            out = parse_message(value, ref, self.max_bytes)
        except Exception as exc:  # a bug: it costs this message (kept, with its offset), not the bundle
            logging.getLogger(__name__).exception(
                "parsing the message at %s:%s offset %s failed", ref.topic, ref.partition, ref.offset,
                extra=log_fields(ref, reason=str(Reason.INTERNAL), stage="parse"))
            out = dead_letter(Stage.PARSE, Reason.INTERNAL, f"{type(exc).__name__}: {exc}", ref=ref, raw=value)
        if isinstance(out, DeadLetter):
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD, Envelope(out, ref))
        else:
            self.parsed.inc()
            yield out


class ParseMessages(beam.PTransform):
    """(value, SourceRef) -> (InputMessage, Envelope of a DeadLetter)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        super().__init__()
        self.max_bytes = max_bytes

    def expand(self, pcoll):
        out = pcoll | "Parse" >> beam.ParDo(_ParseFn(self.max_bytes)).with_outputs(_ParseFn.DEAD, main="messages")
        return out.messages, out[_ParseFn.DEAD]
