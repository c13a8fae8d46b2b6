"""Fetch-stage benchmark: throughput with politeness on, over many local host names.

A server process binds one HTTP server to each of 127.0.0.2 ... 127.0.0.(hosts+1) (all
loopback on Linux) and serves a ~100 KB news page; it records when each request arrives.
This process fetches N URLs spread round-robin over those hosts with the real Fetcher
(robots.txt on, per-host delay D, K per host, max_in_flight global), then prints:

* pages/s, p50/p99 of the per-page network time (``FetchedPage.elapsed_ms``), peak RSS;
* the minimum gap between two request arrivals at one host, measured by the server, vs D;
* for comparison, pages/s of the pipeline's extraction (``extract_article``, what the extract
  stage runs per page) and of plain ``trafilatura.extract(fast=True)`` on the same page, one
  core; the extract stage's pool runs one worker per core, so the ratio printed is fetch
  pages/s against (one-core extraction pages/s x cores).

    .venv/bin/python benchmarks/bench_fetch.py --requests 1500 --hosts 50 --delay 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import statistics
import time
from multiprocessing.connection import Connection

from copydesk.schemas.records import FetchedPage, InputMessage, SourceRef
from copydesk.transforms.fetch.stage import FetchConfig, Fetcher

PARAGRAPH = (
    "The city council voted on Tuesday to approve the new transport plan, which will add three tram "
    "lines and extend the night bus network by 2027, officials said. Opposition members argued that the "
    "cost estimates were optimistic and called for an independent review before construction begins."
)


def news_page(target_bytes: int) -> bytes:
    """A plausible ~100 KB article page: mega-menu, article with figures and ad slots,
    related-story cards, comments, a link-farm footer and inline scripts, as real pages have."""
    menu = "".join(
        f'<li class="menu-item"><a href="/section/{i}"><span class="label">Section {i}</span></a>'
        f'<ul class="sub">{"".join(f"<li><a href=/section/{i}/{j}>Topic {j}</a></li>" for j in range(6))}</ul></li>'
        for i in range(20)
    )
    script = "<script>window.__CONFIG__ = {" + ",".join(f'"k{i}": "value-{i}-{"x" * 40}"' for i in range(150)) + "};</script>"
    head = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Council approves transport plan</title>'
        '<meta name="author" content="Jane Reporter"><meta property="og:title" content="Council approves transport plan">'
        '<meta property="article:published_time" content="2024-05-14T09:30:00Z">'
        '<link rel="canonical" href="https://news.example/2024/05/14/council-transport-plan">'
        f"<style>{'.c{color:#333;margin:0 auto;padding:4px}' * 80}</style>{script}</head><body>"
        f'<header class="site-header"><div class="wrap"><nav class="mega"><ul>{menu}</ul></nav></div></header>'
        '<main class="layout"><div class="col-main"><article class="story"><h1 class="headline">Council approves '
        'transport plan</h1><div class="meta"><span class="byline">By <a href="/staff/jane">Jane Reporter</a>'
        '</span><time datetime="2024-05-14T09:30:00Z">May 14, 2024</time></div><div class="story-body">'
    )
    cards = "".join(
        f'<div class="card"><a href="/story/{i}"><div class="thumb"><img src="/img/{i}.jpg" alt="Story {i}"></div>'
        f'<div class="text"><h3>Related story number {i} about local politics</h3><p class="dek">{PARAGRAPH[:90]}'
        f'</p><span class="time">{i} hours ago</span></div></a></div>'
        for i in range(40)
    )
    comments = "".join(
        f'<div class="comment" id="c{i}"><div class="c-meta"><span class="author">reader{i}</span>'
        f'<time>2h</time></div><p>I think the plan is {"good" if i % 2 else "too expensive"}; '
        f"we will see how it works out for the neighbourhood.</p></div>"
        for i in range(40)
    )
    footer = "".join(f'<a href="/footer/{i}">Footer link {i}</a> ' for i in range(150))
    tail = (
        f'</div></article><section class="comments">{comments}</section></div><aside class="col-side">{cards}'
        f"</aside></main><footer>{footer}</footer>{script}</body></html>"
    )
    body: list[str] = []
    size = len(head) + len(tail)
    i = 0
    while size < target_bytes:
        block = f"<p>{PARAGRAPH} ({i})</p>"
        if i % 5 == 4:
            block += (f'<figure><img src="/img/p{i}.jpg" alt="Photo {i}"><figcaption>Photo {i}: the tram depot '
                      f'(Photo: Agency)</figcaption></figure><div class="ad-slot" data-slot="{i}"></div>')
        body.append(block)
        size += len(block)
        i += 1
    return (head + "".join(body) + tail).encode("utf-8")


# -- server process ----------------------------------------------------------------------------


class _HTTPProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive server: stamps each request the moment its bytes arrive.

    A single-threaded asyncio server keeps the arrival stamps precise; a thread-per-connection
    server stamps when a thread gets the GIL, which under load is tens of ms late.
    """

    def __init__(self, host: str, page: bytes, arrivals: list[tuple[str, float]]) -> None:
        self.host = host
        self.arrivals = arrivals
        self.ok = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: "
                   + str(len(page)).encode() + b"\r\n\r\n" + page)
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        t = time.monotonic()
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.arrivals.append((self.host, t))
            path = head.split(b" ", 2)[1]
            if path == b"/robots.txt":
                self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                self.transport.write(self.ok)


def _serve(hosts: list[str], page: bytes, conn: Connection) -> None:
    arrivals: list[tuple[str, float]] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(lambda h=h: _HTTPProtocol(h, page, arrivals), h, 0, backlog=256)
                   for h in hosts]
        conn.send([s.sockets[0].getsockname()[1] for s in servers])
        await loop.run_in_executor(None, conn.recv)  # "done"
        conn.send(list(arrivals))

    asyncio.run(run())


def start_server(hosts: list[str], page: bytes) -> tuple[mp.Process, Connection, list[int]]:
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_serve, args=(hosts, page, child), daemon=True)
    proc.start()
    return proc, parent, parent.recv()


# -- measurements ------------------------------------------------------------------------------


def per_host_gaps(arrivals: list[tuple[str, float]]) -> dict[str, list[float]]:
    by_host: dict[str, list[float]] = {}
    for host, t in arrivals:
        by_host.setdefault(host, []).append(t)
    return {host: [b - a for a, b in zip(ts, ts[1:])] for host, ts in ((h, sorted(t)) for h, t in by_host.items())}


def per_host_min_gaps(arrivals: list[tuple[str, float]]) -> dict[str, float]:
    return {host: min(g) for host, g in per_host_gaps(arrivals).items() if g}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_fetch(urls: list[str], config: FetchConfig) -> tuple[list, float, float]:
    msgs = [InputMessage(url=u, ref=SourceRef(topic="bench", partition=0, offset=i)) for i, u in enumerate(urls)]
    async with Fetcher(config) as f:
        t0 = time.perf_counter()
        results = await f.fetch_many(msgs)
        return results, time.perf_counter() - t0, f.gate.min_gap_sent


def extraction_rate(page: bytes, n: int, copydesk: bool = True) -> float:
    import trafilatura

    from copydesk.transforms.extract.core import extract_article

    html = page.decode("utf-8")

    def one() -> None:
        if copydesk:
            extract_article(html, "http://127.0.0.2/article.html")
        else:
            trafilatura.extract(html, fast=True)

    one()  # warm-up (imports, caches)
    t0 = time.process_time()
    for _ in range(n):
        one()
    return n / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--delay", type=float, default=0.2, help="per-host delay D, seconds")
    ap.add_argument("--per-host", type=int, default=2, help="per-host concurrency K")
    ap.add_argument("--max-in-flight", type=int, default=64)
    ap.add_argument("--page-kb", type=int, default=100)
    ap.add_argument("--extract-pages", type=int, default=40)
    args = ap.parse_args()

    page = news_page(args.page_kb * 1024)
    hosts = [f"127.0.0.{i}" for i in range(2, 2 + args.hosts)]
    proc, conn, ports = start_server(hosts, page)
    urls = [f"http://{hosts[i % len(hosts)]}:{ports[i % len(hosts)]}/news/{i}" for i in range(args.requests)]
    config = FetchConfig(
        per_host_delay=args.delay, per_host_concurrency=args.per_host, max_in_flight=args.max_in_flight,
        allowed_networks=("127.0.0.0/8",), respect_robots=True,
    )
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    results, wall, client_gap = asyncio.run(run_fetch(urls, config))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send("done")
    arrivals = conn.recv()
    proc.terminate()

    pages = [r for r in results if isinstance(r, FetchedPage)]
    failed = len(results) - len(pages)
    lat = [p.elapsed_ms for p in pages]
    gaps = per_host_min_gaps(arrivals)
    min_gap = min(gaps.values()) if gaps else float("nan")
    below = sum(1 for g in gaps.values() if g < args.delay)
    all_gaps = [g for host_gaps in per_host_gaps(arrivals).values() for g in host_gaps]
    short = [g for g in all_gaps if g < args.delay]
    ideal = (args.requests / args.hosts + 1) * args.delay  # +1: robots.txt
    print(f"fetch: {len(pages)} pages ({failed} failed) of {len(page) / 1024:.0f} KB from {args.hosts} hosts "
          f"in {wall:.2f} s = {len(pages) / wall:.1f} pages/s "
          f"(politeness bound: D={args.delay}s, K={args.per_host} -> >= {ideal:.2f} s)")
    if lat:
        print(f"latency per page (network, ms): p50 {statistics.median(lat):.1f}  p99 {percentile(lat, 0.99):.1f}  "
              f"max {max(lat):.1f}")
    print(f"fetch CPU (client process): {cpu_s:.2f} s = {cpu_s / max(1, len(pages)) * 1000:.2f} ms per page "
          f"= {len(pages) / cpu_s:.0f} pages per CPU-second")
    print(f"peak RSS (fetching process, before extraction): {rss_mb:.0f} MB")
    print(f"server-observed requests: {len(arrivals)}; min gap between two requests to one host: "
          f"{min_gap * 1000:.1f} ms vs D = {args.delay * 1000:.0f} ms; hosts with a gap below D: {below}; "
          f"gaps below D: {len(short)} of {len(all_gaps)}"
          + (f", worst by {(args.delay - min(short)) * 1000:.1f} ms" if short else ""))
    print(f"client-side min gap between two requests' headers written for one host: {client_gap * 1000:.1f} ms "
          f"(server stamps are user-space arrival times on a shared machine and carry its scheduling jitter)")
    plain = extraction_rate(page, args.extract_pages, copydesk=False)
    rate = extraction_rate(page, args.extract_pages)
    cores = os.cpu_count() or 1
    print(f"extraction on the same page, per CPU-second: copydesk extract_article {rate:.1f} pages/s, "
          f"plain trafilatura.extract(fast=True) {plain:.1f} pages/s; extract stage on {cores} cores: "
          f"~{rate * cores:.1f} pages/s")
    if rate > 0 and pages:
        print(f"fetch / extract-stage throughput: {len(pages) / wall / (rate * cores):.1f}x (fetch wall-clock, "
              f"politeness-bound, vs the stage on all cores); per CPU-second: {len(pages) / cpu_s / rate:.1f}x")


if __name__ == "__main__":
    main()
