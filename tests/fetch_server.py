"""A real HTTP server on 127.0.0.x that misbehaves on purpose, for the fetch-stage tests.

Routes are plain functions ``(handler) -> None`` writing to a
:class:`http.server.BaseHTTPRequestHandler`; the server records every request it sees
(path, Host header, monotonic arrival time) so tests can assert on *server-observed*
behaviour: how many requests arrived, and how far apart. No mocks: the fetcher talks TCP.
"""

from __future__ import annotations

import gzip
import http.server
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the server saw it."""

    path: str
    host: str
    t: float  # time.monotonic() when the request line had been read


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is exercised
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        srv = self.server.owner
        srv.record(Seen(self.path, self.headers.get("Host", ""), time.monotonic()))
        route = srv.routes.get(self.path.split("?", 1)[0])
        srv.enter()
        try:
            if route is None:
                send(self, 404, b"not found")
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            srv.leave()

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: MisbehavingServer

    def handle_error(self, request: object, client_address: object) -> None:
        """A client hanging up mid-response is what these tests provoke: not worth a traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class MisbehavingServer:
    """``with MisbehavingServer("127.0.0.1") as srv: srv.routes["/x"] = html_route(...)``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = _Server((host, port), _Handler)
        self._httpd.owner = self
        self.host = host
        self.port = self._httpd.server_address[1]
        self.routes: dict[str, Route] = {}
        self._log: list[Seen] = []
        self._lock = threading.Lock()
        self._active = 0
        self.max_active = 0
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def record(self, seen: Seen) -> None:
        with self._lock:
            self._log.append(seen)

    def enter(self) -> None:
        with self._lock:
            self._active += 1
            self.max_active = max(self.max_active, self._active)

    def leave(self) -> None:
        with self._lock:
            self._active -= 1

    def seen(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self._log if path is None or s.path.split("?", 1)[0] == path]

    def start(self) -> MisbehavingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MisbehavingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- building blocks for routes -------------------------------------------------------------


def send(h: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"",
         headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    hdrs = {"Content-Type": "text/html; charset=utf-8", **(headers or {})}
    for k, v in hdrs.items():
        h.send_header(k, v)
    if "Content-Length" not in hdrs:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def html_route(body: bytes | str, content_type: str = "text/html; charset=utf-8", status: int = 200,
               headers: dict[str, str] | None = None) -> Route:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return lambda h: send(h, status, data, {"Content-Type": content_type, **(headers or {})})


def compressed_route(body: bytes, encoding: str) -> Route:
    data = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    return lambda h: send(h, 200, data, {"Content-Encoding": encoding})


def redirect_route(location: str, status: int = 302) -> Route:
    return lambda h: send(h, status, b"", {"Location": location})


def sequence_route(*routes: Route) -> Route:
    """The n-th request gets the n-th route; the last one repeats."""
    count = iter(range(1 << 30))

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        routes[min(next(count), len(routes) - 1)](h)

    return route


def slow_drip_route(interval: float = 0.5, total: int = 10_000) -> Route:
    """Slowloris from the server side: a valid response that trickles one byte at a time."""

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(total))
        h.end_headers()
        for _ in range(total):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(interval)

    return route


def endless_route(chunk: int = 64 * 1024) -> Route:
    """A body without length that never ends (until the client hangs up)."""

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        block = b"<p>" + b"a" * (chunk - 7) + b"</p>\n"
        while True:
            h.wfile.write(block)

    return route


def gzip_bomb(size: int = 10 * 1024 * 1024) -> bytes:
    """``size`` zero bytes, gzipped (~10 KB for 10 MB)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1024 * 1024)
    parts = [comp.compress(zeros) for _ in range(size // len(zeros))]
    parts.append(comp.flush())
    return b"".join(parts)


def gzip_bomb_route(size: int = 10 * 1024 * 1024) -> Route:
    data = gzip_bomb(size)
    return lambda h: send(h, 200, data, {"Content-Encoding": "gzip"})


def iter_gaps(times: list[float]) -> Iterator[float]:
    ordered = sorted(times)
    return (b - a for a, b in zip(ordered, ordered[1:]))


def min_gap(seen: list[Seen]) -> float:
    """Smallest gap between two consecutive request arrivals (inf with fewer than two)."""
    return min(iter_gaps([s.t for s in seen]), default=float("inf"))
