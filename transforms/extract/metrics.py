"""Beam metrics of the extract stage: their names (the one home of each; the exporter,
``pipelines/metrics.py``, imports them) and ``ExtractMetrics``, which makes them.

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
    process, which the exporter reads; the exporter still reads such counters where a
    runner reports them (the names below stay declared for that).
"""

from __future__ import annotations

import threading

from copydesk.transforms.stage_metrics import CounterSet, Declared

EXTRACT_NS = "copydesk.extract"
EXTRACT_DOMAIN_NS = "copydesk.extract_domain"
PAGES_IN = "pages_in"
ARTICLES_OUT = "articles_out"
SHORT_ARTICLES = "short_articles"
DEAD = "dead"  # the sum of the dead_<reason> counters
DEAD_PREFIX = "dead_"  # + the dead letter's reason
EXTRACT_TIME_MS = "extract_time_ms"
OTHER_DOMAIN = "_other"
OUTCOMES = ("ok", "short", "empty", "error")
BAD_OUTCOMES = ("short", "empty", "error")  # what counts against a domain's extraction health

DECLARED = Declared(EXTRACT_NS, counters=(PAGES_IN, ARTICLES_OUT, SHORT_ARTICLES, DEAD),
                    distributions=(EXTRACT_TIME_MS,), families=(DEAD_PREFIX,))
DOMAIN_DECLARED = Declared(EXTRACT_DOMAIN_NS, families=tuple(f"{o}:" for o in OUTCOMES))


def domain_counter(outcome: str, domain: str) -> str:
    """The per-domain outcome counter name (namespace ``copydesk.extract_domain``), as a
    runner that reports such counters names them."""
    return f"{outcome}:{domain}"


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


class ExtractMetrics:
    """Counters of the extract DoFn (one instance per DoFn instance, made in ``setup``).
    Per-domain outcomes go to the process's :data:`DOMAIN_OUTCOMES`, not Beam counters."""

    def __init__(self, *, short_chars: int = 250, domains: DomainOutcomes = DOMAIN_OUTCOMES) -> None:
        from apache_beam.metrics import Metrics

        self.short_chars = short_chars
        self.counters = CounterSet(EXTRACT_NS)
        self.domains = domains
        self.time_ms = Metrics.distribution(EXTRACT_NS, EXTRACT_TIME_MS)

    def pages(self, n: int) -> None:
        self.counters.inc(PAGES_IN, n)

    def seconds(self, value: float | None) -> None:
        if value is not None and value >= 0:
            self.time_ms.update(int(round(value * 1000)))

    def article(self, domain: str, text: str | None) -> None:
        self.counters.inc(ARTICLES_OUT)
        short = len(text or "") < self.short_chars
        if short:
            self.counters.inc(SHORT_ARTICLES)
        self._domain(domain, "short" if short else "ok")

    def dead(self, domain: str, reason: str) -> None:
        self.counters.inc(DEAD)
        self.counters.inc(DEAD_PREFIX + reason)
        self._domain(domain, "empty" if reason == "empty" else "error")

    def _domain(self, domain: str, outcome: str) -> None:
        self.domains.add(domain, outcome)
