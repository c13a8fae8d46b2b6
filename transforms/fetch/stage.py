"""The fetch stage: polite, safe, bounded HTTP fetching of input URLs (issue #4).

``Fetcher`` is an asyncio fetcher over one ``httpx.AsyncClient``; ``FetchPages`` is the
Beam stage that runs it on an event loop of the DoFn's own thread and emits each result as
it completes. Every failure becomes a ``DeadLetter`` with a reason from the closed list in
:mod:`copydesk.schemas.reasons`. A message's URL was checked once by the parse stage
(``InputMessage.checked``); redirect targets are checked here, by the same ``parse_url``.

One request ("hop") goes through, in order:

1. scheme check (http/https only, also for redirect targets);
2. circuit breaker of the host (``circuit_open`` while a failing host is backed off);
3. DNS resolution and the address guard on *all* addresses (``blocked_address``);
   the connection is later pinned to exactly these addresses;
4. robots.txt of the origin (fetched once, cached; ``robots``; Crawl-delay);
5. the host's politeness gate (K concurrent, D seconds between starts) and then the
   global in-flight semaphore;
6. the request with connect/read timeouts and a total timeout, body streamed and cut off
   at ``max_page_bytes`` raw *and* decompressed.

Redirects are followed by hand so that every hop gets all of the above. Retries (timeouts,
connection errors, 429, 5xx) retry the failing hop, not the whole chain. One deadline per
message (``FetchConfig.deadline``) covers every hop, attempt and backoff wait; its clock
stops only while the message queues for its polite turn at the host.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import email.utils
import ipaddress
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import apache_beam as beam
import httpx
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from copydesk.schemas.codec import dead_letter, now_iso
from copydesk.schemas.reasons import Reason, Stage
from copydesk.schemas.records import CheckedURL, DeadLetter, Envelope, FetchedPage, InputMessage
from copydesk.transforms.fetch.body import ACCEPT_ENCODING, read_capped, too_large
from copydesk.transforms.fetch.charset import decode_html, looks_binary
from copydesk.transforms.fetch.errors import FetchFailure
from copydesk.transforms.fetch.guard import AddressGuard, PerHostTransport
from copydesk.transforms.fetch import metrics as names
from copydesk.transforms.fetch.hosts import BackoffStats, CircuitBreaker, Politeness
from copydesk.transforms.fetch.robots import ROBOTS_MAX_BYTES, RobotsCache, RobotsRules
from copydesk.transforms.stage_metrics import CounterSet, log_fields
from copydesk.transforms.urls import InvalidURL, parse_url

log = logging.getLogger(__name__)

__all__ = [
    "FetchConfig",
    "FetchFailure",
    "FetchPages",
    "Fetcher",
    "METRICS_NAMESPACE",
]

DEFAULT_USER_AGENT = "copydesk/0.1 (+https://github.com/copydesk/copydesk)"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers kept on the FetchedPage (and in the raw archive): what extraction, dedup or a
# re-fetch may want; cookies and the rest are dropped.
KEPT_HEADERS = (
    "content-type", "content-length", "content-encoding", "content-language", "last-modified",
    "etag", "date", "expires", "cache-control", "x-robots-tag", "link", "server",
)
RETRYABLE_REASONS = frozenset({Reason.TIMEOUT, Reason.CONNECTION, Reason.REFUSED, Reason.HTTP_5XX})
# What counts against a host's circuit: the host (or the path to it) is unwell.
HOST_FAILURE_REASONS = RETRYABLE_REASONS | {Reason.DNS}
METRICS_NAMESPACE = names.FETCH_NS


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchConfig:
    """Every knob of the fetch stage; frozen and picklable so Beam can ship it to workers."""

    connect_timeout: float = 5.0
    read_timeout: float = 15.0  # between two reads of the socket
    total_timeout: float = 30.0  # one attempt of one hop, connect to last body byte
    # One message, all hops, retries and backoff waits (and its share of robots.txt), from its
    # first step; time queued behind this worker's own politeness gate for the host is not
    # counted (that is throughput, not a slow message). Caps every attempt's total_timeout.
    deadline: float = 60.0
    max_page_bytes: int = 5_000_000  # raw and decompressed body
    max_redirects: int = 5
    max_in_flight: int = 64  # requests in flight per Fetcher (i.e. per DoFn instance)
    per_host_concurrency: int = 2
    per_host_delay: float = 1.0  # seconds between request starts to one host:port
    respect_robots: bool = True
    robots_cache_ttl: float = 3600.0
    robots_error_ttl: float = 300.0  # how long a failed robots.txt fetch means allow-all
    max_crawl_delay: float = 10.0  # Crawl-delay is honoured up to this
    user_agent: str = DEFAULT_USER_AGENT
    retries: int = 3  # retries after the first attempt, per hop
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    backoff_jitter: float = 0.5  # each backoff is scaled by a random factor in [1 - jitter, 1]
    max_retry_after: float = 60.0  # a longer Retry-After ends the fetch instead of waiting
    circuit_failures: int = 10  # consecutive host failures that open the circuit
    circuit_cooldown: float = 60.0
    allow_private: bool = False
    allowed_networks: tuple[str, ...] = ()
    allowed_content_types: tuple[str, ...] = ("text/html", "application/xhtml+xml")
    batch_size: int = 64  # messages buffered per DoFn before they are fetched concurrently
    dns_cache_ttl: float = 60.0
    verify_tls: bool = True
    # Host-name pins, like curl's --resolve: (host, address) pairs; a pinned host is not looked
    # up in DNS, and its address still goes through the guard (allow_private/allowed_networks).
    resolve: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "total_timeout", "deadline"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("max_page_bytes", "max_in_flight", "per_host_concurrency", "batch_size", "circuit_failures"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_redirects < 0 or self.retries < 0 or self.per_host_delay < 0:
            raise ValueError("max_redirects, retries and per_host_delay must be >= 0")
        if not 0 <= self.backoff_jitter <= 1:
            raise ValueError("backoff_jitter must be in [0, 1]")
        for net in self.allowed_networks:
            ipaddress.ip_network(net, strict=False)  # fail at construction, not on the worker
        for host, address in self.resolve:
            if not host or "/" in host or ":" in host:
                raise ValueError(f"resolve: {host!r} is not a host name")
            ipaddress.ip_address(address)


@dataclass(slots=True, frozen=True)
class _Target:
    """The parts of a hop URL that politeness, robots and the guard key on."""

    url: str
    scheme: str
    host: str
    port: int

    @property
    def hostkey(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.hostkey}"

    @classmethod
    def of(cls, checked: CheckedURL) -> _Target:
        return cls(_strip_fragment(checked.url), checked.scheme, checked.host, checked.port)

    @classmethod
    def parse(cls, url: str) -> _Target:
        """A URL the fetcher meets itself (a redirect target, robots.txt): checked here, once."""
        try:
            return cls.of(parse_url(url))
        except InvalidURL as exc:
            raise FetchFailure(Reason(exc.reason), str(exc), url=url[:2048]) from exc


@dataclass(slots=True)
class _Response:
    url: str
    status: int
    headers: dict[str, str]
    location: str | None = None
    body: bytes = b""
    raw_bytes: int = 0


@dataclass(slots=True)
class _FetchState:
    """What one message's fetch has done so far (for the page or the dead letter)."""

    attempts: int = 0
    network_s: float = 0.0  # time inside request slots, excluding politeness and backoff waits
    redirects: list[str] = field(default_factory=list)
    budget: asyncio.Timeout | None = None  # the message's deadline (paused while queued for a slot)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), None if absent/bad."""
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())


def _kept_headers(headers: httpx.Headers) -> dict[str, str]:
    return {k: headers[k] for k in KEPT_HEADERS if k in headers}


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _no_cookies() -> CookieJar:
    """The shared client keeps no cookies: one site's cookies must not follow us to another,
    and a long-running worker must not grow a jar. Cookies live for one redirect chain."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def _refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _on_headers_sent(sent: Callable[[], None]) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """httpcore trace hook: tell the politeness gate when the request really leaves.

    ``...send_request_headers.complete``, not ``.started``: between the two the write can wait
    for the event loop, and spacing from ``.started`` let the server see gaps up to 64 ms
    under D in ``benchmarks/bench_fetch.py`` (19 of 1,500); from ``.complete``, none."""

    async def trace(event: str, _info: dict[str, Any]) -> None:
        if event == "http11.send_request_headers.complete":
            sent()

    return trace


_LOCATION = "copydesk.location"


async def _take_location(response: httpx.Response) -> None:
    """httpx response hook: take the ``Location`` header away before httpx reads it.

    httpx builds the next request from ``Location`` even with redirects off, and raises on one
    it cannot parse (``javascript:alert(1)``) before the fetcher sees it. The fetcher follows
    redirects itself and checks the target like any other URL (``parse_url``), so the header
    waits in ``response.extensions`` instead."""
    if "location" in response.headers:
        response.extensions[_LOCATION] = response.headers["location"]
        del response.headers["location"]


def _strip_fragment(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(fragment="")) if "#" in url else url


def _left(budget: asyncio.Timeout | None) -> float:
    """Seconds left of a message's deadline (infinite without one, or while it is paused)."""
    when = budget.when() if budget is not None else None
    return float("inf") if when is None else when - asyncio.get_running_loop().time()


def _pause(budget: asyncio.Timeout | None) -> float | None:
    """Stop a message's deadline clock (while it queues for a request slot); returns what was left."""
    if budget is None or budget.when() is None or budget.expired():
        return None
    left = _left(budget)
    budget.reschedule(None)
    return left


def _resume(budget: asyncio.Timeout | None, left: float | None) -> None:
    if budget is not None and left is not None and not budget.expired():
        budget.reschedule(asyncio.get_running_loop().time() + left)


class Fetcher:
    """Async fetcher: ``async with Fetcher(cfg) as f: await f.fetch(msg)``.

    All state (connection pool, DNS pins, robots cache, politeness and circuit state) lives
    on the instance, so one Beam DoFn instance owns exactly one of each.
    """

    def __init__(self, config: FetchConfig = FetchConfig()) -> None:
        self.config = config
        self._client: httpx.AsyncClient | None = None
        self.guard = AddressGuard(
            allow_private=config.allow_private,
            allowed_networks=config.allowed_networks,
            resolve_timeout=config.connect_timeout,
            cache_ttl=config.dns_cache_ttl,
            pins=dict(config.resolve),
        )
        self.backoff = BackoffStats()  # retry waits, Retry-After deferrals, circuits opened
        self.breaker = CircuitBreaker(threshold=config.circuit_failures, cooldown=config.circuit_cooldown,
                                      stats=self.backoff)
        self.robots = RobotsCache(self._fetch_robots, ttl=config.robots_cache_ttl, error_ttl=config.robots_error_ttl)
        self._gate: Politeness | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> Fetcher:
        """Create the client and the loop-bound state; must run on the loop that will fetch."""
        if self._client is not None:
            return self
        cfg = self.config
        self._client = httpx.AsyncClient(
            # A request lives at most total_timeout; a pool unused for longer has nothing in flight.
            transport=PerHostTransport(self.guard, per_host=cfg.per_host_concurrency,
                                       idle_after=cfg.total_timeout + 30.0, verify=cfg.verify_tls),
            timeout=httpx.Timeout(
                connect=cfg.connect_timeout, read=cfg.read_timeout, write=cfg.read_timeout, pool=cfg.total_timeout
            ),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: a proxy would bypass the address guard
            cookies=_no_cookies(),
            event_hooks={"response": [_take_location]},
            headers={
                "User-Agent": cfg.user_agent,
                "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
                "Accept-Encoding": ACCEPT_ENCODING,
            },
        )
        self._gate = Politeness(concurrency=cfg.per_host_concurrency, max_in_flight=cfg.max_in_flight)
        return self

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Fetcher:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def gate(self) -> Politeness:
        if self._gate is None:
            raise RuntimeError("Fetcher is not open: use `async with Fetcher(cfg)` or `await open()`")
        return self._gate

    # -- public API --------------------------------------------------------------------

    async def fetch_many(self, msgs: Iterable[InputMessage]) -> list[FetchedPage | DeadLetter]:
        """Fetch concurrently (bounded by the gates); results in input order."""
        return list(await asyncio.gather(*(self.fetch(m) for m in msgs)))

    async def fetch(self, msg: InputMessage) -> FetchedPage | DeadLetter:
        """Fetch one message's URL. Never raises (except cancellation): failures are dead letters."""
        if msg.html is not None:
            return self._prescraped(msg)
        state = _FetchState()
        try:
            target = _Target.of(msg.checked) if msg.checked is not None else _Target.parse(msg.url)
            try:
                async with asyncio.timeout(self.config.deadline) as state.budget:
                    return await self._fetch_chain(msg, target, state)
            except TimeoutError as exc:
                raise FetchFailure(Reason.TIMEOUT, f"no page within the message deadline of {self.config.deadline:g}s",
                                   timeout="deadline") from exc
        except FetchFailure as exc:
            return self._dead(msg, exc.reason, str(exc), state, exc.detail)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must cost one message, not the bundle
            log.exception("unexpected error fetching %s (%s:%s offset %s)", msg.url, msg.ref.topic,
                          msg.ref.partition, msg.ref.offset,
                          extra=log_fields(msg.ref, url=msg.url, reason=str(Reason.INTERNAL), stage="fetch"))
            return self._dead(msg, Reason.INTERNAL, f"{type(exc).__name__}: {exc}", state, {})

    # -- result records ----------------------------------------------------------------

    @staticmethod
    def _prescraped(msg: InputMessage) -> FetchedPage:
        html = msg.html or ""
        return FetchedPage(
            message=msg, final_url=msg.url, html=html, status=200, fetched_at=now_iso(), prescraped=True,
            body_bytes=len(html.encode("utf-8", errors="replace")),
        )

    def _dead(
        self, msg: InputMessage, reason: Reason, text: str, state: _FetchState, detail: dict[str, Any]
    ) -> DeadLetter:
        detail = {**detail, "elapsed_ms": round(state.network_s * 1000, 1)}
        if state.redirects:
            detail.setdefault("redirects", list(state.redirects))
        return dead_letter(
            Stage.FETCH, reason, text, ref=msg.ref, raw=msg.raw, url=msg.url,
            attempts=max(1, state.attempts), detail=detail,
        )

    def _page(self, msg: InputMessage, resp: _Response, state: _FetchState) -> FetchedPage:
        if looks_binary(resp.body):
            raise FetchFailure(Reason.NOT_HTML, "body contains NUL bytes: binary content",
                               content_type=resp.headers.get("content-type"), status=resp.status)
        text, codec = decode_html(resp.body, resp.headers.get("content-type"))
        return FetchedPage(
            message=msg,
            final_url=resp.url,
            html=text,
            status=resp.status,
            headers=resp.headers,
            encoding=codec,
            fetched_at=now_iso(),
            elapsed_ms=round(state.network_s * 1000, 1),
            redirects=list(state.redirects),
            body_bytes=len(resp.body),
        )

    # -- the redirect chain and retries ------------------------------------------------

    async def _fetch_chain(self, msg: InputMessage, first: _Target, state: _FetchState) -> FetchedPage:
        """Follow redirects by hand, so every hop is checked like the first."""
        cookies = httpx.Cookies()
        target = first
        for _hop in range(self.config.max_redirects + 1):
            try:
                resp = await self._hop_with_retries(target, cookies, state)
            except FetchFailure as exc:
                if state.redirects:
                    exc.detail.setdefault("hop_url", target.url)
                raise
            if resp.location is None:
                return self._page(msg, resp, state)
            state.redirects.append(target.url)
            nxt = urljoin(target.url, resp.location.strip())
            try:
                target = _Target.parse(nxt)
            except FetchFailure as exc:
                exc.detail.setdefault("hop_url", nxt[:2048])
                raise
        raise FetchFailure(
            Reason.TOO_MANY_REDIRECTS, f"more than {self.config.max_redirects} redirects",
            redirects=list(state.redirects), next_url=target.url,
        )

    async def _hop_with_retries(self, target: _Target, cookies: httpx.Cookies, state: _FetchState) -> _Response:
        cfg = self.config
        for attempt in range(cfg.retries + 1):
            state.attempts += 1
            try:
                return await self._hop(target, cookies, state)
            except FetchFailure as exc:
                if not self._retryable(exc) or attempt == cfg.retries:
                    raise
                retry_after = exc.detail.get("retry_after_s")
                if retry_after is not None and retry_after > cfg.max_retry_after:
                    exc.detail["gave_up"] = f"Retry-After over max_retry_after ({cfg.max_retry_after}s)"
                    raise
                wait = self._backoff(attempt)
                if wait >= _left(state.budget):  # the deadline would end the wait: keep the real reason
                    exc.detail["gave_up"] = f"message deadline ({cfg.deadline:g}s)"
                    raise
                self.backoff.retry_waits += 1
                self.backoff.retry_wait_s += wait
                await asyncio.sleep(wait)  # Retry-After is enforced by the host gate
        raise AssertionError("unreachable")

    @staticmethod
    def _retryable(exc: FetchFailure) -> bool:
        """Transport failures, 429 and 5xx; an odd status (3xx without Location) will not change."""
        status = exc.detail.get("status")
        if status is not None:
            return status == 429 or status >= 500
        return exc.reason in RETRYABLE_REASONS

    @staticmethod
    def _host_failure(exc: FetchFailure) -> bool:
        status = exc.detail.get("status")
        if status is not None:
            return status == 429 or status >= 500
        return exc.reason in HOST_FAILURE_REASONS

    def _backoff(self, attempt: int) -> float:
        cfg = self.config
        delay = min(cfg.backoff_cap, cfg.backoff_base * (2**attempt))
        return delay * (1.0 - cfg.backoff_jitter * random.random())

    # -- one hop -----------------------------------------------------------------------

    async def _hop(self, target: _Target, cookies: httpx.Cookies | None, state: _FetchState | None, *,
                   page: bool = True) -> _Response:
        """One request to one URL through breaker, guard, robots and politeness."""
        url = target.url
        self.breaker.check(target.hostkey)
        try:
            await self.guard.resolve(target.host, target.port)
            delay = self.config.per_host_delay
            if page and self.config.respect_robots:
                rules = await self.robots.rules(target.origin)
                if not rules.allowed(url, self.config.user_agent):
                    raise FetchFailure(Reason.ROBOTS, f"robots.txt of {target.origin} disallows this URL",
                                       robots_status=rules.status)
                delay = self._host_delay(rules)
            budget = state.budget if state is not None else None
            left = _pause(budget)  # queued behind our own politeness: not the message's time
            async with self.gate.slot(target.hostkey, delay) as sent:
                _resume(budget, left)
                started = time.monotonic()
                try:
                    return await self._request(target, cookies, sent, page=page)
                finally:
                    if state is not None:
                        state.network_s += time.monotonic() - started
        except FetchFailure as exc:
            if self._host_failure(exc):
                self.breaker.failure(target.hostkey)
            raise

    def _host_delay(self, rules: RobotsRules) -> float:
        """Crawl-delay if the site asks for more than our default, capped."""
        cfg = self.config
        crawl_delay = rules.crawl_delay(cfg.user_agent)
        if crawl_delay is None:
            return cfg.per_host_delay
        return max(cfg.per_host_delay, min(crawl_delay, cfg.max_crawl_delay))

    async def _request(
        self, target: _Target, cookies: httpx.Cookies | None, sent: Callable[[], None], *, page: bool
    ) -> _Response:
        """Send one GET with the total timeout; map transport errors to reason codes."""
        assert self._client is not None, "Fetcher is not open"
        cfg = self.config
        try:
            request = self._client.build_request("GET", target.url)
        except (httpx.InvalidURL, UnicodeError, ValueError) as exc:  # parse_url lets none of these through
            raise FetchFailure(Reason.BAD_URL, f"unusable URL: {exc}") from exc
        request.extensions["trace"] = _on_headers_sent(sent)
        if cookies is not None:
            cookies.set_cookie_header(request)
        try:
            async with asyncio.timeout(cfg.total_timeout):
                response = await self._client.send(request, stream=True)
                try:
                    if cookies is not None:
                        cookies.extract_cookies(response)
                    return await self._read_response(target, response, page=page)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise FetchFailure(Reason.TIMEOUT, f"no complete response within {cfg.total_timeout}s",
                               timeout="total") from exc
        except httpx.TimeoutException as exc:
            kind = type(exc).__name__.removesuffix("Timeout").lower() or "read"
            raise FetchFailure(Reason.TIMEOUT, f"{kind} timeout", timeout=kind) from exc
        except httpx.ConnectError as exc:
            reason = Reason.REFUSED if _refused(exc) else Reason.CONNECTION
            raise FetchFailure(reason, f"connect failed: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise FetchFailure(Reason.BAD_URL, str(exc)) from exc
        except httpx.TransportError as exc:
            raise FetchFailure(Reason.CONNECTION, f"{type(exc).__name__}: {exc}") from exc

    async def _read_response(self, target: _Target, response: httpx.Response, *, page: bool) -> _Response:
        cfg = self.config
        status = response.status_code
        headers = _kept_headers(response.headers)
        location = response.extensions.get(_LOCATION) if status in REDIRECT_STATUSES else None
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after:
                pushed = self.gate.defer(target.hostkey, min(retry_after, cfg.max_retry_after))
                if pushed > 0:
                    self.backoff.retry_after += 1
                    self.backoff.retry_after_s += pushed
            reason = Reason.HTTP_4XX if status == 429 else Reason.HTTP_5XX
            raise FetchFailure(reason, f"HTTP {status}", status=status, retry_after_s=retry_after)
        self.breaker.success(target.hostkey)
        if location or not page:
            body, raw = b"", 0
            if not location and 200 <= status < 300:  # robots.txt body
                body, raw = await read_capped(response.aiter_raw(), response.headers.get("content-encoding"),
                                              ROBOTS_MAX_BYTES, truncate=True)
            return _Response(target.url, status, headers, location=location, body=body, raw_bytes=raw)
        if 400 <= status < 500:
            raise FetchFailure(Reason.HTTP_4XX, f"HTTP {status}", status=status)
        if 300 <= status < 400:
            why = "without a Location" if status in REDIRECT_STATUSES else "is no redirect to follow"
            raise FetchFailure(Reason.HTTP_3XX, f"HTTP {status} {why}", status=status)
        if not 200 <= status < 300:
            raise FetchFailure(Reason.CONNECTION, f"unexpected HTTP status {status}", status=status)
        ctype = response.headers.get("content-type")
        if _mime(ctype) and _mime(ctype) not in cfg.allowed_content_types:
            raise FetchFailure(Reason.NOT_HTML, f"content type {_mime(ctype)!r} is not HTML",
                               content_type=ctype, status=status)
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > cfg.max_page_bytes:
            raise too_large(cfg.max_page_bytes, "Content-Length", content_length=int(length), status=status)
        body, raw = await read_capped(response.aiter_raw(), response.headers.get("content-encoding"),
                                      cfg.max_page_bytes)
        return _Response(target.url, status, headers, body=body, raw_bytes=raw)

    # -- robots.txt --------------------------------------------------------------------

    async def _fetch_robots(self, origin: str) -> tuple[int, bytes]:
        """GET /robots.txt through guard and politeness (no robots check, no retries)."""
        url = origin + "/robots.txt"
        async with asyncio.timeout(self.config.deadline):  # shared by the origin's messages: bounded alike
            for _ in range(6):  # RFC 9309: follow at least five redirects
                resp = await self._hop(_Target.parse(url), None, None, page=False)
                if resp.location is None:
                    if 200 <= resp.status < 300:
                        self._space_after_robots(origin, resp.body)
                    return resp.status, resp.body
                url = urljoin(url, resp.location.strip())
        raise FetchFailure(Reason.TOO_MANY_REDIRECTS, "robots.txt redirects too often")

    def _space_after_robots(self, origin: str, body: bytes) -> None:
        """The robots.txt request itself was spaced by the default delay; a Crawl-delay must
        also separate it from the first page request."""
        from protego import Protego

        rules = RobotsRules(Protego.parse(body.decode("utf-8", errors="replace")), 200)
        delay = self._host_delay(rules)
        if delay > self.config.per_host_delay:
            self.gate.defer(_Target.parse(origin + "/").hostkey, delay)


# -- Beam ----------------------------------------------------------------------------------


class _FetchMetrics:
    """Beam metrics of the fetch stage (names in :mod:`copydesk.transforms.fetch.metrics`)."""

    def __init__(self) -> None:
        ns = METRICS_NAMESPACE
        self.pages = Metrics.counter(ns, names.PAGES)
        self.prescraped = Metrics.counter(ns, names.PRESCRAPED)
        self.dead = Metrics.counter(ns, names.DEAD)
        self.bytes = Metrics.counter(ns, names.BYTES)
        self.latency = Metrics.distribution(ns, names.LATENCY_MS)
        self.attempts = Metrics.distribution(ns, names.ATTEMPTS)
        self.in_flight = Metrics.gauge(ns, names.IN_FLIGHT_PEAK)
        self.batch = Metrics.distribution(ns, names.BATCH_SIZE)
        self.retry_waits = Metrics.counter(ns, names.BACKOFF_WAITS)
        self.retry_wait_ms = Metrics.counter(ns, names.BACKOFF_MS)
        self.retry_after = Metrics.counter(ns, names.RETRY_AFTER_WAITS)
        self.retry_after_ms = Metrics.counter(ns, names.RETRY_AFTER_MS)
        self.circuit_opened = Metrics.counter(ns, names.CIRCUIT_OPENED)
        self.circuit_open_hosts = Metrics.gauge(ns, names.CIRCUIT_OPEN_HOSTS)
        self.by_name = CounterSet(ns)  # fetch_dead_<reason>, fetch_status_<class>

    def backoff(self, b: BackoffStats, open_hosts: int) -> None:
        """The fetcher's backoff stats since the last bundle (``BackoffStats.take``) into the counters."""
        for counter, v in ((self.retry_waits, b.retry_waits), (self.retry_wait_ms, int(b.retry_wait_s * 1000)),
                           (self.retry_after, b.retry_after), (self.retry_after_ms, int(b.retry_after_s * 1000)),
                           (self.circuit_opened, b.circuit_opened)):
            if v:
                counter.inc(v)
        self.circuit_open_hosts.set(open_hosts)

    def record(self, result: FetchedPage | DeadLetter) -> None:
        if isinstance(result, DeadLetter):
            self.dead.inc()
            self.by_name.inc(names.DEAD_PREFIX + result.reason)
            status = result.detail.get("status")
            self.by_name.inc(names.status_counter(status))
            self.attempts.update(result.attempts)
            return
        if result.prescraped:
            self.prescraped.inc()
            return
        self.pages.inc()
        self.by_name.inc(names.status_counter(result.status))
        self.bytes.inc(result.body_bytes)
        self.latency.update(int(result.elapsed_ms))


class _FetchDoFn(beam.DoFn):
    """Fetches on an event loop of its own thread; results are emitted as they complete.

    ``process`` hands each message to the loop and emits whatever has finished meanwhile;
    with ``batch_size`` messages in flight it waits for the *first* to finish, not for all,
    so one slow host holds up only its own messages. ``finish_bundle`` waits for the rest,
    which the message deadline bounds. Beam's outputs and metrics stay on the DoFn's thread.
    """

    DEAD = "dead_letter"

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._fetcher: Fetcher | None = None
        self._pending: dict[concurrent.futures.Future, tuple[InputMessage, Any, Any]] = {}

    def setup(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="copydesk-fetch-loop", daemon=True)
        self._thread.start()
        self._fetcher = Fetcher(self.config)
        self._on_loop(self._fetcher.open())
        self._metrics = _FetchMetrics()

    def _on_loop(self, coro: Awaitable[Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start_bundle(self) -> None:
        self._pending = {}
        self._bundle_size = 0

    def process(self, msg: InputMessage, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        assert self._loop is not None and self._fetcher is not None
        self._bundle_size += 1
        fut = asyncio.run_coroutine_threadsafe(self._fetcher.fetch(msg), self._loop)
        self._pending[fut] = (msg, timestamp, window)
        yield from self._emit(block=len(self._pending) >= self.config.batch_size)

    def finish_bundle(self):
        while self._pending:
            yield from self._emit(block=True)
        if self._bundle_size:
            self._metrics.batch.update(self._bundle_size)
            peak, backoff, open_hosts = self._on_loop(self._take_stats())
            self._metrics.in_flight.set(peak)
            self._metrics.backoff(backoff, open_hosts)

    async def _take_stats(self) -> tuple[int, BackoffStats, int]:
        """Peak in flight, backoff stats and open circuits since the last bundle, read (and
        reset) on the loop that changes them; Beam's metrics are then set on the DoFn's thread."""
        assert self._fetcher is not None
        gate = self._fetcher.gate
        peak, gate.peak_in_flight = gate.peak_in_flight, 0
        return peak, self._fetcher.backoff.take(), self._fetcher.breaker.open_hosts()

    def _emit(self, *, block: bool):
        """Emit every finished fetch; with ``block``, wait until at least one has finished."""
        done, _ = concurrent.futures.wait(self._pending, timeout=None if block else 0,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        for fut in done:
            msg, ts, window = self._pending.pop(fut)
            try:
                result = fut.result()
            except Exception as exc:  # Fetcher.fetch never raises per message: this is a bug
                log.exception("fetch of %s failed (%s:%s offset %s)", msg.url, msg.ref.topic, msg.ref.partition,
                              msg.ref.offset,
                              extra=log_fields(msg.ref, url=msg.url, reason=str(Reason.INTERNAL), stage="fetch"))
                result = dead_letter(Stage.FETCH, Reason.INTERNAL, f"{type(exc).__name__}: {exc}", ref=msg.ref,
                                     raw=msg.raw, url=msg.url)
            self._metrics.record(result)
            if isinstance(result, DeadLetter):
                yield beam.pvalue.TaggedOutput(self.DEAD, WindowedValue(Envelope(result, msg.ref), ts, [window]))
            else:
                yield WindowedValue(result, ts, [window])

    async def _close(self) -> None:
        """Cancel what is still in flight (a bundle that failed elsewhere), then close the client."""
        assert self._fetcher is not None
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._fetcher.aclose()

    def teardown(self) -> None:
        if self._loop is None:
            return
        try:
            if self._fetcher is not None:
                self._on_loop(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop.close()
            self._loop = None


class FetchPages(beam.PTransform):
    """PCollection[InputMessage] -> (PCollection[FetchedPage], PCollection[Envelope of a DeadLetter])."""

    def __init__(self, config: FetchConfig = FetchConfig()) -> None:
        super().__init__()
        self.config = config

    def expand(self, messages):
        out = messages | "Fetch" >> beam.ParDo(_FetchDoFn(self.config)).with_outputs(_FetchDoFn.DEAD, main="pages")
        return out.pages, out[_FetchDoFn.DEAD]
