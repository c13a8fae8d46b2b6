"""Beam metrics of the dedup stage: their names (the one home of each; the exporter,
``pipelines/metrics.py``, imports them) and ``DedupMetrics``, which makes the counters.

``copydesk.dedup``
    ``records_in``, ``records_out``, ``records_dropped``, ``duplicates_<kind>`` (``exact_url``,
    ``update``, ``exact``, ``near``), ``canonical_records``, ``new_clusters``; the index step's
    gauges ``index_members``, ``index_log_bytes`` and counters ``index_loads``,
    ``index_batches``; and the fingerprint topic's reader, ``fingerprint_records_read`` etc.
"""

from __future__ import annotations

from typing import Any

from copydesk.transforms.stage_metrics import CounterSet, Declared

DEDUP_NS = "copydesk.dedup"
RECORDS_IN = "records_in"
RECORDS_OUT = "records_out"
RECORDS_DROPPED = "records_dropped"
DUPLICATES_PREFIX = "duplicates_"  # + the kind
DUPLICATE_KINDS = ("exact_url", "update", "exact", "near")  # the ``duplicates_<kind>`` counters
CANONICAL_RECORDS = "canonical_records"
NEW_CLUSTERS = "new_clusters"
INDEX_MEMBERS = "index_members"
INDEX_LOG_BYTES = "index_log_bytes"
INDEX_LOADS = "index_loads"  # the index rebuilt from the log (or the seeds)
INDEX_BATCHES = "index_batches"
FINGERPRINT_READ_PREFIX = "fingerprint"  # counter prefix of the fingerprint topic's reader

DECLARED = Declared(DEDUP_NS, counters=(RECORDS_IN, RECORDS_OUT, RECORDS_DROPPED, CANONICAL_RECORDS, NEW_CLUSTERS,
                                        INDEX_LOADS, INDEX_BATCHES),
                    gauges=(INDEX_MEMBERS, INDEX_LOG_BYTES),
                    families=(DUPLICATES_PREFIX, FINGERPRINT_READ_PREFIX + "_"))


class DedupMetrics:
    """Counters of the dedup stage's ``Prepare`` (records in) and ``Decide`` (the rest)."""

    def __init__(self) -> None:
        self.counters = CounterSet(DEDUP_NS)

    def record_in(self) -> None:
        self.counters.inc(RECORDS_IN)

    def decided(self, record_id: str, decision: Any, dropped: bool) -> None:
        c = self.counters
        c.inc(RECORDS_DROPPED if dropped else RECORDS_OUT)
        kind = decision.duplicate_kind
        if kind:
            c.inc(DUPLICATES_PREFIX + kind)
        if decision.is_canonical:
            c.inc(CANONICAL_RECORDS)
        if kind is None and decision.cluster_id == record_id:
            c.inc(NEW_CLUSTERS)
