"""Pure parts of the fetch stage: address classification, charset, bounded decompression,
Retry-After, circuit breaker. (The HTTP behaviour is tested against a real server in
test_fetch.py.)"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import ipaddress
import time
import zlib
from collections.abc import AsyncIterator

import pytest

from copydesk.transforms.fetch.stage import parse_retry_after
from copydesk.transforms.fetch.body import HAVE_BROTLI, read_capped
from copydesk.transforms.fetch.charset import decode_html, looks_binary
from copydesk.transforms.fetch.errors import FetchFailure
from copydesk.transforms.fetch.guard import AddressGuard, is_public_ip
from copydesk.transforms.fetch.hosts import CircuitBreaker


@pytest.mark.parametrize("addr", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "255.255.255.255", "::1", "::", "fc00::1", "fd12::1", "fe80::1", "::ffff:10.0.0.1",
    "64:ff9b::7f00:1", "2002:7f00:1::", "198.18.0.1",
])
def test_non_public_addresses_are_refused(addr: str) -> None:
    assert not is_public_ip(ipaddress.ip_address(addr))


@pytest.mark.parametrize("addr", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(addr: str) -> None:
    assert is_public_ip(ipaddress.ip_address(addr))


def test_allowed_networks_open_only_themselves() -> None:
    guard = AddressGuard(allowed_networks=("127.0.0.1/32",))
    assert asyncio.run(guard.resolve("127.0.0.1", 80)) == ("127.0.0.1",)
    for host in ("127.0.0.2", "169.254.169.254", "[::1]"):
        with pytest.raises(FetchFailure) as err:
            asyncio.run(guard.resolve(host, 80))
        assert err.value.reason == "blocked_address"



def test_pinned_host_names_skip_dns_but_not_the_guard() -> None:
    pinned = AddressGuard(allowed_networks=("127.0.0.1/32",), pins={"outlet.test": "127.0.0.1",
                                                                   "metadata.test": "169.254.169.254"})
    assert asyncio.run(pinned.resolve("Outlet.test.", 80)) == ("127.0.0.1",)  # no DNS: .test never resolves
    with pytest.raises(FetchFailure) as err:  # a pin is no way around the address guard
        asyncio.run(pinned.resolve("metadata.test", 80))
    assert err.value.reason == "blocked_address"
    with pytest.raises(FetchFailure) as err:  # unpinned names still go to DNS
        asyncio.run(AddressGuard().resolve("outlet.test", 80))
    assert err.value.reason == "dns"


def test_site_serves_each_outlet_under_its_own_host_name() -> None:
    from copydesk.pipelines.pipeline import parse_pins
    from copydesk.pipelines.demo.site import SiteServer
    from copydesk.schemas.records import InputMessage, SourceRef
    from copydesk.transforms.fetch.stage import FetchConfig, Fetcher

    with SiteServer() as site:
        url = site.outlet_url("/continental/business/2025/03/12/container-freight-rates-fall-sixth-week.html")
        assert url.startswith("http://continental-news.test:")
        cfg = FetchConfig(allowed_networks=("127.0.0.1/32",), resolve=parse_pins(site.resolve_pins()),
                          per_host_delay=0)

        async def go():
            async with Fetcher(cfg) as f:
                return await f.fetch(InputMessage(url=url, ref=SourceRef("t", 0, 0)))

        page = asyncio.run(go())
    assert page.status == 200 and page.final_url == url
    assert 'href="http://continental-news.test:' in page.html  # {{BASE}} follows the Host header


RU = "Правительство объявило о новых мерах поддержки малого бизнеса в регионах страны. " * 4


def test_charset_precedence_header_then_meta() -> None:
    html = '<meta charset="windows-1251"><p>' + RU + "</p>"
    text, codec = decode_html(html.encode("cp1251"), "text/html; charset=windows-1251")
    assert RU in text and codec == "cp1251"
    text, codec = decode_html(html.encode("cp1251"), "text/html")  # meta only
    assert RU in text and codec == "cp1251"


def test_latin1_declaration_of_cyrillic_is_not_believed() -> None:
    text, codec = decode_html(("<p>" + RU + "</p>").encode("cp1251"), "text/html; charset=iso-8859-1")
    assert RU in text


def test_french_latin1_is_kept() -> None:
    fr = "Le ministère a déclaré que les négociations reprendront à Genève. " * 4
    text, codec = decode_html(fr.encode("latin-1"), "text/html; charset=ISO-8859-1")
    assert fr in text and codec == "cp1252"


def test_bom_wins_and_utf16_is_not_binary() -> None:
    body = "<p>hello</p>".encode("utf-16")
    assert not looks_binary(body)
    assert decode_html(body, "text/html; charset=iso-8859-1")[0] == "<p>hello</p>"


def test_undecodable_body_is_decode_failure() -> None:
    with pytest.raises(FetchFailure) as err:
        decode_html(bytes(range(128, 256)) * 50 + b"\x81\x8d\x8f\x90\x9d" * 50, "text/html; charset=utf-8")
    assert err.value.reason == "decode"


async def _chunks(data: bytes, size: int = 16384) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i: i + size]


def _read(data: bytes, encoding: str | None, cap: int) -> bytes:
    return asyncio.run(read_capped(_chunks(data), encoding, cap))[0]


def test_decompression_variants() -> None:
    body = b"<p>" + b"news " * 2000 + b"</p>"
    assert _read(gzip.compress(body), "gzip", 1_000_000) == body
    assert _read(zlib.compress(body), "deflate", 1_000_000) == body
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert _read(raw.compress(body) + raw.flush(), "deflate", 1_000_000) == body  # headerless deflate
    assert _read(gzip.compress(body[:5000]) + gzip.compress(body[5000:]), "gzip", 1_000_000) == body


@pytest.mark.parametrize("encoding", ["gzip", "deflate"] + (["br"] if HAVE_BROTLI else []))
def test_bombs_are_cut_at_the_cap(encoding: str) -> None:
    zeros = b"\0" * (20 * 1024 * 1024)
    if encoding == "br":
        import brotli

        data = brotli.compress(zeros)
    else:
        data = gzip.compress(zeros) if encoding == "gzip" else zlib.compress(zeros)
    with pytest.raises(FetchFailure) as err:
        _read(data, encoding, 500_000)
    assert err.value.reason == "too_large"


def test_unsupported_encoding_is_decode_failure() -> None:
    with pytest.raises(FetchFailure) as err:
        _read(b"xx", "compress", 1000)
    assert err.value.reason == "decode"


def test_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(future) <= 31
    assert parse_retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0


def test_circuit_breaker_opens_and_probes() -> None:
    cb = CircuitBreaker(threshold=2, cooldown=0.2)
    cb.failure("h:80")
    cb.check("h:80")  # one failure: still closed
    cb.failure("h:80")
    with pytest.raises(FetchFailure) as err:
        cb.check("h:80")
    assert err.value.reason == "circuit_open"
    cb.check("other:80")  # other hosts unaffected
    time.sleep(0.25)
    cb.check("h:80")  # cooldown over: one probe passes...
    with pytest.raises(FetchFailure):
        cb.check("h:80")  # ...and the next waits for its outcome
    cb.success("h:80")
    cb.check("h:80")
