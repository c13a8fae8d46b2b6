"""Kafka settings and the reader's elements: what every Kafka module of copydesk shares."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from copydesk.schemas.records import SourceRef
from copydesk.transforms.kafka.client import tp_key
from copydesk.transforms.kafka.metrics import INPUT_PREFIX, READ_NS

__all__ = ["UNBOUNDED", "KafkaConfig", "ReadConfig", "PartitionSpec", "KafkaRecord"]

UNBOUNDED = sys.maxsize


@dataclass(frozen=True, kw_only=True)
class KafkaConfig:
    """Connection settings shared by readers, writers and the committer.

    ``client_config`` passes any other kafka-python setting through (security protocol,
    SASL credentials, SSL files ...); it is masked when options are printed.
    """

    bootstrap_servers: str
    group_id: str = "copydesk"
    client_config: tuple[tuple[str, Any], ...] = ()
    request_timeout_ms: int = 30_000

    def kwargs(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap_servers.split(","),
                "request_timeout_ms": self.request_timeout_ms, **dict(self.client_config)}


@dataclass(frozen=True, kw_only=True)
class ReadConfig:
    topics: tuple[str, ...]
    # Where a partition without an explicit start offset and without a committed offset
    # starts: committed (= earliest) | earliest | latest. ``use_committed=False`` ignores the
    # group's offsets (an auxiliary topic read from its beginning every time).
    start: str = "committed"
    use_committed: bool = True
    # Bounded reads (replay / demo): explicit start and stop offsets per "topic:partition".
    start_offsets: tuple[tuple[str, int], ...] = ()
    stop_offsets: tuple[tuple[str, int], ...] = ()
    stop_at_end: bool = False  # stop at the end offsets seen when the job starts
    # Micro-batch reads (the local runner, see pipelines/job.py): stop a partition when it
    # has been idle this long, at a wall-clock deadline, or after this many offsets.
    stop_when_idle_seconds: float | None = None
    deadline: float | None = None  # time.time() value
    max_records_per_partition: int | None = None
    # The live read (a streaming runner): list partitions again this often (None: once),
    # and stay at most this many offsets ahead of the group's committed offset (None: no cap).
    discovery_seconds: float | None = None
    max_ahead_of_commit: int | None = None
    # ... and hold at most this many records / bytes of message payload read and not yet
    # committed, over all partitions (None: no limit); the reader waits while at the limit.
    max_uncommitted_records: int | None = None
    max_uncommitted_bytes: int | None = None
    max_records_per_call: int = 500
    max_seconds_per_call: float = 1.0
    poll_timeout_ms: int = 200
    idle_resume_seconds: float = 0.2
    isolation_level: str = "read_committed"
    max_message_bytes: int = 16 * 1024 * 1024
    # Counters: "<namespace>/<prefix>_records_read" etc. An auxiliary read (the fingerprint
    # topic) counts under other names, so it is not taken for input (idle detection, metrics).
    counter_namespace: str = READ_NS
    counter_prefix: str = INPUT_PREFIX


@dataclass(frozen=True)
class PartitionSpec:
    """One element of the reader: a partition and the offsets to read ([start, stop))."""

    topic: str
    partition: int
    start: int
    stop: int = UNBOUNDED

    @property
    def key(self) -> str:
        return tp_key(self.topic, self.partition)


@dataclass(slots=True)
class KafkaRecord:
    """A message as read: raw key and value, and where it came from."""

    value: bytes | None
    key: bytes | None
    ref: SourceRef
    headers: list[tuple[str, bytes]] = field(default_factory=list)
