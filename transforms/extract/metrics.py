"""Beam metrics of the extract stage (names in :mod:`copydesk.transforms.stage_metrics`)."""

from __future__ import annotations

from copydesk.transforms.stage_metrics import EXTRACT_DOMAIN_NS, EXTRACT_NS, OTHER_DOMAIN, CounterSet


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
