"""Fetch stage against a real, misbehaving HTTP server on 127.0.0.x (issue #4)."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from copydesk.schemas.records import DeadLetter, FetchedPage, InputMessage, SourceRef
from copydesk.schemas.codec import page_from_raw_record, raw_page_record
from copydesk.transforms.fetch.stage import FetchConfig, Fetcher
from fetch_server import (
    MisbehavingServer,
    compressed_route,
    endless_route,
    gzip_bomb_route,
    html_route,
    min_gap,
    redirect_route,
    send,
    sequence_route,
    slow_drip_route,
)

pytestmark = pytest.mark.timeout(60)

PAGE = "<html><head><title>Hello</title></head><body><p>Ordinary news page.</p></body></html>"
RUSSIAN = "Министерство иностранных дел России заявило сегодня, что переговоры продолжатся"
JAPANESE = "東京都は本日、新しい防災計画を発表しました。"

# Fast settings: tests must not wait for production politeness or timeouts.
FAST = FetchConfig(
    connect_timeout=1.0, read_timeout=1.0, total_timeout=2.0, max_page_bytes=1_000_000,
    per_host_delay=0.0, retries=2, backoff_base=0.05, backoff_cap=0.2,
    allowed_networks=("127.0.0.1/32",), robots_cache_ttl=60.0,
)


def cfg(**changes: object) -> FetchConfig:
    return dataclasses.replace(FAST, **changes)


def msg(url: str, **kw: object) -> InputMessage:
    return InputMessage(url=url, ref=SourceRef(topic="urls", partition=3, offset=42), raw=f'{{"url": "{url}"}}', **kw)


def fetch(config: FetchConfig, *messages: InputMessage) -> list[FetchedPage | DeadLetter]:
    async def run() -> list[FetchedPage | DeadLetter]:
        async with Fetcher(config) as f:
            return await f.fetch_many(messages)

    return asyncio.run(run())


def fetch_one(config: FetchConfig, url: str) -> FetchedPage | DeadLetter:
    return fetch(config, msg(url))[0]


def assert_dead(result: FetchedPage | DeadLetter, reason: str) -> DeadLetter:
    assert isinstance(result, DeadLetter), f"expected dead letter {reason}, got page {result!r:.200}"
    assert result.reason == reason, (result.reason, result.message, result.detail)
    assert result.stage == "fetch"
    assert (result.topic, result.partition, result.offset) == ("urls", 3, 42)  # source offset kept
    assert result.input and result.url in result.input  # raw input kept
    return result


def assert_page(result: FetchedPage | DeadLetter) -> FetchedPage:
    assert isinstance(result, FetchedPage), f"expected a page, got {result!r:.400}"
    return result


@pytest.fixture
def server() -> Iterator[MisbehavingServer]:
    with MisbehavingServer("127.0.0.1") as srv:
        yield srv


@pytest.fixture
def other_server() -> Iterator[MisbehavingServer]:
    """A second host (127.0.0.2) for cross-host and blocked-address tests."""
    with MisbehavingServer("127.0.0.2") as srv:
        yield srv


# -- happy paths -----------------------------------------------------------------------------


def test_normal_page(server: MisbehavingServer) -> None:
    server.routes["/a"] = html_route(PAGE, headers={"ETag": '"v1"', "Set-Cookie": "s=1"})
    page = assert_page(fetch_one(FAST, server.url("/a")))
    assert page.html == PAGE
    assert page.status == 200 and page.final_url == server.url("/a") and page.redirects == []
    assert page.encoding == "utf-8" and page.body_bytes == len(PAGE.encode())
    assert page.headers["content-type"].startswith("text/html") and page.headers["etag"] == '"v1"'
    assert "set-cookie" not in page.headers and page.fetched_at and page.elapsed_ms > 0
    assert page.message.ref.offset == 42 and not page.prescraped


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_page_is_decoded(server: MisbehavingServer, encoding: str) -> None:
    server.routes["/c"] = compressed_route(PAGE.encode(), encoding)
    assert assert_page(fetch_one(FAST, server.url("/c"))).html == PAGE


def test_redirect_chain_records_final_url(server: MisbehavingServer) -> None:
    server.routes["/old"] = redirect_route("/mid", 301)
    server.routes["/mid"] = redirect_route(server.url("/new#frag"), 302)
    server.routes["/new"] = html_route(PAGE)
    page = assert_page(fetch_one(FAST, server.url("/old?utm_source=x")))
    assert page.final_url == server.url("/new")
    assert page.redirects == [server.url("/old?utm_source=x"), server.url("/mid")]


def test_prescraped_message_is_not_fetched(server: MisbehavingServer) -> None:
    result = fetch(FAST, msg(server.url("/never"), html="<p>already here</p>"))[0]
    page = assert_page(result)
    assert page.prescraped and page.html == "<p>already here</p>" and page.status == 200
    assert page.final_url == server.url("/never") and page.fetched_at
    assert server.seen() == []


def test_results_keep_input_order(server: MisbehavingServer) -> None:
    server.routes["/slow"] = lambda h: (time.sleep(0.3), send(h, 200, b"<p>slow</p>"))[1]
    server.routes["/fast"] = html_route("<p>fast</p>")
    results = fetch(cfg(per_host_concurrency=2), msg(server.url("/slow")), msg(server.url("/404")),
                    msg(server.url("/fast")))
    assert assert_page(results[0]).html == "<p>slow</p>"
    assert_dead(results[1], "http_4xx")
    assert assert_page(results[2]).html == "<p>fast</p>"


# -- HTTP errors and retries ----------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410, 451, 403])
def test_permanent_4xx_is_dead_at_once(server: MisbehavingServer, status: int) -> None:
    server.routes["/gone"] = html_route("no", status=status)
    dead = assert_dead(fetch_one(FAST, server.url("/gone")), "http_4xx")
    assert dead.detail["status"] == status and dead.attempts == 1
    assert len(server.seen("/gone")) == 1  # no retry


def test_429_waits_for_retry_after(server: MisbehavingServer) -> None:
    server.routes["/busy"] = sequence_route(
        lambda h: send(h, 429, b"slow down", {"Retry-After": "1"}), html_route(PAGE))
    page = assert_page(fetch_one(cfg(backoff_base=0.01), server.url("/busy")))
    assert page.html == PAGE
    first, second = server.seen("/busy")
    assert second.t - first.t >= 1.0  # the retry came after the server's Retry-After


def test_retry_after_beyond_cap_gives_up(server: MisbehavingServer) -> None:
    server.routes["/later"] = lambda h: send(h, 503, b"", {"Retry-After": "3600"})
    dead = assert_dead(fetch_one(FAST, server.url("/later")), "http_5xx")
    assert dead.detail["retry_after_s"] == 3600 and "gave_up" in dead.detail
    assert len(server.seen("/later")) == 1


def test_intermittent_503_is_retried(server: MisbehavingServer) -> None:
    server.routes["/flaky"] = sequence_route(html_route("", status=503), html_route("", status=503), html_route(PAGE))
    page = assert_page(fetch_one(FAST, server.url("/flaky")))
    assert page.html == PAGE and len(server.seen("/flaky")) == 3


def test_persistent_503_is_http_5xx_after_retries(server: MisbehavingServer) -> None:
    server.routes["/down"] = html_route("", status=503)
    dead = assert_dead(fetch_one(cfg(retries=2), server.url("/down")), "http_5xx")
    assert dead.detail["status"] == 503 and dead.attempts == 3
    assert len(server.seen("/down")) == 3


def test_circuit_opens_for_failing_host_only(server: MisbehavingServer, other_server: MisbehavingServer) -> None:
    server.routes["/down"] = html_route("", status=500)
    other_server.routes["/ok"] = html_route(PAGE)
    config = cfg(retries=0, circuit_failures=2, circuit_cooldown=60, per_host_concurrency=1,
                 allowed_networks=("127.0.0.1/32", "127.0.0.2/32"))

    async def run() -> list[FetchedPage | DeadLetter]:
        async with Fetcher(config) as f:
            first = [await f.fetch(msg(server.url("/down"))) for _ in range(2)]
            rest = await f.fetch_many([msg(server.url("/down")), msg(other_server.url("/ok"))])
            return first + rest

    r = asyncio.run(run())
    assert_dead(r[0], "http_5xx")
    assert_dead(r[1], "http_5xx")
    dead = assert_dead(r[2], "circuit_open")
    assert dead.detail["host"] == f"127.0.0.1:{server.port}"
    assert len(server.seen("/down")) == 2  # the backed-off request never reached the host
    assert assert_page(r[3]).html == PAGE  # other hosts are not stalled


def test_connection_refused(server: MisbehavingServer) -> None:
    port = server.port
    server.stop()
    assert_dead(fetch_one(cfg(retries=1), f"http://127.0.0.1:{port}/x"), "refused")


def test_dns_failure() -> None:
    assert_dead(fetch_one(cfg(retries=0), "http://no-such-host.invalid/x"), "dns")


# -- bounds ----------------------------------------------------------------------------------


def test_slow_drip_hits_total_timeout(server: MisbehavingServer) -> None:
    server.routes["/drip"] = slow_drip_route(interval=0.2)
    config = cfg(read_timeout=1.0, total_timeout=1.5, retries=0)
    t0 = time.monotonic()
    dead = assert_dead(fetch_one(config, server.url("/drip")), "timeout")
    # Each byte arrives within read_timeout, so only the total limit can end this.
    assert dead.detail["timeout"] == "total"
    assert time.monotonic() - t0 < config.total_timeout + 5  # bounded by the total timeout, not the body


def test_endless_body_is_too_large(server: MisbehavingServer) -> None:
    server.routes["/endless"] = endless_route()
    dead = assert_dead(fetch_one(cfg(max_page_bytes=300_000), server.url("/endless")), "too_large")
    assert dead.detail["max_bytes"] == 300_000


def test_content_length_over_cap_is_rejected_before_reading(server: MisbehavingServer) -> None:
    server.routes["/big"] = lambda h: send(h, 200, b"x" * 2_000_000)
    dead = assert_dead(fetch_one(cfg(max_page_bytes=1_000_000), server.url("/big")), "too_large")
    assert dead.detail["content_length"] == 2_000_000


def test_gzip_bomb_is_cut_off_with_bounded_memory(server: MisbehavingServer) -> None:
    server.routes["/bomb"] = gzip_bomb_route(10 * 1024 * 1024)
    cap = 1_000_000
    tracemalloc.start()
    try:
        dead = assert_dead(fetch_one(cfg(max_page_bytes=cap, retries=0), server.url("/bomb")), "too_large")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert dead.detail["raw_bytes"] < 20_000  # the compressed body was small...
    assert peak < 5 * cap  # ...and inflating it never held much more than the cap


def test_redirect_loop_is_too_many_redirects(server: MisbehavingServer) -> None:
    server.routes["/a"] = redirect_route("/b")
    server.routes["/b"] = redirect_route("/a")
    dead = assert_dead(fetch_one(cfg(max_redirects=4), server.url("/a")), "too_many_redirects")
    assert len(dead.detail["redirects"]) == 5
    assert len(server.seen("/a")) + len(server.seen("/b")) == 5


# -- safety ----------------------------------------------------------------------------------


def test_default_config_refuses_loopback(server: MisbehavingServer) -> None:
    server.routes["/"] = html_route(PAGE)
    dead = assert_dead(fetch_one(FetchConfig(), server.url("/")), "blocked_address")
    assert dead.detail["address"] == "127.0.0.1"
    assert server.seen() == []  # not even robots.txt was requested


def test_host_name_resolving_to_loopback_is_refused(server: MisbehavingServer) -> None:
    """The guard checks resolved addresses, not just IP literals."""
    dead = assert_dead(fetch_one(FetchConfig(), f"http://localhost:{server.port}/"), "blocked_address")
    assert dead.detail["host"] == "localhost"
    assert server.seen() == []


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
                                    "http://[::1]/", "http://100.64.0.1/", "http://[fd00::1]/",
                                    "http://[::ffff:169.254.169.254]/"])
def test_redirect_to_blocked_address_is_refused(server: MisbehavingServer, target: str) -> None:
    server.routes["/r"] = redirect_route(target)
    dead = assert_dead(fetch_one(FAST, server.url("/r")), "blocked_address")
    assert dead.detail["hop_url"] == target and dead.detail["redirects"] == [server.url("/r")]


def test_redirect_to_other_loopback_address_makes_no_connection(
    server: MisbehavingServer, other_server: MisbehavingServer
) -> None:
    """127.0.0.2 is a real, listening server; only 127.0.0.1 is allowed: nothing may reach .2."""
    other_server.routes["/secret"] = html_route("secret")
    server.routes["/r"] = redirect_route(other_server.url("/secret"))
    assert_dead(fetch_one(FAST, server.url("/r")), "blocked_address")
    assert other_server.seen() == []


def test_redirect_to_ftp_is_refused(server: MisbehavingServer) -> None:
    server.routes["/r"] = redirect_route("ftp://127.0.0.1/file.html")
    dead = assert_dead(fetch_one(FAST, server.url("/r")), "unsupported_scheme")
    assert dead.detail["hop_url"] == "ftp://127.0.0.1/file.html"


def test_input_url_with_bad_scheme_is_dead_letter() -> None:
    assert_dead(fetch_one(FAST, "file:///etc/passwd"), "unsupported_scheme")


# -- content ---------------------------------------------------------------------------------


def _cyrillic_page() -> bytes:
    body = f"<html><head><title>Новости</title></head><body><p>{RUSSIAN}.</p>" + "<p>Россия и мир.</p>" * 20
    return (body + "</body></html>").encode("cp1251")


def test_wrong_declared_charset_falls_back_to_detection(server: MisbehavingServer) -> None:
    server.routes["/ru"] = html_route(_cyrillic_page(), content_type="text/html; charset=utf-8")
    page = assert_page(fetch_one(FAST, server.url("/ru")))
    assert RUSSIAN in page.html and page.encoding == "cp1251"


def test_undeclared_windows_1251_is_detected(server: MisbehavingServer) -> None:
    server.routes["/ru"] = html_route(_cyrillic_page(), content_type="text/html")
    page = assert_page(fetch_one(FAST, server.url("/ru")))
    assert RUSSIAN in page.html


def test_meta_charset_shift_jis(server: MisbehavingServer) -> None:
    html = f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS"></head><body><p>{JAPANESE}</p></body></html>'
    server.routes["/jp"] = html_route(html.encode("shift_jis"), content_type="text/html")
    page = assert_page(fetch_one(FAST, server.url("/jp")))
    assert JAPANESE in page.html and page.encoding == "shift_jis"


@pytest.mark.parametrize("ctype,body", [
    ("image/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100),
    ("application/pdf", b"%PDF-1.4\n%\xe2\xe3"),
    ("text/html", b"<html>\0\0\0\x01\x02binary</html>"),  # NUL bytes served as HTML
])
def test_binary_content_is_not_html(server: MisbehavingServer, ctype: str, body: bytes) -> None:
    server.routes["/bin"] = html_route(body, content_type=ctype)
    dead = assert_dead(fetch_one(FAST, server.url("/bin")), "not_html")
    assert dead.attempts == 1


# -- politeness ------------------------------------------------------------------------------


def test_robots_disallow_and_crawl_delay(server: MisbehavingServer) -> None:
    server.routes["/robots.txt"] = html_route(
        "User-agent: *\nDisallow: /private\nCrawl-delay: 0.6\n", content_type="text/plain")
    server.routes["/news/1"] = html_route(PAGE)
    server.routes["/news/2"] = html_route(PAGE)
    config = cfg(per_host_delay=0.05, per_host_concurrency=2)
    results = fetch(config, msg(server.url("/private/x")), msg(server.url("/news/1")), msg(server.url("/news/2")))
    dead = assert_dead(results[0], "robots")
    assert dead.detail["robots_status"] == 200
    assert_page(results[1]), assert_page(results[2])
    assert server.seen("/private/x") == []
    assert len(server.seen("/robots.txt")) == 1  # fetched once, shared by concurrent requests
    assert min_gap(server.seen()) >= 0.6 - 0.02  # Crawl-delay, robots.txt request included


def test_crawl_delay_is_capped(server: MisbehavingServer) -> None:
    server.routes["/robots.txt"] = html_route("User-agent: *\nCrawl-delay: 3600\n", content_type="text/plain")
    server.routes["/a"] = html_route(PAGE)
    server.routes["/b"] = html_route(PAGE)
    results = fetch(cfg(max_crawl_delay=0.3), msg(server.url("/a")), msg(server.url("/b")))
    assert all(isinstance(r, FetchedPage) for r in results)
    assert min_gap(server.seen()) >= 0.3 - 0.02


@pytest.mark.parametrize("status", [404, 503])
def test_missing_or_failing_robots_allows(server: MisbehavingServer, status: int) -> None:
    server.routes["/robots.txt"] = html_route("", status=status)
    server.routes["/a"] = html_route(PAGE)
    assert_page(fetch_one(FAST, server.url("/a")))
    assert len(server.seen("/robots.txt")) == 1  # robots.txt itself is not retried


def test_per_host_delay_and_concurrency(server: MisbehavingServer, other_server: MisbehavingServer) -> None:
    server.routes["/p"] = lambda h: (time.sleep(0.2), send(h, 200, PAGE.encode()))[1]
    other_server.routes["/p"] = html_route(PAGE)
    delay = 0.25
    config = cfg(per_host_delay=delay, per_host_concurrency=2, respect_robots=False,
                 allowed_networks=("127.0.0.1/32", "127.0.0.2/32"))
    urls = [server.url(f"/p?{i}") for i in range(5)] + [other_server.url(f"/p?{i}") for i in range(3)]
    results = fetch(config, *map(msg, urls))
    assert all(isinstance(r, FetchedPage) for r in results)
    for srv in (server, other_server):
        # Server-observed arrivals; 20 ms allows for a new connection's handshake on the first.
        assert min_gap(srv.seen()) >= delay - 0.02
    assert server.max_active <= 2


def test_per_host_concurrency_is_used(server: MisbehavingServer) -> None:
    """The host's start lock is released once the request is on the wire, so K requests overlap."""
    server.routes["/slow"] = lambda h: (time.sleep(0.4), send(h, 200, PAGE.encode()))[1]
    results = fetch(cfg(per_host_concurrency=2, respect_robots=False), *(msg(server.url(f"/slow?{i}")) for i in range(4)))
    assert all(isinstance(r, FetchedPage) for r in results)
    assert server.max_active == 2


def test_fetch_config_is_picklable() -> None:
    config = cfg(user_agent="x/1")
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(ValueError):
        FetchConfig(allowed_networks=("not-a-network",))


# -- raw archive -----------------------------------------------------------------------------


def test_raw_record_round_trip(server: MisbehavingServer) -> None:
    server.routes["/a"] = html_route(PAGE)
    page = assert_page(fetch(FAST, msg(server.url("/a"), id="m1", source="feed"))[0])
    record = raw_page_record(page)
    assert record["body"] == PAGE and record["status"] == 200 and record["offset"] == 42
    assert record["topic"] == "urls" and record["headers"]["content-type"].startswith("text/html")
    back = page_from_raw_record(record)
    assert back.html == page.html and back.final_url == page.final_url and back.headers == page.headers
    assert back.message.ref.offset == 42 and back.message.id == "m1" and back.fetched_at == page.fetched_at
