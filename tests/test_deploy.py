"""deploy/ checked statically (no Docker engine, Kubernetes or Flink here): Prometheus config
and alert rules (with promtool when installed), the Grafana dashboard's panels and that every
query names only metrics the exporter serves, provisioning, compose, Dockerfile, manifests,
and that docs/metrics.md documents every exported metric."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from copydesk.pipelines.metrics import METRICS, Exporter, RunMetrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMQL_BUILTINS = {"up"}  # series Prometheus itself adds per target


def _served_names() -> set[str]:
    """Sample names the exporter's registry serves after a run with every kind of data."""
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client import generate_latest

    e = Exporter(output_topics={"records": "out", "dead_letters": "dead"})
    e.add_run(RunMetrics(
        {("copydesk.read", "kafka_records_read"): 3, ("copydesk.fetch", "fetch_dead_timeout"): 1,
         ("copydesk.fetch", "fetch_status_2xx"): 2, ("copydesk.write", "records_written_out"): 2,
         ("copydesk.write", "records_written_dead"): 1, ("copydesk.extract", "dead_empty"): 1,
         ("copydesk.fetch", "fetch_backoff_ms"): 700, ("copydesk.fetch", "fetch_retry_after_ms"): 2000,
         ("copydesk.extract_domain", "ok:a.example"): 2, ("copydesk.extract_domain", "empty:b.example"): 1},
        {("copydesk.fetch", "fetch_latency_ms"): (2, 100.0, 40.0, 60.0),
         ("copydesk.extract", "extract_time_ms"): (2, 300.0, 100.0, 200.0)},
        {("copydesk.fetch", "fetch_in_flight_peak"): 2.0, ("copydesk.commit", "pending_ack_ranges"): 0.0,
         ("copydesk.fetch", "fetch_circuit_open_hosts"): 0.0}), 1.0)
    e.on_broker(True, 0)  # broker state (pipelines/broker_faults.py), set by run_job's on_broker hook
    e._set("copydesk_consumer_lag", 1, topic="urls", partition="0")
    e._set("copydesk_consumer_end_offset", 1, topic="urls", partition="0")
    e._set("copydesk_consumer_committed_offset", 0, topic="urls", partition="0")
    text = generate_latest(e.registry).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def _documented_names() -> set[str]:
    out = set()
    for m in METRICS:
        out |= {m.name + "_sum", m.name + "_count"} if m.type == "summary" else {m.name}
    return out


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    return set(re.findall(r"\bcopydesk_[a-z0-9_]+\b", expr))


def test_served_equals_documented():
    assert _served_names() == _documented_names()


# -- Prometheus -----------------------------------------------------------------------------


def _rules() -> list[dict]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_alert_rules_structure_and_names():
    rules = _rules()
    names = {r["alert"] for r in rules}
    assert {"CopydeskStalled", "CopydeskLagGrowing", "CopydeskDeadLetterRateHigh", "CopydeskDomainExtractionBroken"} <= names
    domain = next(r for r in rules if r["alert"] == "CopydeskDomainExtractionBroken")
    assert {"copydesk_domain_extraction_bad_ratio", "copydesk_domain_extractions"} <= _metric_names(domain["expr"])
    served = _served_names()
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning")
        assert r["annotations"]["summary"]
        used = _metric_names(r["expr"])
        assert used or "up{" in r["expr"], r["alert"]
        assert used <= served, (r["alert"], used - served)


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (Debian package `prometheus`): rules checked only by YAML structure")
def test_promtool_check_rules_and_config():
    for args in (["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                 ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")]):
        res = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "SUCCESS" in res.stdout + res.stderr


def test_scrape_config_targets_the_metrics_port():
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "copydesk")
    assert job["static_configs"][0]["targets"] == ["copydesk:9108"]
    assert "alerts.yml" in cfg["rule_files"]


# -- Grafana ----------------------------------------------------------------------------------


def _dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "copydesk.json").read_text())


def test_dashboard_panels_and_queries():
    d = _dashboard()
    titles = [p["title"].lower() for p in d["panels"]]
    for want in ("throughput per stage", "lag", "latency", "errors by reason", "top failing", "dead-letter ratio",
                 "bytes fetched", "in-flight", "dedup ratio", "extraction time", "top failing domains", "backoff"):
        assert any(want in t for t in titles), (want, titles)
    served = _served_names()
    ids = set()
    for p in d["panels"]:
        assert p["id"] not in ids
        ids.add(p["id"])
        assert p["datasource"]["uid"] == "copydesk-prometheus"
        assert p["targets"], p["title"]
        for t in p["targets"]:
            used = _metric_names(t["expr"])
            assert used, (p["title"], t["expr"])
            assert used <= served, (p["title"], used - served)
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
    throughput = next(p for p in d["panels"] if "throughput" in p["title"].lower())
    assert "copydesk_stage_records_total" in throughput["targets"][0]["expr"]
    lag = next(p for p in d["panels"] if "lag" in p["title"].lower())
    assert any("copydesk_consumer_lag" in t["expr"] for t in lag["targets"])


def test_grafana_provisioning_matches_compose():
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == "copydesk-prometheus" and source["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "copydesk.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


# -- compose, Dockerfile, manifests -------------------------------------------------------------


def test_compose_stack():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    svc = compose["services"]
    assert {"kafka", "copydesk", "prometheus", "grafana"} <= set(svc)
    assert svc["copydesk"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "--metrics-port=9108" in svc["copydesk"]["command"]
    assert svc["copydesk"]["command"][0] == "run"
    for name, s in svc.items():  # every bind mount exists in the repository
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), (name, v)
    assert "./prometheus:/etc/prometheus:ro" in svc["prometheus"]["volumes"]


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "pip install ." in text
    for d in ("pipelines", "transforms", "schemas"):
        assert f"COPY {d} ./{d}" in text and (ROOT / d).is_dir()
    assert 'ENTRYPOINT ["copydesk"]' in text


def test_kubernetes_and_flink_manifests():
    docs = []
    for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Job"} <= kinds
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]
    job = next(d for d in docs if d["kind"] == "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--runner=FlinkRunner" in args and any(a.startswith("--flink_master=") for a in args)
    assert "FlinkRunner" in (DEPLOY / "flink" / "README.md").read_text()


# -- docs -----------------------------------------------------------------------------------------


def test_docs_table_lists_every_metric():
    text = (ROOT / "docs" / "metrics.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\| `(copydesk_[a-z0-9_]+)` \|", text, re.M)}
    assert rows == {m.name for m in METRICS}
