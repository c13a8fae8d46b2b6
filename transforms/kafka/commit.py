"""Consumer-group offset commits that follow the writes (at-least-once).

Every sink emits *acks* after its flush: ``("topic:partition", (covers_from, end, origin))``
meaning "offsets [covers_from, end) are accounted for" (written as an article or a dead
letter, or deliberately dropped as a duplicate). Acks arrive in any order, because the
keyed dedup stage reorders records. The committer is keyed by partition and keeps, in
state, the next offset to commit and the ranges acked beyond it; it advances only over a
contiguous run, so the committed offset never passes a record that has not been written.
After a crash the job restarts from the committed offset and re-reads at most what was in
flight: duplicates are possible (and carry the same record id), losses are not.

The state alone is not enough on Prism: when it splits a slow bundle of a stateful stage it runs
the residual on another thread, concurrently with the primary, each with the state as it was
when its bundle began (docs/dedup.md saw the same). Two bundles of one partition then each
write their own snapshot plus their own acks, and the last write wins: the other's acks are
gone from the state, ``next`` never passes them again, and the partition's commits stop for
the rest of the job (seen under a broker outage, where every bundle is slow). So a process
keeps the step's trackers itself (:class:`_Ledger`, shared by the step's DoFn instances, one
lock): every ack is applied to the union of the process's tracker and the state read (both
hold only acked ranges, so their union does too, whatever the order of the writes), and
commits go out under one lock, never below what this process already committed. On a runner
that moves a key to another process, the state read there is merged in the same way.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Iterator, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from copydesk.transforms.kafka.client import split_tp_key, topic_partition
from copydesk.transforms.kafka.config import KafkaConfig
from copydesk.transforms.kafka.metrics import COMMIT_NS, OFFSET_COMMIT_ERRORS, OFFSET_COMMITS, PENDING_ACK_RANGES
from copydesk.transforms.per_step import PerStep

log = logging.getLogger(__name__)


class OffsetTracker:
    """Contiguous-prefix tracking of acked offset ranges for one partition (pure)."""

    __slots__ = ("next", "pending")

    def __init__(self, next_offset: int | None = None, pending: dict[int, int] | None = None) -> None:
        self.next = next_offset
        self.pending = dict(pending or {})  # its own: a snapshot handed in stays as it was

    def ack(self, start: int, end: int, origin: int) -> bool:
        """Record [start, end) as done; return True if ``next`` advanced."""
        before = origin if self.next is None else self.next
        if self.next is None or self.next < origin:
            # everything before where the reader started is accounted for (committed then)
            self.next = origin
        if end <= self.next:
            return self.next != before  # already covered (a retried bundle)
        if start > self.next:
            self.pending[start] = max(end, self.pending.get(start, end))
            return self.next != before
        self.next = end
        self._absorb()
        return True

    def merge(self, next_offset: int | None, pending: dict[int, int] | None) -> None:
        """Take in another snapshot of this partition's acks (a union: each holds only acked
        ranges, so the union does too)."""
        if next_offset is not None and (self.next is None or next_offset > self.next):
            self.next = next_offset
        for s, e in (pending or {}).items():
            self.pending[s] = max(e, self.pending.get(s, e))
        self._absorb()

    def _absorb(self) -> None:
        if self.next is None:
            return
        # absorb ranges that now touch or overlap the prefix, in order of their start: one
        # pass (the first start beyond the prefix ends it), not a rescan per absorbed range
        for s in sorted(self.pending):
            if s > self.next:
                break
            self.next = max(self.next, self.pending.pop(s))

    def state(self) -> tuple[int | None, dict[int, int]]:
        return self.next, dict(self.pending)


class _Ledger:
    """One committer step's trackers in this process, shared by its DoFn instances (module doc)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # the trackers
        self.commit_lock = threading.Lock()  # one commit at a time, in order
        self.trackers: dict[str, OffsetTracker] = {}
        self.committed: dict[str, int] = {}  # what this process committed last, per partition

    def due(self) -> dict[str, int]:
        """The partitions whose tracker is past what this process committed."""
        with self.lock:
            return {k: t.next for k, t in self.trackers.items()
                    if t.next is not None and t.next > self.committed.get(k, -1)}


# uid of a committer step -> its ledger in this process (pipelines built one after another in
# one process, e.g. a streaming pipeline restarted after a broker outage, each have their own)
_LEDGERS: PerStep[_Ledger] = PerStep(_Ledger)


class _CommitFn(beam.DoFn):
    STATE = ReadModifyWriteStateSpec("offsets", PickleCoder())

    def __init__(self, kafka: KafkaConfig, dry_run: bool = False) -> None:
        self.kafka = kafka
        self.dry_run = dry_run
        self._uid = uuid.uuid4().hex  # one per step, kept through pickling
        self.commits = Metrics.counter(COMMIT_NS, OFFSET_COMMITS)
        self.commit_errors = Metrics.counter(COMMIT_NS, OFFSET_COMMIT_ERRORS)
        self.pending_ranges = Metrics.gauge(COMMIT_NS, PENDING_ACK_RANGES)

    def setup(self) -> None:
        self._consumer = None
        self._ledger = _LEDGERS.get(self._uid)

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
        ledger = self._ledger
        with ledger.lock:
            tracker = ledger.trackers.setdefault(key, OffsetTracker())
            if stored:
                tracker.merge(*stored)  # a snapshot another thread (or process) may have moved past
            tracker.ack(start, end, origin)
            state = tracker.state()
        offsets.write(state)
        self.pending_ranges.set(len(state[1]))
        return iter(())

    def finish_bundle(self) -> None:
        if self.dry_run:
            return
        from kafka.structs import OffsetAndMetadata

        ledger = self._ledger
        with ledger.commit_lock:
            due = ledger.due()  # every partition behind, whichever instance acked it
            if not due:
                return
            offsets = {topic_partition(*split_tp_key(k)): OffsetAndMetadata(off, "", -1) for k, off in due.items()}
            try:
                self._client().commit(offsets)
            except Exception as exc:  # still due: the next bundle retries; nothing is lost
                self.commit_errors.inc()
                log.warning("offset commit failed (retried with the next bundle): %s", exc)
                return
            with ledger.lock:
                ledger.committed.update(due)
        self.commits.inc()
        log.debug("committed %s", due)

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
