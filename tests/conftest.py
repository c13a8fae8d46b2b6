"""Shared fixtures: real Apache Kafka on free ports, throwaway topics, the sample site.

``kafka`` is one Apache Kafka 4 node (KRaft broker + controller, ``tests/realkafka.py``) for the
whole session; ``broker`` is the same broker under the name the integration tests use;
``kafka_cluster`` is three nodes with RF=3 and ``min.insync.replicas=2`` for a test module.
Tests talk Kafka protocol over TCP to real broker processes; nothing is faked. Topics are
uuid-named so tests never see each other's data. Kafka needs Java 17+ and its jars, resolved
once by Maven (``python tests/realkafka.py --install``); without them these fixtures error.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # helper modules beside the tests


@pytest.fixture(scope="session")
def kafka():
    """One Apache Kafka node for the session (``realkafka.KafkaBroker``: ``.bootstrap``, ``.port``)."""
    from realkafka import KafkaBroker

    b = KafkaBroker().start()
    yield b
    b.close()


@pytest.fixture(scope="module")
def kafka_cluster():
    """Three Apache Kafka nodes, one KRaft quorum (``realkafka.KafkaCluster``), for a module."""
    from realkafka import KafkaCluster

    c = KafkaCluster(3).start()
    yield c
    c.close()


@pytest.fixture(scope="session")
def broker(kafka):
    """The broker of the integration tests: the session's Apache Kafka (``kafka``)."""
    return kafka


@pytest.fixture
def topics(broker):
    """Factory: ``topics("in", "out", partitions=2)`` -> dict of uuid-named topics, created."""
    from copydesk.pipelines.demo.broker import create_topics

    def make(*names: str, partitions: int = 1) -> dict[str, str]:
        run = uuid.uuid4().hex[:10]
        made = {n: f"t-{run}-{n}" for n in names}
        create_topics(broker.bootstrap, list(made.values()), partitions=partitions)
        return made

    return make


@pytest.fixture
def producer(broker):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=2, max_request_size=32 << 20)
    yield p
    p.close()


def consume(bootstrap: str, topic: str, want: int, timeout: float = 60.0) -> list:
    """Read a topic from the beginning until ``want`` records arrived or ``timeout``."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                      enable_auto_commit=False, fetch_max_bytes=64 << 20, max_partition_fetch_bytes=64 << 20)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
            for recs in c.poll(300).values():
                out.extend(recs)
    finally:
        c.close()
    return out


@pytest.fixture
def site():
    from copydesk.pipelines.demo.site import SiteServer

    with SiteServer() as s:
        yield s


@pytest.fixture
def shared_dir() -> Path:
    if not (SHARED / "eval" / "fundus").is_dir():
        pytest.skip(f"{SHARED}/eval/fundus is absent (evaluation data lives beside the project in ../shared)")
    return SHARED


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPYDESK_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env
