"""``copydesk replay``: a bounded run of the same transforms over a range of an input topic.

The range is resolved once, when the command starts, into ``[start, stop)`` per partition:

* ``--from-beginning``: every partition from its earliest offset to its end offset now;
* ``--offsets topic:partition=start-end,...``: exactly those ranges (``end`` exclusive; an
  empty ``end`` means "the end offset now"); partitions not listed are not read;
* ``--from-time`` / ``--to-time`` (ISO 8601; naive means UTC): the first offset whose
  timestamp is at or after ``--from-time`` up to the first at or after ``--to-time``. The
  broker's timestamp index (ListOffsets by time, kafka-python ``offsets_for_times``) is used
  when it answers (``--time-index broker``); ``--time-index scan`` reads the partition's
  timestamps instead, for brokers that lack the index or answer it coarsely (Tansu indexes
  by batch append time); ``auto`` (default) asks the broker and falls back to the scan when
  the request fails.

The range is read in chunks (``--chunk-records`` per partition): each chunk is one bounded
Beam run of ``build_pipeline`` (read, parse, fetch, extract, dedup, write, commit) that ends
at the chunk's stop offsets; a progress line per partition follows each chunk. The replay
commits under its own consumer group (default ``<group>-replay-<UTC timestamp>``), never the
live group's, so the live pipeline's position is untouched. ``--dry-run`` runs everything,
writes nothing, commits nothing and reports what would have been emitted.

``--source raw-pages``: the input topic is the raw-pages archive an earlier run wrote
(``--raw-pages-topic``); its pages are re-extracted as they were fetched then, with no HTTP
request (:mod:`copydesk.transforms.parse.raw_pages`), through the same extract/dedup/write path.

SIGTERM/SIGINT finish the current chunk and stop; the summary says where each partition got
to, and ``--offsets`` with those positions resumes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

log = logging.getLogger(__name__)

# the replay's own counters: what each chunk wrote (records, dead letters)
REPLAY_NS = "copydesk.replay"
REPLAY_RECORDS = "replay_records"
REPLAY_DEAD_LETTERS = "replay_dead_letters"


class ReplayError(ValueError):
    """The replay's arguments do not describe a range that can be read."""


@dataclass
class PartitionRange:
    topic: str
    partition: int
    start: int
    stop: int  # exclusive
    position: int = -1  # next offset to read

    def __post_init__(self) -> None:
        if self.position < 0:
            self.position = self.start

    @property
    def key(self) -> str:
        return f"{self.topic}:{self.partition}"

    @property
    def done(self) -> bool:
        return self.position >= self.stop


@dataclass
class ReplaySummary:
    group: str
    ranges: list[PartitionRange]
    records: int = 0
    dead_letters: int = 0
    read: int = 0
    chunks: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    stopped_early: bool = False
    counters: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- range parsing


def parse_offsets(text: str) -> dict[str, tuple[int, int | None]]:
    """``topic:partition=start-end,...`` -> {"topic:partition": (start, end or None)}."""
    out: dict[str, tuple[int, int | None]] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            tp, _, rng = item.partition("=")
            topic, _, part = tp.rpartition(":")
            start_s, _, end_s = rng.partition("-")
            if not topic or not _:
                raise ValueError
            start = int(start_s)
            end = int(end_s) if end_s.strip() else None
            int(part)
        except ValueError:
            raise ReplayError(f"--offsets: {item!r} is not topic:partition=start-end") from None
        if start < 0 or (end is not None and end < start):
            raise ReplayError(f"--offsets: {item!r}: need 0 <= start <= end")
        out[f"{topic}:{int(part)}"] = (start, end)
    if not out:
        raise ReplayError("--offsets: no ranges given")
    return out


def parse_time(text: str) -> int:
    """ISO 8601 (``2026-05-01T12:00:00Z``, ``2026-05-01``; naive = UTC) -> epoch milliseconds."""
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ReplayError(f"not an ISO 8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


# --------------------------------------------------------------------------- range resolution


def _consumer(kafka):
    from kafka import KafkaConsumer

    return KafkaConsumer(group_id=None, enable_auto_commit=False, **kafka.kwargs())


def _topic_partitions(consumer, topics: list[str]) -> list:
    from copydesk.transforms.kafka.client import partitions_for, topic_partition

    return [topic_partition(t, p) for t in topics for p in sorted(partitions_for(consumer, t))]


def offsets_for_time_by_scan(consumer, tp, ts_ms: int, start: int, end: int) -> int:
    """The first offset in [start, end) whose timestamp is >= ts_ms (``end`` when none).

    The fallback for brokers without a usable timestamp index: reads the partition's records
    (values included: kafka-python cannot fetch timestamps alone), so its cost is a full read
    of [start, end). Timestamps need not be monotonic: the first match wins, as with Kafka's
    own index.
    """
    if start >= end:
        return end
    consumer.assign([tp])
    consumer.seek(tp, start)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500, max_records=500).get(tp, [])
        for msg in batch:
            if msg.offset >= end:
                return end
            if msg.timestamp >= ts_ms:
                return msg.offset
        if consumer.position(tp) >= end:
            return end
    raise ReplayError(f"{tp.topic}:{tp.partition}: timestamp scan did not reach offset {end} within 300s")


def offsets_for_time_by_broker(consumer, tps: list, ts_ms: int, end: dict, beginning: dict) -> dict:
    """ListOffsets by timestamp (the broker's index). None from the broker means 'no record at
    or after ts_ms', i.e. the end offset. An answer that cannot be right (a timestamp of -1
    with an offset, as Tansu 0.6 gives for a time after the last record, or an offset outside
    the partition) raises, so ``auto`` falls back to the scan."""
    found = consumer.offsets_for_times({tp: ts_ms for tp in tps})
    out = {}
    for tp in tps:
        hit = found.get(tp)
        if hit is None:
            out[tp] = end[tp]
            continue
        if hit.timestamp is not None and hit.timestamp < 0 or not beginning[tp] <= hit.offset <= end[tp]:
            raise ReplayError(f"{tp.topic}:{tp.partition}: implausible offsets_for_times answer {hit} "
                              f"for {ts_ms} (partition [{beginning[tp]}, {end[tp]}))")
        if hit.timestamp is not None and hit.timestamp < ts_ms:
            raise ReplayError(f"{tp.topic}:{tp.partition}: offsets_for_times answered a record older than "
                              f"{ts_ms}: {hit}")
        out[tp] = hit.offset
    return out


def resolve_range(kafka, topics: list[str], *, from_beginning: bool = False,
                  offsets: dict[str, tuple[int, int | None]] | None = None,
                  from_time: int | None = None, to_time: int | None = None,
                  time_index: str = "auto") -> tuple[list[PartitionRange], str | None]:
    """Resolve the requested range into [start, stop) per partition, clamped to what exists.

    Returns the ranges and, for time ranges, how they were found ("broker" or "scan")."""
    chosen = sum(bool(x) for x in (from_beginning, offsets, from_time is not None or to_time is not None))
    if chosen != 1:
        raise ReplayError("give exactly one range: --from-beginning, --offsets or --from-time/--to-time")
    consumer = _consumer(kafka)
    try:
        tps = _topic_partitions(consumer, topics)
        beginning = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        method = None
        ranges: list[PartitionRange] = []
        if from_beginning:
            ranges = [PartitionRange(tp.topic, tp.partition, beginning[tp], end[tp]) for tp in tps]
        elif offsets:
            known = {f"{tp.topic}:{tp.partition}": tp for tp in tps}
            unknown = sorted(set(offsets) - set(known))
            if unknown:
                raise ReplayError(f"--offsets: no such partition(s) of {','.join(topics)}: {', '.join(unknown)}")
            for key, (s, e) in offsets.items():
                tp = known[key]
                stop = end[tp] if e is None else min(e, end[tp])
                start = max(s, beginning[tp])
                ranges.append(PartitionRange(tp.topic, tp.partition, min(start, stop), stop))
            for tp in tps:  # partitions not listed: an empty range, never read
                if f"{tp.topic}:{tp.partition}" not in offsets:
                    ranges.append(PartitionRange(tp.topic, tp.partition, end[tp], end[tp]))
            ranges.sort(key=lambda r: (r.topic, r.partition))
        else:
            lo_ms = from_time if from_time is not None else None
            hi_ms = to_time
            if lo_ms is not None and hi_ms is not None and hi_ms < lo_ms:
                raise ReplayError("--to-time is before --from-time")
            method = time_index
            lo = hi = None
            if time_index in ("auto", "broker"):
                try:
                    lo = offsets_for_time_by_broker(consumer, tps, lo_ms, end, beginning) if lo_ms is not None else beginning
                    hi = offsets_for_time_by_broker(consumer, tps, hi_ms, end, beginning) if hi_ms is not None else end
                    method = "broker"
                except Exception as exc:
                    if time_index == "broker":
                        raise ReplayError(f"the broker cannot look offsets up by time: {exc!r}") from exc
                    log.warning("broker timestamp index unavailable (%r): scanning timestamps instead", exc)
                    lo = hi = None
            if lo is None or hi is None:
                method = "scan"
                lo = {tp: (offsets_for_time_by_scan(consumer, tp, lo_ms, beginning[tp], end[tp])
                           if lo_ms is not None else beginning[tp]) for tp in tps}
                hi = {tp: (offsets_for_time_by_scan(consumer, tp, hi_ms, lo[tp], end[tp])
                           if hi_ms is not None else end[tp]) for tp in tps}
            for tp in tps:
                start = max(lo[tp], beginning[tp])
                stop = min(max(hi[tp], start), end[tp])
                ranges.append(PartitionRange(tp.topic, tp.partition, min(start, stop), stop))
        return ranges, method
    finally:
        consumer.close()


# --------------------------------------------------------------------------- running


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}min"


def progress_lines(summary: ReplaySummary, elapsed: float) -> list[str]:
    done = sum(r.position - r.start for r in summary.ranges)
    total = sum(r.stop - r.start for r in summary.ranges)
    rate = done / elapsed if elapsed > 0 else 0.0
    lines = [f"replay: {done}/{total} offsets, {summary.records} records, {summary.dead_letters} dead letters, "
             f"{rate:.1f} msg/s, chunk {summary.chunks}"]
    for r in summary.ranges:
        left = r.stop - r.position
        eta = (left / rate) if rate > 0 else (0.0 if left == 0 else None)
        lines.append(f"  {r.key}: position {r.position} of [{r.start}, {r.stop}) "
                     f"{'done' if r.done else f'{left} left, ETA {_fmt_eta(eta)}'}")
    return lines


def run_replay(argv: list[str], ranges: list[PartitionRange], *, chunk_records: int = 2000,
               stop_event=None, out: Callable[[str], None] = print) -> ReplaySummary:
    """Replay ``ranges`` with the pipeline described by ``argv`` (already carrying the replay's
    own ``--group-id``), chunk by chunk; one bounded Beam run per chunk."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    from copydesk.pipelines.job import add_counters, run_bounded
    from copydesk.pipelines.options import CopydeskOptions
    from copydesk.pipelines.pipeline import configure_local_runner, pipeline_options
    from copydesk.transforms.kafka.io import ReadConfig

    options = pipeline_options(argv)
    o = options.view_as(CopydeskOptions)
    configure_local_runner(options)
    summary = ReplaySummary(group=o.group_id, ranges=ranges, dry_run=bool(o.copydesk_dry_run))
    topics = tuple(sorted({r.topic for r in ranges}))
    started = time.monotonic()

    def count(name: str):
        counter = Metrics.counter(REPLAY_NS, name)

        def inc(x):
            counter.inc()
            return x
        return inc

    def count_outputs(outs) -> None:
        outs.records | "CountRecords" >> beam.Map(count(REPLAY_RECORDS))
        outs.dead_letters | "CountDeadLetters" >> beam.Map(count(REPLAY_DEAD_LETTERS))

    while not all(r.done for r in ranges):
        if stop_event is not None and stop_event.is_set():
            summary.stopped_early = True
            break
        chunk = {r.key: (r.position, min(r.stop, r.position + chunk_records)) for r in ranges}
        # Every partition of the topics is listed: those outside the range get an empty one.
        rc = ReadConfig(topics=topics, start="earliest", max_message_bytes=o.max_message_bytes,
                        start_offsets=tuple((k, s) for k, (s, _) in chunk.items()),
                        stop_offsets=tuple((k, e) for k, (_, e) in chunk.items()))
        run = run_bounded(options, rc, extend=count_outputs)
        summary.chunks += 1
        summary.records += run.counters.get(REPLAY_RECORDS, 0)
        summary.dead_letters += run.counters.get(REPLAY_DEAD_LETTERS, 0)
        summary.read += run.read
        add_counters(summary.counters, run.counters)
        for r in ranges:
            r.position = chunk[r.key][1]
        summary.seconds = time.monotonic() - started
        for line in progress_lines(summary, summary.seconds):
            out(line)
    summary.seconds = time.monotonic() - started
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="copydesk replay",
        description="A bounded run of the pipeline over a range of an input topic, under its own consumer "
                    "group, to a chosen output (--output-topic/--output-file, --dead-letter-topic/"
                    "--dead-letter-file, as for `copydesk run`) or --dry-run. Every other flag is a `copydesk "
                    "run` flag or a Beam option.")
    rng = parser.add_argument_group("range (exactly one)")
    rng.add_argument("--from-beginning", action="store_true", help="every partition, earliest to the end now")
    rng.add_argument("--offsets", default=None,
                     help="topic:partition=start-end,... (end exclusive, empty end = the end now)")
    rng.add_argument("--from-time", default=None, help="ISO 8601 start time (naive = UTC)")
    rng.add_argument("--to-time", default=None, help="ISO 8601 end time, exclusive (default: the end now)")
    rng.add_argument("--time-index", default="auto", choices=("auto", "broker", "scan"),
                     help="how times become offsets: the broker's index, a scan of timestamps, or "
                          "the index with the scan as fallback (default)")
    parser.add_argument("--source", default="messages", choices=("messages", "raw-pages"),
                        help="what --input-topic holds: input messages (default: parse, fetch, extract ...) or "
                             "raw-pages, the archive an earlier run wrote with --raw-pages-topic (re-extract the "
                             "pages as fetched then; no HTTP request)")
    parser.add_argument("--replay-group", default=None,
                        help="the replay's consumer group (default: <group>-replay-<UTC timestamp>); "
                             "never the live group")
    parser.add_argument("--chunk-records", type=int, default=2000,
                        help="offsets per partition per bounded run (one progress report each)")
    parser.add_argument("--log-level", default="warning")
    return parser


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        build_parser().print_help()
        return 0
    args, rest = build_parser().parse_known_args(argv)
    from copydesk.transforms.logs import setup_logging
    from copydesk.pipelines.argv import pop_flag

    setup_logging(args.log_level, "text")
    rest, live_group = pop_flag(rest, "--group-id", None)
    rest, live_group2 = pop_flag(rest, "--group_id", None)
    from copydesk.pipelines.options import CopydeskOptions
    from copydesk.pipelines.pipeline import ConfigError, check_topics, kafka_config, pipeline_options, validate
    from copydesk.pipelines.job import StopFlag

    live = live_group or live_group2 or CopydeskOptions(rest).view_as(CopydeskOptions).group_id or "copydesk"
    group = args.replay_group or f"{live}-replay-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    if group == live:
        print(f"copydesk replay: --replay-group must differ from the live group {live!r}", file=sys.stderr)
        return 2
    pargv = rest + ["--group-id", group] + (["--raw-pages-input"] if args.source == "raw-pages" else [])
    try:
        o = pipeline_options(pargv).view_as(CopydeskOptions)
        if not o.input_topic:
            raise ConfigError("--input-topic is required (the topic to replay)")
        validate(o)
        check_topics(o)
        kc = kafka_config(o)
        topics = [t for t in o.input_topic.split(",") if t]
        ranges, method = resolve_range(
            kc, topics, from_beginning=args.from_beginning,
            offsets=parse_offsets(args.offsets) if args.offsets else None,
            from_time=parse_time(args.from_time) if args.from_time else None,
            to_time=parse_time(args.to_time) if args.to_time else None,
            time_index=args.time_index)
    except (ConfigError, ReplayError) as exc:
        print(f"copydesk replay: {exc}", file=sys.stderr)
        return 2
    total = sum(r.stop - r.start for r in ranges)
    print(f"replay: group {group} (live group {live} untouched); {total} offsets"
          f"{' of the raw-pages archive (re-extraction, no fetching)' if args.source == 'raw-pages' else ''}"
          f"{f' (time range resolved by {method})' if method else ''}"
          f"{'; DRY RUN: nothing is written or committed' if o.copydesk_dry_run else ''}", flush=True)
    for r in ranges:
        if r.stop > r.start:
            print(f"  {r.key}: [{r.start}, {r.stop})", flush=True)
    stop = StopFlag()
    stop.install()
    summary = run_replay(pargv, ranges, chunk_records=max(1, args.chunk_records), stop_event=stop.event,
                         out=lambda line: print(line, flush=True))
    verb = "would emit" if summary.dry_run else "wrote"
    print(f"replay {'stopped early' if summary.stopped_early else 'done'}: read {summary.read} messages, "
          f"{verb} {summary.records} records and {summary.dead_letters} dead letters in {summary.seconds:.1f}s "
          f"({summary.chunks} chunk(s))", flush=True)
    if summary.stopped_early:
        resume = ",".join(f"{r.key}={r.position}-{r.stop}" for r in ranges if not r.done)
        print(f"resume with: --offsets {resume}", flush=True)
    return 0
