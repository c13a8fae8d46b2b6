"""Beam metrics of the extract stage (names in :mod:`copydesk.transforms.stage_metrics`)."""

from __future__ import annotations

from copydesk.transforms.stage_metrics import DOMAIN_OUTCOMES, EXTRACT_NS, CounterSet, DomainOutcomes


class ExtractMetrics:
    """Counters of the extract DoFn (one instance per DoFn instance, made in ``setup``).
    Per-domain outcomes go to the process's :data:`DOMAIN_OUTCOMES` (not Beam counters:
    see :mod:`copydesk.transforms.stage_metrics`)."""

    def __init__(self, *, short_chars: int = 250, domains: DomainOutcomes = DOMAIN_OUTCOMES) -> None:
        from apache_beam.metrics import Metrics

        self.short_chars = short_chars
        self.counters = CounterSet(EXTRACT_NS)
        self.domains = domains
        self.time_ms = Metrics.distribution(EXTRACT_NS, "extract_time_ms")

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
        self.domains.add(domain, outcome)
