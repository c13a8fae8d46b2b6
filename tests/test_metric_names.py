"""Each Beam metric name has one home, a constant beside its stage's metrics, and the
exporter's table agrees with the stages: every Beam name it maps is one a stage declares,
and the stages name their metrics only through those constants."""

from __future__ import annotations

import ast
from pathlib import Path

from copydesk.pipelines import metrics as exporter
from copydesk.transforms import stage_metrics
from copydesk.transforms.dedup import metrics as dedup
from copydesk.transforms.extract import metrics as extract
from copydesk.transforms.fetch import metrics as fetch
from copydesk.transforms.kafka import metrics as kafka
from copydesk.transforms.parse import metrics as parse

ROOT = Path(__file__).resolve().parents[1]
DECLARED = (kafka.READ_DECLARED, kafka.COMMIT_DECLARED, parse.DECLARED, fetch.DECLARED, extract.DECLARED,
            extract.DOMAIN_DECLARED, dedup.DECLARED, stage_metrics.WRITE_DECLARED)
MAKERS = {"counter", "distribution", "gauge"}  # Metrics.counter(ns, name) ...


def _declared_names() -> set[tuple[str, str]]:
    return {(d.namespace, n) for d in DECLARED for n in d.names()}


def _declared_families() -> set[tuple[str, str]]:
    return {(d.namespace, f) for d in DECLARED for f in d.families}


def test_every_name_the_exporter_maps_is_declared_by_a_stage() -> None:
    unknown = sorted(exporter.MAPPED_NAMES - _declared_names())
    assert not unknown, f"the exporter maps Beam metrics no stage declares: {unknown}"
    unknown = sorted(exporter.MAPPED_FAMILIES - _declared_families())
    assert not unknown, f"the exporter maps counter families no stage declares: {unknown}"


def test_every_declared_family_is_mapped_or_left_to_the_generic_name() -> None:
    # a family the exporter does not map is exported under generic names, one per member;
    # only the dedup stage's fingerprint reader is meant to be (its counters are few)
    left = _declared_families() - exporter.MAPPED_FAMILIES
    assert left == {(dedup.DEDUP_NS, dedup.FINGERPRINT_READ_PREFIX + "_"),
                    (stage_metrics.WRITE_NS, stage_metrics.RECORDS_WRITTEN_PREFIX)}, left


def test_the_documented_stage_counters_come_from_declared_names() -> None:
    # the exported names of the table are documented (METRICS), and their sources declared
    for key, name in {**exporter._COUNTERS, **exporter._MS_COUNTERS, **exporter._GAUGES}.items():
        assert name in exporter.SPECS, name
        assert key in _declared_names(), key
    for key, (name, _scale, max_name) in exporter._DISTRIBUTIONS.items():
        assert name in exporter.SPECS and (max_name is None or max_name in exporter.SPECS), name
    for name in exporter.LIVE_GAUGES:
        assert exporter.SPECS[name].type == "gauge", name


def _literal_names(source: str, label: str) -> list[str]:
    """Metric names written as string literals where a metric is made or counted."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, args = node.func.attr, node.args
        if attr in MAKERS and isinstance(node.func.value, ast.Name) and node.func.value.id == "Metrics":
            named = args[:2]
        elif attr == "inc" and args and isinstance(node.func.value, ast.Attribute) and \
                node.func.value.attr in ("counters", "domains", "by_name"):
            named = args[:1]  # CounterSet.inc(name)
        else:
            continue
        if any(isinstance(a, ast.Constant) and isinstance(a.value, str)
               or isinstance(a, ast.JoinedStr) and a.values and isinstance(a.values[0], ast.Constant) for a in named):
            bad.append(f"{label}:{node.lineno}")
    return bad


def test_stages_name_their_metrics_through_the_constants() -> None:
    bad = [hit for path in sorted((ROOT / "transforms").rglob("*.py"))
           for hit in _literal_names(path.read_text("utf-8"), str(path.relative_to(ROOT)))]
    assert not bad, "metric names written as literals (use the stage's metrics constants):\n" + "\n".join(bad)


def test_the_literal_check_finds_literals() -> None:
    source = ('Metrics.counter("copydesk.fetch", "fetch_pages")\nself.counters.inc(f"dead_{r}")\n'
              'Metrics.gauge(NS, NAME)\nself.by_name.inc(PREFIX + r)\n')
    assert _literal_names(source, "x") == ["x:1", "x:2"]
