"""The long-running job end to end on real parts: ``copydesk run`` in its own process,
a real Apache Kafka broker, a real HTTP server on 127.0.0.1.

N URLs produced -> the running pipeline -> N records or dead letters on the output topics,
arriving while the job runs; a SIGTERM drains and exits; a restart with the same group
resumes where it stopped without losing an offset; malformed messages become dead letters
and the job keeps going.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import orjson
import pytest

from conftest import cli_env, consume
from copydesk.pipelines.demo.site import site_root
from copydesk.schemas.codec import validate_article, validate_dead_letter

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _site_urls(site, n: int, tag: str) -> list[bytes]:
    paths = [p for p in (site_root() / "urls.txt").read_text().split() if p]
    # Distinct query strings make distinct canonical URLs (distinct record ids) for the same page.
    return [site.url(f"{paths[i % len(paths)]}?copy={tag}{i}").encode() for i in range(n)]


BAD = {
    b"this is not json and not a url": "bad_url",
    b'{"url": "http://127.0.0.1/x"': "malformed",
    b'{"source": "no url here"}': "no_url",
    b"ftp://files.example.org/a.txt": "unsupported_scheme",
    b"http://example.com/" + b"x" * (10 * 1024 * 1024): "message_too_large",
}


def _start(broker, t, group: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "copydesk.pipelines.cli", "run",
           "--bootstrap-servers", broker.bootstrap, "--input-topic", t["in"], "--group-id", group,
           "--output-topic", t["out"], "--dead-letter-topic", t["dead"],
           "--allow-networks", "127.0.0.1/32", "--per-host-delay", "0", "--per-host-concurrency", "8",
           "--batch-seconds", "4", "--extract-workers", "1"]
    return subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _send(producer, topic: str, values: list[bytes]) -> list[tuple[int, int]]:
    futs = [producer.send(topic, v) for v in values]
    producer.flush()
    return [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futs)]


def _stop(proc: subprocess.Popen, timeout: float = 90.0) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"copydesk run did not exit within {timeout}s of SIGTERM:\n{out.decode()[-3000:]}")
    return proc.returncode, out.decode()


def _outputs(broker, t, want: int, timeout: float) -> tuple[list[dict], list[dict]]:
    deadline = time.monotonic() + timeout
    recs: list = []
    dead: list = []
    while time.monotonic() < deadline:
        recs = consume(broker.bootstrap, t["out"], 10**9, timeout=1.0)
        dead = consume(broker.bootstrap, t["dead"], 10**9, timeout=1.0)
        if len(recs) + len(dead) >= want:
            break
    return [orjson.loads(r.value) for r in recs], [orjson.loads(r.value) for r in dead]


def test_run_restart_and_dead_letters(broker, topics, producer, site):
    t = topics("in", "out", "dead", partitions=2)
    group = f"g-{t['in']}"

    first = _site_urls(site, 24, "a") + list(BAD)
    sent = _send(producer, t["in"], first)
    proc = _start(broker, t, group)
    started = time.monotonic()
    try:
        recs, dead = _outputs(broker, t, len(first), timeout=180)
        elapsed_first = time.monotonic() - started
        assert proc.poll() is None, "records must arrive while the job runs, not only at shutdown"
        assert len(recs) + len(dead) >= len(first), f"only {len(recs)}+{len(dead)} of {len(first)} after 180s"

        # More input while it runs.
        second = _site_urls(site, 16, "b")
        sent += _send(producer, t["in"], second)
        recs, dead = _outputs(broker, t, len(first) + len(second), timeout=120)
        assert len(recs) + len(dead) >= len(first) + len(second)
    finally:
        code, log = _stop(proc)
    assert code == 0, log[-3000:]

    # Input that arrives while the job is down is picked up after a restart of the same group.
    third = _site_urls(site, 12, "c")
    sent += _send(producer, t["in"], third)
    proc = _start(broker, t, group)
    try:
        total = len(first) + len(second) + len(third)
        recs, dead = _outputs(broker, t, total, timeout=180)
    finally:
        code, log2 = _stop(proc)
    assert code == 0, log2[-3000:]

    # Every input offset ended as a record or a dead letter; nothing is missing.
    seen = [(r["partition"], r["offset"]) for r in recs] + [(d["partition"], d["offset"]) for d in dead]
    missing = set(sent) - set(seen)
    assert not missing, f"offsets with no output: {sorted(missing)[:20]}"
    assert set(seen) <= set(sent)
    duplicates = len(seen) - len(set(seen))

    for r in recs:
        validate_article(r)
        assert r["topic"] == t["in"] and r["text"]
    for d in dead:
        validate_dead_letter(d)
        assert d["topic"] == t["in"] and d["offset"] is not None
    reasons = sorted(d["reason"] for d in dead)
    assert reasons == sorted(BAD.values()), reasons
    # The sample pages declare rel=canonical, so every ?copy= variant of a page has the page's
    # canonical URL and therefore the same stable record id.
    pages = [p for p in (site_root() / "urls.txt").read_text().split() if p]
    assert len({r["id"] for r in recs}) == len(pages)
    assert all("copy=" not in r["canonical_url"] and "copy=" in r["url"] for r in recs)
    print(f"\nend-to-end: {len(first)} messages -> outputs in {elapsed_first:.1f}s "
          f"({len(first) / elapsed_first:.1f} msg/s incl. start-up); total {len(sent)} offsets, "
          f"{len(recs)} records, {len(dead)} dead letters, {duplicates} re-deliveries, 0 missing")
