"""A supervised pool of extraction worker processes with per-page time limits.

Why our own supervisor: trafilatura has no timeout and lxml can crash (segfault) or loop
on hostile HTML. ``concurrent.futures.ProcessPoolExecutor`` marks the *whole* pool broken
when one worker dies, and cannot kill a single stuck task. pebble solves both but is one
more dependency for ~150 lines of code. Here each worker has its own pipe; the supervisor
sends one page at a time to each idle worker and waits on all pipes with a deadline:

* a result or an ``ExtractionError`` comes back as a value;
* a worker that exceeds ``timeout_s`` is killed and replaced -> ``extract_timeout``;
* a worker that dies (segfault, ``os._exit``, OOM kill) -> ``extract_crash``, replaced;
* a page that needs more than ``memory_mb`` of address space on top of what the ready worker
  holds (``RLIMIT_AS``, set by the worker on itself) -> ``too_large`` (the allocation fails
  with ``MemoryError``) or ``extract_crash`` (a C library dies of it), worker replaced;
* any other exception inside the extractor -> ``extract_error``;
and the pool carries on with the next page.

Workers are started with the ``spawn`` context (``forkserver`` where available would also
do): Beam runs DoFns on threads, and forking a multithreaded process can deadlock the
child on a lock held by another thread at fork time.

``workers=0`` runs in-process (no isolation, no timeout) for tests and tiny runs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Iterable, Sequence

from copydesk.schemas.reasons import Reason
from copydesk.transforms.extract.stage import ExtractConfig, Extracted, ExtractionError, extract_article

__all__ = ["ExtractFailure", "ExtractPool", "default_workers"]


@dataclass(slots=True, frozen=True)
class ExtractFailure:
    """A page that produced no article: ``reason`` is a dead-letter reason code."""

    reason: str
    message: str


Result = Extracted | ExtractFailure


def default_workers() -> int:
    """One worker per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(slots=True, frozen=True)
class _OutOfMemory(ExtractFailure):
    """A page ran its worker out of address space: the worker's answer, and then it exits."""


def _run_one(html: str, url: str | None, config: ExtractConfig) -> Result:
    try:
        return extract_article(html, url, config)
    except MemoryError:
        return _OutOfMemory(Reason.TOO_LARGE.value,
                            f"extraction needed more than {config.memory_mb} MiB (--extract-memory-mb)")
    except ExtractionError as exc:
        return ExtractFailure(str(exc.reason), str(exc))
    except Exception as exc:  # an extractor bug must not take the page's batch down
        return ExtractFailure(Reason.EXTRACT_ERROR.value, f"{type(exc).__name__}: {exc}"[:2000])


def _limit_memory(extra_mb: int) -> None:
    """Cap this process's address space at what it has mapped now plus ``extra_mb``."""
    if extra_mb <= 0:
        return
    import resource

    with open("/proc/self/statm") as fh:
        mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + extra_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def _worker_main(conn: Connection, config: ExtractConfig) -> None:
    """Worker loop: say "ready" (imports done), then receive (html, url), send back a result.

    The supervisor starts a page's clock only once its worker is ready, so a slow process
    start (spawn re-imports trafilatura and Beam) is never mistaken for a slow page. The
    memory cap is set just before "ready", over the imports' footprint. A worker that ran
    out of memory answers, then exits (its heap may be in no state for another page).
    """
    try:
        _limit_memory(config.memory_mb)
    except (OSError, ValueError, AttributeError):  # no /proc or no RLIMIT_AS here: run unlimited
        pass
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        except MemoryError:  # the page itself did not fit: answer for it and make way
            conn.send(_OutOfMemory(Reason.TOO_LARGE.value, f"page does not fit in {config.memory_mb} MiB"))
            return
        if job is None:
            return
        html, url = job
        result = _run_one(html, url, config)
        conn.send(result)
        if isinstance(result, _OutOfMemory):
            return


class _Worker:
    def __init__(self, ctx, config: ExtractConfig) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, config), daemon=True)
        self.proc.start()
        child.close()
        self.job: int | None = None
        self.deadline = 0.0
        self.ready = False
        self.started = time.monotonic()

    def kill(self) -> None:
        try:
            self.proc.kill()
        except Exception:
            pass
        self.proc.join(timeout=5)
        self.conn.close()


class ExtractPool:
    """Extract many pages across worker processes; results come back in input order.

    Use as a context manager or call :meth:`close`. Not thread-safe: one caller at a time
    (a Beam DoFn instance is used by one thread at a time).
    """

    def __init__(
        self,
        config: ExtractConfig = ExtractConfig(),
        workers: int | None = None,
        timeout_s: float | None = None,
        start_method: str = "spawn",
    ) -> None:
        self.config = config
        self.workers = default_workers() if workers is None else max(0, workers)
        self.timeout_s = config.timeout_s if timeout_s is None else timeout_s
        self._ctx = mp.get_context(start_method)
        self._pool: list[_Worker] = []
        self.restarts = 0  # workers replaced after a timeout or crash
        # Seconds each page of the last extract_many took (dispatch to result, supervisor
        # side; None for pages that never reached a worker). Read by the Beam stage's metrics.
        self.last_seconds: list[float | None] = []

    def __enter__(self) -> "ExtractPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ensure(self) -> None:
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(self._ctx, self.config))

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._pool.remove(w)
        self.restarts += 1
        self._pool.append(_Worker(self._ctx, self.config))

    def extract(self, html: str, url: str | None = None) -> Result:
        """One page (see :meth:`extract_many`)."""
        return self.extract_many([(html, url)])[0]

    def extract_many(self, pages: Sequence[tuple[str, str | None]] | Iterable[tuple[str, str | None]]) -> list[Result]:
        """Extract pages on all workers; one result per page, in order, never raising."""
        pages = list(pages)
        results: list[Result | None] = [None] * len(pages)
        self.last_seconds = times = [None] * len(pages)
        if self.workers == 0:
            out = []
            for i, (h, u) in enumerate(pages):
                t0 = time.monotonic()
                out.append(_run_one(h, u, self.config))
                times[i] = time.monotonic() - t0
            return out
        self._ensure()
        todo = list(range(len(pages)))[::-1]  # pop() from the end = input order
        # Oversized pages never reach a worker: no need to ship megabytes across a pipe.
        for i in list(todo):
            if len(pages[i][0]) > self.config.max_html_chars:
                results[i] = ExtractFailure(
                    Reason.TOO_LARGE.value,
                    f"page has {len(pages[i][0])} characters (max {self.config.max_html_chars})")
                todo.remove(i)

        def finish(w: _Worker, result: Result, now: float) -> None:
            assert w.job is not None
            if isinstance(result, _OutOfMemory):  # it exits after answering: replace it now
                result = ExtractFailure(result.reason, result.message)
                self._replace(w)
            results[w.job] = result
            times[w.job] = now - (w.deadline - self.timeout_s)  # the job started at deadline - limit
            w.job = None

        while todo or any(w.job is not None for w in self._pool):
            self._await_ready()
            for w in list(self._pool):
                if w.ready and w.job is None and todo:
                    i = todo.pop()
                    try:
                        w.conn.send(pages[i])
                    except (BrokenPipeError, OSError):
                        todo.append(i)
                        self._replace(w)
                        continue
                    w.job, w.deadline = i, time.monotonic() + self.timeout_s
            busy = [w for w in self._pool if w.job is not None]
            if not busy:
                continue
            now = time.monotonic()
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
                         timeout=max(0.0, min(w.deadline for w in busy) - now))
            now = time.monotonic()
            for w in busy:
                assert w.job is not None
                if w.conn in ready or w.proc.sentinel in ready:
                    try:
                        if w.conn.poll():
                            finish(w, w.conn.recv(), now)
                            continue
                    except (EOFError, OSError):
                        pass
                    if not w.proc.is_alive() or w.proc.sentinel in ready:
                        w.proc.join(timeout=1)
                        finish(w, ExtractFailure(Reason.EXTRACT_CRASH.value,
                                                 f"extraction worker died (exit code {w.proc.exitcode})"), now)
                        self._replace(w)
                        continue
                if w.job is not None and now >= w.deadline:
                    finish(w, ExtractFailure(Reason.EXTRACT_TIMEOUT.value,
                                             f"extraction took longer than {self.timeout_s:g} s"), now)
                    self._replace(w)
        return [r if r is not None else ExtractFailure(Reason.EXTRACT_ERROR.value, "no result") for r in results]

    _START_LIMIT_S = 120.0

    def _await_ready(self) -> None:
        """Wait until at least one worker is ready; collect "ready" from any that are."""
        while True:
            pending = [w for w in self._pool if not w.ready]
            for w in pending:
                try:
                    if w.conn.poll():
                        if w.conn.recv() == "ready":
                            w.ready = True
                        continue
                except (EOFError, OSError):
                    pass
                if not w.proc.is_alive() or time.monotonic() - w.started > self._START_LIMIT_S:
                    raise RuntimeError(f"extraction worker failed to start (exit code {w.proc.exitcode})")
            if any(w.ready for w in self._pool):
                return
            wait([w.conn for w in self._pool] + [w.proc.sentinel for w in self._pool], timeout=1.0)

    def close(self) -> None:
        """Stop all workers (politely, then by force)."""
        for w in self._pool:
            try:
                w.conn.send(None)
            except Exception:
                pass
        for w in self._pool:
            w.proc.join(timeout=2)
            if w.proc.is_alive():
                w.kill()
            else:
                w.conn.close()
        self._pool.clear()
