"""Hostile input (issue 17): every internal address refused, every message accounted for.

* the address guard against every URL form of :data:`hostile_cases.GUARD_FORMS`, through the
  real parse stage, never sent; the same disguises around public addresses pass;
* redirects and robots.txt that lead inward, in process against real servers on 127.0.0.1,
  with an observer server on 127.0.0.2 that must see no request;
* the message deadline, fetch results emitted as they complete, the extraction workers'
  memory cap;
* one real ``copydesk run`` on real Kafka with every kind of :func:`hostile_cases.message_cases`
  (and one ``--input-file`` run of the kinds a file can hold): exactly one record or one dead
  letter per input with the expected reason, no traceback in the log, nothing reached 127.0.0.2;
* hypothesis fuzzing of the message parser and the URL checker.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from apache_beam.transforms.window import GlobalWindow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import cli_env, consume
from copydesk.schemas.codec import decode, encode, validate_article, validate_dead_letter
from copydesk.schemas.reasons import Reason
from copydesk.schemas.records import CheckedURL, DeadLetter, FetchedPage, InputMessage, SourceRef
from copydesk.transforms.extract.pool import ExtractFailure, ExtractPool
from copydesk.transforms.extract.core import ExtractConfig, Extracted
from copydesk.transforms.fetch.errors import FetchFailure
from copydesk.transforms.fetch.guard import AddressGuard, embedded_ipv4, is_public_ip
from copydesk.transforms.fetch.stage import FetchConfig, Fetcher, _FetchDoFn
from copydesk.transforms.parse.messages import parse_message
from copydesk.transforms.urls import InvalidURL, parse_url
from fetch_server import MisbehavingServer, html_route
from hostile_cases import (GUARD_FORMS, PINS, PUBLIC_FORMS, Case, article_html, install_routes, message_cases,
                           redirect_forms)

MAX_MESSAGE_BYTES = 65_536
URL_REASONS = {"no_url", "bad_url", "unsupported_scheme"}


# -- the address guard, unit level (nothing is sent) ------------------------------------------

def _refusal(url: str, guard: AddressGuard) -> str | None:
    """The reason ``url`` is refused with before any connection (None: it would be fetched)."""
    msg = parse_message(url.encode(), SourceRef(topic="t", partition=0, offset=0))
    if isinstance(msg, DeadLetter):
        return msg.reason
    assert msg.checked is not None
    try:
        asyncio.run(guard.resolve(msg.checked.host, msg.checked.port))
    except FetchFailure as exc:
        return str(exc.reason)
    return None


def test_the_catalogue_is_big_enough() -> None:
    assert len(GUARD_FORMS) >= 80 and len({u for u, _ in GUARD_FORMS}) == len(GUARD_FORMS)


@pytest.mark.parametrize("url,reason", GUARD_FORMS)
def test_internal_url_forms_are_refused(url: str, reason: str) -> None:
    assert _refusal(url, AddressGuard(pins=PINS, resolve_timeout=2)) == reason


@pytest.mark.parametrize("url", PUBLIC_FORMS)
def test_public_addresses_pass_in_every_disguise(url: str) -> None:
    assert _refusal(url, AddressGuard()) is None


@pytest.mark.parametrize("addr,inner", [
    ("::127.0.0.1", "127.0.0.1"), ("::ffff:0:169.254.169.254", "169.254.169.254"), ("::ffff:10.0.0.1", "10.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"), ("2002:c0a8:101::1", "192.168.1.1"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # Teredo: the client, de-obfuscated
])
def test_embedded_ipv4_addresses_are_found(addr: str, inner: str) -> None:
    assert ipaddress.ip_address(inner) in embedded_ipv4(ipaddress.ip_address(addr))
    assert not is_public_ip(ipaddress.ip_address(addr))


def test_allow_networks_lets_exactly_the_listed_networks_through() -> None:
    guard = AddressGuard(allowed_networks=("127.0.0.1/32", "fd00:ec2::/64"))
    for url in ("http://127.0.0.1/", "http://127.1/", "http://2130706433/", "http://localhost/", "http://[fd00:ec2::254]/"):
        assert _refusal(url, guard) is None, url
    for url in ("http://127.0.0.2/", "http://[::ffff:127.0.0.1]/", "http://[::127.0.0.1]/", "http://[::1]/",
                "http://169.254.169.254/"):
        assert _refusal(url, guard) == "blocked_address", url


# -- redirects, robots.txt, deadline, streaming, memory (in process, real servers) ------------

@pytest.fixture
def servers():
    with MisbehavingServer("127.0.0.2") as observer, MisbehavingServer("127.0.0.1") as bad, \
            MisbehavingServer("127.0.0.1") as robots, MisbehavingServer("127.0.0.1") as slow:
        observer.routes["/private"] = html_route(article_html(0))
        observer.routes["/robots.txt"] = html_route("User-agent: *\nAllow: /\n", content_type="text/plain")
        install_routes(bad, robots, slow, observer.port)
        slow.routes["/fast"] = html_route(article_html(0))
        yield observer, bad, robots, slow


def _config(**kw: object) -> FetchConfig:
    base = dict(connect_timeout=2, read_timeout=5, total_timeout=5, retries=1, per_host_delay=0,
                per_host_concurrency=8, allowed_networks=("127.0.0.1/32",), resolve=(("observer.test", "127.0.0.2"),))
    return FetchConfig(**{**base, **kw})  # type: ignore[arg-type]


def _message(url: str, offset: int = 0) -> InputMessage:
    msg = parse_message(url.encode(), SourceRef(topic="t", partition=0, offset=offset))
    assert isinstance(msg, InputMessage), msg
    return msg


def test_redirects_and_robots_txt_leading_inward_are_refused(servers) -> None:
    observer, bad, robots, _slow = servers
    urls = [bad.url(f"/to-internal/{i}") for i in range(len(redirect_forms(observer.port)))]

    async def run():
        async with Fetcher(_config()) as f:
            return await f.fetch_many([_message(u, i) for i, u in enumerate(urls + [robots.url("/page")])])

    *refused, page = asyncio.run(run())
    assert [r.reason for r in refused] == ["blocked_address"] * len(urls)  # type: ignore[union-attr]
    assert all(r.detail["hop_url"] != u for r, u in zip(refused, urls))  # type: ignore[union-attr]
    assert isinstance(page, FetchedPage)  # robots.txt was refused (allow-all), the page was not
    assert observer.seen() == []


def test_one_deadline_covers_all_attempts_of_a_message(servers) -> None:
    _observer, _bad, _robots, slow = servers

    async def run():
        async with Fetcher(_config(deadline=1.5, total_timeout=60, read_timeout=60, retries=3)) as f:
            return await f.fetch(_message(slow.url("/drip")))

    dead = asyncio.run(run())
    assert isinstance(dead, DeadLetter) and dead.reason == "timeout" and dead.detail["timeout"] == "deadline"


def test_results_are_emitted_as_they_complete(servers) -> None:
    """With a drip and a fast page in flight, the fast page comes out of the very ``process``
    call that filled the batch, while the drip is still running; the drip ends at its deadline."""
    _observer, _bad, _robots, slow = servers
    fn = _FetchDoFn(_config(deadline=3, batch_size=2))
    fn.setup()
    try:
        fn.start_bundle()
        first = list(fn.process(_message(slow.url("/drip"), 0), 0, GlobalWindow()))
        second = list(fn.process(_message(slow.url("/fast"), 1), 0, GlobalWindow()))
        rest = list(fn.finish_bundle())
    finally:
        fn.teardown()
    assert first == []
    assert [type(v.value).__name__ for v in second] == ["FetchedPage"]
    assert [(v.value.value.record.reason, v.value.value.ref.offset) for v in rest] == [("timeout", 0)]  # TaggedOutput


def test_a_page_past_the_memory_cap_is_too_large_and_its_worker_replaced() -> None:
    soup = '<div><p>some text here <a href="/x">link</a> <span>more</div>' * 20_000
    ok = article_html(0)
    with ExtractPool(ExtractConfig(memory_mb=100, timeout_s=120), workers=1) as pool:
        results = pool.extract_many([(ok, "http://a.test/1"), (soup, "http://a.test/2"), (ok, "http://a.test/3")])
        restarts = pool.restarts
    assert isinstance(results[0], Extracted) and isinstance(results[2], Extracted)
    assert isinstance(results[1], ExtractFailure) and results[1].reason == "too_large", results[1]
    assert restarts == 1


# -- one real job on real Kafka, one on a file --------------------------------------------------

def _job_args(observer_port: int) -> list[str]:
    return ["--allow-networks", "127.0.0.1/32", "--resolve", "observer.test=127.0.0.2",
            "--per-host-delay", "0", "--per-host-concurrency", "8", "--fetch-timeout", "5", "--fetch-deadline", "8",
            "--max-message-bytes", str(MAX_MESSAGE_BYTES), "--extract-workers", "1"]


def _check_outcomes(cases, by_offset: dict[int, tuple[str, dict]], log: str) -> dict[str, int]:
    wrong = []
    for offset, case in enumerate(cases):
        kind, doc = by_offset[offset]
        got = None if kind == "record" else doc["reason"]
        if got != case.reason or (case.stage and kind == "dead" and doc["stage"] != case.stage):
            wrong.append(f"{case.name!r}: expected {case.stage}/{case.reason}, got "
                         f"{doc.get('stage')}/{got} ({doc.get('message', '')[:120]})")
    assert not wrong, "\n".join(wrong)
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:4000]
    counts: dict[str, int] = {}
    for kind, doc in by_offset.values():
        key = "record" if kind == "record" else doc["reason"]
        counts[key] = counts.get(key, 0) + 1
    return counts


def _index(recs: list[dict], dead: list[dict]) -> dict[int, tuple[str, dict]]:
    by_offset: dict[int, tuple[str, dict]] = {}
    for kind, docs in (("record", recs), ("dead", dead)):
        for d in docs:
            (validate_article if kind == "record" else validate_dead_letter)(d)
            assert d["offset"] not in by_offset, f"two outputs for offset {d['offset']}"
            by_offset[d["offset"]] = (kind, d)
    return by_offset


@pytest.mark.integration
@pytest.mark.slow
def test_every_hostile_message_through_a_real_job_on_kafka(broker, topics, producer, site, servers) -> None:
    observer, bad, robots, slow = servers
    cases = message_cases(site.url, bad.url, robots.url, slow.url, observer.port)
    assert len(cases) >= 80
    t = topics("in", "out", "dead")
    futures = [producer.send(t["in"], c.value, key=b"k%d" % i) for i, c in enumerate(cases)]
    producer.flush()
    assert [f.get(timeout=30).offset for f in futures] == list(range(len(cases)))
    cmd = [sys.executable, "-m", "copydesk.pipelines.cli", "run", "--bootstrap-servers", broker.bootstrap,
           "--input-topic", t["in"], "--group-id", f"g-{t['in']}",
           "--output-topic", t["out"], "--dead-letter-topic", t["dead"], "--batch-seconds", "4",
           *_job_args(observer.port)]
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        recs: list = []
        dead: list = []
        while time.monotonic() < deadline and len(recs) + len(dead) < len(cases) and proc.poll() is None:
            recs = consume(broker.bootstrap, t["out"], 10**9, timeout=1.0)
            dead = consume(broker.bootstrap, t["dead"], 10**9, timeout=1.0)
        time.sleep(3)  # anything beyond one output per input would show now
        recs = [orjson.loads(r.value) for r in consume(broker.bootstrap, t["out"], 10**9, timeout=2.0)]
        dead = [orjson.loads(r.value) for r in consume(broker.bootstrap, t["dead"], 10**9, timeout=2.0)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    log = out.decode(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    assert len(recs) + len(dead) == len(cases), f"{len(recs)} records + {len(dead)} dead letters for {len(cases)}"
    counts = _check_outcomes(cases, _index(recs, dead), log)
    assert all(d["topic"] == t["in"] and d["partition"] == 0 for d in dead)
    assert observer.seen() == [], observer.seen()
    print(f"\nhostile job: {len(cases)} kinds -> {len(recs)} records + {len(dead)} dead letters; "
          f"by reason {dict(sorted(counts.items()))}")


def test_every_kind_a_file_can_hold_through_a_file_job(site, servers, tmp_path: Path) -> None:
    """Parse-stage kinds (no fetch needed) as lines of a file, plus what only files have:
    blank lines, CRLF endings and a CR inside a line (which does not split it)."""
    observer, bad, robots, slow = servers
    cases = [c for c in message_cases(site.url, bad.url, robots.url, slow.url, observer.port)
             if c.value is not None and b"\n" not in c.value and (c.stage == "parse" or c.reason is None)
             and "robots" not in c.name]
    page = site.url("/continental/world/2025/03/11/floods-force-thousands-from-homes-in-oregon-timber-town.html")
    cases += [Case("empty line", b"", "malformed"), Case("lone CR line", b"\r", "malformed"),
              Case("form feed line", b"\x0c", "malformed"),
              Case("CR inside a line", b"http://a.test/a\rhttp://b.test/", "bad_url"),
              Case("CRLF line", f"{page}?k=file-crlf\r".encode(), None)]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(c.value for c in cases) + b"\n")  # type: ignore[misc]
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    proc = subprocess.run([sys.executable, "-m", "copydesk.pipelines.cli", "run", "--input-file", str(src),
                           "--output-file", str(out), "--dead-letter-file", str(dead), *_job_args(observer.port)],
                          env=cli_env(), capture_output=True, timeout=600)
    log = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    recs = [orjson.loads(x) for x in out.read_bytes().splitlines()] if out.exists() else []
    deads = [orjson.loads(x) for x in dead.read_bytes().splitlines()] if dead.exists() else []
    assert len(recs) + len(deads) == len(cases)
    _check_outcomes(cases, _index(recs, deads), log)
    assert all(d["topic"] == f"file:{src}" for d in deads)


# -- fuzzing ----------------------------------------------------------------------------------

_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_url_text = st.one_of(
    st.text(max_size=200),
    st.builds(lambda s, rest: s + rest, st.sampled_from(["http://", "https://", "HTTP://", "http:", "//", "ftp://",
                                                         "javascript:", "http://[", "http://127.0.0.1:"]),
              st.text(max_size=120)),
)
_messages = st.one_of(
    st.binary(max_size=300),
    _url_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _url_text,
                 lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                     st.sampled_from(["url", "html", "source", "id", "force", "discovered_at", "x"]), kids, max_size=5),
                 max_leaves=12).map(lambda doc: json.dumps(doc).encode()),  # stdlib: big ints, \\ud800 escapes
)


@_FUZZ
@given(_messages)
def test_fuzz_every_message_ends_as_a_value_or_a_classified_dead_letter(value: bytes) -> None:
    out = parse_message(value, SourceRef(topic="t", partition=0, offset=7), max_bytes=MAX_MESSAGE_BYTES)
    if isinstance(out, DeadLetter):
        assert out.stage == "parse" and out.reason in {"malformed", "message_too_large"} | URL_REASONS
        validate_dead_letter(decode(encode(out)))
        return
    assert isinstance(out, InputMessage) and isinstance(out.checked, CheckedURL)
    assert out.url == out.checked.url and out.checked.scheme in ("http", "https")
    out.url.encode("utf-8")  # no surrogates reach the fetcher


@_FUZZ
@given(_url_text)
def test_fuzz_every_url_is_checked_or_refused_with_a_reason(url: str) -> None:
    import httpx

    try:
        checked = parse_url(url)
    except InvalidURL as exc:
        assert exc.reason in URL_REASONS and Reason(exc.reason)
        return
    assert checked.scheme in ("http", "https") and checked.host and 0 <= checked.port <= 65535
    httpx.Client().build_request("GET", checked.url)  # what the fetcher sends: it must not raise


@_FUZZ
@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_fuzz_no_ipv6_address_hides_a_refused_ipv4_address(n: int) -> None:
    ip = ipaddress.IPv6Address(n)
    if is_public_ip(ip):
        assert ip.is_global and all(is_public_ip(inner) for inner in embedded_ipv4(ip))
