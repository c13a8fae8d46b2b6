"""The Prometheus endpoint of ``copydesk run --metrics-port`` on real parts: a real Apache
Kafka broker, the sample site on 127.0.0.1, ``copydesk run`` in its own process, its real HTTP
server scraped over TCP; and ``copydesk top --once`` against that endpoint."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import cli_env
from copydesk.pipelines.metrics import METRICS, SPECS, DomainHealth
from copydesk.pipelines.top import render_top, scrape
from copydesk.pipelines.demo.site import site_root
from copydesk.transforms.extract.core import TEST_HOOKS_ENV
from fetch_server import MisbehavingServer, html_route, send


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(broker, t, group: str, port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "copydesk.pipelines.cli", "run",
           "--bootstrap-servers", broker.bootstrap, "--input-topic", t["in"], "--group-id", group,
           "--output-topic", t["out"], "--dead-letter-topic", t["dead"],
           "--allow-networks", "127.0.0.1/32", "--per-host-delay", "0", "--extract-workers", "1",
           "--batch-seconds", "3", "--metrics-port", str(port), *extra]
    return subprocess.Popen(cmd, env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace")


def _val(samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


def _wait(url: str, pred, timeout: float, proc) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, "copydesk run exited early"
        try:
            last = scrape(url, timeout=2)
        except OSError:
            time.sleep(0.3)
            continue
        if pred(last):
            return last
        time.sleep(0.5)
    pytest.fail(f"condition not met within {timeout}s; last scrape: "
                f"{ {k: v for k, v in last.items() if 'copydesk_' in k[0]} }")


EMPTY_PAGE = "<html><head><title>Subscribe</title></head><body><div id='app'></div></body></html>"


def _slow_route(seconds: float):
    def route(h) -> None:
        time.sleep(seconds)
        send(h, 200, b"<html><body><article><p>" + b"A slow but complete story about the harbour. " * 20
             + b"</p></article></body></html>")
    return route


@pytest.mark.integration
@pytest.mark.slow
def test_endpoint_moves_with_records_and_top_prints_rates(broker, topics, producer, site):
    t = topics("in", "out", "dead", partitions=2)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    paths = [p for p in (site_root() / "urls.txt").read_text().split() if p]
    busy = MisbehavingServer("127.0.0.1").start()  # 503 + Retry-After: retries, backoff, then its circuit opens
    busy.routes.update({f"/busy{i}": html_route("busy", status=503, headers={"Retry-After": "1"}) for i in range(4)})
    slow = MisbehavingServer("127.0.0.1").start()  # one request held open: the live in-flight gauge shows it
    slow.routes["/slow"] = _slow_route(8.0)
    first = [site.url(f"{paths[i % len(paths)]}?m=a{i}").encode() for i in range(6)] + [b"not a url"]
    # A site whose layout "changed": pages that extract to nothing (pre-scraped, domain broken.example).
    first += [json.dumps({"url": f"https://broken.example/story-{i}", "html": EMPTY_PAGE}).encode() for i in range(3)]
    # An extractor failure inside the worker (test hook): a record-level warning in the log.
    raise_url = "https://hooks.example/raise"
    first.append(json.dumps({"url": raise_url, "html": "<!--copydesk-test:raise--><html><body>x</body></html>"}).encode())
    first += [busy.url(f"/busy{i}").encode() for i in range(4)] + [slow.url("/slow").encode()]
    for v in first:
        producer.send(t["in"], v)
    producer.flush()
    env = cli_env()
    env[TEST_HOOKS_ENV] = "1"
    proc = _start(broker, t, f"g-{t['in']}", port, "--log-format", "json", env=env)
    try:
        # While the slow page is being fetched the live gauge shows it (the per-run peak cannot).
        live = _wait(url, lambda s: _val(s, "copydesk_fetch_in_flight") >= 1, 90, proc)
        assert _val(live, "copydesk_fetch_in_flight") >= 1
        s1 = _wait(url, lambda s: _val(s, "copydesk_read_records_total") >= len(first)
                   and _val(s, "copydesk_dead_letters_total") >= 1
                   and _val(s, "copydesk_extract_pages_total") >= 1
                   and _val(s, "copydesk_stage_records_total", stage="write", direction="out") >= 1, 120, proc)
        # Every documented name without labels is served from the start; labelled ones once seen.
        names = {n for n, _ in s1}
        for spec in METRICS:
            if spec.labels and spec.name in ("copydesk_consumer_committed_offset",):
                continue
            if spec.type == "summary":
                assert spec.name + "_count" in names, spec.name
            elif not spec.labels:
                assert spec.name in names, spec.name
        assert _val(s1, "copydesk_runs_total") >= 1
        assert _val(s1, "copydesk_last_run_timestamp_seconds") > time.time() - 120
        assert _val(s1, "copydesk_fetch_pages_total") >= 1
        assert _val(s1, "copydesk_fetch_responses_total", status_class="2xx") >= 1
        assert _val(s1, "copydesk_fetch_bytes_total") > 0
        assert _val(s1, "copydesk_fetch_latency_seconds_count") >= 1
        assert _val(s1, "copydesk_parse_messages_rejected_total") >= 1
        assert _val(s1, "copydesk_write_records_total", kind="dead_letters") >= 1
        assert {dict(ls)["partition"] for n, ls in s1 if n == "copydesk_consumer_lag"} == {"0", "1"}
        # fetch backoff: the busy host answered 503 + Retry-After until its circuit opened
        assert _val(s1, "copydesk_fetch_backoff_waits_total") >= 1
        assert _val(s1, "copydesk_fetch_backoff_seconds_total") > 0
        assert _val(s1, "copydesk_fetch_retry_after_waits_total") >= 1
        assert _val(s1, "copydesk_fetch_retry_after_seconds_total") > 0
        assert _val(s1, "copydesk_fetch_circuit_opened_total") >= 1
        assert _val(s1, "copydesk_fetch_dead_letters_total", reason="circuit_open") >= 1
        # extract: pages in = articles + extract dead letters; the two failure kinds by reason
        pages = _val(s1, "copydesk_extract_pages_total")
        assert pages == _val(s1, "copydesk_extract_articles_total") + _val(s1, "copydesk_extract_dead_letters_total")
        assert _val(s1, "copydesk_extract_dead_letters_total", reason="empty") >= 3
        assert _val(s1, "copydesk_extract_dead_letters_total", reason="extract_error") == 1
        assert _val(s1, "copydesk_stage_records_total", stage="extract", direction="in") == pages
        assert _val(s1, "copydesk_extract_duration_seconds_count") == pages
        assert _val(s1, "copydesk_extract_duration_seconds_sum") > 0
        assert _val(s1, "copydesk_extract_duration_max_seconds") > 0
        # per-domain extraction health: the broken site stands out, the sample site does not
        assert _val(s1, "copydesk_domain_extraction_bad_ratio", domain="broken.example") == 1.0
        assert _val(s1, "copydesk_domain_extractions", domain="broken.example") == 3
        assert _val(s1, "copydesk_domain_extraction_bad_ratio", domain="hooks.example") == 1.0
        assert _val(s1, "copydesk_domain_extraction_bad_ratio", domain="127.0.0.1") < 0.5
        assert _val(s1, "copydesk_domains_tracked") >= 3
        # dedup: every article went through it
        assert _val(s1, "copydesk_dedup_records_total") == _val(s1, "copydesk_extract_articles_total")
        assert _val(s1, "copydesk_dedup_new_clusters_total") >= 1
        assert _val(s1, "copydesk_dedup_canonical_records_total") >= 1

        # More records: the counters move. The same pages again are duplicates.
        second = [site.url(f"{paths[i % len(paths)]}?m=b{i}").encode() for i in range(5)]
        for v in second:
            producer.send(t["in"], v)
        producer.flush()
        s2 = _wait(url, lambda s: _val(s, "copydesk_read_records_total") >= len(first) + len(second)
                   and _val(s, "copydesk_dedup_records_total") > _val(s1, "copydesk_dedup_records_total")
                   and _val(s, "copydesk_fetch_pages_total") > _val(s1, "copydesk_fetch_pages_total"), 90, proc)
        for name in ("copydesk_runs_total", "copydesk_read_records_total", "copydesk_read_bytes_total",
                     "copydesk_fetch_pages_total", "copydesk_fetch_bytes_total", "copydesk_fetch_latency_seconds_count",
                     "copydesk_extract_pages_total", "copydesk_extract_articles_total",
                     "copydesk_extract_duration_seconds_count", "copydesk_dedup_records_total",
                     "copydesk_dedup_duplicates_total"):
            assert _val(s2, name) > _val(s1, name), name
        assert _val(s2, "copydesk_stage_records_total", stage="dedup", direction="in") > \
            _val(s1, "copydesk_stage_records_total", stage="dedup", direction="in")
        assert _val(s2, "copydesk_domain_extractions", domain="127.0.0.1") > \
            _val(s1, "copydesk_domain_extractions", domain="127.0.0.1")
        # Everything read is eventually committed: lag goes to 0 for both partitions.
        s3 = _wait(url, lambda s: _val(s, "copydesk_consumer_committed_offset") >= len(first) + len(second)
                   and _val(s, "copydesk_consumer_lag") == 0, 60, proc)
        # The end offsets are the high watermarks: every message sent, all committed.
        assert _val(s3, "copydesk_consumer_end_offset") == len(first) + len(second)
        assert _val(s3, "copydesk_consumer_committed_offset") == len(first) + len(second)
        assert _val(s3, "copydesk_fetch_in_flight") == 0  # nothing in flight once idle

        # copydesk top --once against the live endpoint
        top = subprocess.run([sys.executable, "-m", "copydesk.pipelines.cli", "top", "--url", url,
                              "--interval", "0.5", "--once"], env=cli_env(), capture_output=True, timeout=30)
        text = top.stdout.decode()
        print(text)  # pytest -s shows the screen (docs/metrics.md has one from such a run)
        assert top.returncode == 0, top.stderr.decode()
        for stage in ("read", "parse", "fetch", "extract", "dedup", "write"):
            assert any(line.split()[:1] == [stage] and len(line.split()) == 4 for line in text.splitlines()), text
        assert "LAG" in text and f"{t['in']} 0:" in text and "ERRORS" in text, text
        assert "EXTRACTION HEALTH" in text and "broken.example" in text and "100% bad of 3" in text, text
        assert "extract empty" in text and "fetch circuit_open" in text, text
        assert "circuits opened" in text and "duplicates" in text, text
    finally:
        log = _stop(proc)
        busy.stop()
        slow.stop()
    assert proc.returncode == 0, log[-3000:]
    # --log-format json: every line is JSON; a warning about a record names its source offset
    docs = []
    for line in log.splitlines():
        if line.strip():
            try:
                docs.append(json.loads(line))
            except ValueError:
                pytest.fail(f"not a JSON log line: {line!r}")
    warn = [d for d in docs if d["level"] == "WARNING" and d.get("url") == raise_url]
    assert warn, docs[-20:]
    assert warn[0]["topic"] == t["in"] and warn[0]["partition"] in (0, 1) and isinstance(warn[0]["offset"], int)
    assert warn[0]["reason"] == "extract_error" and warn[0]["stage"] == "extract"
    assert any(d.get("host") == f"127.0.0.1:{busy.port}" and "circuit open" in d["message"] for d in docs), docs[-20:]


def test_domain_health_window_and_top_k():
    h = DomainHealth(window=10, top_k=2, idle_seconds=100)
    h.feed({"ok.example": {"ok": 30}, "broken.example": {"empty": 4, "short": 2, "ok": 4},
            "meh.example": {"error": 1, "ok": 9}}, now=0)
    assert h.top() == [("broken.example", 6, 10), ("meh.example", 1, 10)]  # top 2 by bad count
    assert h.tracked() == 3
    # the site recovers: good pages push the bad ones out of its window
    h.feed({"broken.example": {"ok": 8}}, now=10)
    assert dict((d, (b, n)) for d, b, n in h.top())["broken.example"][0] <= 2
    # a large run keeps its proportion in the window
    h.feed({"big.example": {"empty": 500, "ok": 500}}, now=20)
    assert ("big.example", 5, 10) in h.top()
    # idle domains are forgotten
    h.feed({"big.example": {"ok": 1}}, now=150)
    assert h.tracked() == 1


def test_domain_outcomes_are_bounded_and_taken_once():
    from copydesk.pipelines.metrics import domain_outcomes
    from copydesk.transforms.extract.metrics import DomainOutcomes

    tally = DomainOutcomes(max_domains=2)
    for domain, outcome in [("A.example", "ok"), ("a.example", "empty"), ("b.example", "ok"), ("c.example", "error"),
                            ("", "ok")]:
        tally.add(domain, outcome)
    assert tally.take() == {"a.example": {"ok": 1, "empty": 1}, "b.example": {"ok": 1},
                            "_other": {"error": 1, "ok": 1}}
    assert tally.take() == {}  # a take forgets: each outcome reaches the exporter once
    tally.add("c.example", "ok")  # the cap is per take: a new domain is named again
    # the exporter's input: the tally plus any per-domain Beam counters a runner reports
    merged = domain_outcomes({("copydesk.extract_domain", "short:c.example"): 2, ("copydesk.extract", "dead"): 5},
                             tally.take())
    assert merged == {"c.example": {"ok": 1, "short": 2}}


def test_render_top_rates():
    prev = {("copydesk_stage_records_total", (("direction", "out"), ("stage", "read"))): 10.0}
    cur = {("copydesk_stage_records_total", (("direction", "out"), ("stage", "read"))): 30.0,
           ("copydesk_consumer_lag", (("partition", "0"), ("topic", "urls"))): 7.0,
           ("copydesk_consumer_lag", (("partition", "1"), ("topic", "urls"))): 2.0,
           ("copydesk_fetch_dead_letters_total", (("reason", "timeout"),)): 3.0}
    screen = render_top(prev, cur, 2.0, "http://x/metrics")
    read_line = next(line for line in screen.splitlines() if line.startswith("read"))
    assert "10.0" in read_line.split()  # (30 - 10) / 2 s
    assert "urls 0: 7" in screen and "fetch timeout" in screen


def test_specs_follow_prometheus_conventions():
    import re

    for spec in METRICS:
        assert re.fullmatch(r"copydesk_[a-z0-9_]+", spec.name), spec.name
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
        assert spec.type in ("counter", "gauge", "summary")
        assert not spec.name.endswith("_ms"), spec.name  # base units: seconds, bytes
    assert len(SPECS) == len(METRICS)
