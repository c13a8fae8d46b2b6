"""Crash safety of the long-running job (issue #7): SIGKILL at random moments, restart with
the same consumer group, and account for every input offset; SIGTERM exits cleanly, in a
bounded time, with committed offsets covering what was written.

Everything is real: ``copydesk run`` in its own process group (killed as a whole, extraction
workers included, like a container being killed), an Apache Kafka broker, an HTTP server.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest

from conftest import cli_env, consume
from copydesk.pipelines.demo.site import site_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAD = [b"this is not json and not a url", b'{"url": "http://127.0.0.1/x"', b'{"source": "no url here"}',
       b"ftp://files.example.org/a.txt"]


def _site_urls(site, n: int, tag: str) -> list[bytes]:
    paths = [p for p in (site_root() / "urls.txt").read_text().split() if p]
    return [site.url(f"{paths[i % len(paths)]}?copy={tag}{i}").encode() for i in range(n)]


def _start(broker, t, group: str, batch_seconds: str = "3") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "copydesk.pipelines.cli", "run",
           "--bootstrap-servers", broker.bootstrap, "--input-topic", t["in"], "--group-id", group,
           "--output-topic", t["out"], "--dead-letter-topic", t["dead"],
           "--allow-networks", "127.0.0.1/32", "--per-host-delay", "0", "--per-host-concurrency", "8",
           "--batch-seconds", batch_seconds, "--extract-workers", "1"]
    # Own process group: a SIGKILL of the group also kills the extraction worker, as a
    # container kill would.
    return subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill(proc: subprocess.Popen) -> str:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    out, _ = proc.communicate(timeout=30)
    return (getattr(proc, "head", b"") + out).decode(errors="replace")


def _wait_reading(proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Until the job has logged its first read ("... from offset N"): its SIGTERM handler is
    installed by then. A SIGTERM before that (the interpreter still importing) ends the
    process by the signal (exit -15), which is not what the tests are about. What the job
    printed meanwhile is kept (``proc.head``) for ``_kill``/``_sigterm``."""
    fd = proc.stdout.fileno()
    head = getattr(proc, "head", b"")
    deadline = time.monotonic() + timeout
    while b" from offset " not in head and proc.poll() is None and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            head += chunk
    proc.head = head
    assert b" from offset " in head, f"the job did not start reading within {timeout}s:\n{head[-3000:]!r}"


def _send(producer, topic: str, values: list[bytes]) -> list[tuple[int, int]]:
    futs = [producer.send(topic, v) for v in values]
    producer.flush()
    return [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futs)]


def _seen(broker, t) -> tuple[list[tuple[int, int]], int, int]:
    recs = consume(broker.bootstrap, t["out"], 10**9, timeout=1.0)
    dead = consume(broker.bootstrap, t["dead"], 10**9, timeout=1.0)
    seen = []
    for r in recs + dead:
        doc = orjson.loads(r.value)
        seen.append((doc["partition"], doc["offset"]))
    return seen, len(recs), len(dead)


def _wait_covered(broker, t, sent: set, timeout: float) -> tuple[list, int, int]:
    deadline = time.monotonic() + timeout
    while True:
        seen, n_recs, n_dead = _seen(broker, t)
        if sent <= set(seen) or time.monotonic() > deadline:
            return seen, n_recs, n_dead
        time.sleep(1.0)


def _committed(broker, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        c.close(autocommit=False)


def _sigterm(proc: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        log = _kill(proc)
        pytest.fail(f"copydesk run did not exit within {timeout}s of SIGTERM:\n{log[-3000:]}")
    return proc.returncode, (getattr(proc, "head", b"") + out).decode(errors="replace"), time.monotonic() - started


def test_sigkill_at_random_points_loses_nothing(broker, topics, producer, site):
    seed = int(os.environ.get("COPYDESK_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    t = topics("in", "out", "dead", partitions=2)
    group = f"g-{t['in']}"
    values = _site_urls(site, 56, "k") + BAD
    rng.shuffle(values)
    # 20 messages up front, the other 40 trickle in while the job runs and is killed, so the
    # kills land mid-stream (reading, fetching, writing, committing).
    sent = _send(producer, t["in"], values[:20])
    stop_feed = threading.Event()

    def feed():
        for v in values[20:]:
            if stop_feed.wait(0.7):
                return
            sent.extend(_send(producer, t["in"], [v]))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    # Kill 1 at a random moment of the first run (start-up, reading, fetching ...); kills 2-4
    # once the restarted job has written something new (mid-stream: between writes and
    # commits, inside a micro-batch), after a further random delay.
    kills = []
    logs = []
    proc = _start(broker, t, group)
    try:
        for i in range(4):
            started = time.monotonic()
            if i == 0:
                time.sleep(rng.uniform(2.0, 8.0))
            else:
                before = len(_seen(broker, t)[0])
                while time.monotonic() - started < 30 and len(_seen(broker, t)[0]) == before:
                    time.sleep(0.3)
                time.sleep(rng.uniform(0.0, 3.0))
            logs.append(_kill(proc))
            seen, _, _ = _seen(broker, t)
            kills.append((round(time.monotonic() - started, 1), len(set(seen) & set(sent)), len(sent)))
            proc = _start(broker, t, group)
        feeder.join(timeout=60)
        assert len(set(sent)) == len(values)
        seen, n_recs, n_dead = _wait_covered(broker, t, set(sent), timeout=75)
        # The killed runs may have written (and committed) everything already: wait until the
        # last one is up and has committed to the end too, so SIGTERM reaches a running job.
        _wait_reading(proc)
        ends = {p: max(o for q, o in sent if q == p) + 1 for p in range(2)}
        deadline = time.monotonic() + 75
        while _committed(broker, group, t["in"], 2) != ends and time.monotonic() < deadline:
            time.sleep(1.0)
    finally:
        stop_feed.set()
        code, log, _ = _sigterm(proc, timeout=60)
    logs.append(log)
    assert code == 0, log[-3000:]

    missing = set(sent) - set(seen)
    assert not missing, (f"seed {seed}: offsets with no record and no dead letter: {sorted(missing)}\n"
                         f"last log:\n{log[-3000:]}")
    assert set(seen) <= set(sent)
    duplicates = len(seen) - len(set(seen))
    # Every offset is accounted for, so the committed offsets must reach the end (no gap left).
    committed = _committed(broker, group, t["in"], 2)
    assert committed == ends, (committed, ends)
    print(f"\ncrash test (seed {seed}): kills at {[k[0] for k in kills]}s (offsets covered/produced at each "
          f"kill: {[f'{k[1]}/{k[2]}' for k in kills]}); inputs {len(sent)}, outputs {len(seen)} "
          f"({n_recs} records + {n_dead} dead letters), duplicates {duplicates}, missing 0")


def test_sigterm_exits_in_bounded_time_and_commits_what_was_written(broker, topics, producer, site):
    t = topics("in", "out", "dead", partitions=2)
    group = f"g-{t['in']}"
    sent = _send(producer, t["in"], _site_urls(site, 40, "s"))
    proc = _start(broker, t, group, batch_seconds="4")
    try:
        # Wait until records are flowing, then SIGTERM in the middle of the stream.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen, _, _ = _seen(broker, t)
            if seen:
                break
            time.sleep(0.5)
        assert seen, "no output within 60s"
        more = _send(producer, t["in"], _site_urls(site, 20, "m"))
        code, log, took = _sigterm(proc, timeout=60)
    except BaseException:
        _kill(proc)
        raise
    assert code == 0, log[-3000:]
    assert took < 60

    # Committed offsets never pass an offset without output: every offset below the
    # committed one has a record or a dead letter (a restart leaves no gap).
    seen_at_exit = set(_seen(broker, t)[0])
    committed = _committed(broker, group, t["in"], 2)
    all_sent = sent + more
    for p in range(2):
        below = {(q, o) for q, o in all_sent if q == p and o < (committed[p] or 0)}
        assert below <= seen_at_exit, f"partition {p}: committed {committed[p]} passes unwritten offsets " \
                                      f"{sorted(below - seen_at_exit)[:10]}"
    # A restart with the same group finishes the rest.
    proc = _start(broker, t, group)
    try:
        seen, _, _ = _wait_covered(broker, t, set(all_sent), timeout=75)
        _wait_reading(proc)  # the first run may have written everything: SIGTERM a running job
    finally:
        code2, log2, _ = _sigterm(proc, timeout=60)
    assert code2 == 0, log2[-3000:]
    assert set(all_sent) <= set(seen)
    print(f"\nsigterm test: exited with 0 in {took:.1f}s after SIGTERM; committed at exit {committed}; "
          f"{len(seen_at_exit)} offsets written before exit, {len(all_sent)} after restart, "
          f"duplicates {len(seen) - len(set(seen))}")
