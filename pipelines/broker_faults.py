"""Broker outages on the local runner: tell a broker fault from a bug, wait for the broker to
come back, say so in the logs and the metrics.

On the local runner the job is a sequence of bounded Beam runs (``runner.py``). When the
broker goes away, the run in flight fails: the reader's or the committer's consumer, or the
writer's producer, cannot bootstrap, or a send is not acknowledged. Nothing of that run was
committed beyond what its sinks had flushed (commits follow writes, ``transforms/kafka/commit.py``),
so the run can simply be run again. :class:`BrokerWatch` decides whether a failed run was a
broker fault (a kafka-python error in the exception chain, or the broker not answering a
probe), logs one WARNING when the broker becomes unreachable, probes it with exponential
backoff until it answers, logs one INFO line when it is back (with the outage length), and
reports both to an optional listener (the Prometheus exporter: ``copydesk_broker_up``,
``copydesk_broker_errors_total``). Every Kafka client is built anew by the next run, so
reconnecting needs nothing more.

A failure that is not a broker fault (a bug) is raised as before. A Kafka error while the
broker answers probes (e.g. a topic that was deleted) is retried ``max_retries_when_up``
times with backoff, then raised.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

Listener = Callable[[bool, int], None]  # (broker up?, broker errors so far)


def is_broker_error(exc: BaseException) -> bool:
    """True when a kafka-python error (or a socket error) is anywhere in the exception chain
    (Beam re-raises a DoFn's exception wrapped, with the original as cause or context)."""
    try:
        from kafka.errors import KafkaError
    except ImportError:  # pragma: no cover - kafka-python is a dependency
        KafkaError = ()  # type: ignore[assignment]
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (KafkaError, ConnectionError, socket.timeout)):
            return True
        text = f"{type(e).__name__}: {e}"
        if any(k in text for k in ("KafkaTimeoutError", "NoBrokersAvailable", "KafkaConnectionError",
                                   "Unable to bootstrap", "RequestTimedOutError", "NotLeaderForPartition")):
            return True
        stack.extend([e.__cause__, e.__context__])
    return False


def probe(client_kwargs: dict[str, Any], timeout: float = 5.0) -> str | None:
    """None when the broker answers a metadata request, else why not.

    A TCP connect to a bootstrap server first (a refused connection answers at once), then
    a metadata request with the job's client settings (security included).
    """
    reason = _tcp_reason(client_kwargs, timeout)
    if reason is not None:
        return reason
    from kafka import KafkaConsumer

    kwargs = {**client_kwargs, "request_timeout_ms": int(timeout * 1000), "bootstrap_timeout_ms": int(timeout * 1000)}
    try:
        consumer = KafkaConsumer(client_id="copydesk-broker-probe", enable_auto_commit=False, **kwargs)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        consumer.topics()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        try:
            consumer.close()
        except Exception:
            pass


class BrokerWatch:
    """Broker up/down state of one job: a background probe every ``interval`` seconds (a TCP
    connect to the bootstrap servers, then a metadata request when it comes back), the log
    lines and the listener around it, and the retry decision for failed micro-batches."""

    def __init__(self, client_kwargs: dict[str, Any], *, listener: Listener | None = None,
                 interval: float = 2.0, min_backoff: float = 1.0, max_backoff: float = 10.0,
                 max_retries_when_up: int = 5, prober: Callable[[dict[str, Any]], str | None] = probe) -> None:
        self.kwargs = client_kwargs
        self.listener = listener
        self.interval = interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.max_retries_when_up = max_retries_when_up
        self.prober = prober
        self.up = True
        self.errors = 0  # failed probes and micro-batches failed by the broker, since the job started
        self.outages = 0
        self.down_since: float | None = None
        self._retries_when_up = 0
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify()

    def set_listener(self, listener: Listener | None) -> None:
        """Report to ``listener`` from now on (the exporter, made after the watch began)."""
        with self._lock:
            self.listener = listener
            self._notify()

    @property
    def bootstrap(self) -> str:
        servers = self.kwargs.get("bootstrap_servers") or []
        return servers if isinstance(servers, str) else ",".join(servers)

    # -- state ------------------------------------------------------------------------------

    def _notify(self) -> None:
        if self.listener is not None:
            try:
                self.listener(self.up, self.errors)
            except Exception:  # metrics never stop the job
                log.debug("broker listener failed", exc_info=True)

    def _down(self, reason: str) -> None:
        with self._lock:
            self.errors += 1
            if self.up:
                self.up = False
                self.outages += 1
                self.down_since = time.monotonic()
                log.warning("broker %s unreachable (%s): micro-batches wait for it (nothing is committed "
                            "past what was written); probing every %.0fs", self.bootstrap, reason, self.interval)
            self._notify()

    def _back(self) -> None:
        with self._lock:
            if self.up:
                return
            took = time.monotonic() - (self.down_since or time.monotonic())
            self.up = True
            self.down_since = None
            log.info("broker %s reachable again after an outage of %.1fs: resuming from the committed offsets",
                     self.bootstrap, took)
            self._notify()

    def check(self) -> bool:
        """Probe once and update the state; True when the broker answers."""
        if self.up:
            reason = _tcp_reason(self.kwargs)  # cheap while all is well
        else:
            reason = self.prober(self.kwargs)  # coming back: the full metadata probe
        if reason is None:
            self._back()
            return True
        self._down(reason)
        return False

    # -- background probe --------------------------------------------------------------------

    def start(self) -> "BrokerWatch":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="copydesk-broker-watch", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        reported = 0  # whole 30 s periods of the current outage already logged
        while not self._closed.wait(self.interval):
            try:
                self.check()
            except Exception:  # the probe must never take the job down
                log.debug("broker probe failed", exc_info=True)
            down_since = self.down_since
            if down_since is None:
                reported = 0
            elif int((time.monotonic() - down_since) // 30) > reported:
                reported = int((time.monotonic() - down_since) // 30)
                log.warning("broker %s still unreachable after %.0fs", self.bootstrap, time.monotonic() - down_since)

    def close(self) -> None:
        self._closed.set()

    def wait_until_up(self, stop: threading.Event, timeout: float) -> bool:
        """Before the job starts: True once the broker answers; False if ``stop`` is set or
        it has not answered within ``timeout`` seconds. Probes with backoff (``min_backoff``
        doubling to ``max_backoff``) and logs when it is down, every 30 s, and when it is back,
        so a job deployed while its broker restarts waits instead of crash-looping."""
        reason = self.prober(self.kwargs)
        if reason is None:
            return True
        self._down(reason)
        started = time.monotonic()
        delay, reported = self.min_backoff, 0
        while True:
            left = timeout - (time.monotonic() - started)
            if left <= 0 or stop.wait(min(delay, left)):
                return False
            reason = self.prober(self.kwargs)
            if reason is None:
                self._back()
                return True
            self._down(reason)
            waited = time.monotonic() - started
            if int(waited // 30) > reported:
                reported = int(waited // 30)
                log.warning("broker %s still unreachable after %.0fs at start-up (gives up after %.0fs)",
                            self.bootstrap, waited, timeout)
            delay = min(self.max_backoff, delay * 2)

    # -- the runner's hooks ------------------------------------------------------------------

    def run_ok(self) -> None:
        """A run finished: the broker is (still) up."""
        self._retries_when_up = 0
        if not self.up:
            self._back()

    def run_failed(self, exc: BaseException, stop: threading.Event) -> bool:
        """A run failed. Return True to run it again (a broker fault, once the broker answers
        again), False if ``stop`` was set meanwhile; raise ``exc`` if it is not a broker fault,
        or if it keeps failing with Kafka errors while the broker answers."""
        reason = self.prober(self.kwargs)
        if reason is None and not is_broker_error(exc):
            raise exc  # not the broker: a bug, handled as before
        with self._lock:
            self.errors += 1
            self._notify()
        if reason is None:
            # A Kafka error although the broker answers now (it came back meanwhile, or a
            # leader moved): retry a few times, then give up.
            self._retries_when_up += 1
            if self._retries_when_up > self.max_retries_when_up:
                log.error("micro-batch failed %d times with a Kafka error while broker %s answers; giving up",
                          self._retries_when_up, self.bootstrap)
                raise exc
            delay = min(self.max_backoff, self.min_backoff * 2 ** (self._retries_when_up - 1))
            log.warning("micro-batch failed with a Kafka error (%s) while broker %s answers: nothing of it was "
                        "committed past what was written; running it again in %.0fs", _short(exc),
                        self.bootstrap, delay)
            self._back()
            return not stop.wait(delay)
        self._down(reason)
        log.warning("micro-batch failed because broker %s is unreachable (%s): nothing of it was committed past "
                    "what was written; it runs again once the broker answers", self.bootstrap, _short(exc))
        delay = self.min_backoff
        while True:
            # Back off, but resume as soon as the background probe sees the broker again.
            until = time.monotonic() + delay
            while not self.up and time.monotonic() < until:
                if stop.wait(min(0.25, max(0.0, until - time.monotonic()))):
                    return False
            if stop.is_set():
                return False
            if self.prober(self.kwargs) is None:
                self._back()
                return True
            delay = min(self.max_backoff, delay * 2)


def _tcp_reason(client_kwargs: dict[str, Any], timeout: float = 2.0) -> str | None:
    servers = client_kwargs.get("bootstrap_servers") or []
    if isinstance(servers, str):
        servers = servers.split(",")
    reason = "no bootstrap server"
    for server in servers:
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port or 9092)), timeout=timeout):
                return None
        except OSError as exc:
            reason = f"{server}: {exc}"
    return reason


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text[:limit]
