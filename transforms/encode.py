"""Records become bytes before they are written, and a record that cannot is a dead letter.

``encoded, dead = records | EncodeRecords()`` encodes the article record (or dead letter) of
each ``Envelope`` with :mod:`copydesk.schemas.codec` and checks it against its JSON Schema;
the ``Encoded`` value keeps the envelope's ``SourceRef`` for the sink's acks. A record that
cannot be encoded or fails validation leaves on ``dead`` as a dead letter (stage ``write``,
reason ``encode``) with the record's source offset, so it is written to the dead-letter
output, acked and committed like any other: the partition moves on. Raising instead would
fail the bundle, and a streaming runner retries a failed bundle, so one bad record would
stall its partition for good.

Dead letters themselves go through ``EncodeRecords(dead_letters=True)``: one that fails is
replaced by a minimal dead letter (reason ``encode``, no input copy) that always encodes.

TEST HOOK, not a feature: with ``COPYDESK_TEST_UNENCODABLE_ON=<substring>`` in the
environment an article whose URL contains the substring gets a lone surrogate in its title
before encoding, which orjson refuses, so the tests can produce a real unencodable record
(tests/test_prism.py); nothing else reads it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from copydesk.schemas.codec import dead_letter, encode_doc, validate_article, validate_dead_letter
from copydesk.schemas.reasons import Reason, Stage
from copydesk.schemas.records import DeadLetter, Envelope, SourceRef
from copydesk.transforms.stage_metrics import ENCODE_FAILURES, WRITE_NS

log = logging.getLogger(__name__)

TEST_UNENCODABLE_ENV = "COPYDESK_TEST_UNENCODABLE_ON"


@dataclass(frozen=True, slots=True)
class Encoded:
    """A record as written: its bytes, its key (the record id) and the offsets it accounts for."""

    value: bytes
    key: str | None
    ref: SourceRef | None


def encoded_value(e: Encoded) -> bytes:
    return e.value


def encoded_key(e: Encoded) -> str | None:
    return e.key


def encode_checked(record: Any, ref: SourceRef | None = None) -> Encoded:
    """Encode and validate one record (``ref``: the input it accounts for); raise on either failure."""
    doc = record.to_dict()
    (validate_dead_letter if isinstance(record, DeadLetter) else validate_article)(doc)
    return Encoded(encode_doc(doc), getattr(record, "id", None), ref)


def _unencodable(record: Any, ref: SourceRef | None, exc: Exception) -> DeadLetter:
    return dead_letter(Stage.WRITE, Reason.ENCODE, f"{type(exc).__name__}: {exc}", ref=ref,
                       url=_safe_str(getattr(record, "url", None)),
                       detail={"record_id": _safe_str(getattr(record, "id", None))})


def _safe_str(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return value.encode("utf-8", errors="replace").decode("utf-8")


class _EncodeFn(beam.DoFn):
    DEAD = "dead"

    def __init__(self, dead_letters: bool) -> None:
        self.dead_letters = dead_letters
        self.failed = Metrics.counter(WRITE_NS, ENCODE_FAILURES)

    def setup(self) -> None:
        self._poison_marker = os.environ.get(TEST_UNENCODABLE_ENV) or None

    def process(self, item: Envelope) -> Iterator[Any]:
        record, ref = item.record, item.ref
        if self._poison_marker and not self.dead_letters and self._poison_marker in (getattr(record, "url", "") or ""):
            record = dataclasses.replace(record, title="\ud800")
        try:
            yield encode_checked(record, ref)
            return
        except Exception as exc:  # noqa: BLE001 - every failure here is the record's: route it
            self.failed.inc()
            log.warning("record could not be encoded: %s", exc,
                        extra={"url": _safe_str(getattr(record, "url", None)), "reason": Reason.ENCODE.value,
                               "stage": Stage.WRITE.value})
            letter = _unencodable(record, ref, exc)
        if not self.dead_letters:
            yield beam.pvalue.TaggedOutput(self.DEAD, Envelope(letter, ref))
            return
        try:  # a dead letter that failed: its minimal form, which always encodes
            yield encode_checked(letter, ref)
        except Exception:  # noqa: BLE001
            bare = dataclasses.replace(letter, input=None, input_size=None, url=None, detail={},
                                       message="dead letter could not be encoded")
            yield encode_checked(bare, ref)


class EncodeRecords(beam.PTransform):
    """Envelopes -> (Encoded, Envelopes of dead letters); with ``dead_letters=True`` only Encoded."""

    def __init__(self, dead_letters: bool = False) -> None:
        super().__init__()
        self.dead_letters = dead_letters

    def expand(self, pcoll):
        fn = beam.ParDo(_EncodeFn(self.dead_letters))
        if self.dead_letters:
            return pcoll | fn
        out = pcoll | fn.with_outputs(_EncodeFn.DEAD, main="encoded")
        return out.encoded, out[_EncodeFn.DEAD]
