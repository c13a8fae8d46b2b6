"""Poison messages on the local runner: a message that kills the job process.

An exception inside a stage is caught and becomes a dead letter (``internal``,
``extract_error`` ...). A message that kills the whole process instead (an OOM kill, a
segfault in a C library outside the extraction pool, ``os._exit`` in a library) cannot be
caught: the job restarts from the committed offset, reads the message again and dies again,
and its partition is blocked forever. The local runner (``pipelines/job.py``: bounded
micro-batches from the committed offsets) breaks that loop here:

* **Attempts are recorded before processing.** Before the first micro-batch of a process,
  and whenever a partition's committed offset moved, a marker per partition is written to
  the attempts topic (``--attempts-topic``, compacted, keyed ``<group>/<topic>:<partition>``):
  ``{"o": committed offset, "n": processes that started reading there}``. A clean exit
  (SIGTERM) resets ``n`` to 0; a process that dies leaves it, so the next process knows how
  many processes died at that offset without progress.
* **After ``--max-attempts`` (default 3) deaths at the same offset** the partition is
  *suspect*: a crashing offset lies in ``[o, hi)`` with ``hi = o + the micro-batch cap``
  (clamped to the partition's end). Suspect partitions are read alone (every other partition
  pauses, so a death is attributable) in windows: ``[o, o + ceil((hi - o) / 2))``, the
  window written to the marker before the run. A run that completes commits its window and
  the search goes on above it; a process death narrows ``hi`` to the window's end. When a
  window of **one** offset has killed the process, that offset is the poison message: a
  dead letter with reason ``poison`` (stage ``job``, ``attempts`` = the deaths it was part
  of) is written to the dead-letter output, the group's offset is committed past it and
  the partition goes back to normal micro-batches.
* A suspect partition whose windows all complete (the deaths were not caused by its
  messages, e.g. it merely shared micro-batches with a poison message in another partition,
  or the job was killed from outside) leaves the search without any dead letter.

Why a topic and not the committed offset's metadata: Kafka's OffsetCommit carries a
metadata string per partition that would hold the marker without an extra topic, but
Tansu 0.6 (the embedded broker of the demo and the tests) does not keep it: a commit with
metadata reads back with ``metadata=None`` (checked with kafka-python 3.0's
``committed(tp, metadata=True)``). So the markers live in a small compacted topic, one
record per partition and per change (process start, progress), read once when a process
starts.

Without ``--attempts-topic`` (or with ``--dry-run``, which commits nothing) the guard is off.
A second copydesk process on the same group would confuse the counts; the local runner is
one process per group by design.

Test hook: ``COPYDESK_TEST_CRASH_ON=<substring>`` makes the parse stage end the process
(``os._exit(70)``) on a message containing the substring (``transforms/parse/messages.py``); it
exists only so the tests can produce a real poison message.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any


from copydesk.schemas.codec import dead_letter, decode, encode, encode_doc
from copydesk.schemas.reasons import Reason, Stage
from copydesk.schemas.records import SourceRef
from copydesk.transforms.kafka.client import partitions_for, split_tp_key, topic_partition
from copydesk.transforms.kafka.io import KafkaConfig, ReadConfig, resolve_partitions

log = logging.getLogger(__name__)


@dataclass
class Marker:
    """What the attempts topic holds for one partition of one group."""

    o: int  # the committed offset the marker is about
    n: int = 0  # processes that started reading at ``o`` (normal mode); 0 after a clean exit
    hi: int | None = None  # isolation: an offset in [o, hi) killed the process
    m: int | None = None  # isolation: the window [o, o + m) being read
    c: int = 0  # process deaths in this incident (the dead letter's ``attempts``)

    def dumps(self) -> bytes:
        return encode_doc({k: v for k, v in dataclasses.asdict(self).items() if v is not None})

    @classmethod
    def loads(cls, data: bytes) -> "Marker":
        d = decode(data)
        return cls(o=int(d["o"]), n=int(d.get("n", 0)), hi=d.get("hi"), m=d.get("m"), c=int(d.get("c", 0)))


class AttemptStore:
    """Markers in a compacted topic, keyed ``<group>/<topic>:<partition>``."""

    def __init__(self, kafka: KafkaConfig, topic: str, group: str) -> None:
        self.kafka, self.topic, self.group = kafka, topic, group
        self._producer = None

    def key(self, partition_key: str) -> str:
        return f"{self.group}/{partition_key}"

    def load(self) -> dict[str, Marker]:
        """Every marker of this group (the last record per key), read to the end of the topic."""
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **self.kafka.kwargs())
        prefix = f"{self.group}/"
        out: dict[str, Marker] = {}
        try:
            tps = [topic_partition(self.topic, p) for p in sorted(partitions_for(consumer, self.topic))]
            beginning = consumer.beginning_offsets(tps)
            end = consumer.end_offsets(tps)
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, beginning[tp])
            deadline = time.monotonic() + 60
            while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
                for recs in consumer.poll(timeout_ms=300, max_records=5000).values():
                    for r in recs:
                        key = (r.key or b"").decode("utf-8", "replace")
                        if not key.startswith(prefix):
                            continue
                        if r.value:
                            out[key[len(prefix):]] = Marker.loads(r.value)
                        else:
                            out.pop(key[len(prefix):], None)
        finally:
            consumer.close()
        return out

    def save(self, markers: dict[str, Marker]) -> None:
        """Write and confirm (acks=all) before the micro-batch they describe starts."""
        if not markers:
            return
        if self._producer is None:
            from kafka import KafkaProducer

            # max_block_ms bounds a send while the broker is away (the batch then runs unguarded).
            self._producer = KafkaProducer(acks="all", retries=5, max_block_ms=10_000, client_id="copydesk-attempts",
                                           **self.kafka.kwargs())
        futs = [self._producer.send(self.topic, key=self.key(k).encode(), value=m.dumps()) for k, m in markers.items()]
        self._producer.flush()
        for f in futs:
            f.get(timeout=self.kafka.request_timeout_ms / 1000)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None


class PoisonGuard:
    """Before/after hooks around each micro-batch of the local runner (see the module doc)."""

    def __init__(self, o: Any, kafka: KafkaConfig | None, base: ReadConfig, batch_records: int,
                 store: AttemptStore | None = None) -> None:
        self.o = o
        self.kafka = kafka
        self.base = base
        self.batch_records = max(1, batch_records)
        self.max_attempts = max(1, int(getattr(o, "max_attempts", None) or 3))
        self.enabled = bool(getattr(o, "attempts_topic", None)) and kafka is not None and not o.copydesk_dry_run
        self.store = store or (AttemptStore(kafka, o.attempts_topic, o.group_id) if self.enabled else None)
        self.markers: dict[str, Marker] | None = None  # as last written (None: not loaded yet)
        self.window: str | None = None  # the partition whose isolation window is being read
        self.poisoned: list[tuple[str, int, int]] = []  # (partition, offset, attempts) dead-lettered

    # -- hooks

    def before_batch(self, rc: ReadConfig) -> ReadConfig:
        """Record the attempt; return the ReadConfig of the next run (a window when isolating)."""
        if not self.enabled:
            return rc
        try:
            return self._before(rc)
        except Exception as exc:  # never block the job on its own bookkeeping
            log.warning("poison guard: attempts not recorded for this run: %r", exc)
            self.window = None
            return rc

    def after_batch(self) -> None:
        """The run completed (the process survived it): settle an isolation window."""
        if not self.enabled or self.window is None or self.markers is None:
            return
        key, self.window = self.window, None
        try:
            lo = self._starts()[key]
            m = self.markers[key]
            if lo <= m.o:
                log.warning("poison guard: %s: window [%d, %d) completed without progress; leaving isolation",
                            key, m.o, m.o + (m.m or 0))
                new = Marker(o=lo, n=1)
            elif m.hi is not None and lo < m.hi:
                new = Marker(o=lo, hi=m.hi, c=m.c)
            else:
                log.warning("poison guard: %s: [%d, %d) processed without a process death; leaving isolation",
                            key, m.o, m.hi or lo)
                new = Marker(o=lo, n=1)
            self._save({key: new})
        except Exception as exc:
            log.warning("poison guard: could not settle the window of %s: %r", key, exc)

    def close(self) -> None:
        """Clean exit: this process did not die, so its attempts do not count."""
        if not self.enabled or self.markers is None:
            return
        try:
            clean = {k: (Marker(o=m.o, hi=m.hi, c=m.c) if m.hi is not None else Marker(o=m.o, n=0))
                     for k, m in self.markers.items() if m.n or m.m is not None}
            self._save(clean)
        except Exception as exc:
            log.warning("poison guard: could not record the clean exit: %r", exc)
        finally:
            self.store.close()

    # -- internals

    def _starts(self) -> dict[str, int]:
        """Where the next run starts reading each partition (committed, else earliest/latest)."""
        return {s.key: s.start for s in resolve_partitions(self.kafka, self.base)}

    def _save(self, changed: dict[str, Marker]) -> None:
        self.store.save(changed)
        assert self.markers is not None
        self.markers.update(changed)

    def _before(self, rc: ReadConfig) -> ReadConfig:
        starts = self._starts()
        changed: dict[str, Marker] = {}
        if self.markers is None:
            self.markers = {}
            stored = self.store.load()
            for key, lo in starts.items():
                changed[key] = self._after_restart(key, lo, stored.get(key))
        else:
            for key, lo in starts.items():
                m = self.markers.get(key)
                if m is None or m.o != lo:  # progress (or a new partition): attempts start over
                    changed[key] = (Marker(o=lo, hi=m.hi, c=m.c) if m is not None and m.hi is not None and lo < m.hi
                                    else Marker(o=lo, n=1))
        # A window of one offset killed the previous process: that offset is the poison.
        for key, mk in list(changed.items()):
            if mk.hi is not None and mk.hi - mk.o <= 0:
                changed[key] = Marker(o=mk.o, n=1)
        self._save(changed)
        for key in sorted(self.markers):
            mk = self.markers[key]
            if mk.hi is not None and mk.m == -1:  # marked for a dead letter by _after_restart
                self._dead_letter(key, mk.o, mk.c)
                starts[key] = mk.o + 1
                self._save({key: Marker(o=mk.o + 1, n=1)})
        suspects = sorted(k for k, mk in self.markers.items() if mk.hi is not None and mk.hi > mk.o)
        if not suspects:
            self.window = None
            return rc
        key = suspects[0]
        mk = self.markers[key]
        size = mk.hi - mk.o
        width = 1 if size <= 1 else math.ceil(size / 2)
        self._save({key: Marker(o=mk.o, hi=mk.hi, m=width, c=mk.c)})
        self.window = key
        log.warning("poison guard: %s: suspect range [%d, %d) (%d process death(s) so far); reading [%d, %d) "
                    "alone (other partitions wait)", key, mk.o, mk.hi, mk.c, mk.o, mk.o + width)
        # A window is bounded by its stop offsets, not by the micro-batch deadline: that deadline
        # was set before this bookkeeping and Beam's start, and a window it cut short before it
        # read anything would be taken for one that completed (seen on Apache Kafka, where
        # loading the markers and finding the suspect range take a few seconds).
        return replace(rc, deadline=None, start_offsets=tuple(starts.items()),
                       stop_offsets=tuple((k, mk.o + width if k == key else s) for k, s in starts.items()))

    def _after_restart(self, key: str, lo: int, m: Marker | None) -> Marker:
        """The marker for partition ``key`` (next offset ``lo``) in a process that just started."""
        if m is None or m.o != lo:
            return Marker(o=lo, n=1)  # progress since (or never seen): a fresh first attempt
        if m.hi is not None:  # isolating
            if m.m is None:
                return Marker(o=lo, hi=m.hi, c=m.c)  # no window was in flight (clean exit)
            hi, c = min(m.hi, lo + m.m), m.c + 1  # the window killed the process
            if hi - lo <= 1:
                log.error("poison guard: %s: offset %d killed the job %d time(s), the last time read alone: "
                          "dead-lettering it as poison", key, lo, c)
                return Marker(o=lo, hi=hi, m=-1, c=c)
            return Marker(o=lo, hi=hi, c=c)
        if m.n >= self.max_attempts:  # N processes died reading from lo: isolate
            hi = self._end_of(key, lo)
            log.error("poison guard: %s: %d processes died reading from offset %d (--max-attempts %d): "
                      "isolating [%d, %d)", key, m.n, lo, self.max_attempts, lo, hi)
            if hi <= lo:
                return Marker(o=lo, n=1)
            return Marker(o=lo, hi=hi, c=m.n)
        if m.n:
            log.warning("poison guard: %s: %d process(es) died reading from offset %d; attempt %d of %d",
                        key, m.n, lo, m.n + 1, self.max_attempts)
        return Marker(o=lo, n=m.n + 1)

    def _end_of(self, key: str, lo: int) -> int:
        """min(lo + the micro-batch cap, the partition's end): where the deaths' messages lie."""
        from kafka import KafkaConsumer

        tp = topic_partition(*split_tp_key(key))
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **self.kafka.kwargs())
        try:
            end = consumer.end_offsets([tp])[tp]
        finally:
            consumer.close()
        return min(lo + self.batch_records, end)

    def _read_one(self, topic: str, partition: int, offset: int) -> bytes | None:
        from kafka import KafkaConsumer

        tp = topic_partition(topic, partition)
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **self.kafka.kwargs())
        try:
            consumer.assign([tp])
            consumer.seek(tp, offset)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for r in consumer.poll(timeout_ms=300, max_records=1).get(tp, []):
                    return r.value if r.offset == offset else None
            return None
        finally:
            consumer.close()

    def _dead_letter(self, key: str, offset: int, attempts: int) -> None:
        """Write the poison dead letter, then commit the group's offset past it."""
        from kafka import KafkaConsumer
        from kafka.structs import OffsetAndMetadata

        from copydesk.schemas.records import InputMessage
        from copydesk.transforms.parse.messages import parse_message

        topic, _, part = key.rpartition(":")
        partition = int(part)
        value = self._read_one(topic, partition, offset)
        parsed = parse_message(value) if value is not None else None
        ref = SourceRef(topic=topic, partition=partition, offset=offset, covers_from=offset, origin=offset)
        dl = dead_letter(
            Stage.JOB, Reason.POISON,
            f"the message killed the job process {attempts} times (--max-attempts {self.max_attempts}, then "
            f"isolated: read alone it killed the process again); skipped",
            ref=ref, raw=value, url=parsed.url if isinstance(parsed, InputMessage) else None, attempts=attempts,
            detail={"max_attempts": self.max_attempts, "process_deaths": attempts})
        if self.o.dead_letter_topic:
            from kafka import KafkaProducer

            producer = KafkaProducer(acks="all", retries=5, client_id="copydesk-poison", **self.kafka.kwargs())
            try:
                producer.send(self.o.dead_letter_topic, value=encode(dl)).get(timeout=30)
                producer.flush()
            finally:
                producer.close(timeout=10)
        else:
            with open(self.o.dead_letter_file, "ab") as fh:
                fh.write(encode(dl) + b"\n")
        consumer = KafkaConsumer(group_id=self.kafka.group_id, enable_auto_commit=False,
                                 client_id="copydesk-poison", **self.kafka.kwargs())
        try:
            consumer.commit({topic_partition(topic, partition): OffsetAndMetadata(offset + 1, "", -1)})
        finally:
            consumer.close(autocommit=False)
        self.poisoned.append((key, offset, attempts))
        log.error("poison guard: %s: offset %d dead-lettered as poison after %d process deaths; committed %d",
                  key, offset, attempts, offset + 1)
