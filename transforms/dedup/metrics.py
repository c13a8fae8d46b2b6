"""Beam metrics of the dedup stage (names in :mod:`copydesk.transforms.stage_metrics`)."""

from __future__ import annotations

from typing import Any

from copydesk.transforms.stage_metrics import DEDUP_NS, CounterSet


class DedupMetrics:
    """Counters of the dedup stage's ``Prepare`` (records in) and ``Decide`` (the rest)."""

    def __init__(self) -> None:
        self.counters = CounterSet(DEDUP_NS)

    def record_in(self) -> None:
        self.counters.inc("records_in")

    def decided(self, record_id: str, decision: Any, dropped: bool) -> None:
        c = self.counters
        c.inc("records_dropped" if dropped else "records_out")
        kind = decision.duplicate_kind
        if kind:
            c.inc(f"duplicates_{kind}")
        if decision.is_canonical:
            c.inc("canonical_records")
        if kind is None and decision.cluster_id == record_id:
            c.inc("new_clusters")
