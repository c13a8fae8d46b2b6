"""robots.txt: fetched once per origin, cached with expiry, parsed with protego.

Policy (documented in docs/fetch.md):

* 2xx: the file's rules apply, ``Crawl-delay`` included (capped by the fetcher);
* 4xx (404, 410, also 401/403): no restrictions (RFC 9309 "unavailable");
* 5xx, timeout, connection or DNS error: treated as allow-all and cached only for the
  shorter ``error_ttl``, so one flaky robots.txt neither blocks a site nor is trusted long.
  (RFC 9309 would assume disallow-all; we chose availability and record it in the docs.)

Concurrent requests to a new origin share one robots.txt fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from protego import Protego

log = logging.getLogger(__name__)

ROBOTS_MAX_BYTES = 512 * 1024  # Google reads the first 500 KiB
_MAX_ORIGINS = 10_000


@dataclass(slots=True, frozen=True)
class RobotsRules:
    """The parsed rules of one origin; ``parser`` None means allow-all."""

    parser: Protego | None
    status: int | None  # HTTP status of robots.txt, None when the fetch failed

    def allowed(self, url: str, user_agent: str) -> bool:
        return self.parser is None or bool(self.parser.can_fetch(url, user_agent))

    def crawl_delay(self, user_agent: str) -> float | None:
        if self.parser is None:
            return None
        d = self.parser.crawl_delay(user_agent)
        return float(d) if d is not None else None


RobotsFetch = Callable[[str], Awaitable[tuple[int, bytes]]]


class RobotsCache:
    """origin ("scheme://host:port") -> RobotsRules, with expiry and single-flight fetching."""

    def __init__(self, fetch: RobotsFetch, *, ttl: float, error_ttl: float) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self.error_ttl = error_ttl
        self._cache: dict[str, tuple[float, RobotsRules]] = {}
        self._pending: dict[str, asyncio.Task[RobotsRules]] = {}
        self.fetches = 0

    async def rules(self, origin: str) -> RobotsRules:
        hit = self._cache.get(origin)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._pending.get(origin)
        if task is None:
            task = self._pending[origin] = asyncio.ensure_future(self._load(origin))
            task.add_done_callback(lambda _t: self._pending.pop(origin, None))
        return await asyncio.shield(task)

    async def _load(self, origin: str) -> RobotsRules:
        self.fetches += 1
        try:
            status, body = await self._fetch(origin)
        except Exception as exc:  # any failure: allow, briefly (see module docstring)
            log.info("robots.txt of %s unavailable (%s): allowing", origin, exc)
            return self._store(origin, RobotsRules(None, None), self.error_ttl)
        if 200 <= status < 300:
            text = body.decode("utf-8", errors="replace")
            return self._store(origin, RobotsRules(Protego.parse(text), status), self.ttl)
        if 400 <= status < 500:
            return self._store(origin, RobotsRules(None, status), self.ttl)
        return self._store(origin, RobotsRules(None, status), self.error_ttl)

    def _store(self, origin: str, rules: RobotsRules, ttl: float) -> RobotsRules:
        if len(self._cache) >= _MAX_ORIGINS:
            now = time.monotonic()
            for k in [k for k, (exp, _r) in self._cache.items() if exp <= now] or list(self._cache)[: _MAX_ORIGINS // 10]:
                del self._cache[k]
        self._cache[origin] = (time.monotonic() + ttl, rules)
        return rules
