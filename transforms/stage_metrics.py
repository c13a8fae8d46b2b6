"""The names of the stages' Beam metrics, the counter helper the stages share, and the log
fields of a record (a leaf module; the stages' own metric classes live with them:
``extract/metrics.py``, ``dedup/metrics.py``).

Names are stable: ``pipelines/metrics.py`` maps them to Prometheus names and
``docs/metrics.md`` lists them.

``copydesk.extract``
    ``pages_in``, ``articles_out``, ``dead_<reason>`` (one per dead-letter reason; ``dead``
    is their sum), ``short_articles`` (articles whose text is under ``short_chars``), and the
    distribution ``extract_time_ms`` (per page, dispatch to result on the extraction pool).
``copydesk.extract_domain``
    ``<outcome>:<domain>``, outcome ``ok`` | ``short`` | ``empty`` | ``error``: the raw
    material of the exporter's per-domain extraction health. The extract stage no longer
    makes these Beam counters: a runner reports every counter of a stage on every progress
    answer (Prism asks every 0.1 s per bundle), and one counter per domain cost ~13 ms per
    answer at 250 domains. The outcomes go to :data:`DOMAIN_OUTCOMES` instead, in the
    process, which the exporter reads; :func:`~copydesk.pipelines.metrics.domain_outcomes`
    still reads such counters where a runner reports them.
``copydesk.dedup``
    ``records_in``, ``records_out``, ``records_dropped``, ``duplicates_<kind>`` (``exact_url``,
    ``update``, ``exact``, ``near``), ``canonical_records``, ``new_clusters``.
"""

from __future__ import annotations

import threading
from typing import Any

# Beam is imported where counters are made, not here: the constants of this module are also
# read by the exporter (pipelines/metrics.py), which `copydesk top` imports without Beam.

EXTRACT_NS = "copydesk.extract"
EXTRACT_DOMAIN_NS = "copydesk.extract_domain"
DEDUP_NS = "copydesk.dedup"
OTHER_DOMAIN = "_other"
OUTCOMES = ("ok", "short", "empty", "error")
BAD_OUTCOMES = ("short", "empty", "error")  # what counts against a domain's extraction health
DUPLICATE_KINDS = ("exact_url", "update", "exact", "near")  # the ``duplicates_<kind>`` counters


def log_fields(ref: Any = None, **extra: Any) -> dict[str, Any]:
    """``extra=`` for a log call about one record: its source topic/partition/offset (the
    JSON log format writes them as fields) plus ``extra`` (url, reason, stage ...)."""
    out = {k: v for k, v in extra.items() if v is not None}
    if ref is not None:
        for key in ("topic", "partition", "offset"):
            value = getattr(ref, key, None)
            if value is not None:
                out[key] = value
    return out


class CounterSet:
    """Beam counters of one namespace made on first use, by name (names that carry a reason,
    kind or domain are not known in advance)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._by_name: dict[str, Any] = {}

    def inc(self, name: str, n: int = 1) -> None:
        c = self._by_name.get(name)
        if c is None:
            from apache_beam.metrics import Metrics

            c = self._by_name[name] = Metrics.counter(self.namespace, name)
        c.inc(n)


class DomainOutcomes:
    """Extraction outcomes per source domain since the last :meth:`take`, in this process
    (thread-safe: the DoFns of concurrent bundles add, the exporter takes). At most
    ``max_domains`` distinct domains between two takes; the rest count under ``_other``."""

    def __init__(self, max_domains: int = 500) -> None:
        self.max_domains = max_domains
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def add(self, domain: str, outcome: str, n: int = 1) -> None:
        domain = (domain or "").strip().lower() or "_unknown"
        with self._lock:
            d = self._counts.get(domain)
            if d is None:
                if len(self._counts) >= self.max_domains:
                    d = self._counts.setdefault(OTHER_DOMAIN, {})
                else:
                    d = self._counts[domain] = {}
            d[outcome] = d.get(outcome, 0) + n

    def take(self) -> dict[str, dict[str, int]]:
        """domain -> {outcome: count} since the last take (and forget them)."""
        with self._lock:
            out, self._counts = self._counts, {}
        return out


# The extract stage's per-domain outcomes in this process (the local runners run the DoFns
# in the job's process, where the exporter reads them).
DOMAIN_OUTCOMES = DomainOutcomes()
