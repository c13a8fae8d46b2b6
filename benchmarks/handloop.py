"""The loop a user would write by hand: the peer that bench_e2e.py races copydesk against.

- a kafka-python consumer with manual commits;
- a ``multiprocessing.Pool(2)`` with up to 64 pages in flight, each page
  ``trafilatura.extract(html, include_comments=False)`` (fetched first with httpx when the
  message has no ``html``);
- results produced in input order, the producer flushed and the offsets committed every 64
  results (the offset after the last *produced* record, so a crash never skips a page).

It does what a user needs and nothing more: no politeness, no dead letters, no dedup, no
wire detection, no time limit per page. The benchmark starts it as a process of its own:

    python benchmarks/handloop.py --bootstrap 127.0.0.1:9092 --input-topic in --output-topic out \\
        --group-id g --stop-after 1032 [--workers 2] [--resolve 127.0.0.1]

``--stop-after N`` (the benchmark's only addition) ends the loop after N results, as the
benchmark knows how many messages it produced; ``--resolve ADDRESS`` sends every request to
ADDRESS with the URL's host in the ``Host`` header (what copydesk's ``--resolve`` pins do).
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
from urllib.parse import urlsplit, urlunsplit

import httpx
import trafilatura
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

IN_FLIGHT = 64
COMMIT_EVERY = 64

_client: httpx.Client | None = None
_resolve: str | None = None


def _init(resolve: str | None) -> None:
    global _client, _resolve
    _client = httpx.Client(timeout=30, follow_redirects=True)
    _resolve = resolve


def _fetch(url: str) -> str:
    assert _client is not None
    headers = {}
    if _resolve:
        parts = urlsplit(url)
        headers["Host"] = parts.netloc
        port = f":{parts.port}" if parts.port else ""
        url = urlunsplit((parts.scheme, f"{_resolve}{port}", parts.path, parts.query, ""))
    response = _client.get(url, headers=headers)
    response.raise_for_status()
    return response.text


def work(value: bytes) -> bytes:
    """One message -> one output message (runs in a pool worker)."""
    msg = json.loads(value)
    url = msg["url"]
    try:
        html = msg.get("html") or _fetch(url)
        text = trafilatura.extract(html, include_comments=False)
        error = None
    except Exception as exc:  # a user's loop must not die on one bad page either
        text, error = None, f"{type(exc).__name__}: {exc}"
    return json.dumps({"url": url, "text": text, "error": error}).encode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input-topic", required=True)
    ap.add_argument("--output-topic", required=True)
    ap.add_argument("--group-id", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stop-after", type=int, required=True)
    ap.add_argument("--resolve", default=None)
    args = ap.parse_args(argv)

    consumer = KafkaConsumer(args.input_topic, bootstrap_servers=args.bootstrap, group_id=args.group_id,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_partition_fetch_bytes=16 << 20)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5, max_request_size=32 << 20)
    pending: collections.deque = collections.deque()  # (TopicPartition, offset, AsyncResult), input order
    done: dict[TopicPartition, int] = {}
    produced = 0

    def commit() -> None:
        producer.flush()
        consumer.commit({tp: OffsetAndMetadata(offset + 1, None, -1) for tp, offset in done.items()})

    with multiprocessing.Pool(args.workers, initializer=_init, initargs=(args.resolve,)) as pool:
        while produced < args.stop_after:
            if len(pending) < IN_FLIGHT:
                polled = consumer.poll(timeout_ms=0 if pending else 500, max_records=IN_FLIGHT - len(pending))
                for tp, records in polled.items():
                    for r in records:
                        pending.append((tp, r.offset, pool.apply_async(work, (r.value,))))
            if not pending:
                continue
            pending[0][2].wait(None if len(pending) >= IN_FLIGHT else 0.01)
            while pending and pending[0][2].ready():
                tp, offset, result = pending.popleft()
                producer.send(args.output_topic, result.get())
                done[tp] = offset
                produced += 1
                if produced % COMMIT_EVERY == 0:
                    commit()
        commit()
    consumer.close()
    producer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
