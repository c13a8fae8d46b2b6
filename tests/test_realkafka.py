"""Apache Kafka as the tests run it (``tests/realkafka.py``): one node keeps its records and a
group's committed offsets across a clean stop and start on the same port; a three-node
cluster (RF=3, ``min.insync.replicas=2``) keeps taking ``acks=all`` writes and serving reads
after the leader of a partition is SIGKILLed, and takes the node back."""

from __future__ import annotations

import time
import uuid

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _read(bootstrap: str, tps: list, want: int, timeout: float = 60.0) -> list:
    """Records of the given partitions from their beginning until ``want`` arrived or ``timeout``."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    out = []
    try:
        c.assign(tps)
        c.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            for recs in c.poll(300).values():
                out.extend(recs)
    finally:
        c.close()
    return out


def test_single_broker_keeps_records_and_committed_offsets_across_restart(tmp_path):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from copydesk.pipelines.demo.broker import create_topics
    from realkafka import KafkaBroker

    with KafkaBroker(workdir=tmp_path / "kafka") as kafka:
        topic, group = f"rk-{uuid.uuid4().hex[:10]}", f"g-{uuid.uuid4().hex[:10]}"
        create_topics(kafka.bootstrap, [topic], partitions=2)
        tps = [TopicPartition(topic, p) for p in range(2)]
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=2)
        values = [f"message {i}".encode() for i in range(30)]
        metas = [f.get(timeout=30) for f in [producer.send(topic, v) for v in values]]
        producer.close()
        acked = {(m.partition, m.offset): v for v, m in zip(values, metas)}
        ends = {p: 1 + max((o for q, o in acked if q == p), default=-1) for p in range(2)}
        assert sum(ends.values()) == 30

        got = _read(kafka.bootstrap, tps, 30)
        assert {(r.partition, r.offset): r.value for r in got} == acked

        commits = {0: ends[0] // 2, 1: ends[1]}
        c = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False)
        c.commit({tps[p]: OffsetAndMetadata(o, "", -1) for p, o in commits.items()})
        c.close(autocommit=False)

        port = kafka.port
        kafka.stop()
        assert not kafka.running
        kafka.start()
        assert kafka.port == port

        got = _read(kafka.bootstrap, tps, 30)
        assert {(r.partition, r.offset): r.value for r in got} == acked
        c = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False)
        try:
            assert {p: c.committed(tps[p]) for p in range(2)} == commits
            # the group resumes where it committed: the second half of partition 0, nothing of 1
            c.assign(tps)
            rest = []
            deadline = time.monotonic() + 30
            while len(rest) < ends[0] - commits[0] and time.monotonic() < deadline:
                for recs in c.poll(300).values():
                    rest.extend(recs)
            assert [(r.partition, r.offset) for r in rest] == [(0, o) for o in range(commits[0], ends[0])]
            assert c.end_offsets(tps) == {tps[p]: ends[p] for p in range(2)}
        finally:
            c.close(autocommit=False)


def _wait_for(what, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: still {last!r} after {timeout}s")


def test_cluster_survives_sigkill_of_the_partition_leader(kafka_cluster):
    from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

    from copydesk.pipelines.demo.broker import create_topics

    cluster = kafka_cluster
    topic = f"rk3-{uuid.uuid4().hex[:10]}"
    create_topics(cluster.bootstrap, [topic], partitions=2)  # RF: the cluster's default, 3
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:

        def isr():
            (t,) = admin.describe_topics([topic])
            return {p["partition_index"]: sorted(p["isr_nodes"]) for p in t["partitions"]}
        _wait_for("ISR of all three nodes", lambda: isr() == {0: [1, 2, 3], 1: [1, 2, 3]})
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", retries=20, linger_ms=2,
                             retry_backoff_ms=200, request_timeout_ms=15000)
    before = [f"before {i}".encode() for i in range(10)]
    after = [f"after {i}".encode() for i in range(10)]
    leader = cluster.leader_of(topic, 0)
    assert leader in cluster.nodes
    try:
        offsets = [producer.send(topic, v, partition=0).get(timeout=30).offset for v in before]
        assert offsets == list(range(10))

        cluster.kill(leader)
        assert not cluster.running(leader)
        # acks=all with min.insync.replicas=2 still succeeds on the two nodes left
        offsets = [producer.send(topic, v, partition=0).get(timeout=60).offset for v in after]
        assert offsets == list(range(10, 20))
        new = _wait_for("a new leader", lambda: (lambda n: n if n not in (-1, leader) else None)(
            cluster.leader_of(topic, 0)))
        assert new in cluster.nodes and new != leader

        got = _read(cluster.bootstrap, [TopicPartition(topic, 0)], 20)
        assert [(r.offset, r.value) for r in got] == list(enumerate(before + after))
    finally:
        producer.close()
        if not cluster.running(leader):
            cluster.start(leader)

    # the restarted node catches up on what was written without it and is back in the ISR
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        def in_isr():
            (t,) = admin.describe_topics([topic])
            return all(leader in p["isr_nodes"] for p in t["partitions"])
        _wait_for(f"node {leader} back in the ISR", in_isr)
    finally:
        admin.close()
    got = _read(cluster.bootstrap, [TopicPartition(topic, 0)], 20)
    assert [(r.offset, r.value) for r in got] == list(enumerate(before + after))
