"""SSRF guard: refuse private, loopback, link-local, metadata and other non-public addresses.

A URL taken from a Kafka message (or from a redirect a hostile site sends) must not make
the crawler talk to the cloud metadata service, the broker, or anything else inside the
network. The guard therefore

* resolves host names itself (``loop.getaddrinfo``) and checks *every* address returned,
  so a name with one public and one private address is refused;
* is applied to every hop, including redirects and robots.txt, *before* any connection;
* pins the connection to the addresses it checked: :class:`GuardedBackend` is the httpcore
  network backend of the fetcher's client, so the socket is opened to a checked IP and
  never to whatever a second DNS answer says (this defeats DNS rebinding). TLS still
  verifies the certificate against the URL's host name, because only the TCP target changes.

``allow_private`` switches the guard off; ``allowed_networks`` lets chosen networks through
(tests use ``127.0.0.0/8``; on-premise users their intranet).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
import typing
from collections.abc import Iterable

import httpcore
import httpx
from httpcore import AsyncNetworkBackend, AsyncNetworkStream

from copydesk.schemas.reasons import Reason
from copydesk.transforms.fetch.errors import FetchFailure

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Listed explicitly although ``is_global`` covers most of them: the list documents intent
# and does not depend on the Python version's idea of "global".
BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated, RFC 7526)
        "::/128", "::1/128", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8", "2001:db8::/32",
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translated inside the network, wherever the IPv4 sits
        "100::/64", "2001::/23",  # discard-only; IETF protocol assignments (Teredo, benchmarking, ORCHID ...)
    )
)
_DNS_CACHE_MAX = 10_000

# IPv6 ranges whose addresses carry an IPv4 address, which is what a packet to them reaches
# (through the kernel, a translator or a tunnel relay): (network, where the IPv4 address is).
_EMBEDDING: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(n), how)
    for n, how in (
        ("::ffff:0:0/96", "low32"),  # IPv4-mapped ::ffff:a.b.c.d
        ("::ffff:0:0:0/96", "low32"),  # SIIT-translated ::ffff:0:a.b.c.d (RFC 6145)
        ("::/96", "low32"),  # IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks)
        ("64:ff9b::/96", "low32"),  # well-known NAT64 prefix (RFC 6052)
        ("2002::/16", "6to4"),  # 6to4: bits 16-48 (RFC 3056)
        ("2001::/32", "teredo"),  # Teredo: server and (obfuscated) client (RFC 4380)
    )
)


def embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address embeds or translates to (what is really reached)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ()
    for net, how in _EMBEDDING:
        if ip in net:
            if how == "6to4":
                return (ip.sixtofour,) if ip.sixtofour is not None else ()
            if how == "teredo":
                return tuple(ip.teredo) if ip.teredo is not None else ()
            return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()


def is_public_ip(ip: IPAddress) -> bool:
    """True for an address that is globally routable unicast (what a crawler may contact).

    Refused: what Python's ``ipaddress`` does not call global, what :data:`BLOCKED_NETWORKS`
    lists, multicast, and every IPv6 form whose embedded IPv4 address is not public itself.
    """
    if any(not is_public_ip(inner) for inner in embedded_ipv4(ip)):
        return False
    if any(ip in net for net in BLOCKED_NETWORKS if net.version == ip.version):
        return False
    return ip.is_global and not ip.is_multicast


def parse_ip(host: str) -> IPAddress | None:
    """The address if ``host`` is an IP literal (brackets and zone id tolerated), else None."""
    h = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        return None


class AddressGuard:
    """Resolves host names and refuses non-public addresses, with a small positive DNS cache.

    The cache is what the connection is pinned to, so the address connected to is always
    one that was checked. Entries live ``cache_ttl`` seconds.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_networks: Iterable[str] = (),
        resolve_timeout: float = 5.0,
        cache_ttl: float = 60.0,
        pins: dict[str, str] | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allowed_networks
        )
        self.resolve_timeout = resolve_timeout
        self.cache_ttl = cache_ttl
        # host -> address, not looked up (curl's --resolve); the address is still checked
        self.pins = {h.lower().rstrip("."): a for h, a in (pins or {}).items()}
        self._cache: dict[tuple[str, int], tuple[float, tuple[str, ...]]] = {}
        self._pending: dict[tuple[str, int], asyncio.Future[tuple[str, ...]]] = {}

    def is_allowed(self, ip: IPAddress) -> bool:
        """Public, or inside ``allowed_networks`` as written (127.0.0.1/32 does not let
        ::ffff:127.0.0.1 through: list an IPv6 form to allow it)."""
        if self.allow_private or is_public_ip(ip):
            return True
        return any(ip in net for net in self.allowed_networks if net.version == ip.version)

    def check_ip(self, ip: IPAddress, host: str) -> None:
        """Raise ``blocked_address`` unless ``ip`` may be contacted."""
        if not self.is_allowed(ip):
            raise FetchFailure(
                Reason.BLOCKED_ADDRESS, f"{host} resolves to non-public address {ip}", address=str(ip), host=host
            )

    async def resolve(self, host: str, port: int) -> tuple[str, ...]:
        """All addresses of ``host``, each checked; raises ``dns`` or ``blocked_address``."""
        literal = parse_ip(host)
        if literal is not None:
            self.check_ip(literal, host)
            return (str(literal),)
        key = (host.lower().rstrip("."), port)
        pinned = self.pins.get(key[0])
        if pinned is not None:
            ip = ipaddress.ip_address(pinned)
            self.check_ip(ip, host)
            return (str(ip),)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._pending.get(key)
        if pending is not None:  # one lookup per host, however many requests wait for it
            return await asyncio.shield(pending)
        fut: asyncio.Future[tuple[str, ...]] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            addrs = await self._lookup(key[0], port)
            fut.set_result(addrs)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            del self._pending[key]
        if len(self._cache) >= _DNS_CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + self.cache_ttl, addrs)
        return addrs

    async def _lookup(self, host: str, port: int) -> tuple[str, ...]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.resolve_timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as exc:
            raise FetchFailure(Reason.DNS, f"DNS lookup of {host} timed out", host=host) from exc
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise FetchFailure(Reason.DNS, f"DNS lookup of {host} failed: {exc}", host=host) from exc
        addrs: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            self.check_ip(ip, host)  # every address, not just the first
            if str(ip) not in addrs:
                addrs.append(str(ip))
        if not addrs:
            raise FetchFailure(Reason.DNS, f"{host} has no addresses", host=host)
        return tuple(addrs)


class GuardedBackend(AsyncNetworkBackend):
    """httpcore network backend that connects only to addresses the guard has checked."""

    def __init__(self, guard: AddressGuard) -> None:
        self.guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        addrs = await self.guard.resolve(host, port)
        last: Exception | None = None
        for addr in addrs:
            try:
                return await self._inner.connect_tcp(
                    addr, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):  # type: ignore[override]
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's default transport with the connection pool built on :class:`GuardedBackend`.

    httpx does not expose the network backend, so the pool is rebuilt with the same
    settings; proxies are deliberately unsupported (a proxy would connect for us, unchecked).
    """

    def __init__(self, guard: AddressGuard, *, limits: httpx.Limits, verify: bool = True) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits, http1=True, http2=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=GuardedBackend(guard),
        )


class PerHostTransport(httpx.AsyncBaseTransport):
    """One small guarded connection pool per origin instead of one big shared pool.

    httpcore's pool assigns queued requests by scanning every connection for every queued
    request, which costs O(connections x requests) per event: with ~100 keep-alive
    connections over 50 hosts that was most of the fetcher's CPU. A pool per origin with
    ``per_host`` connections (the politeness gate never lets more through) keeps each scan
    tiny. Pools unused for longer than any request can live (``idle_after``) are closed.
    """

    def __init__(self, guard: AddressGuard, *, per_host: int, idle_after: float, verify: bool = True) -> None:
        self.guard = guard
        self.per_host = per_host
        self.idle_after = idle_after
        self.verify = verify
        self._pools: dict[str, tuple[GuardedTransport, float]] = {}
        self._next_sweep = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        now = time.monotonic()
        entry = self._pools.get(key)
        pool = entry[0] if entry is not None else GuardedTransport(
            self.guard,
            limits=httpx.Limits(max_connections=self.per_host, max_keepalive_connections=self.per_host,
                                keepalive_expiry=min(30.0, self.idle_after)),
            verify=self.verify,
        )
        self._pools[key] = (pool, now)
        if now >= self._next_sweep:
            await self._close_idle(now)
        return await pool.handle_async_request(request)

    async def _close_idle(self, now: float) -> None:
        self._next_sweep = now + self.idle_after / 2
        idle = [k for k, (_p, last) in self._pools.items() if now - last > self.idle_after]
        for key in idle:
            pool, _last = self._pools.pop(key)
            await pool.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool, _last in pools:
            await pool.aclose()
