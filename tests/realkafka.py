"""Apache Kafka for the tests, the benchmarks and scripts: real KRaft brokers on 127.0.0.1.

The jars come from Maven Central through ``deploy/kafka/pom.xml`` (``ensure_jars()``, once,
cached in ``.cache/kafka/<version>/libs``, which git ignores); a node is started as Kafka's own
scripts start it: storage formatted with ``kafka.tools.StorageTool format`` (``kafka-storage``),
then ``java -cp 'libs/*' kafka.Kafka server.properties`` (``kafka-server-start``). Needs Java 17
or later and, the first time, Maven.

- ``KafkaBroker()``: one node, combined broker + controller, on a free port. ``stop()`` (SIGTERM,
  a controlled shutdown) or ``kill()`` (SIGKILL), then ``start()`` again on the same port over
  the same data directory: records and committed offsets survive.
- ``KafkaCluster(n=3)``: n combined nodes sharing one controller quorum, with
  ``default.replication.factor=n``, ``min.insync.replicas=2``; ``kill(node)``, ``stop(node)``,
  ``start(node)``, ``leader_of(topic, partition)``.

Benchmarks and scripts put this folder on ``sys.path`` and ``import realkafka``. From a shell:

    python tests/realkafka.py --install          # resolve and cache the jars (CI runs this)
    python tests/realkafka.py --serve [--nodes 3] # run a broker (cluster), print its bootstrap
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger("realkafka")

ROOT = Path(__file__).resolve().parents[1]
POM = ROOT / "deploy" / "kafka" / "pom.xml"
VERSION = os.environ.get("COPYDESK_KAFKA_VERSION", "4.1.0")
CACHE = Path(os.environ.get("COPYDESK_KAFKA_CACHE", ROOT / ".cache" / "kafka"))
# A small heap, one GC thread and the C1 compiler only (a JVM starts in about half the CPU
# time): the tests' machines have 2 cores and run several JVMs at once.
# COPYDESK_KAFKA_JVM_OPTS replaces these (e.g. for a benchmark on a bigger box).
JVM_OPTS = os.environ.get(
    "COPYDESK_KAFKA_JVM_OPTS",
    "-Xms64m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError "
    "-Djava.awt.headless=true -Djava.net.preferIPv4Stack=true").split()
MESSAGE_MAX_BYTES = 64 << 20  # the tests produce records up to 32 MiB (max_request_size)


class KafkaError(RuntimeError):
    """Kafka could not be had here (no Java, no Maven, jars unresolved) or a node did not start."""


# --------------------------------------------------------------------------- jars

def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaError("java not found (Apache Kafka 4 needs Java 17 or later on PATH or in JAVA_HOME)")
    return found


def ensure_jars(version: str = VERSION, quiet: bool = True) -> Path:
    """The folder of Kafka's jars (``.cache/kafka/<version>/libs``), resolved by Maven once
    (again when ``deploy/kafka/pom.xml`` changes)."""
    libs = CACHE / version / "libs"
    done = libs / ".complete"  # written last: the pom's hash, then the jars' names
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()

    def complete() -> bool:
        try:
            return done.read_text().split("\n", 1)[0] == pom_hash
        except OSError:
            return False

    if complete():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one resolution at a time, others wait for it
        if complete():
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise KafkaError("mvn not found: Maven is needed once to fetch Apache Kafka's jars "
                             f"(mvn -f {POM} dependency:copy-dependencies)")
        tmp = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
        cmd = [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}",
               "-DincludeScope=runtime", f"-Dkafka.version={version}"]
        if quiet:
            cmd.insert(1, "-q")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not (tmp / f"kafka_2.13-{version}.jar").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise KafkaError(f"Maven could not resolve Apache Kafka {version} ({' '.join(cmd)}, exit "
                             f"{proc.returncode}):\n{proc.stdout[-4000:]}")
        if libs.exists():
            shutil.rmtree(libs)
        tmp.rename(libs)
        done.write_text(pom_hash + "\n" + "\n".join(sorted(p.name for p in libs.glob("*.jar"))) + "\n")
    return libs


# --------------------------------------------------------------------------- nodes

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_id() -> str:
    """A Kafka Uuid as kafka-storage random-uuid prints it (URL-safe base64, no padding).

    Like Kafka's own ``Uuid.randomUuid``, one that starts with "-" is drawn again: the
    storage tool's argument parser would read it as an option (1 in 64 formats failed)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _admin(bootstrap: str, timeout_ms: int = 5000):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms,
                            client_id="realkafka-probe")


_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


def _pdeathsig() -> None:  # the JVM dies with the Python process that started it (Linux)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _Node:
    """One Kafka process (broker + controller) with its ports and data directory, kept across
    restarts. Not used directly: see :class:`KafkaBroker` and :class:`KafkaCluster`."""

    def __init__(self, node_id: int, workdir: Path, port: int | None = None, controller_port: int | None = None,
                 libs: Path | None = None) -> None:
        self.node_id = node_id
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.libs = libs
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "server.log"
        self.props_path = self.dir / "server.properties"
        self.data_dir = self.dir / "data"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def voter(self) -> str:
        return f"{self.node_id}@127.0.0.1:{self.controller_port}"

    def configure(self, voters: str, settings: dict[str, object]) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            **settings,
        }
        self.props_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.dir / "log4j2.properties").write_text(_LOG4J2)

    def _java(self, main: str, *args: str) -> list[str]:
        assert self.libs is not None
        return [java_binary(), *JVM_OPTS, f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.dir}", "-cp", f"{self.libs}/*", main, *args]

    def format(self, cluster_id: str) -> subprocess.Popen[bytes] | None:
        """Start ``kafka-storage format`` for a data dir not yet formatted (None if it is)."""
        if (self.data_dir / "meta.properties").exists():
            return None
        return subprocess.Popen(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                                           "-c", str(self.props_path)),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def launch(self) -> None:
        if self.running:
            return
        main_thread = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as out:
            out.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self._java("kafka.Kafka", str(self.props_path)), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_pdeathsig if main_thread else None)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            self.proc = None
            raise KafkaError(f"Kafka node {self.node_id} exited with {code}; log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), SIGKILL after ``timeout`` s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def _format_all(nodes: list[_Node], cluster_id: str) -> None:
    procs = [(n, n.format(cluster_id)) for n in nodes]  # in parallel: each is a JVM start
    for node, proc in procs:
        if proc is None:
            continue
        out = proc.communicate()[0].decode(errors="replace")
        if proc.returncode != 0:
            raise KafkaError(f"kafka-storage format of node {node.node_id} failed ({proc.returncode}):\n{out[-3000:]}")


def _settings(n: int, overrides: dict[str, object] | None) -> dict[str, object]:
    rf = min(3, n)
    isr = min(2, n)
    s: dict[str, object] = {
        "num.partitions": 1,
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": 3,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": 3,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "share.coordinator.state.topic.num.partitions": 3,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "false",
        "message.max.bytes": MESSAGE_MAX_BYTES,
        "replica.fetch.max.bytes": MESSAGE_MAX_BYTES,
        "socket.request.max.bytes": 2 * MESSAGE_MAX_BYTES,
        # few threads: 2 cores for everything
        "num.network.threads": 2,
        "num.io.threads": 2,
        "background.threads": 2,
        "num.replica.fetchers": 1,
        "num.recovery.threads.per.data.dir": 1,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": 8 << 20,  # default 128 MiB would not fit the small heap
        "log.cleaner.backoff.ms": 1000,
        # a dead node is noticed in seconds, not the default 9 s
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 3000,
        "controlled.shutdown.enable": "true",
        "group.coordinator.rebalance.protocols": "classic,consumer",
    }
    s.update(overrides or {})
    return s


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_ready(nodes: list[_Node], bootstrap: str, want_brokers: set[int], timeout: float) -> None:
    """Until a kafka-python admin client sees every broker of ``want_brokers`` registered
    and unfenced (a fenced broker is not in Metadata)."""
    deadline = time.monotonic() + timeout
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        for n in nodes:
            n.check_alive()
        if not any(_listening(n.port) for n in nodes if n.running):
            last = "no listener yet"
            time.sleep(0.25)
            continue
        try:
            admin = _admin(bootstrap, 3000)
        except Exception as exc:  # NoBrokersAvailable
            last = exc
            time.sleep(0.25)
            continue
        try:
            seen = {b["broker_id"] for b in admin.describe_cluster()["brokers"] if not b.get("is_fenced")}
            if want_brokers <= seen:
                return
            last = f"brokers {sorted(seen)} of {sorted(want_brokers)}"
        except Exception as exc:
            last = exc
        finally:
            admin.close()
        time.sleep(0.25)
    tails = "\n".join(f"--- node {n.node_id} ({n.log_path}):\n{n.log_tail()}" for n in nodes)
    raise KafkaError(f"Kafka did not come up on {bootstrap} within {timeout}s ({last!r}):\n{tails}")


class KafkaBroker:
    """One Apache Kafka node (KRaft, broker + controller) on 127.0.0.1; a context manager.

    ``port`` (else a free one) is kept across ``stop()``/``kill()`` and ``start()``, and so is
    ``workdir`` (else a temporary directory, removed by ``close()``), which holds the
    ``server.properties``, ``server.log`` and the data. ``settings`` override broker settings.
    """

    def __init__(self, port: int | None = None, workdir: str | os.PathLike[str] | None = None,
                 settings: dict[str, object] | None = None, version: str = VERSION) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kafka-"))
        self.version = version
        self.node = _Node(1, self.workdir, port=port)
        self.node.configure(self.node.voter, _settings(1, settings))
        self._cluster_id = _cluster_id()
        self.startup_seconds: float | None = None

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def bootstrap(self) -> str:
        return self.node.bootstrap

    @property
    def log_path(self) -> Path:
        return self.node.log_path

    @property
    def running(self) -> bool:
        return self.node.running

    def start(self, timeout: float = 90.0) -> "KafkaBroker":
        began = time.monotonic()
        self.node.libs = ensure_jars(self.version)
        _format_all([self.node], self._cluster_id)
        self.node.launch()
        try:
            _wait_ready([self.node], self.bootstrap, {1}, timeout)
        except BaseException:
            self.node.kill()
            raise
        self.startup_seconds = time.monotonic() - began
        log.info("Apache Kafka %s on %s (%.1f s)", self.version, self.bootstrap, self.startup_seconds)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.node.stop(timeout)

    def kill(self) -> None:
        self.node.kill()

    def close(self) -> None:
        """Stop the node; a temporary work directory is removed with its data."""
        self.node.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "KafkaBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class KafkaCluster:
    """``n`` Apache Kafka nodes on 127.0.0.1, each broker + controller of one KRaft quorum.

    Nodes are numbered 1..n. ``kill(node)`` SIGKILLs one, ``stop(node)`` shuts it down
    cleanly, ``start(node)`` brings it back on its port over its data (and waits until it is
    registered again). ``leader_of(topic, partition)`` is the node id leading a partition.
    """

    def __init__(self, n: int = 3, workdir: str | os.PathLike[str] | None = None,
                 settings: dict[str, object] | None = None, version: str = VERSION) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kafka-cluster-"))
        self.version = version
        self.nodes = {i: _Node(i, self.workdir / f"node{i}") for i in range(1, n + 1)}
        voters = ",".join(node.voter for node in self.nodes.values())
        for node in self.nodes.values():
            node.configure(voters, _settings(n, settings))
        self._cluster_id = _cluster_id()
        self.startup_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes.values())

    def bootstrap_of(self, node: int) -> str:
        return self.nodes[node].bootstrap

    def _live_bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes.values() if n.running) or self.bootstrap

    def start(self, node: int | None = None, timeout: float = 120.0) -> "KafkaCluster":
        """Start every node (``node=None``) or one, and wait until they are registered."""
        began = time.monotonic()
        libs = ensure_jars(self.version)
        chosen = list(self.nodes.values()) if node is None else [self.nodes[node]]
        for n in self.nodes.values():
            n.libs = libs
        _format_all(chosen, self._cluster_id)
        for n in chosen:
            n.launch()
        try:
            _wait_ready(list(self.nodes.values()), self._live_bootstrap(),
                        {n.node_id for n in self.nodes.values() if n.running}, timeout)
        except BaseException:
            if node is None:
                for n in chosen:
                    n.kill()
            raise
        if node is None:
            self.startup_seconds = time.monotonic() - began
            log.info("Apache Kafka %s cluster of %d on %s (%.1f s)", self.version, len(self.nodes), self.bootstrap,
                     self.startup_seconds)
        return self

    def kill(self, node: int) -> None:
        self.nodes[node].kill()

    def stop(self, node: int, timeout: float = 30.0) -> None:
        self.nodes[node].stop(timeout)

    def running(self, node: int) -> bool:
        return self.nodes[node].running

    def leader_of(self, topic: str, partition: int = 0) -> int:
        """The node id leading ``topic``/``partition`` now, by Metadata (describe_topics); -1 if none."""
        admin = _admin(self._live_bootstrap())
        try:
            for t in admin.describe_topics([topic]):
                for p in t["partitions"]:
                    if p["partition_index"] == partition:
                        return p["leader_id"]
        finally:
            admin.close()
        raise KafkaError(f"{topic}/{partition} not found")

    def close(self) -> None:
        """Kill every node (the data is thrown away) and remove a temporary work directory."""
        for n in self.nodes.values():
            n.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "KafkaCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--install", action="store_true", help="resolve and cache Kafka's jars, then exit")
    ap.add_argument("--serve", action="store_true", help="run Kafka until interrupted; print its bootstrap")
    ap.add_argument("--nodes", type=int, default=1, help="--serve: 1 broker, or a cluster of N")
    ap.add_argument("--port", type=int, help="--serve with one node: its port (else a free one)")
    ap.add_argument("--version", default=VERSION, help=f"Kafka version (default {VERSION})")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not (args.install or args.serve):
        ap.error("give --install or --serve")
    try:
        libs = ensure_jars(args.version, quiet=not args.install)
        if args.install:
            print(f"Apache Kafka {args.version}: {len(list(libs.glob('*.jar')))} jars in {libs}")
            return 0
        subprocess.run([java_binary(), "-version"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kafka = KafkaBroker(port=args.port, version=args.version) if args.nodes == 1 else \
            KafkaCluster(args.nodes, version=args.version)
    except KafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with kafka:
        print(kafka.bootstrap, flush=True)
        print(f"started in {kafka.startup_seconds:.1f} s; data in {kafka.workdir}; Ctrl-C stops", file=sys.stderr)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
