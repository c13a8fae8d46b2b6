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
:meth:`ExtractPool.extract_many` is the blocking form. The Beam stage does not own a pool:
it leases a client (:func:`lease`, :func:`release`) of the **one pool per process** and
configuration (:class:`SharedPool`), which outlives the DoFns. The local runner's
micro-batches each set up and tear down their DoFns and reuse the same warm workers; on a
streaming runner, bundles that run at the same time (their own DoFn instances, their own
threads) feed the same workers, so one bundle's last pages overlap the next bundle's first.

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
from copydesk.transforms.sketch import encode_sketch, text_features

__all__ = ["ExtractFailure", "ExtractPool", "PoolClient", "SharedPool", "default_workers", "lease", "release", "warm"]


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
        ext = extract_article(html, url, config)
    except MemoryError:
        return _OutOfMemory(Reason.TOO_LARGE.value,
                            f"extraction needed more than {config.memory_mb} MiB (--extract-memory-mb)")
    except ExtractionError as exc:
        return ExtractFailure(str(exc.reason), str(exc))
    except Exception as exc:  # an extractor bug must not take the page's batch down
        return ExtractFailure(Reason.EXTRACT_ERROR.value, f"{type(exc).__name__}: {exc}"[:2000])
    if config.sketch:
        _add_sketch(ext)
    return ext


def _add_sketch(ext: Extracted) -> None:
    """The text's content hash and dedup sketch, here in the worker (the pool runs in parallel,
    the dedup stage in the job's one process); left empty if that fails (the record is still
    good: dedup and the record builder compute them)."""
    try:
        ext.content_hash, sk = text_features(ext.text)
        ext.sketch = encode_sketch(sk)
    except Exception:  # noqa: BLE001 - a sketch bug must not lose the page
        ext.content_hash, ext.sketch = "", b""


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
        ctx.set_forkserver_preload(["copydesk.transforms.extract.forkserver_init", __name__])  # = pipelines/startup.py FORKSERVER_PRELOAD
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
        self._wake_fd: int | None = None  # a pipe's read end: a byte there ends a blocking wait (SharedPool)
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
        ``wait=True`` blocks until at least one is finished when any is pending (or, for the
        pool a :class:`SharedPool` runs, until it is woken: then the list may be empty)."""
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
            waitables = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            if self._wake_fd is not None:
                waitables.append(self._wake_fd)
            ready = wait(waitables, timeout=timeout)
            woken = self._wake_fd is not None and self._wake_fd in ready
            if woken:
                os.read(self._wake_fd, 1 << 16)
            if not self._collect(busy, ready) and (woken or not waiting):
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


class SharedPool:
    """One :class:`ExtractPool` that several threads feed at once, run by a thread of its own.

    A streaming runner runs bundles of one stage at the same time on different threads, each
    with its own DoFn instance (Prism after a fusion break). Each takes a :class:`PoolClient`
    (:func:`lease`); all of them feed the same workers, so the workers are busy while any
    bundle has pages, and a bundle waits only for its own pages. The supervising thread sends
    queued pages to idle workers the moment one finishes, whoever is waiting, and hands each
    result to the client that submitted the page. Pages are dispatched in the order they were
    submitted, across clients.
    """

    def __init__(self, pool: ExtractPool) -> None:
        self.pool = pool
        self._lock = threading.Lock()
        self._queue: deque[tuple[PoolClient, int, str, str | None]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        pool._wake_fd = self._wake_r
        self._closing = False
        self.error: BaseException | None = None  # what ended the supervising thread
        self._thread = threading.Thread(target=self._run, name="copydesk-extract-pool", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # the pipe is full: a wake-up is pending anyway
            pass

    def submit(self, client: "PoolClient", tag: int, html: str, url: str | None) -> None:
        with self._lock:
            if self.error is not None or self._closing:
                raise RuntimeError("the extraction pool is closed") from self.error
            self._queue.append((client, tag, html, url))
        self._wake()

    def _run(self) -> None:
        pool = self.pool
        owners: dict[tuple[int, int], PoolClient] = {}
        try:
            pool._ensure()  # the workers start now, not with the first page (see warm())
            while True:
                with self._lock:
                    taken, self._queue = self._queue, deque()
                    closing = self._closing
                if closing:
                    if owners:
                        raise RuntimeError("the extraction pool was closed with pages in it")
                    return
                for client, tag, html, url in taken:
                    owners[(id(client), tag)] = client
                    pool.submit(html, url, tag=(id(client), tag))
                if not pool.pending:
                    wait([self._wake_r])  # idle until a page (or close) comes
                    os.read(self._wake_r, 1 << 16)
                    continue
                for key, result, seconds in pool.results(wait=True):  # returns early when woken
                    client = owners.pop(key, None)
                    if client is not None:
                        client._deliver(key[1], result, seconds)
        except BaseException as exc:  # noqa: BLE001 - handed to every client that waits for a page
            self.error = exc
            for client in {id(c): c for c in owners.values()}.values():
                client._deliver_error(exc)
        finally:
            pool.close()

    def close(self) -> None:
        with self._lock:
            self._closing = True
        self._wake()
        self._thread.join(timeout=30)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


class PoolClient:
    """One user's handle on a :class:`SharedPool`, with :class:`ExtractPool`'s feeding
    interface (:meth:`submit`, :meth:`results`, :attr:`pending`). One thread at a time uses
    a client (a DoFn instance); several clients share the pool. :meth:`close` forgets this
    client's pages not taken (their results are dropped when they come)."""

    def __init__(self, shared: SharedPool) -> None:
        self._shared = shared
        self._cond = threading.Condition()
        self._done: list[tuple[Hashable, Result, float | None]] = []
        self._tags: dict[int, Hashable] = {}  # this client's pages in the pool: serial -> tag
        self._serial = 0
        self._error: BaseException | None = None

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._tags) + len(self._done)

    def submit(self, html: str, url: str | None = None, tag: Hashable = None) -> None:
        with self._cond:
            serial, self._serial = self._serial, self._serial + 1
            self._tags[serial] = tag
        self._shared.submit(self, serial, html, url)

    def results(self, wait: bool = False) -> list[tuple[Hashable, Result, float | None]]:
        with self._cond:
            while wait and not self._done and self._tags and self._error is None:
                self._cond.wait()
            if self._error is not None and not self._done:
                raise RuntimeError("the extraction pool failed") from self._error
            done, self._done = self._done, []
        return done

    def _deliver(self, serial: int, result: Result, seconds: float | None) -> None:
        with self._cond:
            if serial in self._tags:
                self._done.append((self._tags.pop(serial), result, seconds))
                self._cond.notify()

    def _deliver_error(self, exc: BaseException) -> None:
        with self._cond:
            self._error = exc
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._tags.clear()
            self._done.clear()


# The process-wide pools (see the module docstring): (config, workers) -> the one shared pool.
_shared: dict[tuple[ExtractConfig, int | None], SharedPool] = {}
_shared_lock = threading.Lock()


def lease(config: ExtractConfig, workers: int | None = None) -> "PoolClient | ExtractPool":
    """A client of this process's pool for ``(config, workers)``, started on first use and
    kept after :func:`release` for the next user (the local runner's next micro-batch, a
    DoFn instance of a concurrent bundle). ``workers=0``: an in-process pool of its own."""
    if workers == 0:
        return ExtractPool(config, workers=0)
    key = (config, workers)
    with _shared_lock:
        shared = _shared.get(key)
        if shared is None or not shared.alive:
            shared = _shared[key] = SharedPool(ExtractPool(config, workers=workers))
    return PoolClient(shared)


def release(client: "PoolClient | ExtractPool") -> None:
    """Give a leased client back: its pages not taken are dropped; the workers stay."""
    client.close()


def warm(config: ExtractConfig, workers: int | None = None) -> None:
    """Start this process's pool for ``(config, workers)`` now, so that its workers (the
    forkserver's imports of trafilatura, lxml and Beam: ~1 s) start while the job still builds
    and submits its pipeline, not when the first page comes. The stage's :func:`lease` then
    finds it running. Returns at once."""
    if workers != 0:
        release(lease(config, workers))


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for p in pools:
        p.close()
