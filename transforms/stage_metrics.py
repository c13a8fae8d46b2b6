"""What the stages' Beam metrics share (a leaf module, no Beam import): the counter helper
``CounterSet``, the ``Declared`` list each stage gives of its metric names, the names of
the write step (spread over ``files.py``, ``encode.py`` and ``kafka/io.py``), and the log
fields of a record.

Each stage's metric names live beside its metrics, as constants with a ``DECLARED`` list:
``kafka/metrics.py`` (read, commit), ``parse/metrics.py``, ``fetch/metrics.py``,
``extract/metrics.py``, ``dedup/metrics.py``, and ``WRITE_DECLARED`` here. Names are
stable: the exporter (``pipelines/metrics.py``) imports the constants to map them to
Prometheus names, ``docs/metrics.md`` lists them, and ``tests/test_metric_names.py``
checks that the stages name their metrics only through these constants and that every
Beam name the exporter maps is one a stage declares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Beam is imported where counters are made, not here: the constants of this module are also
# read by the exporter (pipelines/metrics.py), which `copydesk top` imports without Beam.

WRITE_NS = "copydesk.write"
RECORDS_WRITTEN_PREFIX = "records_written_"  # + the topic: records a Kafka sink wrote
FILE_RECORDS_WRITTEN = "file_records_written"  # records the file sinks wrote
ENCODE_FAILURES = "encode_failures"  # records that became dead letters because they could not be encoded


@dataclass(frozen=True)
class Declared:
    """The Beam metrics one stage makes: plain names, and ``families`` -- name prefixes of
    counters that end in a reason, kind or status (``fetch_dead_<reason>``)."""

    namespace: str
    counters: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()
    gauges: tuple[str, ...] = ()
    families: tuple[str, ...] = ()

    def names(self) -> set[str]:
        return {*self.counters, *self.distributions, *self.gauges}


def records_written(topic: str) -> str:
    """The write counter of the Kafka sink of ``topic``."""
    return RECORDS_WRITTEN_PREFIX + topic


WRITE_DECLARED = Declared(WRITE_NS, counters=(FILE_RECORDS_WRITTEN, ENCODE_FAILURES),
                          families=(RECORDS_WRITTEN_PREFIX,))


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
