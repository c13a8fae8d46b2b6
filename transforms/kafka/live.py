"""The live (unbounded) Kafka read: one splittable DoFn element for all input partitions.

A streaming runner runs the bundles of different elements of a stage at the same time, each
with its own instances of the stage's DoFns. Prism fuses the reader with everything up to the
first shuffle (parse, fetch, extract), so one reader element per partition meant one fetcher
and one extraction pool *per partition* (two partitions: two pools, two fetchers, two sets of
robots.txt caches and per-host spacings, measured). Here the job reads every partition of
its topics in **one** element, with one consumer: its bundles follow one another, so the
fused stage has one instance of each DoFn for the job's life.

The restriction (:class:`Positions`) is where each partition is: the next offset to read, and
the offset the job started it at (the acks' ``origin``, transforms/kafka/commit.py). The
tracker claims a whole poll at once (the positions after it) and splits only at a checkpoint
(the rest of the stream, from the claimed positions). Every ``discovery_seconds`` the reader
lists the topics again; a partition found after the first listing starts at its committed
offset, else at its beginning (its first messages predate the listing, as in Flink's Kafka
source); those of the first listing at their committed offset, else ``start``. A partition
more than ``max_ahead_of_commit`` offsets past the group's committed offset is paused until
the commits catch up. ``request_drain()`` ends the element where it is.

**In flight** (the source's back-pressure: a streaming runner does not slow a source down).
The reader keeps, per process, the records it emitted that the group has not committed yet
(:class:`InFlight`: offset and payload bytes, in read order) and holds at most
``max_uncommitted_records`` of them and ``max_uncommitted_bytes`` of their payload, over all
partitions. A poll asks for no more records than there is room for; a poll's records past
the room (bytes, or a partition's ``max_ahead_of_commit``) are not emitted, and the consumer
is sent back to the first of them, so they are read again once there is room: never dropped,
only later. A message larger than the byte limit is read when nothing else is in flight. At
the limit the reader polls nothing, asks the group for its committed offsets (at most 4 times
a second), and reads on once they have freed a quarter of a limit. The committed offset is
the reference because it is what a crash re-reads: a record is in flight from its read until
its partition's commit passes it (written, acked and every earlier offset too).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from copydesk.schemas.records import SourceRef
from copydesk.transforms.kafka.client import advance_watermark, partitions_for, split_tp_key, topic_partition, tp_key
from copydesk.transforms.kafka.config import KafkaConfig, KafkaRecord, ReadConfig
from copydesk.transforms.kafka.io import draining, resolve_partitions
from copydesk.transforms.kafka.metrics import BYTES_READ, HELD_BACK, IDLE_POLLS, RECORDS_READ, read_counter
from copydesk.transforms.per_step import PerStep

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Positions:
    """Where the live read is: ``{"topic:partition": (next offset, origin)}``, and when the
    partitions were last listed (``listed_at``, wall-clock seconds; 0: never)."""

    offsets: tuple[tuple[str, int, int], ...] = ()
    listed_at: float = 0.0
    done: bool = False

    def as_dict(self) -> dict[str, tuple[int, int]]:
        return {k: (nxt, origin) for k, nxt, origin in self.offsets}

    @classmethod
    def of(cls, d: dict[str, tuple[int, int]], listed_at: float) -> "Positions":
        return cls(tuple((k, nxt, origin) for k, (nxt, origin) in sorted(d.items())), listed_at)


class InFlight:
    """The records a reader emitted that its group has not committed yet (pure).

    Per partition, ``(offset, payload bytes)`` in read order; the totals over all partitions,
    and their highest values so far (``peak_records``, ``peak_bytes``)."""

    def __init__(self) -> None:
        self._by_key: dict[str, deque[tuple[int, int]]] = {}
        self.records = 0
        self.bytes = 0
        self.peak_records = 0
        self.peak_bytes = 0

    def add(self, key: str, offset: int, nbytes: int) -> None:
        self._by_key.setdefault(key, deque()).append((offset, nbytes))
        self.records += 1
        self.bytes += nbytes
        self.peak_records = max(self.peak_records, self.records)
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def keys(self) -> list[str]:
        return [k for k, q in self._by_key.items() if q]

    def committed(self, key: str, offset: int) -> None:
        """The group committed ``key`` up to ``offset``: the records below it are done."""
        q = self._by_key.get(key)
        while q and q[0][0] < offset:
            self._drop(q.popleft())

    def rewind(self, key: str, nxt: int) -> None:
        """The read of ``key`` goes on from ``nxt`` (a retried bundle, a truncated log): the
        records from there on will be read, and counted, again."""
        q = self._by_key.get(key)
        while q and q[-1][0] >= nxt:
            self._drop(q.pop())

    def _drop(self, entry: tuple[int, int]) -> None:
        self.records -= 1
        self.bytes -= entry[1]


# uid of a reader step -> its in-flight records in this process (the DoFn instance that runs
# the next bundle of the one element may be another one; a pipeline started again in the same
# process, after a broker outage, has a reader of its own)
_IN_FLIGHT: PerStep[InFlight] = PerStep(InFlight)


class _PositionsTracker(RestrictionTracker):
    def __init__(self, restriction: Positions) -> None:
        self._restriction = restriction
        self._claimed: Positions | None = None
        self._stopped = False

    def current_restriction(self) -> Positions:
        return self._restriction

    def try_claim(self, positions: Positions | None) -> bool:
        """Claim the read up to ``positions``; ``None`` ends the read here (drain)."""
        if self._stopped:
            return False
        if positions is None:
            self._stopped = True
            return False
        self._claimed = positions
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder or self._stopped:
            return None  # only checkpoints: a partition is read in order by one reader
        self._stopped = True
        residual = self._claimed or self._restriction
        return Positions(residual.offsets, residual.listed_at, done=True), residual

    def check_done(self) -> None:
        pass

    def current_progress(self) -> RestrictionProgress:
        return RestrictionProgress(fraction=0.0)  # an unbounded stream: no fraction done

    def is_bounded(self) -> bool:
        return False


class _PositionsProvider(RestrictionProvider):
    def initial_restriction(self, element) -> Positions:
        return Positions()

    def create_tracker(self, restriction: Positions) -> _PositionsTracker:
        return _PositionsTracker(restriction)

    def split(self, element, restriction):
        yield restriction

    def restriction_size(self, element, restriction: Positions) -> int:
        return 1

    def truncate(self, element, restriction):
        return None  # on drain: stop here


class _ReadAllPartitionsFn(beam.DoFn):
    def __init__(self, kafka: KafkaConfig, read: ReadConfig) -> None:
        self.kafka = kafka
        self.read = read
        ns, pre = read.counter_namespace, read.counter_prefix
        self.records_read = Metrics.counter(ns, read_counter(pre, RECORDS_READ))
        self.bytes_read = Metrics.counter(ns, read_counter(pre, BYTES_READ))
        self.idle_polls = Metrics.counter(ns, read_counter(pre, IDLE_POLLS))
        self.held_back = Metrics.counter(ns, read_counter(pre, HELD_BACK))
        self._uid = uuid.uuid4().hex  # one per step, kept through pickling

    def setup(self) -> None:
        self._flight = _IN_FLIGHT.get(self._uid)
        self._holding = False
        self._held_logged = 0.0
        self._needed_bytes = 1  # the room the message the last poll could not take needs
        self._consumer = None
        self._group = None
        self._assigned: dict[str, int] = {}  # key -> the position the consumer is at
        self._committed: dict[str, tuple[int, float]] = {}
        self._paused: set[str] = set()
        self._idle_since: float | None = None
        self._checked_at = 0.0
        self._first_read = True  # the first bundle that reads anything ends after that poll

    def _clients(self):
        from kafka import KafkaConsumer

        if self._consumer is None:
            self._assigned = {}
            # auto_offset_reset "none": kafka-python's default ("latest") moves a position it
            # finds out of range, or truncated (KIP-320 validation after a leader change), to the
            # partition's end without a word, and the records in between are never read while
            # the acks of the next ones cover them. Here it raises, and _reposition decides.
            self._consumer = KafkaConsumer(
                group_id=None, enable_auto_commit=False, isolation_level=self.read.isolation_level,
                auto_offset_reset="none",
                fetch_max_wait_ms=100, max_poll_records=self.read.max_records_per_call,
                max_partition_fetch_bytes=max(self.read.max_message_bytes, 1 << 20),
                fetch_max_bytes=max(self.read.max_message_bytes * 2, 50 << 20),
                client_id="copydesk-reader", **self.kafka.kwargs())
        if self._group is None:
            self._group = KafkaConsumer(group_id=self.kafka.group_id, enable_auto_commit=False,
                                        client_id="copydesk-reader-commits", **self.kafka.kwargs())
        return self._consumer

    def _discover(self, pos: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        consumer = self._clients()
        first = not pos
        listed = []
        for topic in self.read.topics:
            consumer.topics()  # fresh metadata
            listed.extend((topic, p) for p in sorted(partitions_for(consumer, topic)))
        new = [(t, p) for t, p in listed if tp_key(t, p) not in pos]
        if new:
            # the group's consumer of _clients(), bootstrapped already: no new client here
            for spec in resolve_partitions(self.kafka, self.read, only=new,
                                           reset=self.read.start if first else "earliest", consumer=self._group):
                pos[spec.key] = (spec.start, spec.start)
                if first:
                    log.info("reading %s from offset %d", spec.key, spec.start)
                else:
                    log.warning("new partition %s (found while running): reading it from offset %d",
                                spec.key, spec.start)
        return pos

    def _sync_assignment(self, pos: dict[str, tuple[int, int]]) -> None:
        """Assign every partition and seek where the restriction says (after a checkpoint by
        another instance, or a runner restart, the consumer's own positions are stale)."""
        consumer = self._clients()
        if set(self._assigned) != set(pos):
            consumer.assign([topic_partition(*split_tp_key(k)) for k in pos])
            self._assigned = {}
            self._paused = set()
        for key, (nxt, _origin) in pos.items():
            if self._assigned.get(key) != nxt:
                consumer.seek(topic_partition(*split_tp_key(key)), nxt)
                self._assigned[key] = nxt
            self._flight.rewind(key, nxt)  # a retried bundle: its records are read again

    def _committed_offset(self, key: str, origin: int, refresh: bool) -> int:
        """The group's committed offset of ``key`` as last asked (``origin`` before); with
        ``refresh`` asked again, at most 4 times a second a partition."""
        committed, asked = self._committed.get(key, (origin, 0.0))
        now = time.monotonic()
        if refresh and now - asked >= 0.25:
            try:
                fresh = self._group.committed(topic_partition(*split_tp_key(key))) or origin
            except Exception as exc:  # the broker is away: as it was, asked again later
                log.debug("committed offset of %s unknown: %r", key, exc)
                fresh = committed
            committed = max(fresh, origin)
            self._committed[key] = (committed, now)
            self._flight.committed(key, committed)
        return committed

    def _room(self, pos: dict[str, tuple[int, int]], wanted: int) -> tuple[float, float]:
        """How many more records, and bytes, may be read before the in-flight limits; when
        they would cut the next poll (``wanted`` records), the commits are asked first."""
        most_records, most_bytes = self.read.max_uncommitted_records, self.read.max_uncommitted_bytes
        if not most_records and not most_bytes:
            return float("inf"), float("inf")
        flight = self._flight

        def room() -> tuple[float, float]:
            return (most_records - flight.records if most_records else float("inf"),
                    most_bytes - flight.bytes if most_bytes else float("inf"))

        records, nbytes = room()
        if records < wanted or nbytes < (most_bytes or 0) / 2:
            for key in flight.keys():
                self._committed_offset(key, pos[key][1], refresh=True)
            records, nbytes = room()
        return records, nbytes

    @property
    def _resume_records(self) -> int:
        """The room in records the reader reads on at: any, or a quarter of the limit once it
        waits (reads in bites of a few records make many small bundles downstream)."""
        most = self.read.max_uncommitted_records
        return -(-most // 4) if self._holding and most else 1

    @property
    def _resume_bytes(self) -> int:
        most = self.read.max_uncommitted_bytes
        return most // 4 if self._holding and most else 1

    def _hold(self, held: bool) -> None:
        """Note that the reader waits for commits (``held``) or reads again."""
        if held and not self._holding:
            self.held_back.inc()
            now = time.monotonic()
            if now - self._held_logged >= 10.0:  # a backlog holds and resumes often: log seldom
                self._held_logged = now
                f = self._flight
                log.info("reader: %d records (%.1f MiB) read and not committed yet, at the limit "
                         "(%s records, %s MiB): waiting for commits (peak so far %d records, %.1f MiB)",
                         f.records, f.bytes / 2**20, self.read.max_uncommitted_records or "no limit",
                         _mib(self.read.max_uncommitted_bytes), f.peak_records, f.peak_bytes / 2**20)
        self._holding = held

    def _apply_back_pressure(self, pos: dict[str, tuple[int, int]]) -> None:
        cap = self.read.max_ahead_of_commit
        if not cap:
            return
        consumer = self._consumer
        for key, (nxt, origin) in pos.items():
            committed = self._committed_offset(key, origin, refresh=False)
            ahead = nxt - committed >= cap
            if ahead:
                ahead = nxt - self._committed_offset(key, origin, refresh=True) >= cap
            tp = topic_partition(*split_tp_key(key))
            if ahead and key not in self._paused:
                consumer.pause(tp)
                self._paused.add(key)
                self.held_back.inc()
            elif not ahead and key in self._paused:
                consumer.resume(tp)
                self._paused.discard(key)

    def _caught_up(self, pos: dict[str, tuple[int, int]]) -> bool:
        """Whether the reader is at the end of every partition it reads (not paused), as of the
        consumer's last fetch (its high watermarks: no request to the broker). Unknown: no."""
        for key, (nxt, _origin) in pos.items():
            if key in self._paused:
                continue
            high = self._consumer.highwater(topic_partition(*split_tp_key(key)))
            if high is None or nxt < high:
                return False
        return True

    def _reposition(self, pos: dict[str, tuple[int, int]], exc: Exception) -> None:
        """A poll raised: a position is out of its partition's range, or the log was truncated
        below it (KIP-320). The read moves on only where the partition no longer holds the
        position: below its beginning (deleted by retention: the consumer goes to the beginning,
        and the next record's ``covers_from`` covers the gone offsets, so the commit can pass
        them), past its end or past the point where the log diverged (truncated: what comes next
        is read from there). Else the consumer goes back to the position the restriction holds
        (a broker that has just started can answer so for a moment). Each case is logged."""
        diverged = getattr(exc, "divergent_offsets", None)
        named = diverged if diverged is not None else (exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {})
        keys = {tp_key(tp.topic, tp.partition): tp for tp in named if tp_key(tp.topic, tp.partition) in pos}
        if not keys:
            keys = {k: topic_partition(*split_tp_key(k)) for k in pos}
        tps = list(keys.values())
        try:
            begin, end = self._group.beginning_offsets(tps), self._group.end_offsets(tps)
        except Exception as lookup:  # the broker is away: back to the same positions, asked again later
            log.debug("partition range unknown: %r", lookup)
            begin, end = {}, {}
        for key, tp in keys.items():
            nxt, origin = pos[key]
            cut = getattr((diverged or {}).get(tp), "offset", None)
            lo, hi = begin.get(tp), end.get(tp)
            if cut is not None and cut < nxt:
                hi = cut if hi is None else min(hi, cut)
            seek = nxt
            if lo is not None and nxt < lo:
                log.warning("reader: %s: offsets %d..%d are gone (retention); reading on from %d", key, nxt, lo - 1, lo)
                seek = lo
            elif hi is not None and nxt > hi:
                log.warning("reader: %s: the log was cut back to %d, below the position %d; reading from %d",
                            key, hi, nxt, hi)
                seek = nxt = hi
            else:
                log.warning("reader: %s at %d: %s (the partition holds %s..%s); reading on from %d",
                            key, nxt, type(exc).__name__, lo, hi, nxt)
            pos[key] = (nxt, origin)
            self._consumer.seek(tp, seek)
            self._assigned[key] = nxt  # where the restriction is; the consumer may be past a gone range
            self._flight.rewind(key, nxt)

    def _watchdog(self, pos: dict[str, tuple[int, int]]) -> None:
        """Polls that return nothing while a partition (not paused) has messages past its
        position for 5 s: the consumer is rebuilt (kafka-python 3 was seen to stop returning
        a partition's records after the job spent seconds in a fetch, with no error)."""
        now = time.monotonic()
        self._idle_since = self._idle_since or now
        if now - self._idle_since < 5.0 or now - self._checked_at < 5.0:
            return
        self._checked_at = now
        try:
            tps = {k: topic_partition(*split_tp_key(k)) for k in pos if k not in self._paused}
            ends = self._group.end_offsets(list(tps.values())) if tps else {}
        except Exception as exc:  # the broker is away: nothing to tell yet
            log.debug("end offsets unknown: %r", exc)
            return
        behind = {k: (pos[k][0], ends[tp]) for k, tp in tps.items() if ends.get(tp, 0) > pos[k][0]}
        if behind:
            log.warning("reader: no records for %.0fs although %s have more (position, end): %s; reconnecting",
                        now - self._idle_since, ", ".join(sorted(behind)), behind)
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # a broken client: replaced either way
                pass
            self._consumer = None
            self._assigned = {}
            self._paused = set()
            self._idle_since = None

    @beam.DoFn.unbounded_per_element()
    def process(self, _impulse,
                tracker=beam.DoFn.RestrictionParam(_PositionsProvider()),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
                ) -> Iterator[Any]:
        from kafka import errors

        restriction = tracker.current_restriction()
        if draining():
            tracker.try_claim(None)
            f = self._flight
            log.info("reader: drained; at most %d records (%.1f MiB) were read and not committed at once "
                     "(limits %s records, %s MiB)", f.peak_records, f.peak_bytes / 2**20,
                     self.read.max_uncommitted_records or "no limit", _mib(self.read.max_uncommitted_bytes))
            return
        pos = restriction.as_dict()
        listed_at = restriction.listed_at
        if not pos or time.time() - listed_at >= (self.read.discovery_seconds or 30.0):
            try:
                pos = self._discover(dict(pos))
            except Exception as exc:  # the broker is away: go on with the partitions known, list later
                if not pos:
                    raise
                log.warning("partition discovery failed (listed again later): %r", exc)
            listed_at = time.time()
        self._sync_assignment(pos)
        deadline = time.monotonic() + self.read.max_seconds_per_call
        emitted = 0
        held = False
        cap = self.read.max_ahead_of_commit
        while emitted < self.read.max_records_per_call and time.monotonic() < deadline:
            self._apply_back_pressure(pos)
            asked = self.read.max_records_per_call - emitted
            room_records, room_bytes = self._room(pos, asked)
            held = room_records < self._resume_records or room_bytes < max(self._needed_bytes, self._resume_bytes)
            self._hold(held)
            if held:
                break  # nothing read past the limits: the commits move them
            asked = int(min(asked, room_records, _FIRST_POLL_RECORDS if self._first_read else _POLL_RECORDS))
            try:
                polled = self._consumer.poll(timeout_ms=self.read.poll_timeout_ms, max_records=asked)
            except (errors.OffsetOutOfRangeError, errors.LogTruncationError) as exc:
                self._reposition(pos, exc)
                break
            if not polled:
                self.idle_polls.inc()
                self._watchdog(pos)
                break
            self._idle_since = None
            out: list[TimestampedValue] = []
            taken: list[tuple[str, int, int]] = []  # (key, offset, bytes) of what is emitted
            cut_short = False
            for tp, msgs in polled.items():
                key = tp_key(tp.topic, tp.partition)
                nxt, origin = pos[key]
                stop = self._committed_offset(key, origin, refresh=False) + cap if cap else None
                for msg in msgs:
                    if msg.offset < nxt:
                        continue  # already read (a re-sent fetch after a seek)
                    size = len(msg.value or b"")
                    if ((stop is not None and msg.offset >= stop)
                            or (size > room_bytes and (self._flight.records or taken))):
                        # past the room: read again from here later (the consumer goes back)
                        self._consumer.seek(tp, nxt)
                        if size > room_bytes:  # no poll before there is room for it
                            self._needed_bytes = min(size, self.read.max_uncommitted_bytes or size)
                        cut_short = True
                        break
                    room_bytes -= size
                    ref = SourceRef(topic=msg.topic, partition=msg.partition, offset=msg.offset,
                                    covers_from=nxt, origin=origin, timestamp_ms=msg.timestamp)
                    nxt = msg.offset + 1
                    taken.append((key, msg.offset, size))
                    self.bytes_read.inc(size)
                    out.append(TimestampedValue(KafkaRecord(msg.value, msg.key, ref, list(msg.headers or [])),
                                                Timestamp(micros=max(msg.timestamp, 0) * 1000)))
                pos[key] = (nxt, origin)
                self._assigned[key] = nxt
            if not tracker.try_claim(Positions.of(pos, listed_at)):
                self._assigned = {}  # not ours to emit: the next call seeks again
                return
            for key, offset, size in taken:
                self._flight.add(key, offset, size)
            if not cut_short:
                self._needed_bytes = 1
            for value in out:
                yield value
                advance_watermark(watermark, value.timestamp)
            self.records_read.inc(len(out))
            emitted += len(out)
            first, self._first_read = self._first_read, False
            if cut_short or first or self._caught_up(pos):
                # at a limit, or nothing more to read now, or the job's first records (its
                # first output comes after one poll, not a full bundle): end the bundle, so
                # these records move on
                break
        if not tracker.try_claim(Positions.of(pos, listed_at)):
            return
        if emitted == 0 and not held:
            # Idle: nothing newer can carry an older timestamp than "now - a little".
            advance_watermark(watermark, Timestamp.now() - Duration(seconds=1))
        tracker.defer_remainder(Duration(seconds=0 if emitted else self.read.idle_resume_seconds))

    def teardown(self) -> None:
        for c in (getattr(self, "_consumer", None), getattr(self, "_group", None)):
            if c is not None:
                try:
                    c.close(autocommit=False)
                except Exception:  # closing on shutdown: nothing left to protect
                    pass


# Records one poll hands over at most: the bundle's deadline (``max_seconds_per_call``) is
# checked between polls, and the stages fused with the reader (parse, fetch, extract) take each
# record before the next is read, so a poll of 500 URLs would hold the bundle for as long as
# fetching 500 pages politely takes (seen: 10 s and more), its outputs with it.
_POLL_RECORDS = 64
# The job's first poll, which ends its first bundle (``_first_read``): a few records, so the
# first output waits for one page's extraction on each of 2 workers, not for 64 pages (traced,
# docs/performance.md "Start-up on Prism": the writer's stage 0.4 s after the first bundle
# began instead of 1.4-1.7 s); the bundles after it read as above while those records are
# deduplicated, written and committed.
_FIRST_POLL_RECORDS = 2


def _mib(nbytes: int | None) -> str:
    return f"{nbytes / 2**20:g}" if nbytes else "no limit"


class ReadLive(beam.PTransform):
    """Every partition of ``read.topics``, unbounded, as :class:`KafkaRecord`s (module doc)."""

    def __init__(self, kafka: KafkaConfig, read: ReadConfig) -> None:
        super().__init__()
        self.kafka = kafka
        self.read = read

    def expand(self, pbegin):
        return (pbegin
                | "Impulse" >> beam.Impulse()
                | "ReadAllPartitions" >> beam.ParDo(_ReadAllPartitionsFn(self.kafka, self.read)))
