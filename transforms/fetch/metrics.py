"""Metrics of the fetch stage: the names of its Beam metrics (the one home of each; the
exporter, ``pipelines/metrics.py``, imports them; docs/fetch.md lists them) and
``IN_FLIGHT``, the live count of requests in flight in this process. A leaf module: no
Beam import.

``copydesk.fetch``
    counters ``fetch_pages``, ``fetch_prescraped``, ``fetch_bytes``, ``fetch_dead`` (the sum
    of ``fetch_dead_<reason>``), ``fetch_status_<class>`` (2xx ... 5xx, ``none``: no
    response), ``fetch_backoff_waits``/``fetch_backoff_ms``,
    ``fetch_retry_after_waits``/``fetch_retry_after_ms``, ``fetch_circuit_opened``;
    distributions ``fetch_latency_ms``, ``fetch_attempts`` (per failed fetch),
    ``fetch_batch_size``; gauges ``fetch_in_flight_peak`` (per bundle),
    ``fetch_circuit_open_hosts``.
"""

from __future__ import annotations

import threading

from copydesk.transforms.stage_metrics import Declared

FETCH_NS = "copydesk.fetch"
PAGES = "fetch_pages"
PRESCRAPED = "fetch_prescraped"
BYTES = "fetch_bytes"
DEAD = "fetch_dead"  # the sum of the fetch_dead_<reason> counters
DEAD_PREFIX = "fetch_dead_"  # + the dead letter's reason
STATUS_PREFIX = "fetch_status_"  # + 2xx | 3xx | 4xx | 5xx | none
LATENCY_MS = "fetch_latency_ms"
ATTEMPTS = "fetch_attempts"
BATCH_SIZE = "fetch_batch_size"
IN_FLIGHT_PEAK = "fetch_in_flight_peak"
BACKOFF_WAITS = "fetch_backoff_waits"
BACKOFF_MS = "fetch_backoff_ms"
RETRY_AFTER_WAITS = "fetch_retry_after_waits"
RETRY_AFTER_MS = "fetch_retry_after_ms"
CIRCUIT_OPENED = "fetch_circuit_opened"
CIRCUIT_OPEN_HOSTS = "fetch_circuit_open_hosts"

DECLARED = Declared(
    FETCH_NS,
    counters=(PAGES, PRESCRAPED, BYTES, DEAD, BACKOFF_WAITS, BACKOFF_MS, RETRY_AFTER_WAITS, RETRY_AFTER_MS,
              CIRCUIT_OPENED),
    distributions=(LATENCY_MS, ATTEMPTS, BATCH_SIZE),
    gauges=(IN_FLIGHT_PEAK, CIRCUIT_OPEN_HOSTS),
    families=(DEAD_PREFIX, STATUS_PREFIX),
)


def status_counter(status: int | None) -> str:
    """The ``fetch_status_<class>`` counter of an HTTP status (None: no response)."""
    return f"{STATUS_PREFIX}{status // 100}xx" if isinstance(status, int) else f"{STATUS_PREFIX}none"


class InFlight:
    """A live count of requests in flight, across every fetcher that adds to it.

    Beam metrics are read after a bundle; this one is read *now*. Every ``Politeness``
    gate (so every ``Fetcher``, one per fetch DoFn instance) adds to :data:`IN_FLIGHT`
    unless given another count, and the Prometheus exporter reads ``IN_FLIGHT.now()`` at
    scrape time as ``copydesk_fetch_in_flight``. That is true of the job's process only
    where the fetchers run in it (the local runners); elsewhere the exporter's gauge stays 0.
    Thread-safe (fetchers run on their own event-loop threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    def add(self, n: int) -> None:
        with self._lock:
            self._n += n

    def now(self) -> int:
        return self._n


IN_FLIGHT = InFlight()  # this process's requests in flight (see InFlight)
