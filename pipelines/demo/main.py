"""``copydesk demo``: the whole path on real parts, on this machine, stopping by itself.

An embedded Kafka-protocol broker (Tansu) unless ``--bootstrap-servers`` is given, a local
site of sample news pages on 127.0.0.1 (five outlets, each under its own host name), their
URLs (plus a few bad messages) produced to the input topic, the pipeline run until the topic
is drained, and the clean records and a summary printed from the output topics.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid

import orjson

from copydesk.pipelines.demo.broker import EmbeddedBroker, create_topics
from copydesk.pipelines.demo.site import OUTLETS, SiteServer, site_root

log = logging.getLogger(__name__)


def demo_messages(site: SiteServer) -> list[bytes]:
    """The sample pages' URLs, one pre-scraped page, and a few messages that must fail."""
    paths = [line.strip() for line in (site_root() / "urls.txt").read_text().splitlines() if line.strip()]
    msgs: list[bytes] = []
    for i, path in enumerate(paths):
        url = site.outlet_url(path)
        if i % 2:  # half as plain strings, half as JSON with metadata
            msgs.append(url.encode())
        else:
            msgs.append(orjson.dumps({"url": url + "?utm_source=demo", "source": "demo-feed",
                                      "discovered_at": "2025-03-12T08:00:00Z"}))
    # A page that arrives already scraped: no fetch.
    base = site.outlet_url("/continental").rstrip("/")  # as the outlet serves it
    prescraped = site_root().joinpath(paths[0].lstrip("/")).read_text("utf-8").replace("{{BASE}}", base)
    msgs.append(orjson.dumps({"url": "https://example.org/archive/prescraped-copy.html", "html": prescraped,
                              "source": "archive"}))
    msgs += [
        site.outlet_url("/morning-ledger/no/such/page.html").encode(),  # 404 -> http_4xx
        b"ftp://files.example.org/story.txt",  # unsupported_scheme
        b"this is not a url",  # bad_url
        b'{"url": "http://127.0.0.1:9/unterminated"',  # malformed JSON
        b'{"source": "feed-without-url"}',  # no_url
    ]
    return msgs


def _consume_all(bootstrap: str, topic: str, expect_at_least: int = 0, timeout: float = 10.0) -> list[dict]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1500)
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(500)
            for records in batch.values():
                out.extend(orjson.loads(r.value) for r in records)
            if not batch and len(out) >= expect_at_least:
                break
    finally:
        consumer.close()
    return out


def _print_record(r: dict) -> None:
    wire = r.get("wire") or {}
    agencies = ", ".join(wire.get("agencies") or []) or "-"
    print("=" * 100)
    print(f"{r.get('title')}")
    print(f"  {r.get('source_domain')}  {r.get('canonical_url')}")
    print(f"  authors: {', '.join(r.get('authors') or []) or '-'}   published: {r.get('published_at') or '-'}"
          f"   language: {r.get('language') or '-'}")
    print(f"  wire: {agencies}" + (f"  ({wire.get('attribution')})" if wire.get("attribution") else "")
          + (f"  dateline: {wire.get('dateline')}" if wire.get("dateline") else ""))
    dup = "canonical" if r.get("is_canonical") else f"duplicate of {r.get('duplicate_of')} ({r.get('duplicate_kind')})"
    print(f"  cluster: {r.get('cluster_id')}  {dup}  outlets: {', '.join(r.get('cluster_outlets') or [])}")
    print(f"  id: {r.get('id')}  from {r.get('topic')}/{r.get('partition')}@{r.get('offset')}")
    print("  " + "-" * 60)
    text = r.get("text") or ""
    for para in text.split("\n")[:4]:
        print(f"  {para[:300]}")
    if text.count("\n") >= 4:
        print(f"  [... {len(text)} characters in all]")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="copydesk demo", description=__doc__)
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of the embedded one")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    from copydesk.transforms.logs import setup_logging
    from copydesk.pipelines.job import run_job

    setup_logging(args.log_level, "text")
    broker = None if args.bootstrap_servers else EmbeddedBroker().start()
    bootstrap = args.bootstrap_servers or broker.bootstrap
    run_id = uuid.uuid4().hex[:8]
    topics = {"in": f"demo-{run_id}.urls", "out": f"demo-{run_id}.articles", "dead": f"demo-{run_id}.dead-letters",
              "fp": f"demo-{run_id}.fingerprints"}
    try:
        with SiteServer() as site:
            print(f"copydesk demo: broker {bootstrap}{' (embedded Tansu)' if broker else ''}, "
                  f"sample site {site.base_url} (outlets {', '.join(OUTLETS)} pinned to it)")
            create_topics(bootstrap, list(topics.values()), partitions=2)
            from kafka import KafkaProducer

            producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=16 << 20)
            msgs = demo_messages(site)
            for m in msgs:
                producer.send(topics["in"], m)
            producer.flush()
            producer.close()
            print(f"produced {len(msgs)} messages to {topics['in']}")
            argv_job = [
                "--bootstrap-servers", bootstrap, "--input-topic", topics["in"], "--group-id", f"demo-{run_id}",
                "--output-topic", topics["out"], "--dead-letter-topic", topics["dead"],
                "--fingerprint-topic", topics["fp"],
                # The sample outlets' host names are pinned to 127.0.0.1 (no DNS); allow exactly that
                # address, everything else private stays blocked.
                "--resolve", site.resolve_pins(), "--allow-networks", "127.0.0.1/32",
                "--per-host-delay", "0.05", "--per-host-concurrency", "4",
            ]
            started = time.monotonic()
            stats = run_job(argv_job, exit_when_idle=True, idle_seconds=1.0, prism_download=False)
            elapsed = time.monotonic() - started
            records = _consume_all(bootstrap, topics["out"])
            dead = _consume_all(bootstrap, topics["dead"])
    finally:
        if broker:
            broker.stop()
    if not args.quiet:
        for r in sorted(records, key=lambda r: (r.get("cluster_id") or "", not r.get("is_canonical"), r["url"])):
            _print_record(r)
        print("=" * 100)
        print("dead letters:")
        for d in dead:
            print(f"  {d['stage']:8} {d['reason']:20} {(d.get('url') or d.get('input') or '')[:70]!s:70}"
                  f"  {d['topic']}/{d['partition']}@{d['offset']}")
    clusters = {r.get("cluster_id") for r in records}
    dups = sum(1 for r in records if not r.get("is_canonical"))
    multi = [c for c in clusters if sum(1 for r in records if r.get("cluster_id") == c) > 1]
    print("=" * 100)
    print(f"summary: {len(msgs)} messages -> {len(records)} records ({len(clusters)} stories, {dups} duplicates, "
          f"{len(multi)} multi-outlet clusters), {len(dead)} dead letters; "
          f"{stats.runs} pipeline run(s) in {elapsed:.1f}s, {len(msgs) / elapsed:.1f} messages/s")
    accounted = len(records) + len(dead)
    if accounted != len(msgs):
        print(f"WARNING: {len(msgs) - accounted} messages unaccounted for")
        return 1
    return 0
