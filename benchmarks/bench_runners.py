"""copydesk on Prism (one streaming pipeline) vs the micro-batch runner, same broker, same pages.

One real Apache Kafka node (``tests/realkafka.py``). The pages: the 258 pages of
``../shared/eval/fundus``, each repeated ``--copies`` times (default 4) under distinct URLs,
as ``{"url", "html"}`` messages (no fetching). For each runner, one ``copydesk run`` process:

1. **throughput**: the whole backlog is in the input topic before the job starts; pages/s
   from the first output to the last (start-up printed apart);
2. **latency**: then, in the same running job, pages are produced one by one at half the
   rate just measured (or at ``--latency-rate`` for every contender) for
   ``--latency-seconds``; p50/p99 from produce to the output record being readable by a
   consumer (each page's figure is written beside the logs);
3. **CPU s/page**: user+system CPU of the job's process tree over both phases, per page, by
   part (the job's process, the Prism binary, the rest: forkserver and extraction workers),
   sampled from /proc every 0.2 s (``RUSAGE_CHILDREN`` misses Prism, which the job never
   waits for);
4. **peak RSS**: the largest sum of the tree's resident sets, sampled every 0.2 s from /proc,
   with the parts' shares at that peak.

The load average is printed before and after each contender: on a shared machine only
figures of one run compare. ``--variant`` runs other checkouts (their interpreter, copydesk
installed there) in the same run.

Usage: python benchmarks/bench_runners.py [--copies 4] [--latency-seconds 60] [--runners prism,microbatch]
       [--variant base=/other/checkout/.venv/bin/python --variant new=.venv/bin/python]
"""

from __future__ import annotations

import argparse
import gzip
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer

ROOT = Path(__file__).resolve().parents[1]
FUNDUS = ROOT.parent / "shared" / "eval" / "fundus" / "html"
sys.path.insert(0, str(ROOT / "tests"))
from realkafka import KafkaBroker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import process_tree, py_spy  # noqa: E402

from copydesk.pipelines.demo.broker import create_topics  # noqa: E402

RUNNER_ARGS = {"prism": [], "microbatch": ["--runner", "FnApiRunner"]}


def pages(copies: int, folder: Path = FUNDUS) -> list[bytes]:
    files = sorted(folder.glob("*.html*"))
    if not files:
        sys.exit(f"{folder} is absent (evaluation data lives beside the project in ../shared; --fundus DIR)")
    out = []
    for c in range(copies):
        for f in files:
            raw = gzip.open(f).read() if f.suffix == ".gz" else f.read_bytes()
            html = raw.decode("utf-8", errors="replace")
            out.append(orjson.dumps({"url": f"https://bench.test/{c}/{f.name.split('.')[0]}", "html": html}))
    return out


class RssSampler(threading.Thread):
    """Peak RSS of the job's process tree, and the CPU seconds of its parts (the job's own
    process, the Prism binary, everything else: forkserver and extraction workers), from
    the last sample of each process (a process that ends between samples loses < 0.2 s)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._cpu: dict[int, tuple[str, float]] = {}
        self.peak_parts: dict[str, int] = {}  # the parts' resident sets at the peak

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(0.2):
            total, by_part = 0, {}
            for pid, _ in process_tree(self.pid):
                try:
                    rss = int(open(f"/proc/{pid}/statm").read().split()[1]) * page
                    comm, rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)
                    f = rest.split()
                    part = "job" if pid == self.pid else "prism" if comm.endswith("(prism") else "workers"
                    self._cpu[pid] = (part, (int(f[11]) + int(f[12])) / tick)
                except (OSError, IndexError, ValueError):
                    continue
                total += rss
                by_part[part] = by_part.get(part, 0) + rss
            if total > self.peak:
                self.peak, self.peak_parts = total, by_part

    def cpu_by_part(self) -> dict[str, float]:
        out = {"job": 0.0, "prism": 0.0, "workers": 0.0}
        for part, seconds in self._cpu.values():
            out[part] += seconds
        return out

    def stop(self) -> None:
        self._stop.set()


class Outputs(threading.Thread):
    """Reads the output and dead-letter topics; the time each input URL came out."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        super().__init__(daemon=True)
        self.c = KafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                               fetch_max_bytes=64 << 20, max_partition_fetch_bytes=64 << 20)
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            for recs in self.c.poll(100).values():
                now = time.time()
                for r in recs:
                    d = orjson.loads(r.value)
                    url = d.get("url")
                    if url and url not in self.seen:
                        self.seen[url] = now
        self.c.close()

    def stop(self) -> None:
        self._stop.set()


def wait_for(outputs: Outputs, urls: list[str], proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(u in outputs.seen for u in urls):
            return
        if proc.poll() is not None:
            sys.exit(f"the job exited ({proc.returncode}) early")
        time.sleep(0.2)
    sys.exit(f"{sum(u not in outputs.seen for u in urls)} of {len(urls)} pages did not come out in {timeout:.0f}s")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def load() -> str:
    return "load average " + " ".join(open("/proc/loadavg").read().split()[:3])


def bench(runner: str, bootstrap: str, msgs: list[bytes], latency_seconds: float, workdir: Path,
          python: str = sys.executable, name: str = "", profile: Path | None = None,
          latency_rate: float | None = None) -> dict:
    run = uuid.uuid4().hex[:8]
    t = {n: f"bench-{run}-{n}" for n in ("in", "out", "dead")}
    create_topics(bootstrap, list(t.values()), partitions=2)
    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=32 << 20)
    for m in msgs:
        prod.send(t["in"], m)
    prod.flush()
    urls = [orjson.loads(m)["url"] for m in msgs]
    outputs = Outputs(bootstrap, t["out"], t["dead"])
    outputs.start()
    python, *job_args = python.split()
    cmd = [python, "-m", "copydesk.pipelines.cli", "run", "--bootstrap-servers", bootstrap,
           "--input-topic", t["in"], "--output-topic", t["out"], "--dead-letter-topic", t["dead"],
           "--group-id", f"g-{run}", *RUNNER_ARGS[runner], *job_args]
    log = open(workdir / f"{(name or runner).replace('/', '-')}.log", "wb")
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    rss = RssSampler(proc.pid)
    rss.start()
    spy = None
    if profile is not None:  # py-spy on the job's process only (GIL holder: Python at work)
        profile.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen([py_spy(), "record", "--pid", str(proc.pid),
                                "--rate", "50", "--format", "raw", "--nonblocking", "--gil",
                                "-o", str(profile / f"{(name or runner).replace('/', '-')}.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(outputs, urls, proc, 1800)
        first = min(outputs.seen[u] for u in urls)
        last = max(outputs.seen[u] for u in urls)
        rate = (len(urls) - 1) / max(last - first, 1e-9)
        # Latency at half the sustainable rate, in the same running job.
        half = latency_rate or rate / 2
        lat_urls, sent_at = [], {}
        src = [orjson.loads(m) for m in msgs]
        i = 0
        began = time.time()
        while time.time() - began < latency_seconds:
            doc = dict(src[i % len(src)], url=f"https://bench.test/lat-{i}/{run}")
            at = time.time()
            prod.send(t["in"], orjson.dumps(doc))
            prod.flush()
            sent_at[doc["url"]] = at
            lat_urls.append(doc["url"])
            i += 1
            time.sleep(max(0.0, began + i / half - time.time()))
        wait_for(outputs, lat_urls, proc, 600)
        lats = [outputs.seen[u] - sent_at[u] for u in lat_urls]
        with open(workdir / f"{(name or runner).replace('/', '-')}-latency.tsv", "w") as fh:  # produced at, latency
            fh.writelines(f"{sent_at[u] - began:.3f}\t{lat:.3f}\n" for u, lat in zip(lat_urls, lats))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        rss.stop()
        if spy is not None:
            spy.wait(30)
        outputs.stop()
        prod.close()
    n_pages = len(urls) + len(lat_urls)
    parts = {k: v / n_pages for k, v in rss.cpu_by_part().items()}
    cpu = sum(parts.values()) * n_pages
    return {"runner": name or runner, "pages": len(urls), "cpu_parts": parts, "load": load(), "startup_s": first - started, "pages_per_s": rate,
            "half_rate": half, "latency_n": len(lats), "p50": pct(lats, 0.5), "p99": pct(lats, 0.99),
            "max": max(lats), "cpu_per_page": cpu / n_pages, "peak_rss_mb": rss.peak / 2**20,
            "peak_rss_parts": {k: v / 2**20 for k, v in sorted(rss.peak_parts.items())}, "exit": proc.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--latency-seconds", type=float, default=60.0)
    ap.add_argument("--runners", default="prism,microbatch")
    ap.add_argument("--fundus", type=Path, default=FUNDUS, help="the fundus html folder (default ../shared/...)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PYTHON [ARGS]",
                    help="another checkout's interpreter (its copydesk installed), and arguments added to "
                         "`copydesk run`; each runner is run once per "
                         "variant, variants in turn (default: this interpreter alone)")
    ap.add_argument("--latency-rate", type=float, default=None,
                    help="pages/s of the latency phase for every contender (default: half its own backlog rate)")
    ap.add_argument("--profile", type=Path, default=None, help="folder: py-spy raw stacks of each job's process")
    args = ap.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variant] or [("", sys.executable)]
    msgs = pages(args.copies, args.fundus)
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-runners-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    results = []
    with KafkaBroker() as kafka:
        print(f"Apache Kafka on {kafka.bootstrap}; {len(msgs)} pages ({args.copies} x fundus); logs in {workdir}",
              flush=True)
        print(load(), flush=True)
        for runner in args.runners.split(","):
            for vname, python in variants:
                name = f"{runner}/{vname}" if vname else runner
                r = bench(runner, kafka.bootstrap, msgs, args.latency_seconds, workdir, python, name, args.profile,
                          args.latency_rate)
                results.append(r)
                parts = ", ".join(f"{k} {v * 1000:.0f}" for k, v in r["cpu_parts"].items())
                print(f"{name:>10}: {r['pages_per_s']:6.1f} pages/s (first output after {r['startup_s']:.1f} s); "
                      f"at {r['half_rate']:.1f}/s: p50 {r['p50']:.2f} s, p99 {r['p99']:.2f} s, max {r['max']:.2f} s "
                      f"({r['latency_n']} pages); CPU {r['cpu_per_page'] * 1000:.0f} ms/page ({parts}); "
                      f"peak RSS {r['peak_rss_mb']:.0f} MiB ("
                      + ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_parts"].items()) + f"); exit {r['exit']}; {r['load']} after", flush=True)
    if len(results) == 2:
        a, b = results
        print(f"{a['runner']} / {b['runner']}: throughput x{a['pages_per_s'] / b['pages_per_s']:.2f}, "
              f"p99 {a['p99']:.2f} s vs {b['p99']:.2f} s, CPU/page x{a['cpu_per_page'] / b['cpu_per_page']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
