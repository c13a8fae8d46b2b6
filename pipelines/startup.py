"""What ``copydesk run`` starts before it imports Beam, and the checks that need no Beam.

Importing Beam takes the job's process 1-2 s of CPU. Three things the job needs soon after
do not need Beam, so :class:`Prestart` begins them first and the job takes them over:

* the extraction pool's forkserver (its own imports of trafilatura, lxml and Beam: ~1 s,
  on the other core);
* the Prism binary (a streaming run on Prism; 0.2-0.3 s until it listens);
* the broker checks, on a thread: the broker answers (waiting for it as before, up to
  ``startup_wait_seconds``) and every topic the job names exists (:func:`check_topics`).

The job (pipelines/job.py) joins the broker checks before it starts any pipeline, so a
missing topic still fails the job before it reads anything, with the same message.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
from typing import Any

from copydesk.pipelines.broker_faults import BrokerWatch
from copydesk.pipelines.flags import parse_flags, parse_kafka_config
from copydesk.pipelines.prism import PrismServer, find_binary
from copydesk.transforms.kafka.config import KafkaConfig

log = logging.getLogger(__name__)

# The modules the extraction pool's forkserver preloads (transforms/extract/pool.py
# _context; tests/test_startup.py checks the two agree).
FORKSERVER_PRELOAD = ("copydesk.transforms.extract.forkserver_init", "copydesk.transforms.extract.pool")


class ConfigError(ValueError):
    """The options do not describe a runnable job."""


def kafka_config(o: Any) -> KafkaConfig | None:
    if not o.kafka_bootstrap_servers:
        return None
    return KafkaConfig(bootstrap_servers=o.kafka_bootstrap_servers, group_id=o.group_id,
                       client_config=parse_kafka_config(o.kafka_config))


def validate(o: Any) -> None:
    if bool(o.input_topic) == bool(o.input_file):
        raise ConfigError("give exactly one input: --input-topic (with --bootstrap-servers) or --input-file")
    needs_kafka = [n for n in ("input_topic", "output_topic", "dead_letter_topic", "raw_pages_topic",
                               "fingerprint_topic", "attempts_topic") if getattr(o, n)]
    if needs_kafka and not o.kafka_bootstrap_servers:
        raise ConfigError(f"--bootstrap-servers is required with {', '.join('--' + n.replace('_', '-') for n in needs_kafka)}")
    if not (o.output_topic or o.output_file) and not o.copydesk_dry_run:
        raise ConfigError("give an output: --output-topic or --output-file (or --dry-run)")
    if not (o.dead_letter_topic or o.dead_letter_file) and not o.copydesk_dry_run:
        raise ConfigError("give a dead-letter output: --dead-letter-topic or --dead-letter-file: "
                          "failures are never dropped silently")
    if o.input_file and not os.path.exists(o.input_file):
        raise ConfigError(f"--input-file {o.input_file} does not exist")
    if o.kafka_io not in ("python", "java"):
        raise ConfigError("--kafka-io must be python or java")
    if o.raw_pages_input and o.raw_pages_topic:
        raise ConfigError("--raw-pages-input reads an archive of fetched pages and fetches nothing: "
                          "--raw-pages-topic (archive the fetched pages) does not apply")
    if o.start_from not in ("committed", "earliest", "latest"):
        raise ConfigError("--start-from must be committed, earliest or latest")


def check_topics(o: Any) -> None:
    """Fail fast, before the job starts, when a topic the job needs does not exist."""
    from kafka import KafkaConsumer

    kc = kafka_config(o)
    assert kc is not None
    consumer = KafkaConsumer(**kc.kwargs())
    try:
        existing = consumer.topics()
    finally:
        consumer.close()
    wanted = [t for t in (o.input_topic or "").split(",") if t]
    wanted += [t for t in (o.output_topic, o.dead_letter_topic, o.raw_pages_topic, o.fingerprint_topic,
                           o.attempts_topic) if t]
    missing = [t for t in wanted if t not in existing]
    if missing:
        raise ConfigError(f"topics do not exist on {kc.bootstrap_servers}: {', '.join(missing)}")


class BrokerChecks:
    """The broker checks of one job start, on a thread: :meth:`result` joins them."""

    def __init__(self, o: Any, stop: threading.Event, startup_wait_seconds: float,
                 listener: Any = None) -> None:
        self.o = o
        kc = kafka_config(o)
        assert kc is not None
        self.watch = BrokerWatch(kc.kwargs(), listener=listener)
        self._stop, self._wait = stop, startup_wait_seconds
        self._up: bool | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="copydesk-broker-checks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._up = self.watch.wait_until_up(self._stop, self._wait)
            if self._up:
                check_topics(self.o)
        except BaseException as exc:  # noqa: BLE001 - raised by result(), in the job's thread
            self._error = exc

    def result(self) -> bool:
        """Wait for the checks: True when the broker answered and every topic exists; False
        when ``stop`` was set first; raises :class:`ConfigError` (a missing topic, or no
        answer within ``startup_wait_seconds``) or whatever else the checks raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if not self._up:
            if self._stop.is_set():
                return False
            raise ConfigError(f"broker {self.watch.bootstrap} did not answer within {self._wait:.0f}s "
                              f"of start-up")
        return True


def runner_name(runner: str) -> str:
    """A ``--runner`` value as a short lower-case name: ``apache_beam...PrismRunner`` -> ``prismrunner``."""
    return runner.rsplit(".", 1)[-1].lower()


def explicit_runner(argv: list[str]) -> str | None:
    """The ``--runner`` given on the command line, or None."""
    for i, a in enumerate(argv):
        if a == "--runner" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--runner="):
            return a.split("=", 1)[1]
    return None


class Prestart:
    """Start-up work begun before Beam is imported (module doc); ``run_job(prestart=...)``
    takes it over. Nothing is begun for options that :func:`validate` refuses (the job
    then fails with that error, as before)."""

    def __init__(self, argv: list[str], stop: threading.Event, startup_wait_seconds: float = 300.0) -> None:
        self.argv = list(argv)
        self.stop = stop
        self.checks: BrokerChecks | None = None
        self.prism: PrismServer | None = None
        o = parse_flags(argv)
        try:
            validate(o)
        except ConfigError:
            return
        if o.extract_workers != 0:
            _start_forkserver()
        explicit = explicit_runner(argv)
        wants_prism = explicit is None or runner_name(explicit) in ("prismrunner", "prism")
        given = any(a.split("=", 1)[0] in ("--job_endpoint", "--prism_location") for a in argv)
        if o.input_topic and wants_prism and not given:
            path, _ = find_binary()  # None when COPYDESK_PRISM is off
            if path and os.path.isfile(path):
                try:
                    self.prism = PrismServer(path).launch()  # the main thread: see PrismServer.launch
                except OSError as exc:  # the job starts it again, and says why it cannot
                    log.debug("prism not started ahead: %r", exc)
        if o.kafka_bootstrap_servers:
            self.checks = BrokerChecks(o, stop, startup_wait_seconds)

    def take_prism(self, binary: str) -> PrismServer | None:
        """The Prism server launched ahead for ``binary`` (the job owns it from now), or None."""
        server, self.prism = self.prism, None
        if server is not None and server.binary != binary:
            server.stop()
            return None
        return server

    def close(self) -> None:
        """Stop what the job did not take over."""
        if self.prism is not None:
            self.prism.stop()
            self.prism = None


def process_seconds() -> float | None:
    """Seconds since this process started (Linux ``/proc``), for the start-up's DEBUG lines."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _start_forkserver() -> None:
    """Start the extraction pool's forkserver now (transforms/extract/pool.py: the pool
    finds it running; its preload list is fixed when it starts)."""
    if "forkserver" not in mp.get_all_start_methods():
        return
    from multiprocessing import forkserver

    mp.get_context("forkserver").set_forkserver_preload(list(FORKSERVER_PRELOAD))
    try:
        forkserver.ensure_running()
    except Exception as exc:  # the pool starts it itself later
        log.debug("forkserver not started ahead: %r", exc)
