"""Beam metrics of the extract and dedup stages, and the log fields of a record.

Names are stable: ``pipelines/metrics.py`` maps them to Prometheus names and
``docs/metrics.md`` lists them.

``copydesk.extract``
    ``pages_in``, ``articles_out``, ``dead_<reason>`` (one per dead-letter reason; ``dead``
    is their sum), ``short_articles`` (articles whose text is under ``short_chars``), and the
    distribution ``extract_time_ms`` (per page, dispatch to result on the extraction pool).
``copydesk.extract_domain``
    ``<outcome>:<domain>`` per page, outcome ``ok`` | ``short`` | ``empty`` | ``error``: the
    raw material of the exporter's per-domain extraction health. The number of distinct
    domains one DoFn instance names is capped (``max_domains``); the rest count under the
    domain ``_other``, so a runner that keeps every counter name (Flink, Dataflow) sees a
    bounded set.
``copydesk.dedup``
    ``records_in``, ``records_out``, ``records_dropped``, ``duplicates_<kind>`` (``exact_url``,
    ``update``, ``exact``, ``near``), ``canonical_records``, ``new_clusters``.
"""

from __future__ import annotations

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


class ExtractMetrics:
    """Counters of the extract DoFn (one instance per DoFn instance, made in ``setup``)."""

    def __init__(self, *, short_chars: int = 250, max_domains: int = 500) -> None:
        from apache_beam.metrics import Metrics

        self.short_chars = short_chars
        self.max_domains = max_domains
        self.counters = CounterSet(EXTRACT_NS)
        self.domains = CounterSet(EXTRACT_DOMAIN_NS)
        self.time_ms = Metrics.distribution(EXTRACT_NS, "extract_time_ms")
        self._named: set[str] = set()

    def pages(self, n: int) -> None:
        self.counters.inc("pages_in", n)

    def seconds(self, value: float | None) -> None:
        if value is not None and value >= 0:
            self.time_ms.update(int(round(value * 1000)))

    def article(self, domain: str, text: str | None) -> None:
        self.counters.inc("articles_out")
        short = len(text or "") < self.short_chars
        if short:
            self.counters.inc("short_articles")
        self._domain(domain, "short" if short else "ok")

    def dead(self, domain: str, reason: str) -> None:
        self.counters.inc("dead")
        self.counters.inc(f"dead_{reason}")
        self._domain(domain, "empty" if reason == "empty" else "error")

    def _domain(self, domain: str, outcome: str) -> None:
        domain = (domain or "").strip().lower() or "_unknown"
        if domain not in self._named:
            if len(self._named) >= self.max_domains:
                domain = OTHER_DOMAIN
            else:
                self._named.add(domain)
        self.domains.inc(f"{outcome}:{domain}")


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
