"""Names of the Kafka stage's Beam metrics (the one home of each; the exporter,
``pipelines/metrics.py``, imports them). A leaf module: no Beam import.

``copydesk.read`` (``ReadConfig.counter_namespace``)
    ``<prefix>_records_read``, ``<prefix>_bytes_read``, ``<prefix>_idle_polls`` and (the
    live reader) ``<prefix>_held_back``, where the prefix is ``ReadConfig.counter_prefix``:
    ``kafka`` for the job's input; an auxiliary read (the fingerprint topic) counts under
    another namespace and prefix, so it is not taken for input.
``copydesk.commit``
    ``offset_commits``, ``offset_commit_errors`` and the gauge ``pending_ack_ranges``.

The write counters (``records_written_<topic>``) are in :mod:`copydesk.transforms.stage_metrics`,
with the file sink's.
"""

from __future__ import annotations

from copydesk.transforms.stage_metrics import Declared

READ_NS = "copydesk.read"
INPUT_PREFIX = "kafka"  # ReadConfig.counter_prefix of the job's input
RECORDS_READ = "records_read"
BYTES_READ = "bytes_read"
IDLE_POLLS = "idle_polls"
HELD_BACK = "held_back"  # the live reader: times it waited for commits (max_ahead_of_commit, max_uncommitted_*)


def read_counter(prefix: str, name: str) -> str:
    """A reader's counter: ``read_counter("kafka", RECORDS_READ)`` = ``"kafka_records_read"``."""
    return f"{prefix}_{name}"


INPUT_RECORDS_READ = read_counter(INPUT_PREFIX, RECORDS_READ)  # what "records read" means for a run
INPUT_BYTES_READ = read_counter(INPUT_PREFIX, BYTES_READ)
INPUT_IDLE_POLLS = read_counter(INPUT_PREFIX, IDLE_POLLS)

COMMIT_NS = "copydesk.commit"
OFFSET_COMMITS = "offset_commits"
OFFSET_COMMIT_ERRORS = "offset_commit_errors"
PENDING_ACK_RANGES = "pending_ack_ranges"

READ_DECLARED = Declared(READ_NS, counters=tuple(read_counter(INPUT_PREFIX, n) for n in
                                                 (RECORDS_READ, BYTES_READ, IDLE_POLLS, HELD_BACK)))
COMMIT_DECLARED = Declared(COMMIT_NS, counters=(OFFSET_COMMITS, OFFSET_COMMIT_ERRORS), gauges=(PENDING_ACK_RANGES,))
