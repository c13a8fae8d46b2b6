import random

from copydesk.schemas.records import SourceRef
from copydesk.transforms.kafka.commit import OffsetTracker
from copydesk.transforms.kafka.io import acks_for


def test_commit_advances_only_over_contiguous_written_ranges():
    t = OffsetTracker()
    assert not t.ack(3, 4, origin=0)  # offset 3 written before 0..2: nothing to commit yet
    assert t.next == 0
    assert t.ack(0, 2, origin=0) and t.next == 2
    assert t.ack(2, 3, origin=0) and t.next == 4  # absorbs the pending 3..4
    assert t.pending == {}


def test_gaps_in_offsets_are_covered_by_covers_from():
    # offsets 10, 11, then a transaction marker at 12, then 13: the record at 13 covers 12..13
    refs = [SourceRef("t", 0, 10, covers_from=10, origin=10), SourceRef("t", 0, 11, covers_from=11, origin=10),
            SourceRef("t", 0, 13, covers_from=12, origin=10)]
    t = OffsetTracker()
    for _, (s, e, o) in acks_for(refs):
        t.ack(s, e, o)
    assert t.next == 14


def test_any_arrival_order_ends_at_the_same_offset():
    rng = random.Random(7)
    for _ in range(50):
        ranges = [(i, i + 1) for i in range(100)]
        rng.shuffle(ranges)
        t = OffsetTracker()
        highest = 0
        for s, e in ranges:
            t.ack(s, e, origin=0)
            assert t.next <= min(set(range(100)) - {x for x, _ in ranges[: ranges.index((s, e)) + 1]} or {100})
            highest = max(highest, t.next)
        assert t.next == 100 and not t.pending


def test_retried_bundle_acks_are_harmless():
    t = OffsetTracker()
    t.ack(0, 5, origin=0)
    assert not t.ack(0, 5, origin=0)
    assert not t.ack(2, 4, origin=0)
    assert t.next == 5


def test_acks_are_merged_per_partition_and_skip_non_kafka_refs():
    refs = [SourceRef("a", 0, 1, covers_from=1, origin=0), SourceRef("a", 0, 0, covers_from=0, origin=0),
            SourceRef("a", 1, 7, covers_from=5, origin=5), SourceRef("file:/x", 0, 3), None]
    assert sorted(acks_for(refs)) == [("a:0", (0, 2, 0)), ("a:1", (5, 8, 5))]
