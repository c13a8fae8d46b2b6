"""Running the job: one unbounded run on a streaming runner, micro-batches on the local one.

On Flink or Dataflow (``--runner FlinkRunner|DataflowRunner``) the Kafka reader is an
unbounded splittable DoFn and the job runs as one streaming pipeline, with the runner's
checkpointed state.

Beam's local Python runner (FnApiRunner) runs an unbounded splittable DoFn continuously,
but it schedules every stage behind a shuffle (the keyed dedup stage, the committer, a
multi-input Flatten) only once its input is complete, i.e. never while the source is
unbounded. So locally the same pipeline runs as a sequence of bounded Beam runs: each one
reads every partition from the committed offset until the partition is idle (or a deadline
or size cap is reached), processes, writes, commits, and ends; the next one starts at once.
Records come out every few seconds; offsets are committed only after their records are
written; a SIGTERM lets the current run finish and then exits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from copydesk.pipelines.options import FN_API_RUNNER, CopydeskOptions
from copydesk.pipelines.broker_faults import BrokerWatch
from copydesk.pipelines.pipeline import (ConfigError, build_pipeline, check_topics, configure_local_runner,
                                         kafka_config, pipeline_options, validate)
from copydesk.transforms.kafka.io import ReadConfig

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    runs: int = 0
    records: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    read: int = 0
    seconds: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    # The last run, for on_run hooks (pipelines/metrics.py reads its Beam metrics).
    last_result: Any = None
    last_seconds: float = 0.0


def _counters(result) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for c in result.metrics().query()["counters"]:
            out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(c.committed or c.attempted or 0)
    except Exception:  # metrics are a report, not a correctness matter
        pass
    return out


def is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner == FN_API_RUNNER


class StopFlag:
    """Set by SIGTERM/SIGINT: the current run finishes (drains), then the job exits."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, _frame):
            if self.event.is_set():
                raise KeyboardInterrupt  # second signal: stop now
            log.warning("signal %d: finishing the current run, then exiting", signum)
            self.event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def run_job(argv: list[str], *, stop: StopFlag | None = None, max_runs: int | None = None,
            exit_when_idle: bool = False, idle_seconds: float = 1.0, batch_seconds: float = 10.0,
            batch_records: int = 5000, on_run: Callable[[BatchStats], None] | None = None,
            on_broker: Callable[[bool, int], None] | None = None,
            startup_wait_seconds: float = 300.0) -> BatchStats:
    """Run the job described by ``argv`` until it is done (file input, bounded runner) or
    stopped (SIGTERM, ``max_runs``, or ``exit_when_idle`` after a run that read nothing).

    On the local runner a micro-batch that fails because the broker went away is run again
    once the broker answers (``broker_faults.BrokerWatch``: logs, backoff, ``on_broker(up,
    errors)`` for the metrics); nothing of a failed run was committed past what it wrote.
    A job started while its broker is unreachable waits for it up to ``startup_wait_seconds``
    (logging), then fails with a clear error."""
    options = pipeline_options(argv)
    o = options.view_as(CopydeskOptions)
    validate(o)
    stop = stop or StopFlag()
    kc = kafka_config(o)
    watch = BrokerWatch(kc.kwargs(), listener=on_broker) if kc is not None else None
    if watch is not None:
        if not watch.wait_until_up(stop.event, startup_wait_seconds):
            if stop.event.is_set():
                return BatchStats()
            raise ConfigError(f"broker {watch.bootstrap} did not answer within {startup_wait_seconds:.0f}s "
                              f"of start-up")
        check_topics(o)
    configure_local_runner(options)
    stats = BatchStats()
    if not o.input_topic or not is_local(options):
        if o.input_topic:
            options.view_as(StandardOptions).streaming = True
        started = time.monotonic()
        result = _run_once(options, None)
        stats.runs = 1
        stats.seconds = time.monotonic() - started
        _add(stats, _counters(result))
        return stats

    if not o.fingerprint_topic:
        log.warning("no --fingerprint-topic: on the local runner each micro-batch is a new Beam run, so dedup "
                    "matches copies only within one micro-batch (and forgets them on restart); give a compacted "
                    "topic to keep the index across both")
    base = ReadConfig(topics=tuple(t for t in o.input_topic.split(",") if t), start=o.start_from,
                      max_message_bytes=o.max_message_bytes, stop_when_idle_seconds=idle_seconds,
                      max_records_per_partition=batch_records)
    watch.start()  # an input topic means Kafka, so the watch exists
    from copydesk.pipelines.poison import PoisonGuard

    guard = PoisonGuard(o, kc, base, batch_records)  # poison messages (--attempts-topic)
    while not stop.event.is_set():
        started = time.monotonic()
        rc = replace(base, deadline=time.time() + batch_seconds)
        rc = guard.before_batch(rc)  # attempts recorded before reading; a window while isolating
        try:
            result = _run_once(options, rc)
        except Exception as exc:  # a broker outage: wait for the broker, run the batch again
            if watch.run_failed(exc, stop.event):
                continue
            break
        watch.run_ok()
        counters = _counters(result)
        guard.after_batch()
        stats.runs += 1
        stats.last_result, stats.last_seconds = result, time.monotonic() - started
        stats.seconds += stats.last_seconds
        _add(stats, counters)
        read = counters.get("kafka_records_read", 0)
        log.info("run %d: read %d messages in %.1fs", stats.runs, read, time.monotonic() - started)
        if on_run:
            on_run(stats)
        if max_runs is not None and stats.runs >= max_runs:
            break
        if exit_when_idle and read == 0:
            break
        if read == 0:
            stop.event.wait(0.5)  # nothing new: a short pause before the next poll
    guard.close()  # a clean exit: this process's attempts do not count
    watch.close()
    return stats


def _add(stats: BatchStats, counters: dict[str, int]) -> None:
    for k, v in counters.items():
        stats.counters[k] = stats.counters.get(k, 0) + v
    stats.read += counters.get("kafka_records_read", 0)


def _run_once(options: PipelineOptions, read_config: ReadConfig | None) -> Any:
    p = beam.Pipeline(options=options)
    build_pipeline(p, options, read_config=read_config)
    result = p.run()
    result.wait_until_finish()
    return result
