"""The live reader's ledger of records read and not yet committed (transforms/kafka/live.py)."""

from copydesk.transforms.kafka.live import InFlight


def test_records_leave_the_ledger_when_the_commit_passes_them():
    f = InFlight()
    for off in range(10, 15):
        f.add("t:0", off, 100)
    f.add("t:1", 3, 1000)
    assert (f.records, f.bytes) == (6, 1500)
    f.committed("t:0", 13)  # 10, 11, 12 are done; 13 and 14 are not
    assert (f.records, f.bytes) == (3, 1200)
    f.committed("t:0", 12)  # an older answer changes nothing
    assert (f.records, f.bytes) == (3, 1200)
    f.committed("t:1", 4)
    assert (f.records, f.bytes, f.keys()) == (2, 200, ["t:0"])
    assert (f.peak_records, f.peak_bytes) == (6, 1500)


def test_a_rewound_read_is_not_counted_twice():
    f = InFlight()
    for off in range(5):
        f.add("t:0", off, 10)
    f.rewind("t:0", 3)  # offsets 3 and 4 will be read again
    assert (f.records, f.bytes) == (3, 30)
    f.add("t:0", 3, 10)
    f.rewind("t:0", 7)  # ahead of everything read: nothing to drop
    assert (f.records, f.bytes) == (4, 40)
