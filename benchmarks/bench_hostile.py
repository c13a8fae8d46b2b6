"""Hostile-input figures (issue 17): what one drip host costs the other messages of its
batch, and the peak memory of a real job on the hostile suite. Prints figures, asserts nothing.

1. **Drip host.** A batch of ``--batch`` messages: one URL of a server that sends a byte a
   second, the rest ordinary pages of another server on 127.0.0.1. Both ways, same run:
   * *streamed*: the fetch stage's DoFn as the pipeline runs it (results emitted as they
     complete); the time at which each other message came out of the DoFn;
   * *whole batch*: the same fetcher awaited as one batch (``Fetcher.fetch_many``, which is how
     the stage emitted before this change): every message comes out when the slowest does.
   With the default limits the drip ends at the message deadline (60 s).
2. **Peak RSS.** ``copydesk run`` on an embedded broker with every message kind of
   ``tests/hostile_cases.py`` plus a 4.8 MB tag-soup page; the resident set of the job's
   process tree (job, extraction workers) sampled every 0.2 s; the soup's outcome.

    .venv/bin/python benchmarks/bench_hostile.py [--deadline 60] [--batch 64] [--skip-job]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from apache_beam.transforms.window import GlobalWindow  # noqa: E402

from copydesk.schemas.records import DeadLetter, InputMessage  # noqa: E402
from copydesk.transforms.fetch.stage import FetchConfig, Fetcher, _FetchDoFn  # noqa: E402
from copydesk.transforms.parse.messages import parse_message  # noqa: E402
from fetch_server import MisbehavingServer, html_route, send  # noqa: E402
from hostile_cases import _drip, article_html, install_routes, message_cases  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import process_tree  # noqa: E402


def _msgs(urls: list[str]) -> list[InputMessage]:
    out = [parse_message(u.encode()) for u in urls]
    assert all(isinstance(m, InputMessage) for m in out)
    return out  # type: ignore[return-value]


def drip_cost(batch: int, deadline: float) -> None:
    cfg = FetchConfig(allowed_networks=("127.0.0.1/32",), per_host_delay=0, per_host_concurrency=8,
                      batch_size=batch, deadline=deadline)
    with MisbehavingServer() as pages, MisbehavingServer() as drip:
        pages.routes["/p"] = html_route(article_html(0))
        drip.routes["/drip"] = _drip
        urls = [drip.url("/drip")] + [pages.url(f"/p?i={i}") for i in range(batch - 1)]

        def streamed(batch_urls: list[str]) -> dict[int, float]:
            """The DoFn as the pipeline drives it: offset -> seconds until it came out."""
            fn = _FetchDoFn(cfg)
            fn.setup()
            out_at: dict[int, float] = {}
            try:
                fn.start_bundle()
                t0 = time.monotonic()
                emitted = []
                for i, m in enumerate(_msgs(batch_urls)):
                    m.ref = type(m.ref)(topic="t", partition=0, offset=i)
                    emitted += [(v, time.monotonic()) for v in fn.process(m, 0, GlobalWindow())]
                emitted += [(v, time.monotonic()) for v in fn.finish_bundle()]
                for v, t in emitted:
                    res = getattr(v, "value", v)
                    res = getattr(res, "value", res)  # TaggedOutput -> WindowedValue -> result
                    off = res.offset if isinstance(res, DeadLetter) else res.message.ref.offset
                    out_at[off] = t - t0
            finally:
                fn.teardown()
            return out_at

        alone = sorted(streamed([pages.url(f"/p?alone={i}") for i in range(batch - 1)]).values())
        out_at = streamed(urls)
        others = sorted(out_at[i] for i in range(1, batch))
        stream_end = max(out_at.values())

        # whole batch: the same fetcher, one gather
        async def whole() -> float:
            async with Fetcher(cfg) as f:
                t = time.monotonic()
                await f.fetch_many(_msgs([drip.url("/drip?again")] + [pages.url(f"/p?j={i}") for i in range(batch - 1)]))
                return time.monotonic() - t
        batch_end = asyncio.run(whole())
    p50 = others[len(others) // 2]
    print(f"drip host in a batch of {batch} (deadline {deadline:g} s, total_timeout {cfg.total_timeout:g} s, "
          f"retries {cfg.retries}):")
    print(f"  without the drip, streamed: the {batch - 1} messages out after p50 {alone[len(alone) // 2]:.2f} s, "
          f"max {alone[-1]:.2f} s")
    print(f"  streamed:    the other {batch - 1} messages out after p50 {p50:.2f} s, max {others[-1]:.2f} s; "
          f"the drip's dead letter at {out_at[0]:.1f} s; bundle done at {stream_end:.1f} s")
    print(f"  whole batch: every message out at {batch_end:.1f} s (what the stage did before: "
          f"the others wait for the drip)")
    print(f"  cost of the drip to the other messages (last one out, with minus without): "
          f"{others[-1] - alone[-1]:+.2f} s streamed vs {batch_end - alone[-1]:+.1f} s whole-batch; "
          f"before this change one message could hold its batch up to (retries+1) x total_timeout x "
          f"(max_redirects+1) = {(cfg.retries + 1) * cfg.total_timeout * (cfg.max_redirects + 1):.0f} s")


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    total = 0
    for p, _ in process_tree(pid):
        try:
            total += int(open(f"/proc/{p}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError):
            pass
    return total


def job_rss(memory_mb: int | None) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    from conftest import cli_env
    from copydesk.pipelines.demo.broker import EmbeddedBroker, create_topics
    from copydesk.pipelines.demo.site import SiteServer

    soup = b'<html><body><div><p>some text here <a href="/x">link</a> <span>more</div>' * 64_000
    broker = EmbeddedBroker().start()
    try:
        with SiteServer() as site, MisbehavingServer("127.0.0.2") as obs, MisbehavingServer() as bad, \
                MisbehavingServer() as robots, MisbehavingServer() as slow:
            install_routes(bad, robots, slow, obs.port)
            bad.routes["/soup"] = lambda h: send(h, 200, soup)
            cases = message_cases(site.url, bad.url, robots.url, slow.url, obs.port)
            values = [c.value for c in cases] + [bad.url("/soup").encode()]
            run = uuid.uuid4().hex[:8]
            t = {n: f"bench-{run}-{n}" for n in ("in", "out", "dead")}
            create_topics(broker.bootstrap, list(t.values()))
            prod = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=32 << 20)
            for i, v in enumerate(values):
                prod.send(t["in"], v, key=b"k%d" % i)
            prod.flush()
            prod.close()
            cmd = [sys.executable, "-m", "copydesk.pipelines.cli", "run", "--bootstrap-servers", broker.bootstrap,
                   "--input-topic", t["in"], "--group-id", "g" + run, "--output-topic", t["out"],
                   "--dead-letter-topic", t["dead"], "--batch-seconds", "4", "--allow-networks", "127.0.0.1/32",
                   "--resolve", "observer.test=127.0.0.2", "--per-host-delay", "0", "--per-host-concurrency", "8",
                   "--fetch-timeout", "5", "--fetch-deadline", "8", "--max-message-bytes", "65536"]
            if memory_mb is not None:
                cmd += ["--extract-memory-mb", str(memory_mb)]
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            peak = 0
            got: list = []
            dead: list = []
            while time.monotonic() - t0 < 300:
                peak = max(peak, _tree_rss(proc.pid))
                if int(time.monotonic() - t0) % 3 == 0:
                    c = KafkaConsumer(t["out"], t["dead"], bootstrap_servers=broker.bootstrap, group_id=None,
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      consumer_timeout_ms=500, fetch_max_bytes=64 << 20)
                    recs = list(c)
                    c.close()
                    got = [r for r in recs if r.topic == t["out"]]
                    dead = [r for r in recs if r.topic == t["dead"]]
                    if len(got) + len(dead) >= len(values):
                        break
                time.sleep(0.2)
            elapsed = time.monotonic() - t0
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=90)
            import orjson

            soup = len(values) - 1  # its input offset
            soup_dead = [d for d in map(orjson.loads, (r.value for r in dead)) if d["offset"] == soup]
            soup_end = (f"{soup_dead[0]['reason']} ({soup_dead[0]['message'][:60]})" if soup_dead else "a record"
                        if any(orjson.loads(r.value)["offset"] == soup for r in got) else "missing")
            cap = f"{memory_mb} MiB" if memory_mb is not None else "default"
            print(f"job on {len(values)} hostile messages (memory cap {cap}): {len(got)} records + {len(dead)} dead "
                  f"letters in {elapsed:.0f} s; peak RSS of the process tree {peak / 2**20:.0f} MiB; "
                  f"the 4.8 MB tag soup ended as {soup_end}")
            from collections import Counter

            extract = Counter(d["reason"] for d in map(orjson.loads, (r.value for r in dead)) if d["stage"] == "extract")
            print(f"  extract-stage dead letters: {dict(extract)}")
    finally:
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deadline", type=float, default=60.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-job", action="store_true")
    ap.add_argument("--skip-drip", action="store_true")
    a = ap.parse_args()
    if not a.skip_drip:
        drip_cost(a.batch, a.deadline)
    if not a.skip_job:
        job_rss(None)
        job_rss(128)


if __name__ == "__main__":
    main()
