"""Consumer-group offset commits that follow the writes (at-least-once).

Every sink emits *acks* after its flush: ``("topic:partition", (covers_from, end, origin))``
meaning "offsets [covers_from, end) are accounted for" (written as an article or a dead
letter, or deliberately dropped as a duplicate). Acks arrive in any order, because the
keyed dedup stage reorders records. The committer is keyed by partition and keeps, in
state, the next offset to commit and the ranges acked beyond it; it advances only over a
contiguous run, so the committed offset never passes a record that has not been written.
After a crash the job restarts from the committed offset and re-reads at most what was in
flight: duplicates are possible (and carry the same record id), losses are not.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from copydesk.transforms.kafka.client import split_tp_key, topic_partition
from copydesk.transforms.kafka.config import KafkaConfig
from copydesk.transforms.kafka.metrics import COMMIT_NS, OFFSET_COMMIT_ERRORS, OFFSET_COMMITS, PENDING_ACK_RANGES

log = logging.getLogger(__name__)


class OffsetTracker:
    """Contiguous-prefix tracking of acked offset ranges for one partition (pure)."""

    __slots__ = ("next", "pending")

    def __init__(self, next_offset: int | None = None, pending: dict[int, int] | None = None) -> None:
        self.next = next_offset
        self.pending = pending or {}

    def ack(self, start: int, end: int, origin: int) -> bool:
        """Record [start, end) as done; return True if ``next`` advanced."""
        if self.next is None:
            self.next = origin
        if end <= self.next:
            return False  # already covered (a retried bundle)
        if start <= self.next:
            self.next = end
            advanced = True
        else:
            prev = self.pending.get(start)
            self.pending[start] = max(end, prev or end)
            return False
        # absorb ranges that now touch or overlap the prefix, in order of their start: one
        # pass (the first start beyond the prefix ends it), not a rescan per absorbed range
        for s in sorted(self.pending):
            if s > self.next:
                break
            self.next = max(self.next, self.pending.pop(s))
        return advanced

    def state(self) -> tuple[int | None, dict[int, int]]:
        return self.next, self.pending


class _CommitFn(beam.DoFn):
    STATE = ReadModifyWriteStateSpec("offsets", PickleCoder())

    def __init__(self, kafka: KafkaConfig, dry_run: bool = False) -> None:
        self.kafka = kafka
        self.dry_run = dry_run
        self.commits = Metrics.counter(COMMIT_NS, OFFSET_COMMITS)
        self.commit_errors = Metrics.counter(COMMIT_NS, OFFSET_COMMIT_ERRORS)
        self.pending_ranges = Metrics.gauge(COMMIT_NS, PENDING_ACK_RANGES)

    def setup(self) -> None:
        self._consumer = None
        self._to_commit: dict[str, int] = {}

    def _client(self):
        from kafka import KafkaConsumer

        if self._consumer is None:
            self._consumer = KafkaConsumer(group_id=self.kafka.group_id, enable_auto_commit=False,
                                           client_id="copydesk-committer", **self.kafka.kwargs())
        return self._consumer

    def process(self, element: tuple[str, tuple[int, int, int]], offsets=beam.DoFn.StateParam(STATE)) -> Iterator[Any]:
        log.debug("ack %s", element)
        key, (start, end, origin) = element
        stored = offsets.read()
        tracker = OffsetTracker(*(stored or (None, None)))
        if tracker.ack(start, end, origin):
            self._to_commit[key] = tracker.next
        offsets.write(tracker.state())
        self.pending_ranges.set(len(tracker.pending))
        return iter(())

    def finish_bundle(self) -> None:
        if not self._to_commit or self.dry_run:
            return
        from kafka.structs import OffsetAndMetadata

        offsets = {}
        for key, off in self._to_commit.items():
            offsets[topic_partition(*split_tp_key(key))] = OffsetAndMetadata(off, "", -1)
        try:
            self._client().commit(offsets)
        except Exception as exc:  # kept in _to_commit: the next bundle retries; nothing is lost
            self.commit_errors.inc()
            log.warning("offset commit failed (retried with the next bundle): %s", exc)
            return
        self.commits.inc()
        log.debug("committed %s", self._to_commit)
        self._to_commit = {}

    def teardown(self) -> None:
        if getattr(self, "_consumer", None) is not None:
            self._consumer.close(autocommit=False)


class CommitOffsets(beam.PTransform):
    """Acks -> consumer-group commits, advancing only over fully written offsets."""

    def __init__(self, kafka: KafkaConfig, dry_run: bool = False) -> None:
        super().__init__()
        self.kafka = kafka
        self.dry_run = dry_run

    def expand(self, acks):
        return (acks
                | "AsKV" >> beam.Map(lambda ack: ack).with_output_types(Tuple[str, Tuple[int, int, int]])
                | "Commit" >> beam.ParDo(_CommitFn(self.kafka, self.dry_run)))
