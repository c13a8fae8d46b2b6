"""Per-host politeness and the per-host circuit breaker.

Politeness (per ``host:port``): at most ``concurrency`` requests at once and at least
``delay`` seconds between two request *starts*. The global in-flight semaphore is taken
only once the host's turn has come, so requests sleeping out a host's delay never hold a
global slot and one busy host cannot starve the others.

Circuit breaker: a host whose requests keep failing (timeouts, connection errors, 5xx,
429) is backed off as a whole for ``cooldown`` seconds: its requests fail at once with
``circuit_open`` instead of each burning retries and time, while other hosts go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from copydesk.schemas.reasons import Reason
from copydesk.transforms.fetch.errors import FetchFailure
from copydesk.transforms.fetch.metrics import IN_FLIGHT, InFlight

_MAX_IDLE_HOSTS = 10_000  # forget idle hosts beyond this, so a long run's state stays bounded

log = logging.getLogger(__name__)

@dataclass(slots=True)
class BackoffStats:
    """Waits a fetcher imposed on itself, cumulative; the Beam stage drains them into
    counters after each batch (``take``)."""

    retry_waits: int = 0  # retry backoff sleeps (after a timeout, connection error, 429, 5xx)
    retry_wait_s: float = 0.0
    retry_after: int = 0  # Retry-After answers that pushed a host's next start out
    retry_after_s: float = 0.0
    circuit_opened: int = 0  # a host's circuit went open (threshold reached, or a probe failed)

    def take(self) -> "BackoffStats":
        out = BackoffStats(self.retry_waits, self.retry_wait_s, self.retry_after, self.retry_after_s,
                           self.circuit_opened)
        self.retry_waits = self.retry_after = self.circuit_opened = 0
        self.retry_wait_s = self.retry_after_s = 0.0
        return out


@dataclass(slots=True)
class _HostSlot:
    sem: asyncio.Semaphore
    start_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_start: float = 0.0  # loop time before which no request may start
    last_sent: float | None = None  # when the previous request's headers were sent
    users: int = 0


class Politeness:
    """Gate every request through ``slot(host, delay)``. Requests in flight are counted in
    ``in_flight``/``peak_in_flight`` and added to ``live`` (by default the process's
    ``fetch.metrics.IN_FLIGHT``, which the metrics exporter reads at scrape time)."""

    def __init__(self, *, concurrency: int, max_in_flight: int, live: InFlight = IN_FLIGHT) -> None:
        self.concurrency = concurrency
        self.live = live
        self._global = asyncio.Semaphore(max_in_flight)
        self._hosts: dict[str, _HostSlot] = {}
        self.in_flight = 0
        self.peak_in_flight = 0
        # Smallest gap seen between two requests' headers leaving for one host: the
        # politeness guarantee as measured on this side of the wire (benchmarks print it).
        self.min_gap_sent = float("inf")

    def _slot(self, host: str) -> _HostSlot:
        s = self._hosts.get(host)
        if s is None:
            if len(self._hosts) >= _MAX_IDLE_HOSTS:
                self._forget_idle()
            s = self._hosts[host] = _HostSlot(asyncio.Semaphore(self.concurrency))
        return s

    def _forget_idle(self) -> None:
        now = asyncio.get_running_loop().time()
        for host in [h for h, s in self._hosts.items() if s.users == 0 and s.next_start <= now]:
            del self._hosts[host]

    def defer(self, host: str, seconds: float) -> float:
        """Push the host's next start out (Retry-After applies to the host, not one URL);
        returns by how many seconds it moved (0 when it was already later)."""
        s = self._slot(host)
        now = asyncio.get_running_loop().time()
        pushed = max(0.0, now + seconds - max(s.next_start, now))
        s.next_start = max(s.next_start, now + seconds)
        return pushed

    @asynccontextmanager
    async def slot(self, host: str, delay: float) -> AsyncIterator[Callable[[], None]]:
        """Hold one of the host's slots and a global slot for the duration of one request.

        Yields ``sent``: call it when the request headers go onto the wire. Starts to one
        host are serialised until then and the next start is spaced ``delay`` after that
        moment, so the gap holds where the server sees it, even when this request first
        waited for a connection or a TCP handshake. (Called on exit if never called.)
        """
        loop = asyncio.get_running_loop()
        s = self._slot(host)
        s.users += 1
        try:
            async with s.sem:
                await s.start_lock.acquire()
                released = False

                def sent() -> None:
                    nonlocal released
                    if not released:
                        released = True
                        now = loop.time()
                        if s.last_sent is not None:
                            self.min_gap_sent = min(self.min_gap_sent, now - s.last_sent)
                        s.last_sent = now
                        s.next_start = max(s.next_start, now + delay)
                        s.start_lock.release()

                try:
                    await self._wait_turn(s, loop)
                except BaseException:
                    sent()
                    raise
                s.next_start = loop.time() + delay
                self.in_flight += 1
                self.live.add(1)
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    yield sent
                finally:
                    sent()
                    self.in_flight -= 1
                    self.live.add(-1)
                    self._global.release()
        finally:
            s.users -= 1

    async def _wait_turn(self, s: _HostSlot, loop: asyncio.AbstractEventLoop) -> None:
        """Sleep until the host's next start, then take a global slot (never while sleeping)."""
        while True:
            wait = s.next_start - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._global.acquire()
            if s.next_start <= loop.time():
                return
            self._global.release()  # deferred (Retry-After) meanwhile: wait again


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False  # half-open: one probe request let through after the cooldown


class CircuitBreaker:
    """Consecutive-failure breaker per host; after the cooldown one probe request may pass."""

    def __init__(self, *, threshold: int, cooldown: float, stats: BackoffStats | None = None) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.stats = stats if stats is not None else BackoffStats()
        self._hosts: dict[str, _Circuit] = {}

    def check(self, host: str) -> None:
        """Raise ``circuit_open`` while the host is backed off."""
        c = self._hosts.get(host)
        if c is None or c.failures < self.threshold:
            return
        now = time.monotonic()
        if now < c.open_until:
            raise FetchFailure(
                Reason.CIRCUIT_OPEN, f"{host} failed {c.failures} times in a row; backed off",
                host=host, retry_in_s=round(c.open_until - now, 3),
            )
        c.open_until = now + self.cooldown  # half-open: this request probes, others keep waiting
        c.probing = True

    def success(self, host: str) -> None:
        self._hosts.pop(host, None)

    def failure(self, host: str) -> None:
        c = self._hosts.get(host)
        if c is None:
            if len(self._hosts) >= _MAX_IDLE_HOSTS:
                self._hosts.clear()
            c = self._hosts[host] = _Circuit()
        c.failures += 1
        if c.failures >= self.threshold:
            now = time.monotonic()
            if c.failures == self.threshold or c.probing:  # newly open, or the half-open probe failed
                c.probing = False
                self.stats.circuit_opened += 1
                log.warning("circuit open for %s after %d consecutive failures: backing off %.0fs",
                            host, c.failures, self.cooldown, extra={"host": host})
            c.open_until = max(c.open_until, now + self.cooldown)

    def open_hosts(self) -> int:
        """Hosts whose circuit is open now."""
        now = time.monotonic()
        return sum(1 for c in self._hosts.values() if c.failures >= self.threshold and now < c.open_until)

    def is_open(self, host: str) -> bool:
        c = self._hosts.get(host)
        return c is not None and c.failures >= self.threshold and time.monotonic() < c.open_until
