"""Beam metrics of the extract stage: their names (the one home of each; the exporter,
``pipelines/metrics.py``, imports them) and ``ExtractMetrics``, which makes them.

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
"""

from __future__ import annotations

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
    """The per-domain outcome counter (namespace ``copydesk.extract_domain``)."""
    return f"{outcome}:{domain}"


class ExtractMetrics:
    """Counters of the extract DoFn (one instance per DoFn instance, made in ``setup``)."""

    def __init__(self, *, short_chars: int = 250, max_domains: int = 500) -> None:
        from apache_beam.metrics import Metrics

        self.short_chars = short_chars
        self.max_domains = max_domains
        self.counters = CounterSet(EXTRACT_NS)
        self.domains = CounterSet(EXTRACT_DOMAIN_NS)
        self.time_ms = Metrics.distribution(EXTRACT_NS, EXTRACT_TIME_MS)
        self._named: set[str] = set()

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
        domain = (domain or "").strip().lower() or "_unknown"
        if domain not in self._named:
            if len(self._named) >= self.max_domains:
                domain = OTHER_DOMAIN
            else:
                self._named.add(domain)
        self.domains.inc(domain_counter(outcome, domain))
