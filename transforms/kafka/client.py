"""Small kafka-python helpers shared by the reader, the committer, replay and the poison guard:
topic-partition objects and their ``"topic:partition"`` keys, listing a topic's partitions,
and the watermark rule of the readers. Written once here, imported everywhere else."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["topic_partition", "tp_key", "split_tp_key", "partitions_for", "advance_watermark"]


def topic_partition(topic: str, partition: int) -> Any:
    """kafka-python's ``TopicPartition``."""
    from kafka import TopicPartition

    return TopicPartition(topic, partition)


def tp_key(topic: str, partition: int) -> str:
    """The ``"topic:partition"`` key of acks, offsets and the reader's positions."""
    return f"{topic}:{partition}"


def split_tp_key(key: str) -> tuple[str, int]:
    """Inverse of :func:`tp_key` (a topic name may itself contain ``:``)."""
    topic, _, part = key.rpartition(":")
    return topic, int(part)


def partitions_for(consumer: Any, topic: str, timeout: float = 30.0) -> set[int]:
    """The partitions of ``topic``, waiting up to ``timeout`` for its metadata."""
    deadline = time.monotonic() + timeout
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return parts
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic!r} does not exist or has no partitions")
        time.sleep(0.2)
        consumer.topics()  # refresh metadata


def advance_watermark(estimator: Any, ts: Any) -> None:
    """Move a manual watermark estimator forward to ``ts``, never back."""
    current = estimator.current_watermark()
    if current is None or ts > current:
        estimator.set_watermark(ts)
