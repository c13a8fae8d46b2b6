"""``copydesk replay`` against real Apache Kafka and the local sample site: from the
beginning, by offsets, by time (the broker's timestamp index, and the scan fallback),
--dry-run; the live group's committed offsets never move."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone

import orjson
import pytest

from conftest import cli_env, consume
from copydesk.pipelines.replay import ReplayError, parse_offsets, parse_time, resolve_range
from copydesk.pipelines.demo.site import site_root
from copydesk.transforms.kafka.io import KafkaConfig

BAD = [b"this is not json and not a url", b"ftp://files.example.org/a.txt"]


def _site_urls(site, n: int, tag: str) -> list[bytes]:
    paths = [p for p in (site_root() / "urls.txt").read_text().split() if p]
    return [site.url(f"{paths[i % len(paths)]}?copy={tag}{i}").encode() for i in range(n)]


def _send(producer, topic: str, values: list[bytes], partition: int | None = None) -> list[tuple[int, int]]:
    futs = [producer.send(topic, v, partition=partition) for v in values]
    producer.flush()
    return [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futs)]


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        c.close(autocommit=False)


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        c.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    finally:
        c.close(autocommit=False)


def _replay(broker, t, *extra: str, timeout: float = 85) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "copydesk.pipelines.cli", "replay",
           "--bootstrap-servers", broker.bootstrap, "--input-topic", t["in"],
           "--allow-networks", "127.0.0.1/32", "--per-host-delay", "0", "--per-host-concurrency", "8",
           "--extract-workers", "0", *extra]
    proc = subprocess.run(cmd, env=cli_env(), capture_output=True, timeout=timeout)
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


def _outputs(broker, topic: str) -> list[dict]:
    return [orjson.loads(r.value) for r in consume(broker.bootstrap, topic, 10**9, timeout=2.0)]


# --------------------------------------------------------------------------- unit


def test_parse_offsets_and_time():
    assert parse_offsets("a:0=2-5, b.c:1=7-") == {"a:0": (2, 5), "b.c:1": (7, None)}
    for bad in ("a=1-2", "a:0=x-2", "a:0=5-2", ""):
        with pytest.raises(ReplayError):
            parse_offsets(bad)
    assert parse_time("2026-05-01T00:00:00Z") == parse_time("2026-05-01") == 1777593600000
    assert parse_time("2026-05-01T02:00:00+02:00") == 1777593600000
    with pytest.raises(ReplayError):
        parse_time("yesterday")


# --------------------------------------------------------------------------- against Kafka


@pytest.mark.integration
@pytest.mark.slow
def test_replay_from_beginning_leaves_live_group_untouched(broker, topics, producer, site):
    t = topics("in", "out", "dead", partitions=2)
    values = _site_urls(site, 12, "r") + BAD
    # both partitions get messages (a keyless producer may put a fast burst all on one)
    sent = _send(producer, t["in"], values[::2], partition=0) + _send(producer, t["in"], values[1::2], partition=1)
    live = f"live-{t['in']}"
    _commit(broker.bootstrap, live, t["in"], {0: 1, 1: 2})  # the live job's position
    before = _committed(broker.bootstrap, live, t["in"], 2)

    code, out = _replay(broker, t, "--from-beginning", "--group-id", live, "--replay-group", f"{live}-bf",
                        "--output-topic", t["out"], "--dead-letter-topic", t["dead"], "--chunk-records", "4")
    assert code == 0, out[-3000:]
    recs, dead = _outputs(broker, t["out"]), _outputs(broker, t["dead"])
    seen = [(r["partition"], r["offset"]) for r in recs + dead]
    assert set(seen) == set(sent), (sorted(set(sent) - set(seen)), out[-3000:])
    assert len(dead) == len(BAD)
    assert "replay done" in out and f"wrote {len(recs)} records and {len(dead)} dead letters" in out
    assert "position" in out and "msg/s" in out  # progress per partition
    # The live group did not move; the replay's own group reached the end of the range.
    assert _committed(broker.bootstrap, live, t["in"], 2) == before
    ends = {p: max(o for q, o in sent if q == p) + 1 for p in range(2)}
    assert _committed(broker.bootstrap, f"{live}-bf", t["in"], 2) == ends
    print(f"\nreplay --from-beginning: {len(sent)} offsets -> {len(recs)} records + {len(dead)} dead letters")


@pytest.mark.integration
@pytest.mark.slow
def test_replay_by_offsets_to_file_and_dry_run(broker, topics, producer, site, tmp_path):
    t = topics("in", "out", "dead", partitions=2)
    _send(producer, t["in"], _site_urls(site, 8, "p0"), partition=0)
    _send(producer, t["in"], _site_urls(site, 4, "p1"), partition=1)
    live = f"live-{t['in']}"

    # --dry-run: the whole path runs, nothing is written, nothing is committed.
    code, out = _replay(broker, t, "--offsets", f"{t['in']}:0=2-5", "--group-id", live,
                        "--replay-group", f"{live}-dry", "--dry-run")
    assert code == 0, out[-3000:]
    assert "DRY RUN" in out and "would emit 3 records and 0 dead letters" in out, out[-2000:]
    assert _committed(broker.bootstrap, f"{live}-dry", t["in"], 2) == {0: None, 1: None}
    assert _committed(broker.bootstrap, live, t["in"], 2) == {0: None, 1: None}

    recs_file, dead_file = tmp_path / "recs.jsonl", tmp_path / "dead.jsonl"
    code, out = _replay(broker, t, "--offsets", f"{t['in']}:0=2-5", "--group-id", live,
                        "--output-file", str(recs_file), "--dead-letter-file", str(dead_file),
                        "--chunk-records", "2")
    assert code == 0, out[-3000:]
    recs = [orjson.loads(x) for x in recs_file.read_text().splitlines()]
    assert sorted((r["partition"], r["offset"]) for r in recs) == [(0, 2), (0, 3), (0, 4)]
    assert not dead_file.exists() or not dead_file.read_text().strip()
    assert "2 chunk(s)" in out
    # Default replay group <live>-replay-<timestamp>; the live group was never committed.
    assert f"group {live}-replay-" in out
    assert _committed(broker.bootstrap, live, t["in"], 2) == {0: None, 1: None}

    # The replay group must not be the live group.
    code, out = _replay(broker, t, "--offsets", f"{t['in']}:0=2-5", "--group-id", live, "--replay-group", live,
                        "--dry-run")
    assert code == 2 and "must differ" in out


def _time_topic(topics, producer):
    """Two batches a second apart; returns the topic, the time between them and batch B's offsets."""
    t = topics("in", partitions=1)
    _send(producer, t["in"], [b"http://a.example/%d" % i for i in range(5)], partition=0)
    time.sleep(1.2)
    cut = int(time.time() * 1000)
    time.sleep(1.2)
    second = _send(producer, t["in"], [b"http://b.example/%d" % i for i in range(4)], partition=0)
    return t, cut, second


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


@pytest.mark.integration
def test_time_range_scan_fallback(broker, topics, producer):
    t, cut, second = _time_topic(topics, producer)
    kc = KafkaConfig(bootstrap_servers=broker.bootstrap)
    ranges, method = resolve_range(kc, [t["in"]], from_time=cut, time_index="scan")
    assert method == "scan"
    assert [(r.start, r.stop) for r in ranges] == [(second[0][1], second[-1][1] + 1)]
    ranges, _ = resolve_range(kc, [t["in"]], from_time=cut - 60_000, to_time=cut, time_index="scan")
    assert [(r.start, r.stop) for r in ranges] == [(0, second[0][1])]
    assert parse_time(_iso(cut)) == cut


@pytest.mark.integration
def test_time_range_broker_index(broker, topics, producer):
    t, cut, second = _time_topic(topics, producer)
    kc = KafkaConfig(bootstrap_servers=broker.bootstrap)
    ranges, method = resolve_range(kc, [t["in"]], from_time=cut, time_index="broker")
    assert [(r.start, r.stop) for r in ranges] == [(second[0][1], second[-1][1] + 1)]
    assert method == "broker"
    ranges, _ = resolve_range(kc, [t["in"]], from_time=cut - 60_000, to_time=cut, time_index="broker")
    assert [(r.start, r.stop) for r in ranges] == [(0, second[0][1])]


@pytest.mark.integration
def test_time_range_auto_uses_the_broker_index(broker, topics, producer):
    # A time after the last record: Apache Kafka answers offsets_for_times with None (Tansu 0.6
    # answered offset 0 and timestamp -1, which ``auto`` detects and scans instead); either
    # way nothing is to be replayed.
    t, cut, second = _time_topic(topics, producer)
    kc = KafkaConfig(bootstrap_servers=broker.bootstrap)
    future = int(time.time() * 1000) + 3_600_000
    ranges, method = resolve_range(kc, [t["in"]], from_time=future, time_index="auto")
    end = second[-1][1] + 1
    assert [(r.start, r.stop) for r in ranges] == [(end, end)]  # nothing to replay
    assert method == "broker"  # Apache Kafka's answer is plausible: no scan
    ranges, method = resolve_range(kc, [t["in"]], from_time=cut, time_index="auto")
    assert [(r.start, r.stop) for r in ranges] == [(second[0][1], end)]
    assert method == "broker"


@pytest.mark.integration
def test_end_offsets_past_a_multi_record_batch(broker, topics):
    # Several records in one batch: a from-beginning range ends after the last of them (Tansu
    # 0.6 reported ListOffsets(LATEST) as the last batch's base offset + 1; the replay reads
    # the tail to find the real end there).
    from kafka import KafkaProducer

    t = topics("in", partitions=1)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200)
    try:
        futs = [p.send(t["in"], b"http://x.example/%d" % i) for i in range(6)]
        p.flush()
        last = max(f.get(timeout=30).offset for f in futs)
    finally:
        p.close()
    ranges, _ = resolve_range(KafkaConfig(bootstrap_servers=broker.bootstrap), [t["in"]], from_beginning=True)
    assert [(r.start, r.stop) for r in ranges] == [(0, last + 1)]
