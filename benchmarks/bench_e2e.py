"""End-to-end throughput: copydesk on the local runner vs a hand-written loop, same run.

Both read N URLs of the sample site from a real Apache Kafka node (``tests/realkafka.py``; with
``--tansu`` the demo's embedded Tansu instead), fetch them from a local HTTP server, extract
with trafilatura and write JSON to an output topic. The hand-written loop is
the baseline (kafka-python consumer -> httpx -> trafilatura.extract -> producer, one message
at a time, no dedup, no dead letters, no offset discipline). Prints records/s of each and the
ratio. Usage: python benchmarks/bench_e2e.py [N] [--tansu]
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import trafilatura
from kafka import KafkaConsumer, KafkaProducer

from copydesk.pipelines.demo.broker import EmbeddedBroker, create_topics
from copydesk.pipelines.job import run_job
from copydesk.pipelines.demo.site import SiteServer, site_root

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from realkafka import KafkaBroker  # noqa: E402


def produce(bootstrap: str, topic: str, urls: list[str]) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for u in urls:
        p.send(topic, u.encode())
    p.flush()
    p.close()


def count(bootstrap: str, topic: str) -> int:
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                      consumer_timeout_ms=2000)
    n = sum(1 for _ in c)
    c.close()
    return n


def baseline(bootstrap: str, src: str, dst: str, n: int) -> float:
    consumer = KafkaConsumer(src, bootstrap_servers=bootstrap, group_id=f"base-{src}", auto_offset_reset="earliest")
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    started = time.monotonic()
    done = 0
    with httpx.Client(timeout=10) as client:
        while done < n:
            for recs in consumer.poll(500).values():
                for r in recs:
                    url = r.value.decode()
                    html = client.get(url).text
                    text = trafilatura.extract(html, url=url, fast=True)
                    producer.send(dst, orjson.dumps({"url": url, "text": text}))
                    done += 1
    producer.flush()
    elapsed = time.monotonic() - started
    consumer.close()
    producer.close()
    return elapsed


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    tansu = "--tansu" in sys.argv[1:]
    n = int(args[0]) if args else 400
    with (EmbeddedBroker() if tansu else KafkaBroker()) as broker, SiteServer() as site:
        paths = [p for p in (site_root() / "urls.txt").read_text().split() if p]
        urls = [site.url(f"{paths[i % len(paths)]}?copy={i}") for i in range(n)]
        run = uuid.uuid4().hex[:6]
        t = {k: f"bench-{run}-{k}" for k in ("in", "out", "dead", "bin", "bout")}
        create_topics(broker.bootstrap, list(t.values()), partitions=2)
        produce(broker.bootstrap, t["in"], urls)
        produce(broker.bootstrap, t["bin"], urls)

        base_s = baseline(broker.bootstrap, t["bin"], t["bout"], n)
        started = time.monotonic()
        stats = run_job(["--bootstrap-servers", broker.bootstrap, "--input-topic", t["in"], "--group-id", run,
                         "--output-topic", t["out"], "--dead-letter-topic", t["dead"], "--allow-networks",
                         "127.0.0.1/32", "--per-host-delay", "0", "--per-host-concurrency", "16"],
                        exit_when_idle=True, batch_seconds=30, batch_records=100_000)
        cd_s = time.monotonic() - started
        out, dead = count(broker.bootstrap, t["out"]), count(broker.bootstrap, t["dead"])
    print(f"messages: {n} (broker: {'Tansu' if tansu else 'Apache Kafka ' + broker.version})")
    print(f"hand-written loop : {n / base_s:7.1f} records/s ({base_s:.1f}s)")
    print(f"copydesk (local)  : {n / cd_s:7.1f} records/s ({cd_s:.1f}s, {stats.runs} runs incl. the final idle one, "
          f"{out} records + {dead} dead letters)")
    print(f"ratio copydesk / loop: {base_s / cd_s:.2f}")


if __name__ == "__main__":
    main()
