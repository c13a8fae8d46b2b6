"""The Prism job server, started by copydesk itself.

Beam's ``PrismRunner`` can start Prism too, but in the job's process group: a SIGTERM or a
Ctrl-C sent to the group (a terminal, ``systemd``'s default ``KillMode``, ``kill -- -PGID``)
would then kill Prism at the same moment as the job, and the job could not drain. So the
job starts the binary in a session of its own, bound to the job's life (``PR_SET_PDEATHSIG``
on Linux: it dies with the job's process even on SIGKILL), points the runner at it with
``--job_endpoint`` and stops it after the pipeline has ended. Prism's own log lines at
WARN and above are passed on to the ``copydesk.prism`` logger.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger("copydesk.prism")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PRISM_CACHE = PROJECT_ROOT / ".cache" / "bin" / "prism"  # .ci/run: GOBIN=.cache/bin go install ...
PRISM_ENV = "COPYDESK_PRISM"  # a path to the binary, or "off"


def prism_off() -> bool:
    """``COPYDESK_PRISM`` says no Prism at all (off, none, 0, no): none looked for, none fetched."""
    return os.environ.get(PRISM_ENV, "").strip().lower() in ("off", "none", "0", "no")


def find_binary(given: str | None = None) -> tuple[str | None, str]:
    """A Prism binary on this machine: (path or None, where it was looked for / found);
    ``given``: ``--prism_location``."""
    if given:
        return given, "--prism_location"
    env = os.environ.get(PRISM_ENV, "").strip()
    if prism_off():
        return None, f"{PRISM_ENV}={env}"
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env, PRISM_ENV
        return None, f"{PRISM_ENV}={env} is not an executable file"
    candidates = [PRISM_CACHE]
    beam_cache = Path(os.path.expanduser("~/.apache_beam/cache/prism/bin"))
    if beam_cache.is_dir():
        candidates += sorted(p for p in beam_cache.iterdir() if p.name.startswith("apache_beam") and p.suffix != ".zip")
        candidates.append(beam_cache / "prism")
    gopath = os.environ.get("GOBIN") or os.path.join(os.environ.get("GOPATH") or os.path.expanduser("~/go"), "bin")
    candidates.append(Path(gopath) / "prism")
    on_path = shutil.which("prism")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c), str(c)
    return None, "no binary in " + ", ".join(str(c) for c in candidates)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec (Linux)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the job stops it on every exit path it controls
        pass


class PrismServer:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"localhost:{self.port}"

    def start(self, timeout: float = 60.0) -> "PrismServer":
        return self.launch().wait_ready(timeout)

    def launch(self) -> "PrismServer":
        """Start the binary and return at once (:meth:`wait_ready` waits for its port)."""
        # PDEATHSIG follows the thread that forked: only from the main thread is it the process.
        main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            [self.binary, "--job_port", str(self.port), "--log_level", os.environ.get("COPYDESK_PRISM_LOG_LEVEL", "warn"),
             "--log_kind", "json",
             "--serve_http=false"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent if main else None)
        threading.Thread(target=self._relay, name="prism-log", daemon=True).start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> "PrismServer":
        """Wait until the launched binary listens on its port (stopped and raised if not)."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prism ({self.binary}) exited with {self.proc.returncode} at start-up")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"prism ({self.binary}) did not listen on port {self.port} within {timeout:.0f}s")

    def _relay(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                doc = json.loads(line)
                level = str(doc.get("level", "INFO")).upper()
                text = doc.get("msg", line)
                extra = {k: v for k, v in doc.items() if k not in ("time", "level", "msg", "source")}
                if extra:
                    text = f"{text} {extra}"
            except ValueError:
                level, text = "INFO", line
            log.log(logging.ERROR if level.startswith("ERR") else logging.WARNING if level.startswith("WARN")
                    else logging.INFO if level.startswith("INFO") else logging.DEBUG, "%s", text)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "PrismServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
