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


def test_two_stale_snapshots_merged_lose_no_ack():
    """What Prism does to a stateful stage it splits (transforms/kafka/commit.py): two bundles of
    one partition start from the same state and each writes its own; seen in a broker-outage
    run, where the partition's commits then stopped for the rest of the job. The state of the
    second write alone has lost the first's acks; merged with the first, nothing is lost."""
    base = OffsetTracker()
    base.ack(13, 14, origin=0)  # the state both bundles read: next 0, pending 13..14
    first, second = OffsetTracker(*base.state()), OffsetTracker(*base.state())
    assert first.ack(0, 13, origin=0) and first.next == 14  # bundle A: 0..13 closes the gap
    second.ack(14, 15, origin=0)  # bundle B, concurrently, from the same snapshot
    assert second.next == 0  # B's write, last, would stall the partition at 0 for good
    merged = OffsetTracker(*second.state())
    merged.merge(*first.state())
    assert merged.next == 15 and merged.pending == {}
    again = OffsetTracker(*first.state())  # the other order gives the same
    again.merge(*second.state())
    assert again.state() == merged.state()


def test_merge_keeps_what_is_not_contiguous_yet():
    a, b = OffsetTracker(), OffsetTracker()
    a.ack(5, 6, origin=0)
    b.ack(8, 9, origin=0)
    a.merge(*b.state())
    assert a.next == 0 and a.pending == {5: 6, 8: 9}
    assert a.ack(0, 5, origin=0) and a.next == 6 and a.pending == {8: 9}
    a.merge(None, None)  # an empty state changes nothing
    assert a.next == 6


def test_a_stale_next_below_the_readers_origin_moves_up_to_it():
    t = OffsetTracker(3, {})  # restored state from before the committed offset the reader started at
    assert t.ack(10, 11, origin=10) and t.next == 11
