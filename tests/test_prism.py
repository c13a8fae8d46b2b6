"""``copydesk run`` as one streaming pipeline on Prism, on Apache Kafka (issue 12).

Everything is real: a Kafka node (or a three-node cluster), the sample site over HTTP,
``copydesk run`` in its own process choosing Prism by itself (the binary ``.ci/run`` installs
in ``.cache/bin``), reading with Kafka's consumer-group semantics. Latencies are printed,
never asserted; the bounds below are time-outs.

The module's first tests share one running job (``stream``): records come out while it runs,
an unencodable record is a dead letter and its partition moves on, a partition added while
it runs is read, a copy produced 60 s after the first joins its cluster (dedup state lives
with the job; there is no fingerprint topic), and SIGTERM drains it with exit code 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from conftest import cli_env
from copydesk.pipelines.demo.site import site_root
from copydesk.transforms.encode import TEST_UNENCODABLE_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
MARK = "unencodable-by-test-hook"


def _require_prism() -> None:
    from copydesk.pipelines.job import find_prism

    path, where = find_prism()
    if not path:
        pytest.fail(f"no Prism binary ({where}): .ci/run installs it with go install into .cache/bin")


class Job:
    """``copydesk run`` in its own process group, its log in a file."""

    def __init__(self, bootstrap: str, t: dict[str, str], group: str, log: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "copydesk.pipelines.cli", "run", "--bootstrap-servers", bootstrap,
               "--input-topic", t["in"], "--group-id", group, "--output-topic", t["out"],
               "--dead-letter-topic", t["dead"], "--allow-networks", "127.0.0.1/32", "--per-host-delay", "0",
               "--extract-workers", "1", *extra]
        self.log = log
        self._fh = open(log, "ab")
        self.proc = subprocess.Popen(cmd, env={**cli_env(), **(env or {})}, stdout=self._fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM to the whole process group (as a terminal or systemd sends it)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"copydesk run did not exit within {timeout}s of SIGTERM:\n{self.text()[-3000:]}")
        self._fh.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._fh.close()


class Tail:
    """Everything the job wrote, read as it comes (the output and dead-letter topics)."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        from kafka import KafkaConsumer

        self.c = KafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                               enable_auto_commit=False, fetch_max_bytes=64 << 20,
                               max_partition_fetch_bytes=64 << 20)
        self.rows: list[tuple[str, dict, float]] = []  # (topic, document, seen at)

    def poll(self, seconds: float = 0.5) -> None:
        for tp, recs in self.c.poll(int(seconds * 1000)).items():
            for r in recs:
                self.rows.append((tp.topic, orjson.loads(r.value), time.time()))

    def wait_for(self, pred, timeout: float, what: str, job: Job | None = None) -> list[tuple[str, dict, float]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [row for row in self.rows if pred(row[1])]
            if hits:
                return hits
            if job is not None and job.proc.poll() is not None:
                pytest.fail(f"the job exited ({job.proc.returncode}) while waiting for {what}:\n{job.text()[-3000:]}")
            self.poll()
        pytest.fail(f"no output for {what} within {timeout:.0f}s" + (f":\n{job.text()[-3000:]}" if job else ""))

    def close(self) -> None:
        self.c.close()


def _pages() -> list[str]:
    return [p for p in (site_root() / "urls.txt").read_text().split() if p]


def _send(producer, topic: str, value: bytes, partition: int | None = None) -> tuple[int, int, float]:
    m = producer.send(topic, value, partition=partition).get(timeout=30)
    return m.partition, m.offset, time.time()


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(topic, p)) for p in sorted(c.partitions_for_topic(topic) or ())}
    finally:
        c.close()


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        return {tp.partition: off for tp, off in c.end_offsets(tps).items()}
    finally:
        c.close()


def _at(partition: int, offset: int):
    return lambda d: d.get("partition") == partition and d.get("offset") == offset


# --------------------------------------------------------------------------- one running job


@pytest.fixture(scope="module")
def stream(kafka, tmp_path_factory):
    """One ``copydesk run`` for the module's streaming tests (one input partition at first)."""
    _require_prism()
    import uuid

    from copydesk.pipelines.demo.broker import create_topics
    from copydesk.pipelines.demo.site import SiteServer

    run = uuid.uuid4().hex[:10]
    t = {n: f"t-{run}-{n}" for n in ("in", "out", "dead")}
    create_topics(kafka.bootstrap, list(t.values()), partitions=1)
    log = tmp_path_factory.mktemp("prism") / "job.log"
    with SiteServer() as site:
        job = Job(kafka.bootstrap, t, f"g-{run}", log, "--partition-discovery-seconds", "5",
                  env={TEST_UNENCODABLE_ENV: MARK})
        tail = Tail(kafka.bootstrap, t["out"], t["dead"])
        state = {"t": t, "job": job, "tail": tail, "site": site, "group": f"g-{run}", "sent": []}
        try:
            yield state
        finally:
            job.kill()
            tail.close()


def test_the_job_says_it_streams_on_prism(stream):
    job = stream["job"]
    deadline = time.monotonic() + 120
    while "runner:" not in job.text() and time.monotonic() < deadline and job.proc.poll() is None:
        time.sleep(0.5)
    line = next((ln for ln in job.text().splitlines() if "runner:" in ln), "")
    assert "Prism (one streaming pipeline)" in line and "binary" in line, job.text()[-3000:]


def test_each_url_comes_out_while_the_job_runs(stream, producer):
    t, job, tail, site = stream["t"], stream["job"], stream["tail"], stream["site"]
    lat = []
    for i, path in enumerate(_pages()):
        part, off, at = _send(producer, t["in"], site.url(f"{path}?n={i}").encode())
        stream["sent"].append((part, off))
        (_, doc, seen), *_ = tail.wait_for(_at(part, off), 120 if i == 0 else 60, f"offset {off}", job)
        lat.append(seen - at)
        assert doc.get("url", "").endswith(f"?n={i}") or doc.get("reason"), doc
    assert job.proc.poll() is None
    print(f"\nprism: {len(lat)} URLs, one at a time: produce -> output {min(lat):.2f}..{max(lat):.2f} s "
          f"(first {lat[0]:.2f} s, incl. start-up)")


def test_an_unencodable_record_is_a_dead_letter_and_the_partition_moves_on(stream, producer, kafka):
    t, job, tail, site = stream["t"], stream["job"], stream["tail"], stream["site"]
    page = _pages()[0]
    bad = _send(producer, t["in"], site.url(f"{page}?{MARK}").encode())
    good = _send(producer, t["in"], site.url(f"{page}?after-the-bad-one").encode())
    stream["sent"] += [bad[:2], good[:2]]
    (topic, doc, _), *_ = tail.wait_for(_at(*bad[:2]), 60, "the unencodable record", job)
    assert topic == t["dead"] and doc["stage"] == "write" and doc["reason"] == "encode", doc
    assert "surrogate" in doc["message"] or "utf-8" in doc["message"].lower(), doc
    (topic, doc, _), *_ = tail.wait_for(_at(*good[:2]), 60, "the record after it", job)
    assert topic == t["out"] and doc["url"].endswith("after-the-bad-one")
    deadline = time.monotonic() + 30
    while (_committed(kafka.bootstrap, stream["group"], t["in"]).get(0) or 0) <= good[1]:
        assert time.monotonic() < deadline, "the offsets past the dead letter were not committed"
        time.sleep(0.5)


def test_a_partition_added_while_the_job_runs_is_read(stream, producer, kafka):
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions

    t, job, tail, site = stream["t"], stream["job"], stream["tail"], stream["site"]
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        admin.create_partitions({t["in"]: NewPartitions(total_count=2)})
    finally:
        admin.close()
    deadline = time.monotonic() + 30
    from kafka import KafkaProducer

    fresh = KafkaProducer(bootstrap_servers=kafka.bootstrap)  # its metadata knows partition 1
    try:
        while True:
            try:
                sent = [_send(fresh, t["in"], site.url(f"{p}?new-partition={i}").encode(), partition=1)
                        for i, p in enumerate(_pages()[:3])]
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        fresh.close()
    stream["sent"] += [s[:2] for s in sent]
    for part, off, _ in sent:
        assert part == 1
        tail.wait_for(_at(part, off), 90, f"partition 1 offset {off}", job)
    assert "new partition" in job.text()


def test_a_copy_sixty_seconds_later_joins_the_first_copys_cluster(stream, producer):
    t, job, tail, site = stream["t"], stream["job"], stream["tail"], stream["site"]
    ap = [p for p in _pages() if "flood" in p or "oregon-river" in p]
    assert len(ap) == 3
    first = _send(producer, t["in"], site.url(ap[0]).encode(), partition=0)
    (_, a, _), *_ = tail.wait_for(_at(*first[:2]), 60, "the first copy", job)
    time.sleep(60)
    second = _send(producer, t["in"], site.url(ap[1]).encode(), partition=0)
    stream["sent"] += [first[:2], second[:2]]
    (_, b, _), *_ = tail.wait_for(_at(*second[:2]), 60, "the copy 60 s later", job)
    assert a["id"] != b["id"]
    assert b["cluster_id"] == a["cluster_id"] and b["duplicate_of"] is not None and not b["is_canonical"], (a, b)


def test_sigterm_drains_commits_everything_and_exits_zero(stream, kafka):
    t, job, tail = stream["t"], stream["job"], stream["tail"]
    code = job.stop()
    assert code == 0, job.text()[-3000:]
    assert "draining" in job.text()
    assert _committed(kafka.bootstrap, stream["group"], t["in"]) == _ends(kafka.bootstrap, t["in"])
    tail.poll(1)
    seen = {(d.get("partition"), d.get("offset")) for _, d, _ in tail.rows}
    assert set(stream["sent"]) <= seen


# --------------------------------------------------------------------------- restarts


def test_a_restart_resumes_from_the_committed_offsets_with_nothing_lost(kafka, topics, producer, site, tmp_path):
    _require_prism()
    t = topics("in", "out", "dead", partitions=2)
    group = f"g-{t['in']}"
    pages = _pages()
    sent = [_send(producer, t["in"], site.url(f"{p}?r=a{i}").encode())[:2] for i, p in enumerate(pages)]
    job = Job(kafka.bootstrap, t, group, tmp_path / "a.log")
    tail = Tail(kafka.bootstrap, t["out"], t["dead"])
    try:
        for s in sent:
            tail.wait_for(_at(*s), 180, f"offset {s}", job)
        assert job.stop() == 0, job.text()[-3000:]
        before = len(tail.rows)
        committed = _committed(kafka.bootstrap, group, t["in"])
        more = [_send(producer, t["in"], site.url(f"{p}?r=b{i}").encode())[:2] for i, p in enumerate(pages)]
        job = Job(kafka.bootstrap, t, group, tmp_path / "b.log")
        for s in more:
            tail.wait_for(_at(*s), 180, f"offset {s} after the restart", job)
        assert job.stop() == 0, job.text()[-3000:]
        tail.poll(1)
    finally:
        job.kill()
        tail.close()
    text = job.text()
    for p, off in committed.items():
        assert f"reading {t['in']}:{p} from offset {off}" in text, text[-3000:]
    after = [(d["partition"], d["offset"]) for _, d, _ in tail.rows[before:]]
    assert set(more) <= set(after) and not set(sent) & set(after), "the restart re-read what was committed"
    assert _committed(kafka.bootstrap, group, t["in"]) == _ends(kafka.bootstrap, t["in"])


def test_start_from_earliest_resumes_at_the_committed_offset(kafka, topics, producer, site, tmp_path):
    """``--start-from`` applies only where the group has no committed offset (auto.offset.reset)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    _require_prism()
    t = topics("in", "out", "dead", partitions=1)
    group = f"g-{t['in']}"
    pages = _pages()
    old = [_send(producer, t["in"], site.url(f"{p}?old={i}").encode())[:2] for i, p in enumerate(pages)]
    c = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False)
    try:  # the group has processed the old messages
        c.commit({TopicPartition(t["in"], 0): OffsetAndMetadata(old[-1][1] + 1, "", -1)})
    finally:
        c.close()
    new = [_send(producer, t["in"], site.url(f"{p}?new={i}").encode())[:2] for i, p in enumerate(pages[:3])]
    job = Job(kafka.bootstrap, t, group, tmp_path / "job.log", "--start-from", "earliest")
    tail = Tail(kafka.bootstrap, t["out"], t["dead"])
    try:
        for s in new:
            tail.wait_for(_at(*s), 180, f"offset {s}", job)
        time.sleep(3)
        tail.poll(1)
        assert job.stop() == 0, job.text()[-3000:]
    finally:
        job.kill()
        tail.close()
    seen = [(d["partition"], d["offset"]) for _, d, _ in tail.rows]
    assert not set(old) & set(seen), f"offsets before the committed one were read again: {sorted(set(old) & set(seen))}"
    assert sorted(seen) == sorted(new)


# --------------------------------------------------------------------------- a three-node cluster


def test_the_input_partitions_leader_killed_mid_stream_loses_nothing(kafka_cluster, site, tmp_path):
    """SIGKILL the leader of the input partition while the job streams, bring it back: every
    input offset ends as a record or a dead letter; a re-delivered offset carries the same id."""
    import uuid

    from kafka import KafkaProducer

    from copydesk.pipelines.demo.broker import create_topics

    _require_prism()
    run = uuid.uuid4().hex[:10]
    t = {n: f"t-{run}-{n}" for n in ("in", "out", "dead")}
    bootstrap = kafka_cluster.bootstrap
    create_topics(bootstrap, list(t.values()), partitions=1)
    group = f"g-{run}"
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=20, linger_ms=2)
    job = Job(bootstrap, t, group, tmp_path / "job.log", "--kafka-config", "request_timeout_ms=10000")
    tail = Tail(bootstrap, t["out"], t["dead"])
    pages = _pages()
    sent = []
    try:
        def send(i: int) -> None:
            for attempt in range(60):
                try:
                    sent.append(_send(prod, t["in"], site.url(f"{pages[i % len(pages)]}?k={i}").encode())[:2])
                    return
                except Exception:  # the leader is being elected: the producer retries
                    time.sleep(0.5)
            raise AssertionError(f"message {i} could not be produced")

        for i in range(10):
            send(i)
        tail.wait_for(_at(*sent[0]), 180, "the first record", job)
        leader = kafka_cluster.leader_of(t["in"], 0)
        kafka_cluster.kill(leader)
        for i in range(10, 20):
            send(i)
            time.sleep(0.3)
        kafka_cluster.start(leader)
        for i in range(20, 30):
            send(i)
        for s in sent:
            tail.wait_for(_at(*s), 180, f"offset {s}", job)
        assert job.stop(180) == 0, job.text()[-3000:]
        tail.poll(1)
    finally:
        job.kill()
        tail.close()
        prod.close()
    by_offset: dict[tuple[int, int], set] = {}
    for _, d, _ in tail.rows:
        by_offset.setdefault((d["partition"], d["offset"]), set()).add(d.get("id") or d.get("reason"))
    missing = set(sent) - set(by_offset)
    assert not missing, f"lost: {sorted(missing)}"
    assert all(len(ids) == 1 for ids in by_offset.values()), {k: v for k, v in by_offset.items() if len(v) > 1}
    redelivered = len(tail.rows) - len(by_offset)
    print(f"\ncluster: leader {leader} killed mid-stream; {len(sent)} offsets, 0 lost, {redelivered} re-delivered")


def test_the_live_reader_is_fused_with_parse_fetch_and_extract():
    """No fusion break (Reshuffle) between the live reader and extraction: a message's payload
    (a pre-scraped page) would cross the runner twice more (docs/performance.md, "Fused
    reader"). Parse takes the reader's output as it is, on both runners."""
    import apache_beam as beam

    from copydesk.pipelines.pipeline import build_pipeline, live_read_config, pipeline_options
    from copydesk.pipelines.options import CopydeskOptions
    from copydesk.transforms.kafka.config import ReadConfig

    options = pipeline_options(["--bootstrap-servers", "127.0.0.1:9", "--input-topic", "in", "--output-topic", "out",
                                "--dead-letter-topic", "dead"])

    def transforms(read_config):
        p = beam.Pipeline(options=options)
        build_pipeline(p, options, read_config=read_config)
        return {t.unique_name: t for t in p.to_runner_api().components.transforms.values()}

    for read_config in (live_read_config(options.view_as(CopydeskOptions)), ReadConfig(topics=("in",))):
        ts = transforms(read_config)
        assert not [n for n, t in ts.items() if t.spec.urn == "beam:transform:reshuffle:v1"]
        [unwrap] = [t for name, t in ts.items() if name == "Unwrap"]
        parse = [t for name, t in ts.items() if name.startswith("Parse/") and t.spec.urn == "beam:transform:pardo:v1"]
        assert parse and list(parse[0].inputs.values()) == list(unwrap.outputs.values())


# --------------------------------------------------------------------------- memory in flight


def test_the_reader_holds_no_more_uncommitted_records_than_its_limit_and_loses_none(kafka, topics, producer, site,
                                                                                     tmp_path):
    """A backlog of 40 messages, at most 6 read and not committed at once: the reader waits
    for the commits (it says so), every message still comes out, and the most it held, by its
    own ledger of records read and not yet passed by the group's committed offset, is 6."""
    import re

    _require_prism()
    limit = 6
    t = topics("in", "out", "dead", partitions=2)
    sent = [_send(producer, t["in"], site.url(f"{p}?held={i}").encode())[:2]
            for i, p in enumerate((_pages() * 8)[:40])]
    job = Job(kafka.bootstrap, t, f"g-{t['in']}", tmp_path / "job.log", "--max-uncommitted-records", str(limit))
    tail = Tail(kafka.bootstrap, t["out"], t["dead"])
    try:
        for s in sent:
            tail.wait_for(_at(*s), 240, f"offset {s}", job)
        assert job.stop() == 0, job.text()[-3000:]
    finally:
        job.kill()
        tail.close()
    text = job.text()
    waits = re.findall(r"reader: (\d+) records \([\d.]+ MiB\) read and not committed yet, at the limit", text)
    assert waits, f"the reader never waited for commits with a limit of {limit}:\n{text[-3000:]}"
    assert all(int(n) <= limit for n in waits), waits
    peak = re.findall(r"reader: drained; at most (\d+) records", text)
    assert peak and 0 < int(peak[-1]) <= limit, text[-3000:]
    seen = {(d["partition"], d["offset"]) for _, d, _ in tail.rows}
    assert set(sent) <= seen
