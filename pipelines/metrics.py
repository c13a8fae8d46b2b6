"""Prometheus exporter for the local runner (``copydesk run --metrics-port PORT``).

On the local runner the job is a sequence of bounded Beam runs (see ``runner.py``). After
each run :meth:`Exporter.on_run` reads that run's Beam metrics (counters, distributions,
gauges), adds them into cumulative Prometheus metrics, and measures the consumer lag of the
input topic(s) for the job's group with kafka-python. A ``prometheus_client`` HTTP server
serves them. On Flink/Dataflow the same Beam metrics show up in the runner's own UI and
metric reporters; this exporter is for the local runner only.

Every exported metric is listed in :data:`METRICS` (name, type, labels, meaning) — the one
table that ``docs/metrics.md``, the Grafana dashboard and the alert rules are checked
against. A Beam counter this module does not know (e.g. one a stage adds later) is still
exported, as ``copydesk_<stage>_<name>_total`` (stage = the Beam namespace without
``copydesk.``), so nothing a stage counts is lost; such names are not in the table. The Beam
names are the stages' own constants (``transforms/<stage>/metrics.py``; the write names in
``transforms/stage_metrics.py``), imported here, never retyped. Gauges read at scrape time
instead of after a run are the exporter's ``live`` gauges, given to it explicitly
(:data:`LIVE_GAUGES` by default: the fetch stage's ``IN_FLIGHT`` count).

Limits (documented in docs/metrics.md):
- Beam distributions carry only count/sum/min/max, so latencies are exported as summaries
  (``_sum``/``_count``, mean = rate(sum)/rate(count)) plus a last-run max gauge, not as
  histograms with buckets.
- Lag = end offset - committed offset per partition. On Tansu the end offset points at the
  start of the last record batch, so lag is under-reported by up to one batch there.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from copydesk.transforms.dedup import metrics as dm
from copydesk.transforms.extract import metrics as em
from copydesk.transforms.extract.metrics import BAD_OUTCOMES, EXTRACT_DOMAIN_NS, OTHER_DOMAIN
from copydesk.transforms.fetch import metrics as fm
from copydesk.transforms.kafka import metrics as km
from copydesk.transforms.parse import metrics as pm
from copydesk.transforms.stage_metrics import FILE_RECORDS_WRITTEN, RECORDS_WRITTEN_PREFIX, WRITE_NS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: str  # counter | gauge | summary
    labels: tuple[str, ...]
    help: str


METRICS: tuple[MetricSpec, ...] = (
    # job
    MetricSpec("copydesk_runs_total", "counter", (), "micro-batch Beam runs finished (local runner)"),
    MetricSpec("copydesk_last_run_timestamp_seconds", "gauge", (), "unix time the last run finished"),
    MetricSpec("copydesk_run_duration_seconds", "summary", (), "wall time of each run"),
    MetricSpec("copydesk_last_run_duration_seconds", "gauge", (), "wall time of the last run"),
    MetricSpec("copydesk_last_run_records_read", "gauge", (), "messages the last run read (0 = idle)"),
    # per stage, derived from the stage counters below
    MetricSpec("copydesk_stage_records_total", "counter", ("stage", "direction"),
               "records into (direction=in) and out of (direction=out) each stage: read, parse, fetch, extract, "
               "dedup, write"),
    # read
    MetricSpec("copydesk_read_records_total", "counter", (), "Kafka messages read"),
    MetricSpec("copydesk_read_bytes_total", "counter", (), "Kafka message bytes read"),
    MetricSpec("copydesk_read_idle_polls_total", "counter", (), "reader polls that returned nothing"),
    # parse
    MetricSpec("copydesk_parse_messages_parsed_total", "counter", (), "messages parsed into a URL"),
    MetricSpec("copydesk_parse_messages_rejected_total", "counter", (), "messages rejected (dead letters of the parse stage)"),
    # fetch
    MetricSpec("copydesk_fetch_pages_total", "counter", (), "pages fetched (HTTP response received and accepted)"),
    MetricSpec("copydesk_fetch_prescraped_total", "counter", (), "messages that carried their HTML (no fetch)"),
    MetricSpec("copydesk_fetch_dead_letters_total", "counter", ("reason",), "fetch failures by reason (dead letters)"),
    MetricSpec("copydesk_fetch_responses_total", "counter", ("status_class",),
               "fetch results by HTTP status class (2xx, 3xx, 4xx, 5xx, none = no response)"),
    MetricSpec("copydesk_fetch_bytes_total", "counter", (), "page body bytes fetched"),
    MetricSpec("copydesk_fetch_latency_seconds", "summary", (), "fetch time per page (Beam distribution: sum/count)"),
    MetricSpec("copydesk_fetch_latency_max_seconds", "gauge", (), "slowest fetch of the last run"),
    MetricSpec("copydesk_fetch_attempts", "summary", (), "attempts per failed fetch"),
    MetricSpec("copydesk_fetch_batch_size", "summary", (), "messages per concurrent fetch batch"),
    MetricSpec("copydesk_fetch_in_flight_peak", "gauge", (), "peak concurrent requests in the last run"),
    MetricSpec("copydesk_fetch_in_flight", "gauge", (),
               "requests in flight now (read live at scrape time; local runner, where the fetchers run in the "
               "job's process)"),
    MetricSpec("copydesk_fetch_backoff_waits_total", "counter", (),
               "retry backoff sleeps (after a timeout, connection error, 429 or 5xx)"),
    MetricSpec("copydesk_fetch_backoff_seconds_total", "counter", (), "seconds slept in retry backoff"),
    MetricSpec("copydesk_fetch_retry_after_waits_total", "counter", (),
               "Retry-After answers that pushed a host's next request out"),
    MetricSpec("copydesk_fetch_retry_after_seconds_total", "counter", (),
               "seconds hosts' next requests were pushed out by Retry-After"),
    MetricSpec("copydesk_fetch_circuit_opened_total", "counter", (),
               "host circuits opened (consecutive failures reached, or the half-open probe failed)"),
    MetricSpec("copydesk_fetch_circuit_open_hosts", "gauge", (), "hosts whose circuit was open at the end of the last run"),
    # extract
    MetricSpec("copydesk_extract_pages_total", "counter", (), "pages into extraction"),
    MetricSpec("copydesk_extract_articles_total", "counter", (), "article records extracted"),
    MetricSpec("copydesk_extract_short_articles_total", "counter", (),
               "articles with very short text (under 250 characters)"),
    MetricSpec("copydesk_extract_dead_letters_total", "counter", ("reason",),
               "extraction failures by reason (empty, extract_timeout, extract_crash, extract_error, too_large)"),
    MetricSpec("copydesk_extract_duration_seconds", "summary", (),
               "extraction time per page on the worker pool (Beam distribution: sum/count)"),
    MetricSpec("copydesk_extract_duration_max_seconds", "gauge", (), "slowest extraction of the last run"),
    # per source domain, over a sliding window kept by the exporter (DomainHealth)
    MetricSpec("copydesk_domain_extraction_bad_ratio", "gauge", ("domain",),
               "share of the domain's last extractions (window) that were empty, very short or failed; "
               "top domains by bad count only"),
    MetricSpec("copydesk_domain_extractions", "gauge", ("domain",),
               "extractions of the domain in the window (the ratio's sample size)"),
    MetricSpec("copydesk_domains_tracked", "gauge", (), "source domains in the extraction-health window"),
    # dedup
    MetricSpec("copydesk_dedup_records_total", "counter", (), "records into the dedup stage"),
    MetricSpec("copydesk_dedup_dropped_total", "counter", (), "duplicates dropped (with drop_duplicates)"),
    MetricSpec("copydesk_dedup_duplicates_total", "counter", ("kind",),
               "records marked as copies, by kind (exact_url, update, exact, near)"),
    MetricSpec("copydesk_dedup_canonical_records_total", "counter", (), "records that are their cluster's canonical"),
    MetricSpec("copydesk_dedup_new_clusters_total", "counter", (), "records that started a new story cluster"),
    # write
    MetricSpec("copydesk_write_records_total", "counter", ("topic", "kind"),
               "records written per output (kind = records | dead_letters | raw_pages | other; topic=file for files)"),
    MetricSpec("copydesk_dead_letters_total", "counter", (), "dead letters written, all stages"),
    # commit
    MetricSpec("copydesk_commit_offset_commits_total", "counter", (), "offset commits"),
    MetricSpec("copydesk_commit_errors_total", "counter", (), "failed offset commits"),
    MetricSpec("copydesk_commit_pending_ack_ranges", "gauge", (), "acknowledged offset ranges not yet committable"),
    # lag
    MetricSpec("copydesk_consumer_lag", "gauge", ("topic", "partition"),
               "end offset - committed offset of the job's group (Tansu: up to one batch low)"),
    MetricSpec("copydesk_consumer_end_offset", "gauge", ("topic", "partition"), "partition end offset"),
    MetricSpec("copydesk_consumer_committed_offset", "gauge", ("topic", "partition"), "group's committed offset"),
    MetricSpec("copydesk_consumer_lag_errors_total", "counter", (), "failed lag measurements"),
    # broker (pipelines/broker_faults.py)
    MetricSpec("copydesk_broker_up", "gauge", (), "1 while the broker answers, 0 during an outage (local runner)"),
    MetricSpec("copydesk_broker_errors_total", "counter", (),
               "micro-batch runs that failed because of the broker (each is run again once it answers)"),
)

SPECS = {m.name: m for m in METRICS}

# The Beam names below are the stages' constants (each stage's metrics module is their one
# home); tests/test_metric_names.py checks that every one is a name a stage declares.
# Beam (namespace, name) -> exported name, for plain counters.
_COUNTERS = {
    (km.READ_NS, km.INPUT_RECORDS_READ): "copydesk_read_records_total",
    (km.READ_NS, km.INPUT_BYTES_READ): "copydesk_read_bytes_total",
    (km.READ_NS, km.INPUT_IDLE_POLLS): "copydesk_read_idle_polls_total",
    (pm.PARSE_NS, pm.MESSAGES_PARSED): "copydesk_parse_messages_parsed_total",
    (pm.PARSE_NS, pm.MESSAGES_REJECTED): "copydesk_parse_messages_rejected_total",
    (fm.FETCH_NS, fm.PAGES): "copydesk_fetch_pages_total",
    (fm.FETCH_NS, fm.PRESCRAPED): "copydesk_fetch_prescraped_total",
    (fm.FETCH_NS, fm.BYTES): "copydesk_fetch_bytes_total",
    (km.COMMIT_NS, km.OFFSET_COMMITS): "copydesk_commit_offset_commits_total",
    (km.COMMIT_NS, km.OFFSET_COMMIT_ERRORS): "copydesk_commit_errors_total",
    (fm.FETCH_NS, fm.BACKOFF_WAITS): "copydesk_fetch_backoff_waits_total",
    (fm.FETCH_NS, fm.RETRY_AFTER_WAITS): "copydesk_fetch_retry_after_waits_total",
    (fm.FETCH_NS, fm.CIRCUIT_OPENED): "copydesk_fetch_circuit_opened_total",
    (em.EXTRACT_NS, em.PAGES_IN): "copydesk_extract_pages_total",
    (em.EXTRACT_NS, em.ARTICLES_OUT): "copydesk_extract_articles_total",
    (em.EXTRACT_NS, em.SHORT_ARTICLES): "copydesk_extract_short_articles_total",
    (dm.DEDUP_NS, dm.RECORDS_IN): "copydesk_dedup_records_total",
    (dm.DEDUP_NS, dm.RECORDS_DROPPED): "copydesk_dedup_dropped_total",
    (dm.DEDUP_NS, dm.CANONICAL_RECORDS): "copydesk_dedup_canonical_records_total",
    (dm.DEDUP_NS, dm.NEW_CLUSTERS): "copydesk_dedup_new_clusters_total",
}
# Beam counters in milliseconds -> exported counters in seconds
_MS_COUNTERS = {
    (fm.FETCH_NS, fm.BACKOFF_MS): "copydesk_fetch_backoff_seconds_total",
    (fm.FETCH_NS, fm.RETRY_AFTER_MS): "copydesk_fetch_retry_after_seconds_total",
}
# fetch_dead / dead: the sums of the by-reason counters; records_out: in stage_records_total
_SKIP = {(fm.FETCH_NS, fm.DEAD), (em.EXTRACT_NS, em.DEAD), (dm.DEDUP_NS, dm.RECORDS_OUT)}
# Counter families (namespace, name prefix) -> (exported counter, the label the rest of the name is)
_FAMILIES = {
    (em.EXTRACT_NS, em.DEAD_PREFIX): ("copydesk_extract_dead_letters_total", "reason"),
    (dm.DEDUP_NS, dm.DUPLICATES_PREFIX): ("copydesk_dedup_duplicates_total", "kind"),
    (fm.FETCH_NS, fm.DEAD_PREFIX): ("copydesk_fetch_dead_letters_total", "reason"),
    (fm.FETCH_NS, fm.STATUS_PREFIX): ("copydesk_fetch_responses_total", "status_class"),
}
# Beam distribution -> (exported summary name, scale to base unit, max gauge or None)
_DISTRIBUTIONS = {
    (fm.FETCH_NS, fm.LATENCY_MS): ("copydesk_fetch_latency_seconds", 1e-3, "copydesk_fetch_latency_max_seconds"),
    (fm.FETCH_NS, fm.ATTEMPTS): ("copydesk_fetch_attempts", 1.0, None),
    (fm.FETCH_NS, fm.BATCH_SIZE): ("copydesk_fetch_batch_size", 1.0, None),
    (em.EXTRACT_NS, em.EXTRACT_TIME_MS): ("copydesk_extract_duration_seconds", 1e-3,
                                          "copydesk_extract_duration_max_seconds"),
}
_GAUGES = {
    (fm.FETCH_NS, fm.IN_FLIGHT_PEAK): "copydesk_fetch_in_flight_peak",
    (fm.FETCH_NS, fm.CIRCUIT_OPEN_HOSTS): "copydesk_fetch_circuit_open_hosts",
    (km.COMMIT_NS, km.PENDING_ACK_RANGES): "copydesk_commit_pending_ack_ranges",
}
# Gauges read live at scrape time rather than after a run: exported name -> a function that
# returns the value now. The fetch stage's count of requests in flight in this process
# (transforms/fetch/metrics.py, IN_FLIGHT) is the one; an Exporter may be given others.
LIVE_GAUGES: dict[str, Callable[[], float]] = {
    "copydesk_fetch_in_flight": fm.IN_FLIGHT.now,
}

# Every Beam (namespace, name) the exporter maps, and the families: what the test checks
# against the stages' declarations.
MAPPED_NAMES = {*_COUNTERS, *_MS_COUNTERS, *_SKIP, *_DISTRIBUTIONS, *_GAUGES}
MAPPED_FAMILIES = set(_FAMILIES) | {(em.EXTRACT_DOMAIN_NS, f"{o}:") for o in em.OUTCOMES}

def _snake(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text).strip("_").lower() or "x"


def _family(ns: str, name: str) -> tuple[str, str, str] | None:
    """(exported counter, label, label value) of a counter in one of the :data:`_FAMILIES`."""
    for (fns, prefix), (exported, label) in _FAMILIES.items():
        if ns == fns and name.startswith(prefix):
            return exported, label, name.removeprefix(prefix)
    return None


def generic_counter_name(namespace: str, name: str) -> str:
    stage = _snake(namespace.removeprefix("copydesk."))
    return f"copydesk_{stage}_{_snake(name).removeprefix(stage + '_')}_total"


@dataclass
class RunMetrics:
    counters: dict[tuple[str, str], int]
    distributions: dict[tuple[str, str], tuple[int, float, float, float]]  # count, sum, min, max
    gauges: dict[tuple[str, str], float]


def query_metrics(result: Any) -> RunMetrics:
    """This run's Beam metrics by (namespace, name), committed values where present."""
    out = RunMetrics({}, {}, {})
    try:
        q = result.metrics().query()
    except Exception:  # a report, not a correctness matter
        log.debug("no metrics from the run", exc_info=True)
        return out
    for c in q.get("counters", []):
        key = (c.key.metric.namespace, c.key.metric.name)
        out.counters[key] = out.counters.get(key, 0) + int(c.committed or c.attempted or 0)
    for d in q.get("distributions", []):
        v = d.committed or d.attempted
        if v is None or not v.count:
            continue
        key = (d.key.metric.namespace, d.key.metric.name)
        prev = out.distributions.get(key)
        if prev:
            out.distributions[key] = (prev[0] + v.count, prev[1] + v.sum, min(prev[2], v.min), max(prev[3], v.max))
        else:
            out.distributions[key] = (v.count, float(v.sum), float(v.min), float(v.max))
    for g in q.get("gauges", []):
        v = g.committed or g.attempted
        if v is None or v.value is None:
            continue
        key = (g.key.metric.namespace, g.key.metric.name)
        out.gauges[key] = max(out.gauges.get(key, float("-inf")), float(v.value))
    return out


class DomainHealth:
    """Extraction health per source domain over a sliding window, kept by the exporter.

    Fed after each run from the extract stage's per-domain outcome counters
    (``copydesk.extract_domain``, names ``<outcome>:<domain>``, outcome ok | short | empty |
    error). Each domain keeps its last ``window`` outcomes (a count window, not a time
    window: a site publishing a few pages an hour still gathers enough evidence, and a
    layout change shows once half of its newest pages come out bad); a domain with no page
    for ``idle_seconds`` is forgotten, and at most ``max_domains`` are kept (the least
    recently seen go first). Within one run the order of a domain's outcomes is unknown,
    so they enter the window interleaved in proportion.

    Only the ``top_k`` domains by bad count (then bad ratio, then volume) are exported, so
    the series count stays bounded however many sites the input carries.
    """

    def __init__(self, *, window: int = 50, top_k: int = 20, idle_seconds: float = 86400.0,
                 max_domains: int = 10_000) -> None:
        self.window = window
        self.top_k = top_k
        self.idle_seconds = idle_seconds
        self.max_domains = max_domains
        self._domains: dict[str, Any] = {}  # domain -> deque of bools (True = bad)
        self._seen: dict[str, float] = {}

    def feed(self, outcomes: dict[str, dict[str, int]], now: float | None = None) -> None:
        """``outcomes``: domain -> {outcome: count} of one run."""
        now = time.time() if now is None else now
        for domain, counts in outcomes.items():
            bad = sum(v for k, v in counts.items() if k in BAD_OUTCOMES)
            good = sum(v for k, v in counts.items() if k not in BAD_OUTCOMES)
            n = bad + good
            if n <= 0:
                continue
            if n > self.window:  # only the last `window` can stay: keep the run's proportion
                bad = round(bad * self.window / n)
                good = self.window - bad
                n = self.window
            dq = self._domains.get(domain)
            if dq is None:
                dq = self._domains[domain] = deque(maxlen=self.window)
            # interleave evenly: the i-th outcome is bad when the running share falls behind
            placed = 0
            for i in range(1, n + 1):
                is_bad = placed < bad and placed * n < bad * i
                placed += is_bad
                dq.append(is_bad)
            self._seen[domain] = now
        for domain in [d for d, t in self._seen.items() if now - t > self.idle_seconds]:
            self._domains.pop(domain, None)
            self._seen.pop(domain, None)
        if len(self._domains) > self.max_domains:
            for domain in sorted(self._seen, key=self._seen.get)[: len(self._domains) - self.max_domains]:
                self._domains.pop(domain, None)
                self._seen.pop(domain, None)

    def tracked(self) -> int:
        return len(self._domains)

    def top(self) -> list[tuple[str, int, int]]:
        """``(domain, bad, total)`` of the ``top_k`` domains by bad count, bad ratio, volume."""
        rows = [(d, sum(dq), len(dq)) for d, dq in self._domains.items() if dq and d != OTHER_DOMAIN]
        rows.sort(key=lambda r: (-r[1], -(r[1] / r[2]), -r[2], r[0]))
        return rows[: self.top_k]


def domain_outcomes(counters: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """The per-domain outcome counters of one run: domain -> {outcome: count}."""
    out: dict[str, dict[str, int]] = {}
    for (ns, name), v in counters.items():
        if ns != EXTRACT_DOMAIN_NS or ":" not in name or not v:
            continue
        outcome, domain = name.split(":", 1)
        d = out.setdefault(domain, {})
        d[outcome] = d.get(outcome, 0) + int(v)
    return out


class LagProbe:
    """End offsets and the group's committed offsets of the input topics (kafka-python)."""

    def __init__(self, client_kwargs: dict[str, Any], group_id: str, topics: Iterable[str]) -> None:
        self.kwargs = client_kwargs
        self.group_id = group_id
        self.topics = [t for t in topics if t]
        self._consumer = None

    def measure(self) -> dict[tuple[str, int], tuple[int, int | None]]:
        from kafka import KafkaConsumer, TopicPartition

        if self._consumer is None:
            self._consumer = KafkaConsumer(group_id=self.group_id, enable_auto_commit=False, **self.kwargs)
        c = self._consumer
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(c.partitions_for_topic(t) or ())]
        ends = c.end_offsets(tps)
        out = {}
        for tp in tps:
            out[(tp.topic, tp.partition)] = (int(ends.get(tp, 0)), c.committed(tp))
        return out

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:
                pass
            self._consumer = None


class Exporter:
    """Cumulative Prometheus view of the per-run Beam metrics; ``on_run`` is runner's hook."""

    def __init__(self, *, output_topics: dict[str, str] | None = None, lag: LagProbe | None = None,
                 registry: Any = None, domains: DomainHealth | None = None,
                 live: dict[str, Callable[[], float]] | None = None) -> None:
        """``live``: gauges read at scrape time, exported name -> a function giving the value
        now (default :data:`LIVE_GAUGES`: the fetchers' requests in flight in this process)."""
        from prometheus_client import CollectorRegistry

        self.kinds = {t: k for k, t in (output_topics or {}).items() if t}
        self.lag = lag
        self.domains = domains if domains is not None else DomainHealth()
        self.live = dict(LIVE_GAUGES if live is None else live)
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._summaries: dict[str, list[float]] = {}  # name -> [count, sum]
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(self)
        self._server = None
        # Zero-valued series so the names exist before the first run.
        for spec in METRICS:
            if spec.type == "counter" and not spec.labels:
                self._counters[(spec.name, ())] = 0.0
            elif spec.type == "summary":
                self._summaries[spec.name] = [0.0, 0.0]
        for kind in dm.DUPLICATE_KINDS:  # so rate() and the dedup-ratio panel work before the first copy
            self._counters[("copydesk_dedup_duplicates_total", (("kind", kind),))] = 0.0
        self._set("copydesk_domains_tracked", 0)

    # -- updates ----------------------------------------------------------------------------

    def _inc(self, name: str, value: float, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self._counters[key] = self._counters.get(key, 0.0) + value

    def _set(self, name: str, value: float, **labels: str) -> None:
        self._gauges[(name, tuple(sorted(labels.items())))] = value

    def _observe(self, name: str, count: float, total: float) -> None:
        s = self._summaries.setdefault(name, [0.0, 0.0])
        s[0] += count
        s[1] += total

    def on_broker(self, up: bool, errors: int) -> None:
        """``run_job(on_broker=...)``: the broker's state (``broker_faults.BrokerWatch``)."""
        with self._lock:
            self._set("copydesk_broker_up", 1.0 if up else 0.0)
            self._counters[("copydesk_broker_errors_total", ())] = float(errors)

    def on_run(self, stats: Any) -> None:
        """``run_job(on_run=...)``: add the last run (``stats.last_result``) in, measure lag."""
        run = query_metrics(getattr(stats, "last_result", None))
        seconds = float(getattr(stats, "last_seconds", 0.0) or 0.0)
        lag = None
        if self.lag is not None:
            try:
                lag = self.lag.measure()
            except Exception as exc:
                log.warning("consumer lag measurement failed: %s", exc)
                self.lag.close()
        with self._lock:
            try:
                self.add_run(run, seconds)
            except Exception:  # metrics never stop the job
                log.exception("adding the run's metrics failed")
            if self.lag is not None and lag is None:
                self._inc("copydesk_consumer_lag_errors_total", 1)
            for (topic, part), (end, committed) in (lag or {}).items():
                labels = {"topic": topic, "partition": str(part)}
                self._set("copydesk_consumer_end_offset", end, **labels)
                if committed is None:  # nothing committed yet: everything is lag
                    committed_v = 0
                else:
                    committed_v = committed
                    self._set("copydesk_consumer_committed_offset", committed, **labels)
                self._set("copydesk_consumer_lag", max(0, end - committed_v), **labels)

    def add_run(self, run: RunMetrics, seconds: float) -> None:
        c = run.counters
        self._inc("copydesk_runs_total", 1)
        self._set("copydesk_last_run_timestamp_seconds", time.time())
        self._set("copydesk_last_run_duration_seconds", seconds)
        self._observe("copydesk_run_duration_seconds", 1, seconds)
        self._set("copydesk_last_run_records_read", c.get((km.READ_NS, km.INPUT_RECORDS_READ), 0))
        written_records = written_dead = 0
        for (ns, name), v in c.items():
            if (ns, name) in _SKIP:
                continue
            if (ns, name) in _COUNTERS:
                self._inc(_COUNTERS[(ns, name)], v)
            elif (ns, name) in _MS_COUNTERS:
                self._inc(_MS_COUNTERS[(ns, name)], v / 1000.0)
            elif ns == EXTRACT_DOMAIN_NS:
                continue  # per-domain outcomes: the sliding window below, not counters
            elif family := _family(ns, name):
                exported, label, rest = family
                self._inc(exported, v, **{label: rest})
            elif ns == WRITE_NS and (name.startswith(RECORDS_WRITTEN_PREFIX) or name == FILE_RECORDS_WRITTEN):
                topic = name.removeprefix(RECORDS_WRITTEN_PREFIX) if name != FILE_RECORDS_WRITTEN else "file"
                kind = self.kinds.get(topic, "other")
                self._inc("copydesk_write_records_total", v, topic=topic, kind=kind)
                if kind == "dead_letters":
                    written_dead += v
                    self._inc("copydesk_dead_letters_total", v)
                elif kind == "records" or topic == "file":
                    written_records += v
            else:
                self._inc(generic_counter_name(ns, name), v)
        for key, (count, total, _mn, mx) in run.distributions.items():
            if key in _DISTRIBUTIONS:
                name, scale, max_name = _DISTRIBUTIONS[key]
                self._observe(name, count, total * scale)
                if max_name:
                    self._set(max_name, mx * scale)
            else:
                ns, n = key
                self._observe(f"copydesk_{_snake(ns.removeprefix('copydesk.'))}_{_snake(n)}", count, total)
        for key, v in run.gauges.items():
            ns, n = key
            self._set(_GAUGES.get(key) or f"copydesk_{_snake(ns.removeprefix('copydesk.'))}_{_snake(n)}", v)
        # records in/out per stage
        g = lambda ns, n: c.get((ns, n), 0)  # noqa: E731
        read = g(km.READ_NS, km.INPUT_RECORDS_READ)
        parsed, rejected = g(pm.PARSE_NS, pm.MESSAGES_PARSED), g(pm.PARSE_NS, pm.MESSAGES_REJECTED)
        fetched = g(fm.FETCH_NS, fm.PAGES) + g(fm.FETCH_NS, fm.PRESCRAPED)
        fetch_dead = g(fm.FETCH_NS, fm.DEAD)
        for stage, direction, v in (("read", "out", read), ("parse", "in", parsed + rejected), ("parse", "out", parsed),
                                    ("fetch", "in", fetched + fetch_dead), ("fetch", "out", fetched),
                                    ("extract", "in", g(em.EXTRACT_NS, em.PAGES_IN)),
                                    ("extract", "out", g(em.EXTRACT_NS, em.ARTICLES_OUT)),
                                    ("dedup", "in", g(dm.DEDUP_NS, dm.RECORDS_IN)),
                                    ("dedup", "out", g(dm.DEDUP_NS, dm.RECORDS_OUT)),
                                    ("write", "out", written_records), ("write", "dead_letters", written_dead)):
            self._inc("copydesk_stage_records_total", v, stage=stage, direction=direction)
        # extraction health per domain: feed the window, export the top domains
        self.domains.feed(domain_outcomes(c))
        for key in [k for k in self._gauges if k[0] in ("copydesk_domain_extraction_bad_ratio",
                                                        "copydesk_domain_extractions")]:
            del self._gauges[key]
        for domain, bad, total in self.domains.top():
            self._set("copydesk_domain_extraction_bad_ratio", bad / total, domain=domain)
            self._set("copydesk_domain_extractions", total, domain=domain)
        self._set("copydesk_domains_tracked", self.domains.tracked())

    # -- prometheus_client collector -----------------------------------------------------------

    def describe(self):
        return []  # unchecked collector: the families are dynamic

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        with self._lock:
            counters = dict(self._counters)
            gauges = dict(self._gauges)
            summaries = {k: list(v) for k, v in self._summaries.items()}
        for name, read_now in self.live.items():
            try:
                gauges[(name, ())] = float(read_now())
            except Exception:  # metrics never stop the job
                log.debug("live gauge %s failed", name, exc_info=True)
        fams: dict[str, Any] = {}

        def help_of(name: str) -> str:
            spec = SPECS.get(name)
            return spec.help if spec else "Beam metric (not in the documented table)"

        for (name, labels), v in sorted(counters.items()):
            base = name.removesuffix("_total")
            fam = fams.get(name)
            if fam is None:
                fam = fams[name] = CounterMetricFamily(base, help_of(name), labels=[k for k, _ in labels])
            fam.add_metric([val for _, val in labels], v)
        for (name, labels), v in sorted(gauges.items()):
            fam = fams.get(name)
            if fam is None:
                fam = fams[name] = GaugeMetricFamily(name, help_of(name), labels=[k for k, _ in labels])
            fam.add_metric([val for _, val in labels], v)
        for name, (count, total) in sorted(summaries.items()):
            fams[name] = SummaryMetricFamily(name, help_of(name), count_value=count, sum_value=total)
        yield from fams.values()

    # -- server ---------------------------------------------------------------------------------

    def serve(self, port: int, addr: str = "0.0.0.0") -> "Exporter":
        from prometheus_client import start_http_server

        self._server = start_http_server(port, addr=addr, registry=self.registry)
        log.info("Prometheus metrics on http://%s:%d/metrics", addr, port)
        return self

    def close(self) -> None:
        if self._server is not None:
            server, _thread = self._server
            server.shutdown()
            server.server_close()
            self._server = None
        if self.lag is not None:
            self.lag.close()


def start_exporter(options: Any, port: int) -> Exporter:
    """The exporter for ``copydesk run``'s options, serving on ``port``."""
    from copydesk.pipelines.options import CopydeskOptions
    from copydesk.pipelines.pipeline import kafka_config

    o = options.view_as(CopydeskOptions)
    lag = None
    kc = kafka_config(o)
    if kc is not None and o.input_topic:
        lag = LagProbe(kc.kwargs(), o.group_id, o.input_topic.split(","))
    outputs = {"records": o.output_topic, "dead_letters": o.dead_letter_topic, "raw_pages": o.raw_pages_topic}
    return Exporter(output_topics=outputs, lag=lag).serve(port)


# -- copydesk top -------------------------------------------------------------------------------
