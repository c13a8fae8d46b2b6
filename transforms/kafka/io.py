"""Kafka in and out of Beam, on kafka-python.

``ReadFromKafkaPartitions`` is a splittable DoFn source: one element per topic partition,
an offset-range restriction (unbounded for the live job, bounded for replays), a
self-checkpoint (``defer_remainder``) when the partition is idle or a batch is done, and a
manual watermark estimator driven by record timestamps (advanced to wall time while a
partition is idle, so downstream event-time logic is not held back by a quiet partition).

Where a partition starts: an explicit offset (replays), else the group's committed offset,
else ``start`` (``earliest``/``latest``), like Kafka's ``auto.offset.reset``. The live read
(``discovery_seconds`` set: a streaming runner) is :mod:`copydesk.transforms.kafka.live`: one
element for all partitions, so that the stages fused with the reader (fetch, extract) have one
instance for the job's life; it re-lists partitions and keeps a bounded distance from the
group's committed offset. The bounded reads (replays, micro-batches, the fingerprint topic)
are one element per partition, here.

``request_drain()`` (SIGTERM, pipelines/job.py) ends every unbounded read of this process
where it is: what was read flows on to the sinks and the committer, then the pipeline
completes. The job's workers run in the job's process (Prism's LOOPBACK environment), which
is what makes a process-wide flag reach them.

``WriteToKafka`` is the buffered-sink shape of Beam's own Pub/Sub sink: the producer is
built in ``setup()``, sends are buffered per bundle and ``finish_bundle()`` flushes and
checks every send before the bundle counts as done; a failed send fails the bundle so the
runner retries it (at-least-once). After the flush it emits *acks*, the offset ranges the
written records account for, which :mod:`copydesk.transforms.kafka.commit` turns into consumer-
group commits. That is what makes commits follow writes even across the keyed dedup stage.

On Flink/Dataflow the Java ``ReadFromKafka``/``WriteToKafka`` cross-language transforms can
be selected instead (``--kafka-io java``, see pipelines/pipeline.py); they need the expansion service jar (a Maven
download), which is why the Python implementation is the default.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from copydesk.schemas.records import SourceRef
from copydesk.transforms.kafka.client import advance_watermark, partitions_for, topic_partition, tp_key
from copydesk.transforms.kafka.config import UNBOUNDED, KafkaConfig, KafkaRecord, PartitionSpec, ReadConfig
from copydesk.transforms.kafka.metrics import BYTES_READ, IDLE_POLLS, RECORDS_READ, read_counter
from copydesk.transforms.stage_metrics import WRITE_NS, records_written

log = logging.getLogger(__name__)

_DRAIN = threading.Event()


def request_drain() -> None:
    """Stop every unbounded read of this process where it is (see the module doc)."""
    _DRAIN.set()


def reset_drain() -> None:
    _DRAIN.clear()


def draining() -> bool:
    return _DRAIN.is_set()


# --------------------------------------------------------------------------- discovery


def resolve_partitions(kafka: KafkaConfig, read: ReadConfig,
                       only: Iterable[tuple[str, int]] | None = None,
                       reset: str | None = None, consumer: Any = None) -> list[PartitionSpec]:
    """List the partitions of the input topics (or just ``only``) and where to start and stop
    reading each.

    Start: an explicit offset, else the group's committed offset, else ``reset`` (default
    ``read.start``): earliest or latest, as Kafka's ``auto.offset.reset``. ``consumer``: a
    consumer of ``kafka.group_id`` to ask (the caller's, kept open), else one made here.
    """
    from kafka import KafkaConsumer

    reset = reset or read.start
    own = consumer is None
    if own:
        consumer = KafkaConsumer(group_id=kafka.group_id, enable_auto_commit=False, **kafka.kwargs())
    try:
        if only is not None:
            tps = [topic_partition(t, p) for t, p in only]
        else:
            tps = []
            for topic in read.topics:
                parts = partitions_for(consumer, topic)
                tps.extend(topic_partition(topic, p) for p in sorted(parts))
        explicit_start = dict(read.start_offsets)
        explicit_stop = dict(read.stop_offsets)
        beginning = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps) if (reset == "latest" or read.stop_at_end) else {}
        specs = []
        for tp in tps:
            key = tp_key(tp.topic, tp.partition)
            if key in explicit_start:
                start = explicit_start[key]
            else:
                committed = consumer.committed(tp) if read.use_committed else None
                if committed is not None:
                    start = committed
                elif reset == "latest":
                    start = end[tp]
                else:
                    start = beginning[tp]
            start = max(start, beginning[tp])
            stop = explicit_stop.get(key, end[tp] if read.stop_at_end else UNBOUNDED)
            if read.max_records_per_partition:
                stop = min(stop, start + read.max_records_per_partition)
            specs.append(PartitionSpec(tp.topic, tp.partition, start, max(stop, start)))
        return specs
    finally:
        if own:
            consumer.close()


class _DiscoverPartitions(beam.DoFn):
    """Impulse -> one PartitionSpec per partition, resolved when the job starts (on a worker)."""

    def __init__(self, kafka: KafkaConfig, read: ReadConfig) -> None:
        self.kafka = kafka
        self.read = read

    def process(self, _impulse) -> Iterator[PartitionSpec]:
        specs = resolve_partitions(self.kafka, self.read)
        for spec in specs:
            _log_spec(spec)
        yield from specs


class _CheckpointOnlyTracker(OffsetRestrictionTracker):
    """An offset tracker that splits only at the current position (a checkpoint: fraction 0).

    A runner may also split a running bundle dynamically (Prism does, for long bundles): at
    a fraction of an *unbounded* range that is an offset near ``sys.maxsize``, and it would
    start a second reader of the same partition there. A partition is read in order by one
    reader, so only checkpoints are allowed."""

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder:
            return None
        return super().try_split(0)


def _log_spec(spec: PartitionSpec) -> None:
    log.info("reading %s from offset %d%s", spec.key, spec.start,
             "" if spec.stop == UNBOUNDED else f" to {spec.stop}")


# --------------------------------------------------------------------------- the SDF


class _PartitionRestrictionProvider(RestrictionProvider):
    def initial_restriction(self, element: PartitionSpec) -> OffsetRange:
        return OffsetRange(element.start, element.stop)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return _CheckpointOnlyTracker(restriction)

    def split(self, element, restriction):
        # A partition is read in order by one reader; no initial split.
        yield restriction

    def restriction_size(self, element, restriction: OffsetRange) -> int:
        if restriction.stop == UNBOUNDED:
            return 1 << 20  # unknown backlog: a constant keeps the runner's arithmetic sane
        return restriction.size()

    def truncate(self, element, restriction):
        # On drain, an unbounded read stops where it is; a bounded one finishes.
        if restriction.stop == UNBOUNDED:
            return None
        return restriction


class _ReadPartitionFn(beam.DoFn):
    """Read one partition's offset range; checkpoint itself after each batch or when idle."""

    def __init__(self, kafka: KafkaConfig, read: ReadConfig) -> None:
        self.kafka = kafka
        self.read = read
        self._consumers: dict[str, Any] = {}
        self._positions: dict[str, int] = {}
        self._last_data: dict[str, float] = {}
        ns, pre = read.counter_namespace, read.counter_prefix
        self.records_read = Metrics.counter(ns, read_counter(pre, RECORDS_READ))
        self.bytes_read = Metrics.counter(ns, read_counter(pre, BYTES_READ))
        self.idle_polls = Metrics.counter(ns, read_counter(pre, IDLE_POLLS))

    def setup(self) -> None:
        self._consumers = {}
        self._positions = {}
        self._last_data = {}

    def _consumer(self, spec: PartitionSpec):
        from kafka import KafkaConsumer

        c = self._consumers.get(spec.key)
        if c is None:
            c = KafkaConsumer(
                group_id=None,
                enable_auto_commit=False,
                isolation_level=self.read.isolation_level,
                fetch_max_wait_ms=100,
                max_poll_records=self.read.max_records_per_call,
                max_partition_fetch_bytes=max(self.read.max_message_bytes, 1 << 20),
                fetch_max_bytes=max(self.read.max_message_bytes * 2, 50 << 20),
                client_id=f"copydesk-reader-{spec.key}",
                **self.kafka.kwargs(),
            )
            c.assign([topic_partition(spec.topic, spec.partition)])
            self._consumers[spec.key] = c
        return c

    @staticmethod
    def _caught_up(consumer, tp) -> bool:
        """At the partition's end (the broker's end offset); True when the broker cannot say
        (an outage: the idle stop then behaves as it always did)."""
        try:
            return consumer.position(tp) >= consumer.end_offsets([tp])[tp]
        except Exception:
            return True

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        spec: PartitionSpec,
        tracker=beam.DoFn.RestrictionParam(_PartitionRestrictionProvider()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator[Any]:
        restriction = tracker.current_restriction()
        tp = topic_partition(spec.topic, spec.partition)
        consumer = self._consumer(spec)
        if self._positions.get(spec.key) != restriction.start:
            consumer.seek(tp, restriction.start)
        covers_from = restriction.start
        emitted = 0
        deadline = time.monotonic() + self.read.max_seconds_per_call
        self._last_data.setdefault(spec.key, time.monotonic())
        while True:
            if restriction.stop == UNBOUNDED and draining():
                self._positions[spec.key] = covers_from
                tracker.try_claim(restriction.stop)  # the job drains: this read ends here
                return
            if restriction.stop != UNBOUNDED and consumer.position(tp) >= restriction.stop:
                tracker.try_claim(restriction.stop)  # past the end: marks the range done
                return
            if self.read.deadline is not None and time.time() >= self.read.deadline:
                self._positions[spec.key] = covers_from
                tracker.try_claim(restriction.stop)  # the micro-batch is over: stop here
                return
            batch = consumer.poll(timeout_ms=self.read.poll_timeout_ms,
                                  max_records=self.read.max_records_per_call - emitted).get(tp, [])
            if not batch:
                self.idle_polls.inc()
                self._positions[spec.key] = covers_from
                idle_for = time.monotonic() - self._last_data[spec.key]
                bounded = self.read.stop_when_idle_seconds is not None
                caught_up = None
                if bounded and idle_for >= self.read.stop_when_idle_seconds:
                    caught_up = self._caught_up(consumer, tp)
                    if caught_up:
                        tracker.try_claim(restriction.stop)  # caught up: end this micro-batch's read
                        return
                    # Idle but not caught up: a new consumer's first fetches can take longer than
                    # the idle limit on a loaded machine (a start-up read of the fingerprint topic
                    # then ended with nothing). Keep reading until the partition's end.
                    self._last_data[spec.key] = time.monotonic()
                if emitted == 0 and (not bounded or (caught_up if caught_up is not None
                                                     else self._caught_up(consumer, tp))):
                    # Idle: nothing newer can carry an older timestamp than "now - a little". Not
                    # for a read that ends at the partition's end (idle stop) while it has not got
                    # there: an empty poll of a new consumer is not the end of the data, and Prism
                    # runs a stage once its side inputs' watermarks pass its input's (a start-up
                    # read of the fingerprint topic, a side input of dedup, then let the first
                    # records through before the entries were read: tests/test_restart_dedup.py).
                    advance_watermark(watermark, Timestamp.now() - Duration(seconds=1))
                tracker.defer_remainder(Duration(seconds=self.read.idle_resume_seconds))
                return
            for msg in batch:
                if not tracker.try_claim(msg.offset):
                    self._positions.pop(spec.key, None)
                    return
                ref = SourceRef(topic=msg.topic, partition=msg.partition, offset=msg.offset,
                                covers_from=covers_from, origin=spec.start, timestamp_ms=msg.timestamp)
                covers_from = msg.offset + 1
                ts = Timestamp(micros=max(msg.timestamp, 0) * 1000)
                self.records_read.inc()
                self.bytes_read.inc(len(msg.value or b""))
                self._last_data[spec.key] = time.monotonic()
                yield TimestampedValue(KafkaRecord(msg.value, msg.key, ref, list(msg.headers or [])), ts)
                advance_watermark(watermark, ts)
                emitted += 1
            if emitted >= self.read.max_records_per_call or time.monotonic() >= deadline:
                self._positions[spec.key] = covers_from
                tracker.defer_remainder()
                return

    def teardown(self) -> None:
        for c in self._consumers.values():
            try:
                c.close()
            except Exception:  # closing on shutdown: nothing left to protect
                pass
        self._consumers = {}


class ReadFromKafkaPartitions(beam.PTransform):
    """Read topics as a PCollection of :class:`KafkaRecord` (timestamped with the record time)."""

    def __init__(self, kafka: KafkaConfig, read: ReadConfig) -> None:
        super().__init__()
        self.kafka = kafka
        self.read = read

    def expand(self, pbegin):
        return (pbegin
                | "Impulse" >> beam.Impulse()
                | "DiscoverPartitions" >> beam.ParDo(_DiscoverPartitions(self.kafka, self.read))
                | "ReadPartitions" >> beam.ParDo(_ReadPartitionFn(self.kafka, self.read)))


# --------------------------------------------------------------------------- acks


Ack = tuple[str, tuple[int, int, int]]  # ("topic:partition", (covers_from, end, origin))


def acks_for(refs: Iterable[SourceRef]) -> list[Ack]:
    """Merge the offset ranges of written records into as few acks as possible."""
    by_tp: dict[str, list[tuple[int, int, int]]] = {}
    for ref in refs:
        if ref is None or not ref.is_kafka:
            continue
        start = ref.covers_from if ref.covers_from is not None else ref.offset
        origin = ref.origin if ref.origin is not None else start
        by_tp.setdefault(tp_key(ref.topic, ref.partition), []).append((start, ref.offset + 1, origin))
    out: list[Ack] = []
    for key, ranges in by_tp.items():
        ranges.sort()
        cur_s, cur_e, cur_o = ranges[0]
        for s, e, o in ranges[1:]:
            if s == cur_e and o == cur_o:
                cur_e = e
            else:
                out.append((key, (cur_s, cur_e, cur_o)))
                cur_s, cur_e, cur_o = s, e, o
        out.append((key, (cur_s, cur_e, cur_o)))
    return out


# --------------------------------------------------------------------------- the sink


def _producer_kwargs(kafka: KafkaConfig, topic: str, producer_config: dict | None) -> dict[str, Any]:
    cfg = dict(acks="all", linger_ms=5, retries=5, max_request_size=32 << 20,
               compression_type=None, client_id=f"copydesk-writer-{topic}")
    cfg.update(producer_config or {})
    return {**cfg, **kafka.kwargs()}


# Producers started ahead by warm_producer, by (topic, settings); a writer's setup takes one.
_WARM: dict[str, tuple[threading.Thread, dict[str, Any]]] = {}
_WARM_LOCK = threading.Lock()


def warm_producer(kafka: KafkaConfig, topic: str, producer_config: dict | None = None) -> None:
    """Start the producer of ``WriteToKafka(kafka, topic, ...)`` now, on a thread, and fetch
    the topic's metadata, so that the writer's first bundle (the job's first output) does not
    wait for them; the first writer of this process for ``topic`` takes it. Returns at once."""
    kwargs = _producer_kwargs(kafka, topic, producer_config)
    box: dict[str, Any] = {}

    def make() -> None:
        from kafka import KafkaProducer

        try:
            box["producer"] = KafkaProducer(**kwargs)
            box["producer"].partitions_for(topic)
        except Exception as exc:  # the writer makes its own, and meets the error itself
            log.debug("producer for %s not started ahead: %r", topic, exc)
    thread = threading.Thread(target=make, name=f"copydesk-warm-{topic}", daemon=True)
    with _WARM_LOCK:
        _WARM[repr(sorted(kwargs.items()))] = (thread, box)
    thread.start()


def _producer(kafka: KafkaConfig, topic: str, producer_config: dict | None) -> Any:
    """The writer's producer: the one :func:`warm_producer` started, else a new one."""
    kwargs = _producer_kwargs(kafka, topic, producer_config)
    with _WARM_LOCK:
        warm = _WARM.pop(repr(sorted(kwargs.items())), None)
    if warm is not None:
        warm[0].join()
        if "producer" in warm[1]:
            return warm[1]["producer"]
    from kafka import KafkaProducer

    return KafkaProducer(**kwargs)


class _KafkaWriteFn(beam.DoFn):
    """Buffered producer sink: flush and check every send in finish_bundle, then ack."""

    def __init__(self, kafka: KafkaConfig, topic: str, encode, key_of, producer_config: dict | None = None) -> None:
        self.kafka = kafka
        self.topic = topic
        self.encode = encode
        self.key_of = key_of
        self.producer_config = producer_config or {}
        self.written = Metrics.counter(WRITE_NS, records_written(topic))

    def setup(self) -> None:
        self._producer = _producer(self.kafka, self.topic, self.producer_config)

    def start_bundle(self) -> None:
        self._pending: list[tuple[Any, Any]] = []

    def process(self, record) -> None:
        value = self.encode(record)
        key = self.key_of(record)
        fut = self._producer.send(self.topic, value=value, key=key.encode() if isinstance(key, str) else key)
        self._pending.append((fut, getattr(record, "ref", None)))

    def finish_bundle(self):
        if not self._pending:
            return
        self._producer.flush()
        refs = []
        for fut, ref in self._pending:
            fut.get(timeout=self.kafka.request_timeout_ms / 1000)  # raises: the bundle is retried
            refs.append(ref)
        self.written.inc(len(self._pending))
        self._pending = []
        for ack in acks_for(refs):
            yield WindowedValue(ack, Timestamp.now(), [GlobalWindow()])

    def teardown(self) -> None:
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.close(timeout=10)


class WriteToKafka(beam.PTransform):
    """Write records to a topic, keyed by record id; returns the acks of what was written."""

    def __init__(self, kafka: KafkaConfig, topic: str, encode, key_of=lambda r: getattr(r, "id", None),
                 producer_config: dict | None = None) -> None:
        super().__init__()
        self.kafka, self.topic, self.encode, self.key_of = kafka, topic, encode, key_of
        self.producer_config = producer_config

    def expand(self, pcoll):
        return pcoll | beam.ParDo(_KafkaWriteFn(self.kafka, self.topic, self.encode, self.key_of,
                                                self.producer_config)).with_output_types(tuple)
