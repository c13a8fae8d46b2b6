"""The Kafka source and sink against a real Apache Kafka broker (Beam composites under TestPipeline)."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from conftest import consume
from copydesk.pipelines.options import FN_API_RUNNER
from copydesk.transforms.kafka.commit import CommitOffsets
from copydesk.transforms.kafka.io import KafkaConfig, ReadConfig, ReadFromKafkaPartitions, WriteToKafka

pytestmark = pytest.mark.integration


def _produce(producer, topic, n, partitions=2):
    metas = [producer.send(topic, f"http://example.com/{i}".encode(), partition=i % partitions) for i in range(n)]
    producer.flush()
    stops: dict[str, int] = {}
    for f in metas:
        m = f.get(timeout=10)
        stops[f"{topic}:{m.partition}"] = max(stops.get(f"{topic}:{m.partition}", 0), m.offset + 1)
    return stops


class _Collect(beam.DoFn):
    """Append rows to a file: the reader's output is unbounded, so no GroupByKey-based assert_that."""

    def __init__(self, path):
        self.path = path

    def process(self, row):
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def test_reader_reads_each_partition_range_once_with_a_covering_chain(broker, topics, producer, tmp_path):
    t = topics("in", partitions=2)
    stops = _produce(producer, t["in"], 300)
    kc = KafkaConfig(bootstrap_servers=broker.bootstrap, group_id="g-read")
    rc = ReadConfig(topics=(t["in"],), start="earliest", stop_offsets=tuple(stops.items()), max_records_per_call=40)
    out = tmp_path / "rows.jsonl"
    with TestPipeline(runner=FN_API_RUNNER) as p:
        (p | ReadFromKafkaPartitions(kc, rc)
         | beam.Map(lambda r: (r.ref.partition, r.ref.offset, r.ref.covers_from, r.value.decode()))
         | beam.ParDo(_Collect(str(out))))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 300
    assert len({(part, off) for part, off, _, _ in rows}) == 300  # each offset exactly once
    assert sorted(v for *_, v in rows) == sorted(f"http://example.com/{i}" for i in range(300))
    by_part: dict[int, list] = {}
    for part, off, cov, _ in rows:
        by_part.setdefault(part, []).append((off, cov))
    for part, items in by_part.items():
        items.sort()
        assert items[0][1] == 0
        for (prev, _), (off, cov) in zip(items, items[1:]):
            assert cov == prev + 1, (part, prev, off, cov)


def test_writes_are_acked_and_offsets_committed_only_after_the_flush(broker, topics, producer):
    from kafka import KafkaConsumer, TopicPartition

    t = topics("in", "out", partitions=2)
    stops = _produce(producer, t["in"], 120)
    kc = KafkaConfig(bootstrap_servers=broker.bootstrap, group_id="g-commit")
    rc = ReadConfig(topics=(t["in"],), start="committed", stop_offsets=tuple(stops.items()))
    with TestPipeline(runner=FN_API_RUNNER) as p:
        records = p | ReadFromKafkaPartitions(kc, rc)
        acks = records | WriteToKafka(kc, t["out"], lambda r: r.value, key_of=lambda r: None)
        acks | CommitOffsets(kc)
    assert len(consume(broker.bootstrap, t["out"], 120)) == 120
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="g-commit")
    try:
        committed = {f"{t['in']}:{p}": c.committed(TopicPartition(t["in"], p)) for p in (0, 1)}
    finally:
        c.close()
    assert committed == stops
