"""End-to-end race: ``copydesk run`` (defaults, default local runner) against the loop a user
would write by hand (benchmarks/handloop.py), in one run, on the same broker and input.

Input: the 258 fundus pages of ../shared/eval/fundus, each repeated ``--copies`` times (default
4, 1,032 messages) under distinct URLs, on one input topic of 1 partition that both contenders
read, each with its own consumer group and output topic:

* pre-scraped (default): ``{"url", "html"}`` messages;
* ``--fetch``: ``{"url"}`` messages; the pages are served by a local HTTP server (a process of
  its own, gzip like a real site) under ``--hosts`` (50) host names pinned to 127.0.0.1
  (copydesk: ``--resolve`` + ``--allow-networks 127.0.0.1/32``; the hand-written loop: httpx
  to 127.0.0.1 with the ``Host`` header). copydesk's default politeness (robots.txt, one
  request per host per second, 2 per host) is part of its price; the loop has none.

Each contender runs as a process of its own, ``--workers`` (2) extraction processes each, and
rounds alternate (A B, B A, A B ...). Measured from outside, per round:

* pages/s: messages / (process start -> last output seen on its output topics), and from
  its first output to its last ((n - 1) / (last - first)); first-output latency;
* CPU seconds per page: the contender process and all its children (``RUSAGE_CHILDREN``,
  exact), split by a /proc sampler (10 Hz) into extraction workers and the rest;
* workers' busy fraction: worker CPU / (workers x wall); and (CPU + time runnable but waiting
  for a core, /proc/PID/schedstat) / (workers x wall): the share of the time they had work,
  which other load on the machine does not lower (the first figure it does);
* overhead outside extraction, ms CPU per message: (all CPU - worker CPU) / n, and the
  steady part between first and last output (start-up imports excluded);
* peak memory of the process tree: sum of RSS (fork-shared pages counted in every process) and
  sum of PSS (shared pages divided);
* machine CPU used by others meanwhile (everything but the contender and this benchmark's
  broker/server), in cores: on a shared machine the figures are only as quiet as that.

Medians and ranges over rounds, in a table, and the ratio copydesk / loop.

Broker: ``--bootstrap HOST:PORT`` (an existing one), else Apache Kafka started from
tests/realkafka.py when it is there (``--broker kafka|tansu|auto``), else the embedded Tansu
broker (pipelines/demo/broker.py).

    .venv/bin/python benchmarks/bench_e2e.py                      # pre-scraped, 3 rounds
    .venv/bin/python benchmarks/bench_e2e.py --fetch              # fetched from 50 local hosts
    .venv/bin/python benchmarks/bench_e2e.py --pages 200 --rounds 1   # a quick check of the harness
    # another runner / another checkout's copydesk:
    .venv/bin/python benchmarks/bench_e2e.py --copydesk "default=.venv/bin/copydesk" \
        --copydesk "micro-batch=.venv/bin/copydesk --runner FnApiRunner"
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.server
import json
import multiprocessing as mp
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

import orjson

ROOT = Path(__file__).resolve().parents[1]
HANDLOOP = Path(__file__).resolve().parent / "handloop.py"
LOOP = "hand-written loop"
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- input

def eval_dir() -> Path | None:
    """../shared/eval of the project root; from a git worktree, that of the main checkout."""
    candidates = [ROOT / ".." / "shared" / "eval"]
    try:
        common = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--git-common-dir"], capture_output=True,
                                text=True, check=True).stdout.strip()
        candidates.append((ROOT / common).resolve().parent / ".." / "shared" / "eval")
    except (OSError, subprocess.CalledProcessError):
        pass
    return next((c.resolve() for c in candidates if (c / "fundus" / "ground-truth.json").exists()), None)


def load_pages(fundus: Path) -> list[tuple[str, str, bytes]]:
    """(id, url, gzipped html) of every fundus page, sorted by id."""
    truth = json.loads((fundus / "ground-truth.json").read_text())
    return [(pid, truth[pid]["url"], (fundus / "html" / f"{pid}.html.gz").read_bytes()) for pid in sorted(truth)
            if (fundus / "html" / f"{pid}.html.gz").exists()]


def with_copy(url: str, copy: int) -> str:
    return url if copy == 0 else f"{url}{'&' if '?' in url else '?'}copy={copy}"


def messages(pages, copies: int, limit: int | None, fetch_port: int | None, hosts: int) -> Iterator[bytes]:
    """Copy 0 of every page, then copy 1 of every page, ...; the first ``limit``."""
    i = 0
    for copy in range(copies):
        for pid, url, gz in pages:
            if limit is not None and i >= limit:
                return
            if fetch_port is None:
                yield orjson.dumps({"url": with_copy(url, copy), "html": gzip.decompress(gz).decode()})
            else:
                yield orjson.dumps({"url": f"http://{host_name(i % hosts)}:{fetch_port}/{pid}/{copy}"})
            i += 1


def host_name(i: int) -> str:
    return f"site{i:02d}.bench.test"


# --------------------------------------------------------------------------- the local site

class _SiteHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real sites
    bodies: dict[str, bytes] = {}
    ROBOTS = b"User-agent: *\nDisallow:\n"

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/robots.txt":
            self._send(200, "text/plain", self.ROBOTS, gz=False)
            return
        parts = path.strip("/").split("/")
        body = self.bodies.get(parts[0]) if len(parts) == 2 else None
        if body is None:
            self._send(404, "text/plain", b"not found", gz=False)
            return
        self._send(200, "text/html; charset=utf-8", body, gz=True)

    def _send(self, status: int, ctype: str, body: bytes, gz: bool) -> None:
        if gz and "gzip" not in (self.headers.get("Accept-Encoding") or ""):
            body, gz = gzip.decompress(body), False
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if gz:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(bodies: dict[str, bytes], conn) -> None:
    _SiteHandler.bodies = bodies
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SiteHandler)
    server.daemon_threads = True
    conn.send(server.server_address[1])
    server.serve_forever()


@contextlib.contextmanager
def local_site(pages) -> Iterator[tuple[int, int]]:
    """(port, pid) of a process serving every page at /<id>/<copy> for any Host, plus robots.txt."""
    ctx = mp.get_context("fork")  # started before any thread of this process
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=({pid: gz for pid, _, gz in pages}, child), daemon=True)
    proc.start()
    try:
        yield parent.recv(), proc.pid
    finally:
        proc.kill()
        proc.join()


# --------------------------------------------------------------------------- brokers

@contextlib.contextmanager
def broker(kind: str, bootstrap: str | None) -> Iterator[tuple[str, str, int | None]]:
    """(bootstrap, description, pid of the broker process if it is ours)."""
    if bootstrap:
        yield bootstrap, f"given ({bootstrap})", None
        return
    if kind in ("auto", "kafka"):
        sys.path.insert(0, str(ROOT / "tests"))
        try:
            import realkafka  # tests/realkafka.py: Apache Kafka from Maven Central jars
        except ImportError:
            if kind == "kafka":
                raise SystemExit("tests/realkafka.py is not in this checkout (--broker kafka)")
            realkafka = None
        if realkafka is not None:
            try:
                kafka = realkafka.KafkaBroker().start()
            except realkafka.KafkaError as exc:
                if kind == "kafka":
                    raise
                print(f"Apache Kafka could not be started ({str(exc).splitlines()[0]}); using Tansu", file=sys.stderr)
            else:
                try:
                    yield kafka.bootstrap, f"Apache Kafka {kafka.version}", kafka.node.proc.pid
                finally:
                    kafka.close()
                return
    from copydesk.pipelines.demo.broker import EmbeddedBroker

    with EmbeddedBroker() as tansu:
        yield tansu.bootstrap, "Tansu (embedded; tests/realkafka.py absent)", tansu.proc.pid


def create_topics(bootstrap: str, topics: list[str]) -> None:
    from copydesk.pipelines.demo.broker import create_topics as create

    create(bootstrap, topics, partitions=1)


def produce(bootstrap: str, topic: str, values: Iterator[bytes]) -> tuple[int, int]:
    """Send every value; (messages, bytes)."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all", max_request_size=32 << 20)
    n = size = 0
    for v in values:
        p.send(topic, v)
        n, size = n + 1, size + len(v)
    p.flush()
    p.close()
    return n, size


def committed(bootstrap: str, group: str, topic: str) -> int | None:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return c.committed(TopicPartition(topic, 0))
    finally:
        c.close()


# --------------------------------------------------------------------------- measuring

class Outputs(threading.Thread):
    """Watches output topics from the beginning; the time each message is first seen."""

    def __init__(self, bootstrap: str, topics: list[str], expect: int) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                      fetch_max_wait_ms=20, max_partition_fetch_bytes=32 << 20)
        tps = [TopicPartition(t, 0) for t in topics]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.expect = expect
        self.times: list[float] = []
        self.by_topic: Counter = Counter()
        self.notes: Counter = Counter()  # dead-letter reasons, empty texts
        self.done = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for tp, records in self.consumer.poll(timeout_ms=50).items():
                now = time.monotonic()
                for r in records:
                    self.times.append(now)
                    self.by_topic[tp.topic] += 1
                    self._note(tp.topic, r.value)
            if len(self.times) >= self.expect:
                self.done.set()
        self.consumer.close()

    def _note(self, topic: str, value: bytes) -> None:
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            self.notes["undecodable"] += 1
            return
        if topic.endswith("-dead"):
            self.notes[f"dead:{doc.get('reason')}"] += 1
        elif not doc.get("text"):
            self.notes["empty:" + str(doc.get("error") or "none")[:40]] += 1
        elif doc.get("duplicate_of"):
            self.notes["duplicate"] += 1


def _stat(pid: int) -> tuple[float, int] | None:
    """(own CPU seconds, RSS bytes) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK, int(fields[21]) * PAGE


def _schedstat(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of a process's main thread."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_tree(root: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of a process and its live descendants (from /proc; the other
    benchmarks use it too)."""
    todo, seen = [(root, 0)], []
    while todo:
        pid, ppid = todo.pop()
        seen.append((pid, ppid))
        todo += [(c, pid) for c in _children(pid)]
    return seen


class TreeSampler(threading.Thread):
    """Samples a process tree at 10 Hz: own CPU of every process seen (extraction workers vs
    the rest), summed RSS and PSS. A process's CPU is its last sample, so one that ends loses
    at most its last 0.1 s; exact totals come from RUSAGE_CHILDREN."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.root_cmd = _cmdline(root)
        self.role: dict[int, str] = {}
        self.cmds: dict[int, str] = {}
        self.cpu: dict[int, float] = {}
        self.waiting: dict[int, float] = {}  # workers: seconds runnable but without a core
        self.peak_rss = self.peak_pss = 0
        self.timeline: list[tuple[float, float, float]] = []  # (t, worker CPU, other CPU)
        self.stop = threading.Event()

    def _role(self, pid: int, ppid: int) -> str:
        """Workers: spawned children (``spawn_main``) and forked ones (a child with its parent's
        command line: a fork ``Pool``'s workers, a forkserver's); the rest is the pipeline
        (including a forkserver itself and the resource tracker)."""
        if pid not in self.role:
            cmd = self.cmds[pid] = _cmdline(pid)
            worker = pid != self.root and ("spawn_main" in cmd or cmd == _cmdline(ppid))
            self.role[pid] = "worker" if worker and "resource_tracker" not in cmd else "pipeline"
        return self.role[pid]

    def sample(self, with_pss: bool) -> None:
        rss = pss = 0
        for pid, ppid in process_tree(self.root):
            st = _stat(pid)
            if st is None:
                continue
            if self._role(pid, ppid) == "worker":
                self.waiting[pid] = _schedstat(pid)[1]
            self.cpu[pid] = st[0]
            rss += st[1]
            if with_pss:
                pss += _pss(pid)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.timeline.append((time.monotonic(), *self.split()))

    def split(self) -> tuple[float, float]:
        w = sum(c for p, c in self.cpu.items() if self.role.get(p) == "worker")
        return w, sum(self.cpu.values()) - w

    def by_command(self) -> dict[str, float]:
        """CPU seconds by role and command line (shortened), for the JSON report."""
        out: dict[str, float] = {}
        for pid, cpu in self.cpu.items():
            key = f"{self.role[pid]}: {self.cmds.get(pid, '')[:120]}"
            out[key] = round(out.get(key, 0.0) + cpu, 2)
        return out

    def at(self, t: float) -> tuple[float, float]:
        """(worker CPU, other CPU) at time t (the last sample at or before it)."""
        best = (0.0, 0.0)
        for ts, w, o in self.timeline:
            if ts > t:
                break
            best = (w, o)
        return best

    def run(self) -> None:
        i = 0
        while not self.stop.wait(self.interval):
            self.sample(with_pss=i % 5 == 0)
            i += 1


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK


def _tree_cpu(pids: list[int | None]) -> float:
    """Own plus reaped-children CPU seconds of processes (and their live descendants)."""
    total = 0.0
    for root in pids:
        if root is None:
            continue
        for pid, _ in process_tree(root):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(x) for x in fields[11:15]) / CLK
    return total


def py_spy() -> str:
    """py-spy on PATH, else next to the site-packages it was pip-installed into."""
    found = shutil.which("py-spy")
    for p in sys.path:
        if not found and p.endswith("site-packages"):
            found = shutil.which("py-spy", path=str(Path(p).parents[2] / "bin"))
    if not found:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    return found


# --------------------------------------------------------------------------- one contender

def become_subreaper() -> None:
    """Orphans of a contender (a forkserver outliving its parent, and the workers it reaped)
    are re-parented to this process instead of init, so that reaping them puts their CPU into
    RUSAGE_CHILDREN (Linux PR_SET_CHILD_SUBREAPER)."""
    import ctypes

    if ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
        print("warning: PR_SET_CHILD_SUBREAPER failed: the CPU of orphaned processes is not counted", file=sys.stderr)


def reap_orphans(pids: list[int], timeout: float = 15.0) -> list[int]:
    """Wait for the processes of a finished contender's tree that outlived it; the pids still
    running when the time is up."""
    pending, deadline = set(pids), time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not (yet) ours: its parent still runs, or reaped it already
                done = pid if not os.path.exists(f"/proc/{pid}") else 0
            if done:
                pending.discard(pid)
        if pending:
            time.sleep(0.05)
    return sorted(pending)


def run_contender(name: str, cmd: list[str], bootstrap: str, out_topics: list[str], n: int, workers: int,
                  stop_by_signal: bool, timeout: float, log_dir: Path, helpers: list[int | None],
                  profile: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPYDESK_")}  # defaults only
    env["PYTHONUNBUFFERED"] = "1"
    watch = Outputs(bootstrap, out_topics, n)
    watch.start()
    log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, helpers0, self0 = _machine_busy(), _tree_cpu(helpers), time.process_time()
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    spy = None
    if profile is not None:  # py-spy attached (it ends with the process); its CPU is not counted.
        # --gil: only samples of the thread holding the GIL, i.e. Python at work, not threads
        # blocked in C (gRPC's spin thread, selectors), which py-spy cannot always tell idle
        spy = subprocess.Popen([py_spy(), "record", "--pid", str(proc.pid), "--subprocesses", "--rate", "50",
                                "--format", "raw", "--nonblocking", "--gil", "-o", str(profile)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished = watch.done.wait(timeout)
    while not finished and proc.poll() is None and time.monotonic() - started < timeout:
        finished = watch.done.wait(1)
    if proc.poll() is None and stop_by_signal:
        proc.send_signal(signal.SIGTERM)  # copydesk: finish the current run, commit, exit
    try:
        proc.wait(120 if finished else 5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    sampler.stop.set()
    sampler.join()
    left = reap_orphans([p for p in sampler.cpu if p != proc.pid])
    if left:
        print(f"  !! {name}: processes {left} outlived it by 15 s; their CPU is not counted", file=sys.stderr)
    ended = time.monotonic()
    watch.stop.set()
    watch.join()
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if spy is not None:
        spy.wait(60)
    busy = _machine_busy() - busy0
    helpers_cpu = _tree_cpu(helpers) - helpers0
    self_cpu = time.process_time() - self0
    cpu = (after_children.ru_utime + after_children.ru_stime) - (before_children.ru_utime + before_children.ru_stime)
    worker_cpu, _ = sampler.split()
    worker_waiting = sum(sampler.waiting.values())
    times = watch.times
    res = {
        "name": name, "n": n, "outputs": len(times), "by_topic": dict(watch.by_topic), "notes": dict(watch.notes),
        "exit": proc.returncode, "complete": len(times) >= n, "log": str(log_path),
        "first": (times[0] - started) if times else None, "last": (times[-1] - started) if times else None,
        "lifetime": ended - started, "cpu": cpu, "worker_cpu": worker_cpu, "worker_waiting": worker_waiting,
        "workers": workers,
        "peak_rss": sampler.peak_rss, "peak_pss": sampler.peak_pss,
        "others_cores": max(0.0, busy - cpu - helpers_cpu - self_cpu) / (ended - started),
        "helpers_cpu": helpers_cpu,
        "processes": {role: sum(1 for p in sampler.cpu if sampler.role[p] == role) for role in ("worker", "pipeline")},
        "process_cpu": sampler.by_command(),
    }
    if len(times) >= 2:
        w0, o0 = sampler.at(times[0])
        w1, o1 = sampler.at(times[-1])
        res["steady_overhead_ms"] = 1000 * (o1 - o0) / (len(times) - 1)
        res["steady_busy"] = (w1 - w0) / (workers * (times[-1] - times[0]))
    if not res["complete"] or proc.returncode not in (0, -signal.SIGTERM):
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        print(f"  !! {name}: {len(times)}/{n} outputs, exit {proc.returncode}; log {log_path}:\n    "
              + "\n    ".join(tail), file=sys.stderr)
    return res


def derived(r: dict) -> dict:
    n, wall = r["n"], r["last"]
    d = {"rate_wall": n / wall if wall else None,
         "rate_first": (n - 1) / (r["last"] - r["first"]) if wall and r["last"] > r["first"] else None,
         "first": r["first"], "cpu_page": r["cpu"] / n,
         "busy": r["worker_cpu"] / (r["workers"] * wall) if wall else None,
         "steady_busy": r.get("steady_busy"),
         "wanting": (r["worker_cpu"] + r.get("worker_waiting", 0)) / (r["workers"] * wall) if wall else None,
         "overhead_ms": 1000 * (r["cpu"] - r["worker_cpu"]) / n,
         "steady_overhead_ms": r.get("steady_overhead_ms"),
         "rss_mb": r["peak_rss"] / 1e6, "pss_mb": r["peak_pss"] / 1e6, "others": r["others_cores"]}
    return d


# --------------------------------------------------------------------------- report

COLUMNS = [  # key, header, format
    ("rate_wall", "pages/s (start->last)", "{:.1f}"),
    ("rate_first", "pages/s (first->last)", "{:.1f}"),
    ("first", "first output s", "{:.1f}"),
    ("cpu_page", "CPU s/page", "{:.3f}"),
    ("busy", "workers busy", "{:.0%}"),
    ("steady_busy", "busy first->last", "{:.0%}"),
    ("wanting", "busy or waiting for a core", "{:.0%}"),
    ("overhead_ms", "overhead ms/page", "{:.1f}"),
    ("steady_overhead_ms", "steady overhead ms/page", "{:.1f}"),
    ("rss_mb", "peak RSS MB (sum)", "{:.0f}"),
    ("pss_mb", "peak PSS MB (sum)", "{:.0f}"),
    ("others", "others' load, cores", "{:.2f}"),
]


def cell(values: list, fmt: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def table(results: dict[str, list[dict]]) -> str:
    names = list(results)
    rows = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, header, fmt in COLUMNS:
        rows.append(f"| {header} | " + " | ".join(cell([derived(r)[key] for r in results[n]], fmt) for n in names)
                    + " |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Arguments after -- are added to copydesk run's command line.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--copies", type=int, default=4, help="copies of every fundus page (distinct URLs)")
    ap.add_argument("--pages", type=int, default=None, help="use only the first N messages")
    ap.add_argument("--workers", type=int, default=2, help="extraction processes of each contender")
    ap.add_argument("--fetch", action="store_true", help="URLs only: both fetch from a local HTTP server")
    ap.add_argument("--hosts", type=int, default=50, help="--fetch: host names the pages are spread over")
    ap.add_argument("--broker", choices=("auto", "kafka", "tansu"), default="auto")
    ap.add_argument("--bootstrap", default=None, help="use this running broker")
    ap.add_argument("--copydesk", action="append", default=None, metavar="NAME=COMMAND [ARGS]",
                    help="a copydesk contender: a name, its executable and arguments added to `run` (e.g. "
                         "'micro-batch=.venv/bin/copydesk --runner FnApiRunner'); repeatable, all race "
                         "in the same rounds. Default: this checkout's copydesk with the arguments after --")
    ap.add_argument("--only", choices=("loop", "copydesk"), default=None, help="run only the loop or copydesk")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds a contender may take")
    ap.add_argument("--json", default=None, help="also write every round's figures to this file")
    ap.add_argument("--profile", default=None, help="folder: py-spy (raw stacks, GIL holder only) of every copydesk round; "
                                                    "slows copydesk a little, so not for the figures")
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]

    ev = eval_dir()
    if ev is None:
        print("../shared/eval/fundus not present: skipped")
        return 0
    pages = load_pages(ev / "fundus")
    from copydesk.transforms.extract.pool import default_workers

    become_subreaper()
    run_id = uuid.uuid4().hex[:6]
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-e2e-{run_id}-"))
    mode = "fetch" if args.fetch else "pre-scraped"
    with contextlib.ExitStack() as stack:
        port, site_pid = stack.enter_context(local_site(pages)) if args.fetch else (None, None)
        bootstrap, broker_desc, broker_pid = stack.enter_context(broker(args.broker, args.bootstrap))
        in_topic = f"bench-{run_id}-in"
        create_topics(bootstrap, [in_topic])
        t0 = time.monotonic()
        n, size = produce(bootstrap, in_topic, messages(pages, args.copies, args.pages, port, args.hosts))
        mb = size / 1e6
        print(f"{mode}: {n} messages ({mb:.0f} MB) on {in_topic} (1 partition) in {time.monotonic() - t0:.1f}s; "
              f"broker {broker_desc}; {args.workers} workers each; {os.cpu_count()} cores; "
              f"load average {os.getloadavg()[0]:.2f}; logs in {log_dir}", flush=True)
        pins = ",".join(f"{host_name(i)}=127.0.0.1" for i in range(args.hosts))

        def loop_cmd(r: int) -> tuple[list[str], list[str]]:
            out = f"bench-{run_id}-loop{r}-out"
            cmd = [sys.executable, str(HANDLOOP), "--bootstrap", bootstrap, "--input-topic", in_topic,
                   "--output-topic", out, "--group-id", f"bench-{run_id}-loop{r}", "--workers", str(args.workers),
                   "--stop-after", str(n)] + (["--resolve", "127.0.0.1"] if args.fetch else [])
            return cmd, [out]

        def copydesk_cmd(tag: str, command: list[str]):
            def make(r: int) -> tuple[list[str], list[str]]:
                out, dead = f"bench-{run_id}-{tag}{r}-out", f"bench-{run_id}-{tag}{r}-dead"
                cmd = [command[0], "run", "--bootstrap-servers", bootstrap, "--input-topic", in_topic,
                       "--group-id", f"bench-{run_id}-{tag}{r}", "--output-topic", out, "--dead-letter-topic", dead]
                if args.workers != default_workers():
                    cmd += ["--extract-workers", str(args.workers)]
                if args.fetch:
                    cmd += ["--allow-networks", "127.0.0.1/32", "--resolve", pins]
                return cmd + command[1:], [out, dead]
            return make

        specs = [s.partition("=")[::2] for s in args.copydesk] if args.copydesk else \
            [("copydesk run", " ".join([shlex.quote(str(Path(sys.executable).parent / "copydesk"))] + extra))]
        contenders = {LOOP: (loop_cmd, False)}
        for i, (name, command) in enumerate(specs):
            contenders[name] = (copydesk_cmd(f"cd{i}-", shlex.split(command)), True)
        if args.only:
            contenders = {k: v for k, v in contenders.items() if (k == LOOP) == (args.only == "loop")}
        results: dict[str, list[dict]] = {k: [] for k in contenders}
        for r in range(args.rounds):
            order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
            for name in order:
                make, by_signal = contenders[name]
                cmd, outs = make(r)
                create_topics(bootstrap, outs)
                prof = None
                if args.profile and name != LOOP:
                    Path(args.profile).mkdir(parents=True, exist_ok=True)
                    prof = Path(args.profile) / f"{name.replace(' ', '_')}-{mode}-r{r + 1}.txt"
                res = run_contender(name, cmd, bootstrap, outs, n, args.workers, by_signal, args.timeout, log_dir,
                                    [broker_pid, site_pid], prof)
                res["round"], res["committed"] = r, committed(bootstrap, cmd[cmd.index("--group-id") + 1]
                                                              if "--group-id" in cmd else "", in_topic)
                results[name].append(res)
                d = derived(res)
                print(f"round {r + 1} {name}: {res['outputs']}/{n} out "
                      f"({', '.join(f'{k} {v}' for k, v in sorted(res['notes'].items()))}), committed "
                      f"{res['committed']}, " + ", ".join(f"{h} {fmt.format(d[k]) if d[k] is not None else '-'}"
                                                          for k, h, fmt in COLUMNS), flush=True)
    print(f"\n{mode}, {n} messages, {args.rounds} round(s), broker {broker_desc}; "
          + "; ".join(f"{name}: {command}" for name, command in specs) + "; median (range)\n")
    print(table(results))
    for name in results:
        if name == LOOP or LOOP not in results:
            continue
        ratios = [derived(y)["rate_wall"] / derived(x)["rate_wall"] for x, y in zip(results[LOOP], results[name])
                  if derived(x)["rate_wall"] and derived(y)["rate_wall"]]
        if ratios:
            print(f"{name} / {LOOP}, pages/s start->last: {cell(ratios, '{:.2f}')}x (per round)")
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": mode, "n": n, "broker": broker_desc, "contenders": specs,
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
