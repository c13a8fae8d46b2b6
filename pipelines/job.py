"""Running the job: one unbounded streaming pipeline where a streaming runner is at hand,
bounded micro-batches on Beam's local Python runner where it is not.

Which runner (:func:`choose_runner`, logged when the job starts):

* ``--runner`` given: that runner (``FlinkRunner``, ``DataflowRunner``, ``PrismRunner`` run
  the pipeline unbounded; ``FnApiRunner`` runs the micro-batch loop below).
* else, a Kafka input: **Prism**, Beam's portable local runner (a Go binary), when one is
  found: ``--prism_location``, ``COPYDESK_PRISM``, the project's ``.cache/bin/prism`` (where
  ``.ci/run`` installs it with ``go install``), Beam's own cache, ``$GOPATH/bin``, ``PATH``.
  None found: the Beam SDK downloads the release binary itself (a machine with internet);
  ``COPYDESK_PRISM=off`` skips that. When that fails too (no binary, no network): micro-batches.
* else (``--input-file``): one bounded run on the local Python runner.

On Prism the job is one pipeline for its whole life: the Kafka reader is an unbounded
splittable DoFn, the keyed dedup state and the offset committer live as long as the job,
and every DoFn (one extraction pool, one fetcher) is set up once. The SDK harness runs in
this process (environment ``LOOPBACK``). SIGTERM drains: the readers stop where they are
(``transforms.kafka.io.request_drain``), what they read is written and committed, the
pipeline completes and the process exits 0. Prism keeps no state across a restart: the dedup
index is rebuilt once at start-up from ``--fingerprint-topic``, and the job resumes from the
committed offsets. A run that fails because the broker went away is started again once the
broker answers (``broker_faults.BrokerWatch``).

The micro-batch fallback exists for the case with no Prism binary and no network (the
README's ``copydesk demo`` on a machine with only Python) and for ``--runner FnApiRunner``.
Beam's FnApiRunner runs an unbounded splittable DoFn, but it schedules every stage behind a
shuffle (the keyed dedup stage, the committer) only once its input is complete, i.e. never
while the source is unbounded. So it runs the pipeline as a sequence of bounded Beam runs:
each one reads every partition from the committed offset until the partition is idle (or a
deadline or size cap is reached), processes, writes, commits, and ends; the next one starts
at once. Dedup then sees one micro-batch unless ``--fingerprint-topic`` (read by every
micro-batch). A SIGTERM lets the current run finish and then exits.

Poison messages (``--attempts-topic``, pipelines/poison.py) are isolated by bounded runs on
both: on Prism the guard records the attempt when the job starts and, when earlier processes
died at the same committed offset, bisects the suspect range with micro-batches before the
streaming pipeline starts.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import (PipelineOptions, PortableOptions, PrismRunnerOptions,
                                                  StandardOptions)

from copydesk.pipelines.options import FN_API_RUNNER, CopydeskOptions
from copydesk.pipelines.broker_faults import BrokerWatch
from copydesk.pipelines.prism import find_binary, prism_off
from copydesk.pipelines.startup import BrokerChecks, Prestart, explicit_runner, process_seconds, runner_name
from copydesk.pipelines.pipeline import (PipelineOutputs, build_pipeline, configure_local_runner, extract_config,
                                         kafka_config, pipeline_options, validate)
from copydesk.transforms.extract.pool import warm
from copydesk.transforms.kafka.io import ReadConfig, request_drain, reset_drain, warm_producer
from copydesk.transforms.kafka.metrics import INPUT_RECORDS_READ

log = logging.getLogger(__name__)

PRISM_RUNNER = "PrismRunner"
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


def read_counters(result) -> dict[str, int]:
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

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()

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


# --------------------------------------------------------------------------- which runner


@dataclass(frozen=True)
class RunnerChoice:
    kind: str  # "prism" | "microbatch" | "bounded" | "remote"
    reason: str
    prism_location: str | None = None


def find_prism(options: PipelineOptions | None = None) -> tuple[str | None, str]:
    """A Prism binary on this machine: (path or None, where it was looked for / found)."""
    return find_binary(options.view_as(PrismRunnerOptions).prism_location if options is not None else None)


def _prism_download(options: PipelineOptions, timeout: float = 30.0) -> tuple[str | None, str]:
    """Let the Beam SDK fetch its Prism release binary (needs internet); None on failure."""
    from apache_beam.runners.portability.prism_runner import PrismJobServer

    box: dict[str, Any] = {}

    def fetch() -> None:
        try:
            box["path"] = PrismJobServer(options)._get_executable_path()
        except Exception as exc:  # noqa: BLE001 - no network, no release: fall back
            box["error"] = exc

    t = threading.Thread(target=fetch, name="prism-download", daemon=True)
    t.start()
    t.join(timeout)
    if "path" in box:
        return box["path"], "downloaded by the Beam SDK"
    return None, f"the Beam SDK could not download it ({box.get('error') or f'no answer in {timeout:.0f}s'})"


def choose_runner(options: PipelineOptions, o: CopydeskOptions, explicit: str | None,
                  download: bool = True) -> RunnerChoice:
    """Which runner runs this job, and why (module doc). ``download=False``: no Prism
    download when no binary is found (the demo: quick, and it must work offline)."""
    if explicit:
        name = runner_name(explicit)
        if name in ("fnapirunner", "fnapi"):
            kind = "microbatch" if o.input_topic else "bounded"
            return RunnerChoice(kind, "--runner FnApiRunner")
        if name in ("prismrunner", "prism"):
            path, where = find_prism(options)
            return RunnerChoice("prism", f"--runner PrismRunner, binary: {where if path else 'fetched by Beam'}",
                                path)
        return RunnerChoice("remote", f"--runner {explicit}")
    if not o.input_topic:
        return RunnerChoice("bounded", "--input-file is a bounded input")
    path, where = find_prism(options)
    if path:
        return RunnerChoice("prism", f"a Kafka input and a Prism binary ({where})", path)
    if download and not prism_off():
        path, how = _prism_download(options)
        if path:
            return RunnerChoice("prism", f"a Kafka input; Prism {how}", path)
        where = f"{where}; {how}"
    return RunnerChoice("microbatch", f"no Prism binary ({where}): micro-batches on the local Python runner; "
                                      f"install one with `go install github.com/apache/beam/sdks/v2/go/cmd/"
                                      f"prism@v{beam.__version__}`")


# --------------------------------------------------------------------------- the job


def run_job(argv: list[str], *, stop: StopFlag | None = None, max_runs: int | None = None,
            exit_when_idle: bool = False, idle_seconds: float = 1.0, batch_seconds: float = 10.0,
            batch_records: int = 5000, on_run: Callable[[BatchStats], None] | None = None,
            on_broker: Callable[[bool, int], None] | None = None,
            startup_wait_seconds: float = 300.0, prism_download: bool = True,
            prestart: Prestart | None = None) -> BatchStats:
    """Run the job described by ``argv`` until it is done (file input, bounded runner) or
    stopped (SIGTERM, ``max_runs`` micro-batches, or ``exit_when_idle``: after a micro-batch
    that read nothing, or on a streaming run once every input partition is committed up to
    its end).

    A run (streaming pipeline or micro-batch) that fails because the broker went away is run
    again once the broker answers (``broker_faults.BrokerWatch``: logs, backoff,
    ``on_broker(up, errors)`` for the metrics); nothing of a failed run was committed past
    what it wrote. A job started while its broker is unreachable waits for it up to
    ``startup_wait_seconds`` (logging), then fails with a clear error."""
    options = pipeline_options(argv)
    explicit = explicit_runner(argv)
    o = options.view_as(CopydeskOptions)
    validate(o)
    stop = stop or StopFlag()
    if prestart is not None and prestart.argv != list(argv):
        prestart.close()
        prestart = None
    # The broker checks run on a thread (begun by `copydesk run` before Beam was imported,
    # else here) beside the pool's start, the runner's choice and the pipeline's building;
    # every path joins them before it starts a pipeline.
    checks = prestart.checks if prestart is not None else None
    if checks is None and o.kafka_bootstrap_servers:
        checks = BrokerChecks(o, stop.event, startup_wait_seconds)
    watch = checks.watch if checks is not None else None
    if watch is not None:
        watch.set_listener(on_broker)
    # The extraction workers start now, beside the broker checks and the pipeline's
    # submission (the stage leases the same pool): ~1 s sooner to the first output.
    warm(extract_config(o), o.extract_workers)
    kc = kafka_config(o)
    try:
        choice = choose_runner(options, o, explicit, download=prism_download)
        log.info("runner: %s, because %s", {"prism": "Prism (one streaming pipeline)",
                                            "microbatch": "FnApiRunner micro-batches",
                                            "bounded": "FnApiRunner (one bounded run)",
                                            "remote": explicit}[choice.kind], choice.reason)
        if choice.kind == "prism":
            server = prestart.take_prism(choice.prism_location) if prestart is not None else None
            return _run_prism(options, argv, o, kc, watch, stop, choice, exit_when_idle=exit_when_idle,
                              on_run=on_run, batch_records=batch_records, batch_seconds=batch_seconds,
                              idle_seconds=idle_seconds, checks=checks, server=server)
    finally:
        if prestart is not None:
            prestart.close()  # a Prism server the job did not take
    if checks is not None and not checks.result():
        return BatchStats()
    configure_local_runner(options)
    stats = BatchStats()
    if choice.kind in ("bounded", "remote"):
        if o.input_topic:
            options.view_as(StandardOptions).streaming = True
        run = run_bounded(options)
        stats.runs = 1
        stats.seconds = run.seconds
        _add(stats, run.counters)
        return stats
    return _run_microbatches(options, o, kc, watch, stop, max_runs=max_runs, exit_when_idle=exit_when_idle,
                             idle_seconds=idle_seconds, batch_seconds=batch_seconds, batch_records=batch_records,
                             on_run=on_run)


def _batch_read_config(o: CopydeskOptions, idle_seconds: float, batch_records: int) -> ReadConfig:
    return ReadConfig(topics=tuple(t for t in o.input_topic.split(",") if t), start=o.start_from,
                      max_message_bytes=o.max_message_bytes, stop_when_idle_seconds=idle_seconds,
                      max_records_per_partition=batch_records)


def _microbatch_options(argv: list[str]) -> PipelineOptions:
    options = pipeline_options(argv)
    options.view_as(StandardOptions).runner = FN_API_RUNNER
    options.view_as(StandardOptions).streaming = False
    configure_local_runner(options)
    return options


def _run_microbatches(options: PipelineOptions, o: CopydeskOptions, kc, watch: BrokerWatch, stop: StopFlag, *,
                      max_runs: int | None, exit_when_idle: bool, idle_seconds: float, batch_seconds: float,
                      batch_records: int, on_run: Callable[[BatchStats], None] | None,
                      guard: Any = None, until_clear: bool = False) -> BatchStats:
    """The micro-batch loop (module doc). ``until_clear``: only while the poison guard
    isolates a suspect range (before a streaming run starts), with the caller's guard."""
    stats = BatchStats()
    if not o.fingerprint_topic and not until_clear:
        log.warning("no --fingerprint-topic: on the local runner each micro-batch is a new Beam run, so dedup "
                    "matches copies only within one micro-batch (and forgets them on restart); give a compacted "
                    "topic to keep the index across both")
    base = _batch_read_config(o, idle_seconds, batch_records)
    watch.start()  # an input topic means Kafka, so the watch exists
    own_guard = guard is None
    if own_guard:
        from copydesk.pipelines.poison import PoisonGuard

        guard = PoisonGuard(o, kc, base, batch_records)  # poison messages (--attempts-topic)
    while not stop.event.is_set():
        started = time.monotonic()
        rc = replace(base, deadline=time.time() + batch_seconds)
        rc = guard.before_batch(rc)  # attempts recorded before reading; a window while isolating
        if until_clear and guard.window is None:
            break
        try:
            run = run_bounded(options, rc)
        except Exception as exc:  # a broker outage: wait for the broker, run the batch again
            if watch.run_failed(exc, stop.event):
                continue
            break
        watch.run_ok()
        guard.after_batch()
        stats.runs += 1
        stats.last_result, stats.last_seconds = run.result, time.monotonic() - started
        stats.seconds += stats.last_seconds
        _add(stats, run.counters)
        read = run.read
        log.info("run %d: read %d messages in %.1fs", stats.runs, read, time.monotonic() - started)
        if on_run:
            on_run(stats)
        if max_runs is not None and stats.runs >= max_runs:
            break
        if exit_when_idle and read == 0:
            break
        if read == 0:
            stop.event.wait(0.5)  # nothing new: a short pause before the next poll
    if own_guard:
        guard.close()  # a clean exit: this process's attempts do not count
        watch.close()
    return stats


def _prism_options(options: PipelineOptions, choice: RunnerChoice,
                   server: Any = None) -> tuple[PipelineOptions, Any]:
    """The options of a Prism run, and the job server this process started (or None);
    ``server``: one launched ahead (pipelines/startup.py) for ``choice``'s binary."""
    std = options.view_as(StandardOptions)
    std.runner = PRISM_RUNNER
    std.streaming = True
    portable = options.view_as(PortableOptions)
    if not portable.environment_type:
        portable.environment_type = "LOOPBACK"  # the SDK harness in this process: no Docker
    if choice.prism_location and not portable.job_endpoint and os.path.isfile(choice.prism_location):
        from copydesk.pipelines.prism import PrismServer

        if server is None:
            server = PrismServer(choice.prism_location).launch()  # its own session: see pipelines/prism.py
        portable.job_endpoint = server.endpoint
        return options, server
    if server is not None:
        server.stop()
    if choice.prism_location:
        options.view_as(PrismRunnerOptions).prism_location = choice.prism_location
    return options, None


def _run_prism(options: PipelineOptions, argv: list[str], o: CopydeskOptions, kc, watch: BrokerWatch | None,
               stop: StopFlag, choice: RunnerChoice, *, exit_when_idle: bool, on_run, batch_records: int,
               batch_seconds: float, idle_seconds: float, drain_timeout: float = 120.0,
               checks: BrokerChecks | None = None, server: Any = None) -> BatchStats:
    """One streaming pipeline on Prism until SIGTERM (drain) or, with ``exit_when_idle``, until
    the group has committed every input partition up to its end. ``checks``: the broker
    checks still running, joined before anything reads; ``server``: Prism launched ahead."""
    from copydesk.pipelines.pipeline import live_read_config

    stats = BatchStats()
    guard = None
    live = None
    try:
        options, server = _prism_options(options, choice, server)
        # Built while the broker checks and Prism's start-up go on; submitted after both.
        started = time.monotonic()
        p = beam.Pipeline(options=options)
        build_pipeline(p, options)
        log.debug("start-up: pipeline built in %.2fs", time.monotonic() - started)
        if checks is not None and not checks.result():
            return stats  # stopped while waiting for the broker
        log.debug("start-up: broker checks done %.2fs after the process started", process_seconds() or 0.0)
        if kc is not None and o.kafka_io == "python" and not o.copydesk_dry_run:
            for topic in {o.output_topic, o.dead_letter_topic} - {None, ""}:
                warm_producer(kc, topic)  # the writers' producers, ready before their first bundle
        if server is not None:
            server.wait_ready()
        if o.input_topic and watch is not None:
            guard = _prism_guard(argv, o, kc, watch, stop, idle_seconds=idle_seconds, batch_seconds=batch_seconds,
                                 batch_records=batch_records)
        live = LiveProgress(kc, live_read_config(o)) if (o.input_topic and kc is not None) else None
        while not stop.event.is_set():
            reset_drain()
            if p is None:
                started = time.monotonic()
                p = beam.Pipeline(options=options)
                build_pipeline(p, options)
            result = p.run()
            p = None
            log.info("streaming pipeline started on Prism (%.1fs to submit)", time.monotonic() - started)
            log.debug("start-up: pipeline submitted %.2fs after the process started", process_seconds() or 0.0)
            outcome = _watch_stream(result, stop, live, guard, exit_when_idle, on_run, stats, started,
                                    drain_timeout)
            stats.runs += 1
            stats.seconds += time.monotonic() - started
            if outcome is None:
                break
            if watch is None or not watch.run_failed(outcome, stop.event):
                break
            log.warning("restarting the streaming pipeline from the committed offsets")
    finally:
        if server is not None:
            _await_harness_done()
            server.stop()
        if live is not None:
            live.close()
        if guard is not None:
            guard.close()
        if watch is not None:
            watch.close()
    return stats


def _prism_guard(argv: list[str], o: CopydeskOptions, kc, watch: BrokerWatch, stop: StopFlag, *,
                 idle_seconds: float, batch_seconds: float, batch_records: int) -> Any:
    """Before the stream starts: the broker watch, and the poison guard (returned): this
    process's attempt is recorded and, when earlier processes died at the same committed
    offsets, bounded runs isolate the poison before the stream starts."""
    from copydesk.pipelines.poison import PoisonGuard

    watch.start()
    guard = PoisonGuard(o, kc, _batch_read_config(o, idle_seconds, o.max_read_ahead or batch_records),
                        o.max_read_ahead or batch_records)
    if guard.enabled:
        _run_microbatches(_microbatch_options(argv), o, kc, watch, stop, max_runs=None, exit_when_idle=False,
                          idle_seconds=idle_seconds, batch_seconds=batch_seconds, batch_records=batch_records,
                          on_run=None, guard=guard, until_clear=True)
    return guard


def _await_harness_done(timeout: float = 5.0) -> None:
    """Give the in-process SDK harness (``LOOPBACK``) time to close its streams to Prism
    after the job ended, before Prism is stopped: stopped first, Prism resets the harness's
    state stream under it, and its ``read_state`` thread dies with a traceback in the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(t.name == "read_state" and t.is_alive() for t in threading.enumerate()):
            return
        time.sleep(0.05)
    log.debug("the SDK harness's state stream is still open after %.0fs; stopping Prism", timeout)


def _watch_stream(result, stop: StopFlag, live: "LiveProgress | None", guard, exit_when_idle: bool, on_run,
                  stats: BatchStats, started: float, drain_timeout: float) -> BaseException | None:
    """Wait on a running pipeline; drain it on ``stop`` (or once idle with ``exit_when_idle``).
    Returns the exception of a failed run (None: it ended as asked)."""
    box: dict[str, Any] = {}

    def wait() -> None:
        try:
            box["state"] = result.wait_until_finish()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    waiter = threading.Thread(target=wait, name="prism-wait", daemon=True)
    waiter.start()
    metrics = _LiveMetrics(result)
    last_tick = time.monotonic()
    idle_since: float | None = None
    draining = False
    drain_began = 0.0
    try:
        while waiter.is_alive():
            waiter.join(0.25)
            now = time.monotonic()
            if not draining and stop.event.is_set():
                log.warning("draining: the readers stop where they are; what they read is written and committed")
                request_drain()
                draining, drain_began = True, now
            if draining and now - drain_began > drain_timeout:
                log.error("the pipeline did not drain within %.0fs: cancelling it (offsets stay where the "
                          "last writes put them)", drain_timeout)
                result.cancel()
                waiter.join(30)
                break
            if now - last_tick >= 2.0 and not draining:
                if guard is not None and int(now - started) // 10 != int(last_tick - started) // 10:
                    guard.before_batch(ReadConfig(topics=()))  # progress resets the attempt counts
                last_tick = now
                if on_run is not None:
                    stats.last_result, stats.last_seconds = metrics.delta(), now - started
                    on_run(stats)
                if exit_when_idle and live is not None:
                    if live.caught_up():
                        idle_since = idle_since or now
                        if now - idle_since >= 1.0:
                            stop.event.set()
                    else:
                        idle_since = None
    except KeyboardInterrupt:  # a second signal: stop now
        result.cancel()
        raise
    if "error" in box and not draining:
        return box["error"]
    if "error" in box:
        log.warning("the pipeline ended with an error while draining: %s", box["error"])
    final = metrics.delta()
    _add(stats, metrics.totals())
    if on_run is not None:
        stats.last_result, stats.last_seconds = final, time.monotonic() - started
        on_run(stats)
    return None


class LiveProgress:
    """The input partitions' end offsets against the group's committed offsets."""

    def __init__(self, kc, read: ReadConfig) -> None:
        self.kc, self.read = kc, read
        self._consumer = None

    def caught_up(self) -> bool:
        from kafka import KafkaConsumer, TopicPartition

        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(group_id=self.kc.group_id, enable_auto_commit=False,
                                               client_id="copydesk-progress", **self.kc.kwargs())
            tps = [TopicPartition(t, p) for t in self.read.topics
                   for p in sorted(self._consumer.partitions_for_topic(t) or ())]
            end = self._consumer.end_offsets(tps)
            begin = self._consumer.beginning_offsets(tps)
            for tp in tps:
                committed = self._consumer.committed(tp)
                if (committed if committed is not None else begin[tp]) < end[tp]:
                    return False
            return bool(tps)
        except Exception as exc:  # a report for exit_when_idle: ask again later
            log.debug("progress unknown: %r", exc)
            return False

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)


class _LiveMetrics:
    """A running portable job's metrics as deltas since the last call, in the shape
    ``result.metrics().query()`` has (what pipelines/metrics.py reads per micro-batch)."""

    def __init__(self, result) -> None:
        self.result = result
        self._seen: dict[tuple, Any] = {}

    def delta(self) -> "_Snapshot":
        from apache_beam.runners.portability.portable_runner import PortableMetrics
        from apache_beam.portability.api import beam_job_api_pb2

        try:
            resp = self.result._job_service.GetJobMetrics(
                beam_job_api_pb2.GetJobMetricsRequest(job_id=self.result._job_id))
            q = PortableMetrics(resp).query()
        except Exception as exc:  # metrics are a report, not a correctness matter
            log.debug("no metrics from the running job: %r", exc)
            return _Snapshot({"counters": [], "distributions": [], "gauges": []})
        out: dict[str, list] = {"counters": [], "distributions": [], "gauges": q.get("gauges", [])}
        for c in q.get("counters", []):
            key = ("c", c.key.metric.namespace, c.key.metric.name, c.key.step)
            total = int(c.committed or c.attempted or 0)
            prev = self._seen.get(key, 0)
            self._seen[key] = total
            if total != prev:
                out["counters"].append(_Value(c.key, total - prev))
        for d in q.get("distributions", []):
            v = d.committed or d.attempted
            if v is None or not v.count:
                continue
            key = ("d", d.key.metric.namespace, d.key.metric.name, d.key.step)
            pc, ps = self._seen.get(key, (0, 0))
            self._seen[key] = (v.count, v.sum)
            if v.count > pc:
                out["distributions"].append(_Value(d.key, _Dist(v.count - pc, v.sum - ps, v.min, v.max)))
        return _Snapshot(out)

    def totals(self) -> dict[str, int]:
        """Every counter's value in the run so far, by name (as :func:`read_counters`)."""
        out: dict[str, int] = {}
        for key, v in self._seen.items():
            if key[0] == "c":
                out[key[2]] = out.get(key[2], 0) + v
        return out


@dataclass
class _Dist:
    count: int
    sum: float
    min: float
    max: float


@dataclass
class _Value:
    key: Any
    committed: Any
    attempted: Any = None


@dataclass
class _Snapshot:
    q: dict[str, list]

    def metrics(self) -> "_Snapshot":
        return self

    def query(self, *_args) -> dict[str, list]:
        return self.q


def _add(stats: BatchStats, counters: dict[str, int]) -> None:
    add_counters(stats.counters, counters)
    stats.read += counters.get(INPUT_RECORDS_READ, 0)


# --------------------------------------------------------------------------- one bounded run


@dataclass
class BoundedRun:
    """A bounded Beam run of the pipeline, finished: its result, its counters by name
    (:func:`read_counters`) and its wall time."""

    result: Any
    counters: dict[str, int]
    seconds: float

    @property
    def read(self) -> int:
        """Input messages the run read."""
        return self.counters.get(INPUT_RECORDS_READ, 0)


def run_bounded(options: PipelineOptions, read_config: ReadConfig | None = None, *,
                extend: Callable[[PipelineOutputs], None] | None = None) -> BoundedRun:
    """Build the pipeline (its Kafka input read with ``read_config``), run it to its end and
    read its counters: one micro-batch, one ``--input-file`` run, one replay chunk.
    ``extend`` may hang more transforms on the stage outputs first (replay counts them)."""
    started = time.monotonic()
    p = beam.Pipeline(options=options)
    outputs = build_pipeline(p, options, read_config=read_config)
    if extend is not None:
        extend(outputs)
    result = p.run()
    result.wait_until_finish()
    return BoundedRun(result, read_counters(result), time.monotonic() - started)


def add_counters(total: dict[str, int], counters: dict[str, int]) -> None:
    """Add one run's counters (by name) into ``total``."""
    for k, v in counters.items():
        total[k] = total.get(k, 0) + v
