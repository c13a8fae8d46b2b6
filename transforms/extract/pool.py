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

Workers are forked from a ``forkserver`` (``spawn`` where there is none), never from the
job's process itself: Beam runs DoFns on threads, and forking a multithreaded process can
deadlock the child on a lock held by another thread at fork time. The forkserver is
single-threaded and imports this module (trafilatura, lxml, Beam) once, so a worker starts
in ~10 ms instead of re-importing them for ~0.9 s of CPU (spawn), which every replaced worker
and every new pool paid. A worker takes the environment of the process that starts it, as
with spawn.

Pages can be fed one at a time (:meth:`ExtractPool.submit`, :meth:`ExtractPool.results`):
the caller keeps reading while the workers extract, and takes each result when it is done.
:meth:`ExtractPool.extract_many` is the blocking form. Pools outlive the Beam DoFn that uses
them (:func:`lease`, :func:`release`): the local runner's micro-batches each set up and tear
down their DoFns, and they reuse the same warm workers instead of starting new ones.

``workers=0`` runs in-process (no isolation, no timeout) for tests and tiny runs.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Hashable, Iterable, Sequence

from copydesk.schemas.reasons import Reason
from copydesk.transforms.extract.core import ExtractConfig, Extracted, ExtractionError, extract_article

__all__ = ["ExtractFailure", "ExtractPool", "default_workers", "lease", "release"]


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


def _start_worker(conn: Connection, config: ExtractConfig, env: dict[str, str]) -> None:
    """A forkserver's child has the forkserver's environment: take the pool owner's instead."""
    os.environ.clear()
    os.environ.update(env)
    _worker_main(conn, config)


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
    start is never mistaken for a slow page. The memory cap is set just before "ready", over
    the imports' footprint. A worker that ran out of memory answers, then exits (its heap may
    be in no state for another page).
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
        self.proc = ctx.Process(target=_start_worker, args=(child, config, dict(os.environ)), daemon=True)
        self.proc.start()
        child.close()
        self.job: Hashable | None = None  # the tag of the page it is extracting
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


def _context(start_method: str | None):
    """The forkserver context, preloading this module; spawn where there is no forkserver."""
    if start_method is None:
        start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        # no effect once the server runs (it has them); logging first (forkserver_init.py)
        ctx.set_forkserver_preload(["copydesk.transforms.extract.forkserver_init", __name__])
    return ctx


class ExtractPool:
    """Extract pages across worker processes, fed one at a time or many at once.

    :meth:`submit` queues a page under a tag and returns at once; :meth:`results` hands back
    ``(tag, result, seconds)`` for the pages finished so far (``wait=True``: at least one,
    if any is pending), dispatching queued pages to idle workers as it goes.
    :meth:`extract_many` is both in one call, results in input order.

    Use as a context manager or call :meth:`close`. Not thread-safe: one caller at a time
    (a Beam DoFn instance is used by one thread at a time).
    """

    def __init__(
        self,
        config: ExtractConfig = ExtractConfig(),
        workers: int | None = None,
        timeout_s: float | None = None,
        start_method: str | None = None,
    ) -> None:
        self.config = config
        self.workers = default_workers() if workers is None else max(0, workers)
        self.timeout_s = config.timeout_s if timeout_s is None else timeout_s
        self._ctx = _context(start_method) if self.workers else None
        self._pool: list[_Worker] = []
        self._queue: deque[tuple[Hashable, str, str | None]] = deque()  # submitted, not yet sent
        self._done: list[tuple[Hashable, Result, float | None]] = []  # finished, not yet taken
        self.restarts = 0  # workers replaced after a timeout or crash
        self._lease_key: tuple | None = None  # set by lease(): where release() puts it back
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

    @property
    def pending(self) -> int:
        """Pages submitted whose results have not been taken yet."""
        return len(self._queue) + sum(1 for w in self._pool if w.job is not None) + len(self._done)

    def submit(self, html: str, url: str | None = None, tag: Hashable = None) -> None:
        """Queue one page; its result comes back from :meth:`results` with ``tag``."""
        if len(html) > self.config.max_html_chars:
            # Oversized pages never reach a worker: no need to ship megabytes across a pipe.
            self._done.append((tag, ExtractFailure(
                Reason.TOO_LARGE.value, f"page has {len(html)} characters (max {self.config.max_html_chars})"), None))
        elif self.workers == 0:
            t0 = time.monotonic()
            result = _run_one(html, url, self.config)
            self._done.append((tag, result, time.monotonic() - t0))
        else:
            self._queue.append((tag, html, url))
            self._pump(block=False)

    def results(self, wait: bool = False) -> list[tuple[Hashable, Result, float | None]]:
        """The pages finished so far, as ``(tag, result, seconds)``; never raises for a page.
        ``wait=True`` blocks until at least one is finished when any is pending."""
        if self.workers:
            self._pump(block=wait and not self._done)
        done, self._done = self._done, []
        return done

    def extract(self, html: str, url: str | None = None) -> Result:
        """One page (see :meth:`extract_many`)."""
        return self.extract_many([(html, url)])[0]

    def extract_many(self, pages: Sequence[tuple[str, str | None]] | Iterable[tuple[str, str | None]]) -> list[Result]:
        """Extract pages on all workers; one result per page, in order, never raising.
        Not to be mixed with pages submitted and not yet taken."""
        assert not self.pending, "extract_many with submitted pages not taken"
        pages = list(pages)
        results: list[Result | None] = [None] * len(pages)
        self.last_seconds = times = [None] * len(pages)
        for i, (html, url) in enumerate(pages):
            self.submit(html, url, tag=i)
        while self.pending:
            for i, result, seconds in self.results(wait=True):
                results[i], times[i] = result, seconds
        return [r if r is not None else ExtractFailure(Reason.EXTRACT_ERROR.value, "no result") for r in results]

    def _finish(self, w: _Worker, result: Result, now: float) -> None:
        if isinstance(result, _OutOfMemory):  # it exits after answering: replace it now
            result = ExtractFailure(result.reason, result.message)
            self._replace(w)
        self._done.append((w.job, result, now - (w.deadline - self.timeout_s)))  # started at deadline - limit
        w.job = None

    def _pump(self, block: bool) -> None:
        """Send queued pages to idle workers and take in what they finished; with ``block``,
        until at least one page is finished (result, crash or timeout) or none is left.
        A worker that finishes gets its next page before this returns."""
        self._ensure()
        before = len(self._done)
        while True:
            self._dispatch()
            busy = [w for w in self._pool if w.job is not None]
            waiting = block and len(self._done) == before
            if not busy:
                if waiting and self._queue:  # workers still starting
                    self._await_ready()
                    continue
                return
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic()) if waiting else 0.0
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=timeout)
            if not self._collect(busy, ready) and not waiting:
                return

    def _dispatch(self) -> None:
        self._poll_ready()
        for w in list(self._pool):
            if w.ready and w.job is None and self._queue:
                tag, html, url = self._queue.popleft()
                try:
                    w.conn.send((html, url))
                except (BrokenPipeError, OSError):
                    self._queue.appendleft((tag, html, url))
                    self._replace(w)
                    continue
                w.job, w.deadline = tag, time.monotonic() + self.timeout_s

    def _collect(self, busy: list[_Worker], ready: list) -> int:
        """Results, crashes and timeouts among ``busy`` workers; how many pages finished."""
        finished = 0
        now = time.monotonic()
        for w in busy:
            assert w.job is not None
            if w.conn in ready or w.proc.sentinel in ready:
                try:
                    if w.conn.poll():
                        self._finish(w, w.conn.recv(), now)
                        finished += 1
                        continue
                except (EOFError, OSError):
                    pass
                if not w.proc.is_alive() or w.proc.sentinel in ready:
                    w.proc.join(timeout=1)
                    self._finish(w, ExtractFailure(Reason.EXTRACT_CRASH.value,
                                                   f"extraction worker died (exit code {w.proc.exitcode})"), now)
                    self._replace(w)
                    finished += 1
                    continue
            if w.job is not None and now >= w.deadline:
                self._finish(w, ExtractFailure(Reason.EXTRACT_TIMEOUT.value,
                                               f"extraction took longer than {self.timeout_s:g} s"), now)
                self._replace(w)
                finished += 1
        return finished

    _START_LIMIT_S = 120.0

    def _poll_ready(self) -> bool:
        """Collect "ready" from the workers that sent it; True if any worker is ready."""
        for w in self._pool:
            if w.ready:
                continue
            try:
                if w.conn.poll():
                    if w.conn.recv() == "ready":
                        w.ready = True
                    continue
            except (EOFError, OSError):
                pass
            if not w.proc.is_alive() or time.monotonic() - w.started > self._START_LIMIT_S:
                raise RuntimeError(f"extraction worker failed to start (exit code {w.proc.exitcode})")
        return any(w.ready for w in self._pool)

    def _await_ready(self) -> None:
        """Wait until at least one worker is ready."""
        while not self._poll_ready():
            wait([w.conn for w in self._pool] + [w.proc.sentinel for w in self._pool], timeout=1.0)

    def close(self) -> None:
        """Stop all workers (politely, then by force); pages not taken are dropped."""
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
        self._queue.clear()
        self._done.clear()


# Pools between two users (see the module docstring): (config, workers) -> idle pools.
_idle: dict[tuple[ExtractConfig, int | None], list[ExtractPool]] = {}
_idle_lock = threading.Lock()


def lease(config: ExtractConfig, workers: int | None = None) -> ExtractPool:
    """An idle pool of this configuration that an earlier user released, or a new one."""
    key = (config, workers)
    with _idle_lock:
        pools = _idle.get(key)
        pool = pools.pop() if pools else None
    if pool is None:
        pool = ExtractPool(config, workers=workers)
    pool._lease_key = key
    return pool


def release(pool: ExtractPool) -> None:
    """Give a leased pool back for the next user (closed instead if pages are still in it)."""
    key = pool._lease_key
    if pool.pending or key is None:
        pool.close()
        return
    with _idle_lock:
        _idle.setdefault(key, []).append(pool)


@atexit.register
def _close_idle() -> None:
    with _idle_lock:
        pools = [p for ps in _idle.values() for p in ps]
        _idle.clear()
    for p in pools:
        p.close()
