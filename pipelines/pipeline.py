"""Pipeline assembly: one composite per stage, wired here and nowhere else.

    Read -> Parse -> Fetch -> Extract -> Dedup -> Write (records)
                 \\______\\_______\\________________-> Write (dead letters)
    every write (and every deliberately dropped duplicate) -> acks -> CommitOffsets

``build_pipeline`` returns the stage outputs, exposed for tests.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from copydesk.pipelines.options import FN_API_RUNNER, CopydeskOptions
from copydesk.pipelines.startup import ConfigError, check_topics, kafka_config, validate  # noqa: F401 (also here)
from copydesk.schemas.codec import decode, encode_doc, raw_page_record
from copydesk.schemas.records import SourceRef
from copydesk.transforms.kafka.commit import CommitOffsets
from copydesk.transforms.dedup.stage import DedupConfig, Deduplicate
from copydesk.transforms.dedup.core import fingerprint_entry
from copydesk.transforms.dedup.metrics import DEDUP_NS, FINGERPRINT_READ_PREFIX
from copydesk.transforms.encode import EncodeRecords, encoded_key, encoded_value
from copydesk.transforms.extract.core import ExtractConfig
from copydesk.transforms.extract.stage import ExtractArticles
from copydesk.transforms.fetch.stage import FetchConfig, FetchPages
from copydesk.transforms.files import ReadInputFile, WriteJsonLines
from copydesk.transforms.kafka.io import KafkaConfig, ReadConfig, ReadFromKafkaPartitions, WriteToKafka, acks_for
from copydesk.transforms.kafka.live import ReadLive
from copydesk.transforms.parse.messages import ParseMessages
from copydesk.transforms.parse.raw_pages import ParseRawPages

log = logging.getLogger(__name__)


@dataclass
class PipelineOutputs:
    records: Any
    dead_letters: Any
    dropped: Any
    acks: Any | None


def _only_known(cls, values: dict[str, Any]) -> dict[str, Any]:
    """The options that were given (not None), checked against the config's fields: a
    misspelt or renamed field is a bug that must fail loudly, not an option silently ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return {k: v for k, v in values.items() if v is not None}


def fetch_config(o: CopydeskOptions) -> FetchConfig:
    nets = tuple(n.strip() for n in (o.allow_networks or "").split(",") if n.strip())
    return FetchConfig(**_only_known(FetchConfig, {
        "max_in_flight": o.max_in_flight,
        "per_host_concurrency": o.per_host_concurrency,
        "per_host_delay": o.per_host_delay,
        "user_agent": o.fetch_user_agent,
        "total_timeout": o.fetch_timeout,
        "deadline": o.fetch_deadline,
        "max_page_bytes": o.max_page_bytes,
        "max_redirects": o.max_redirects,
        "respect_robots": not o.ignore_robots,
        "allow_private": o.allow_private or None,
        "allowed_networks": nets or None,
        "resolve": parse_pins(o.resolve) or None,
    }))


def parse_pins(text: str | None) -> tuple[tuple[str, str], ...]:
    """``"a.test=127.0.0.1,b.test=::1"`` -> ``(("a.test", "127.0.0.1"), ("b.test", "::1"))``."""
    pins = []
    for item in (text or "").split(","):
        if item.strip():
            host, sep, address = item.strip().partition("=")
            if not sep:
                raise ValueError(f"--resolve: {item!r} is not HOST=ADDRESS")
            pins.append((host.strip().lower(), address.strip()))
    return tuple(pins)


def extract_config(o: CopydeskOptions) -> ExtractConfig:
    return ExtractConfig(**_only_known(ExtractConfig, {
        "compare": o.extract_compare,  # None: ExtractConfig's measured default, as `copydesk extract`
        "timeout_s": o.extract_timeout,
        "memory_mb": o.extract_memory_mb,
    }))


def dedup_config(o: CopydeskOptions) -> DedupConfig:
    return DedupConfig(**_only_known(DedupConfig, {
        "drop_duplicates": o.drop_duplicates,
        "force": o.force or None,
        "horizon_seconds": o.dedup_horizon_hours * 3600 if o.dedup_horizon_hours else None,
        "threshold": o.dedup_threshold,
    }))


def _write(encoded, label: str, o: CopydeskOptions, topic: str | None, path: str | None):
    """Write :class:`Encoded` records to a topic or a file; return the acks of what was written (or None)."""
    if topic and o.kafka_io == "java":
        from apache_beam.io.kafka import WriteToKafka as JavaWriteToKafka

        kc = kafka_config(o)
        (encoded
         | f"KV{label}" >> beam.Map(lambda e: ((e.key or "").encode(), e.value)).with_output_types(Tuple[bytes, bytes])
         | f"Write{label}ToKafkaJava" >> JavaWriteToKafka(
             producer_config={"bootstrap.servers": kc.bootstrap_servers}, topic=topic))
        return None  # the Java reader commits offsets on checkpoint finalisation instead of acks
    if topic:
        return encoded | f"Write{label}ToKafka" >> WriteToKafka(kafka_config(o), topic, encoded_value,
                                                                key_of=encoded_key)
    return encoded | f"Write{label}ToFile" >> WriteJsonLines(path, encoded_value)


def live_read_config(o: CopydeskOptions) -> ReadConfig:
    """How the job reads its input topics when it runs unbounded (Prism, Flink, Dataflow)."""
    return ReadConfig(topics=tuple(t for t in o.input_topic.split(",") if t), start=o.start_from,
                      max_message_bytes=o.max_message_bytes, discovery_seconds=o.partition_discovery_seconds,
                      max_ahead_of_commit=o.max_read_ahead or None,
                      max_uncommitted_records=o.max_uncommitted_records or None,
                      max_uncommitted_bytes=int(o.max_uncommitted_mb * 2**20) or None)


class _JavaKafkaRead(beam.PTransform):
    """Beam's Java KafkaIO through the expansion service (Flink/Dataflow only).

    Offsets are committed by KafkaIO when the runner finalises a checkpoint
    (``commit_offset_in_finalize``), which on Flink/Dataflow follows the checkpointed writes.
    Not exercised by the tests here: the expansion jar comes from Maven Central.
    """

    def __init__(self, kc: KafkaConfig, o: CopydeskOptions) -> None:
        super().__init__()
        self.kc, self.o = kc, o

    def expand(self, pbegin):
        from apache_beam.io.kafka import ReadFromKafka

        reset = "latest" if self.o.start_from == "latest" else "earliest"
        return (pbegin
                | ReadFromKafka(consumer_config={"bootstrap.servers": self.kc.bootstrap_servers,
                                                 "group.id": self.kc.group_id, "auto.offset.reset": reset},
                                topics=[t for t in self.o.input_topic.split(",") if t], with_metadata=True,
                                commit_offset_in_finalize=True)
                | "ToInput" >> beam.Map(lambda m: (m.value, SourceRef(topic=m.topic, partition=m.partition,
                                                                      offset=m.offset, timestamp_ms=m.timestamp))))


def build_pipeline(p: beam.Pipeline, options: PipelineOptions, read_config: ReadConfig | None = None) -> PipelineOutputs:
    """Wire the stages. ``read_config`` overrides how topics are read (replay, demo)."""
    o = options.view_as(CopydeskOptions)
    validate(o)
    kc = kafka_config(o)
    if o.input_topic and o.kafka_io == "java":
        raw = p | "ReadKafkaJava" >> _JavaKafkaRead(kc, o)
    elif o.input_topic:
        rc = read_config or live_read_config(o)
        # the live read (a streaming runner: partitions listed again every discovery_seconds),
        # else one element per partition (bounded reads: replay, demo, micro-batches)
        reader = ReadLive if rc.discovery_seconds else ReadFromKafkaPartitions
        raw = (p | "ReadKafka" >> reader(kc, rc)
               | "Unwrap" >> beam.Map(lambda r: (r.value, r.ref)))
        # No fusion break after the live reader (there was one, "Spread", a Reshuffle): the
        # reader, parse, fetch and extract are one fused stage, so a message's payload (a
        # pre-scraped page: ~350 KB) never crosses the runner; only the article does. The
        # reader's bundles are one after another (one element), each about
        # ``max_seconds_per_call`` of reading while the workers extract what it read, and a
        # bundle ends by itself once the reader has caught up (transforms/kafka/live.py).
        # Measured on Prism against the break (docs/performance.md, "Fused reader"): ~2x
        # pages/s, a third less CPU a page, half the peak RSS, first output 3x sooner.
    else:
        raw = p | "ReadFile" >> ReadInputFile(o.input_file)

    if o.raw_pages_input:
        # The input is the raw-pages archive: the pages as fetched then, re-extracted, no HTTP.
        pages, parse_dead = raw | "ParseRawPages" >> ParseRawPages()
        fetch_dead = p | "NoFetch" >> beam.Create([])
    else:
        messages, parse_dead = raw | "Parse" >> ParseMessages(o.max_message_bytes)
        pages, fetch_dead = messages | "Fetch" >> FetchPages(fetch_config(o))
    articles, extract_dead = pages | "Extract" >> ExtractArticles(extract_config(o), workers=o.extract_workers)
    dcfg = dedup_config(o)
    seed = None
    if o.fingerprint_topic:
        # The dedup index survives restarts: a run first reads the compacted topic of
        # fingerprints the job writes below, once (a streaming job: once per start; the
        # micro-batch fallback: once per micro-batch, which is why it is only a fallback).
        seed = (p | "ReadFingerprints" >> ReadFromKafkaPartitions(
                    kc, ReadConfig(topics=(o.fingerprint_topic,), start="earliest", use_committed=False,
                                   stop_when_idle_seconds=0.5,
                                   counter_namespace=DEDUP_NS, counter_prefix=FINGERPRINT_READ_PREFIX))
                | "DecodeFingerprints" >> beam.Map(lambda r: decode(r.value)))
    records, dropped = articles | "Dedup" >> Deduplicate(dcfg, seed=seed)
    if o.fingerprint_topic and not o.copydesk_dry_run:
        # Auxiliary: not acked, so offsets never wait for (or get ahead because of) this write.
        (records | "Fingerprints" >> beam.Map(lambda e, cfg: fingerprint_entry(e.record, cfg), dcfg)
         | "WriteFingerprints" >> WriteToKafka(kc, o.fingerprint_topic, encode_doc, key_of=lambda e: e["id"]))
    if o.raw_pages_topic and not o.copydesk_dry_run:
        (pages | "RawPages" >> beam.Map(raw_page_record)
         | "WriteRawPages" >> WriteToKafka(kc, o.raw_pages_topic, encode_doc,
                                           key_of=lambda d: d.get("final_url") or d.get("url")))
    # A record that cannot be encoded (or fails its schema) is a dead letter, not a failed bundle.
    encoded, encode_dead = records | "Encode" >> EncodeRecords()
    dead = (parse_dead, fetch_dead, extract_dead, encode_dead) | "DeadLetters" >> beam.Flatten()

    acks = []
    if not o.copydesk_dry_run:
        acks.append(_write(encoded, "Records", o, o.output_topic, o.output_file))
        acks.append(_write(dead | "EncodeDeadLetters" >> EncodeRecords(dead_letters=True), "DeadLetters", o,
                           o.dead_letter_topic, o.dead_letter_file))
    acks.append(dropped | "AckDropped" >> beam.FlatMap(lambda r: acks_for([r.ref])))
    all_acks = None
    if o.input_topic and o.kafka_io != "java":
        all_acks = tuple(a for a in acks if a is not None) | "Acks" >> beam.Flatten()
        all_acks | "CommitOffsets" >> CommitOffsets(kc, dry_run=o.copydesk_dry_run)
    return PipelineOutputs(records=records, dead_letters=dead, dropped=dropped, acks=all_acks)


class _Options(PipelineOptions):
    """``PipelineOptions`` that make each view (``view_as(cls)``) once.

    Beam's ``view_as`` builds an argparse parser for the class and parses the whole command
    line again on every call, and building a pipeline calls it ~120 times (every transform
    applied asks for its ``TypeOptions``, ``StandardOptions`` ...): measured, a third to half
    of ``build_pipeline``'s time. A view holds no value of its own (every view reads and writes
    the one ``_all_options`` dict), so one view per class is the same options."""

    def view_as(self, cls):
        views = self.__dict__.get("_views")
        if views is None:
            views = self.__dict__["_views"] = {}
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_views", None)  # made again on demand
        return state


def pipeline_options(argv: list[str]) -> PipelineOptions:
    """Parse argv into options; default to the Python FnApiRunner (see README: local runner)."""
    options = _Options(argv)
    std = options.view_as(StandardOptions)
    if not std.runner or std.runner.lower() in ("fnapirunner", "fnapi"):
        std.runner = FN_API_RUNNER
    return options


def configure_local_runner(options: PipelineOptions) -> None:
    """FnApiRunner tuning measured here: keyed state is ~6x faster without the state cache."""
    if options.view_as(StandardOptions).runner == FN_API_RUNNER:
        from apache_beam.runners.portability.fn_api_runner import worker_handlers

        worker_handlers.STATE_CACHE_SIZE_MB = 0

