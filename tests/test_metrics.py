"""The Prometheus endpoint of ``copydesk run --metrics-port`` on real parts: a real Tansu
broker, the sample site on 127.0.0.1, ``copydesk run`` in its own process, its real HTTP
server scraped over TCP; and ``copydesk top --once`` against that endpoint."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import cli_env
from copydesk.pipelines.metrics import METRICS, SPECS, render_top, scrape
from copydesk.pipelines.site import site_root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(broker, t, group: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "copydesk.pipelines.cli", "run",
           "--bootstrap-servers", broker.bootstrap, "--input-topic", t["in"], "--group-id", group,
           "--output-topic", t["out"], "--dead-letter-topic", t["dead"],
           "--allow-networks", "127.0.0.1/32", "--per-host-delay", "0", "--extract-workers", "1",
           "--batch-seconds", "3", "--metrics-port", str(port)]
    return subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


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


@pytest.mark.integration
@pytest.mark.slow
def test_endpoint_moves_with_records_and_top_prints_rates(broker, topics, producer, site):
    t = topics("in", "out", "dead", partitions=2)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    paths = [p for p in (site_root() / "urls.txt").read_text().split() if p]
    first = [site.url(f"{paths[i % len(paths)]}?m=a{i}").encode() for i in range(6)] + [b"not a url"]
    for v in first:
        producer.send(t["in"], v)
    producer.flush()
    proc = _start(broker, t, f"g-{t['in']}", port)
    try:
        s1 = _wait(url, lambda s: _val(s, "copydesk_read_records_total") >= len(first)
                   and _val(s, "copydesk_dead_letters_total") >= 1
                   and _val(s, "copydesk_stage_records_total", stage="write", direction="out") >= 1, 90, proc)
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

        # More records: the counters move.
        second = [site.url(f"{paths[i % len(paths)]}?m=b{i}").encode() for i in range(5)]
        for v in second:
            producer.send(t["in"], v)
        producer.flush()
        s2 = _wait(url, lambda s: _val(s, "copydesk_read_records_total") >= len(first) + len(second)
                   and _val(s, "copydesk_fetch_pages_total") > _val(s1, "copydesk_fetch_pages_total"), 90, proc)
        for name in ("copydesk_runs_total", "copydesk_read_records_total", "copydesk_read_bytes_total",
                     "copydesk_fetch_pages_total", "copydesk_fetch_bytes_total", "copydesk_fetch_latency_seconds_count"):
            assert _val(s2, name) > _val(s1, name), name
        # Everything read is eventually committed: lag goes to 0 for both partitions.
        s3 = _wait(url, lambda s: _val(s, "copydesk_consumer_committed_offset") >= len(first) + len(second)
                   and _val(s, "copydesk_consumer_lag") == 0, 60, proc)
        # Tansu's end offset points at the start of the last record batch, so it can be below
        # the committed offset (lag is clamped at 0 and under-reported by up to one batch there).
        assert _val(s3, "copydesk_consumer_end_offset") >= 2

        # copydesk top --once against the live endpoint
        top = subprocess.run([sys.executable, "-m", "copydesk.pipelines.cli", "top", "--url", url,
                              "--interval", "0.5", "--once"], env=cli_env(), capture_output=True, timeout=30)
        text = top.stdout.decode()
        assert top.returncode == 0, top.stderr.decode()
        for stage in ("read", "parse", "fetch", "write"):
            assert any(line.startswith(stage) for line in text.splitlines()), text
        assert "LAG" in text and f"{t['in']} 0:" in text and "ERRORS" in text, text
    finally:
        log = _stop(proc)
    assert proc.returncode == 0, log[-3000:]


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
