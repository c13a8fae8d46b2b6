"""De-duplication and wire-copy clustering in the stream (Beam stage).

``records, dropped = articles | Deduplicate(DedupConfig(), seed=fingerprint_entries)``

Two steps (see ``docs/dedup.md``):

1. ``Prepare`` (stateless): the member of each record -- MinHash signature, distinct
   shingle count and entity sketch of the body (:mod:`copydesk.transforms.sketch`: the
   envelope's, made by the extraction worker, else computed here), an arrival stamp, a
   unique token -- encoded once; the records of a bundle go on as one batch under the index
   key.
2. ``Index`` (stateful, one key): :class:`~copydesk.transforms.dedup.core.DedupIndex` in
   the DoFn, a log of the decided members in Beam state (a bag of chunks, compacted to the
   members inside the horizon) and a version string that says whether the DoFn's index is
   the state's (else it is rebuilt from the log). Each record of a batch is decided in
   order against the index, inserted and emitted: on ``records`` or, with
   ``drop_duplicates``, non-canonical ones on ``dropped``. Seeds (fingerprint entries from
   before a restart, a side input) are merged the first time the key is touched, without
   those older than the newest seed minus the horizon (``DedupConfig.prune_seeds``).

One key means the index runs on one worker at a time (the price in parallelism; the
sketch, most of the cost, is made in the extraction workers' processes). Every input record leaves on
exactly one of the two outputs, in its ``Envelope`` (with its ``ref``).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import math
import os
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.coders import BytesCoder, StrUtf8Coder
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec
from apache_beam.typehints import KV
from apache_beam.utils.windowed_value import WindowedValue

from copydesk.schemas.records import ArticleRecord, Envelope
from copydesk.transforms.dedup.coders import DedupBatch, decode_member, encode_member
from copydesk.transforms.dedup.core import (
    DEFAULT_AGENCY_DOMAINS,
    Decision,
    DedupConfig,
    DedupIndex,
    Member,
    event_time,
    fingerprint_entry,
    is_agency_domain,
    member_from_entry,
    remember_features,
)
from copydesk.transforms.dedup.minhash import decode_sketch, encode_signature, features, sketch
from copydesk.transforms.dedup.metrics import DEDUP_NS as METRICS_NS
from copydesk.transforms.dedup.metrics import INDEX_BATCHES, INDEX_LOADS, INDEX_LOG_BYTES, INDEX_MEMBERS, DedupMetrics

__all__ = [
    "DEFAULT_AGENCY_DOMAINS",
    "Decision",
    "DedupConfig",
    "DedupIndex",
    "Deduplicate",
    "annotate",
    "fingerprint_entry",
    "member_for",
    "signature_for",
]

DROPPED = "dropped"

_log = logging.getLogger(__name__)


def signature_for(text: str, cfg: DedupConfig) -> bytes:
    """The MinHash signature of a body, or an empty one when it has fewer than
    ``cfg.min_words`` tokens (such records are matched exactly only)."""
    return features_for(text, cfg)[0]


def features_for(text: str, cfg: DedupConfig) -> tuple[bytes, int, bytes]:
    """Signature, distinct shingle count and entity sketch of a body
    (:func:`copydesk.transforms.dedup.minhash.features`)."""
    return features(text or "", cfg.shingle_size, cfg.min_words, cfg.num_perm, cfg.seed, cfg.entity_k)


_counter = itertools.count()
_WORKER = uuid.uuid4().hex[:8]


def member_for(record: ArticleRecord, cfg: DedupConfig, sig: bytes | None = None, stamp: int | None = None,
               element_ts: float | None = None, made: bytes = b"") -> Member:
    """The index member of a live record: signature, arrival stamp (``time.time_ns()``) and a
    token unique to this delivery. ``made``: the sketch of the record's text made where the
    text was (``Envelope.sketch``), used when it was made with this configuration's
    parameters; else (none, or other parameters: a replay, raw pages, an older producer) the
    sketch is computed here."""
    sk = decode_sketch(made, cfg.sketch_params) if made else None
    if sk is None:
        sk = sketch(record.text or "", cfg.shingle_size, cfg.min_words, cfg.num_perm, cfg.seed, cfg.entity_k, cfg.n_hi)
    n = next(_counter)
    return Member(
        token=f"{record.id}:{_WORKER}:{os.getpid()}:{n}",
        id=record.id,
        stamp=time.time_ns() if stamp is None else stamp,
        ts=event_time(record, element_ts),
        sig=sk.sig if sig is None else sig,
        domain=record.source_domain or "",
        agency=is_agency_domain(record.source_domain or "", cfg.agency_domains),
        content_hash=record.content_hash or "",
        nsh=sk.nsh,
        ents=sk.ents,
        hi=sk.hi,
        lead=sk.lead,
    )


def annotate(record: ArticleRecord, member: Member, d: Decision) -> ArticleRecord:
    """A copy of ``record`` carrying the decision and the MinHash fingerprint."""
    return dataclasses.replace(
        record,
        fingerprint=encode_signature(member.sig),
        cluster_id=d.cluster_id,
        duplicate_of=d.duplicate_of,
        is_canonical=d.is_canonical,
        is_update=d.is_update,
        duplicate_kind=d.duplicate_kind,
        cluster_outlets=list(d.cluster_outlets),
    )


class _Prepare(beam.DoFn):
    """Envelopes -> one batch per bundle and window: ``(0, [(envelope, encoded member), ...])``.

    The member (signature, shingle count, entity sketch, arrival stamp, token) is computed
    here, in parallel; the batch goes to the one index key. A batch is emitted at the end
    of the bundle with the latest timestamp of its records (so the decided records carry
    that timestamp, never an earlier one than their own)."""

    def __init__(self, cfg: DedupConfig, max_batch: int = 512) -> None:
        self.cfg = cfg
        self.max_batch = max_batch
        self._metrics: DedupMetrics | None = None
        self._buf: dict[Any, list] = {}

    def setup(self) -> None:
        self._metrics = DedupMetrics()

    def start_bundle(self) -> None:
        self._buf = {}

    def process(self, item: Envelope, ts=beam.DoFn.TimestampParam,
                win=beam.DoFn.WindowParam) -> Iterator[Any]:
        if self._metrics is None:
            self.setup()
        self._metrics.record_in()
        try:
            ets = float(ts.micros) / 1e6
        except (AttributeError, OverflowError, TypeError):
            ets = None
        m = member_for(item.record, self.cfg, element_ts=ets, made=item.sketch)
        if item.sketch:  # used: not carried further (the batch, the outputs)
            item = Envelope(item.record, item.ref, item.force)
        slot = self._buf.setdefault(win, [ts, []])
        if ts > slot[0]:
            slot[0] = ts
        slot[1].append((item, encode_member(m)))
        if len(slot[1]) >= self.max_batch:
            del self._buf[win]
            yield WindowedValue((0, slot[1]), slot[0], (win,))

    def finish_bundle(self) -> Iterator[Any]:
        for win, (ts, items) in self._buf.items():
            yield WindowedValue((0, items), ts, (win,))
        self._buf = {}


def seed_cutoff(entries: Iterable[dict[str, Any]], cfg: DedupConfig) -> float:
    """Event time below which a seed is dropped: the newest seed's event time minus the
    horizon (``-inf`` with ``cfg.prune_seeds=False`` or no seeds). A record whose event time
    is at or after the newest seed's cannot see an older one (it is outside the record's
    horizon); see docs/dedup.md for records with older event times (backfills)."""
    if not cfg.prune_seeds:
        return -math.inf
    newest = max((float(e["ts"]) for e in entries), default=-math.inf)
    return newest - cfg.horizon_seconds


def seed_members(entries: Iterable[dict[str, Any]], cfg: DedupConfig) -> list[Member]:
    """The members restored from fingerprint entries, oldest first, without those older than
    :func:`seed_cutoff`."""
    entries = list(entries)
    lo = seed_cutoff(entries, cfg)
    return sorted((member_from_entry(e) for e in entries if float(e["ts"]) >= lo), key=lambda m: (m.ts, m.token))


def _chunk(blobs: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in blobs)


def _unchunk(chunk: bytes) -> Iterator[bytes]:
    p, n = 0, len(chunk)
    while p < n:
        (k,) = struct.unpack_from("<I", chunk, p)
        yield chunk[p + 4:p + 4 + k]
        p += 4 + k


class _Cached:
    """The index of one ``Index`` step in this process and the state versions it wrote."""

    __slots__ = ("cur", "vers", "index", "logged", "log_bytes", "writes", "lock", "active")

    def __init__(self, index: DedupIndex, logged: int, log_bytes: int) -> None:
        self.cur: str | None = None  # the version written last
        self.vers: collections.deque[str] = collections.deque(maxlen=1024)  # all written recently
        self.index, self.logged, self.log_bytes, self.writes = index, logged, log_bytes, 0
        self.lock = threading.Lock()
        self.active = 0  # batches of this step being decided or emitted in this process


# uid of an Index step -> its index in this process, shared by the step's DoFn instances. A
# runner may run bundles of one key concurrently on several threads, each with a snapshot of
# the state as it was when the bundle started (Prism does when it splits a slow bundle: see
# docs/dedup.md), so the index is the authority while the state holds a version this process
# wrote, and a batch is decided under the index's lock.
_CACHE: dict[str, _Cached] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 8  # steps kept per process (pipelines built one after another in one process)
_UNREAD = object()


class _Index(beam.DoFn):
    """The one index key: decide every batch's records in order against the index, emit them.

    State: ``log``, a bag of chunks of encoded members (the decided members, with their
    cluster id and canonical), and ``ver``, a version string. The index itself
    (:class:`~copydesk.transforms.dedup.core.DedupIndex`) lives in the process between
    bundles (shared by the step's DoFn instances); it is rebuilt from the log only when
    ``ver`` is not the version this process wrote last (first touch, another worker took the
    key over, a restart, a failed bundle). ``ver`` is written only when it does not hold the
    version this process wrote last (after a rebuild) and when the log is compacted, so in
    the steady state a bundle costs one small read (``ver``) and one blind append to ``log``
    (the SDK commits a bundle's state once, so several batches in one bundle cost the same).
    The log is rewritten with the live members
    only when it holds more than twice as many (state bounded by the horizon). On first
    touch ever (``ver`` empty) the seeds, a side input of fingerprint entries, are merged
    and logged."""

    LOG = BagStateSpec("log", BytesCoder())
    VER = ReadModifyWriteStateSpec("ver", StrUtf8Coder())

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self._uid = uuid.uuid4().hex  # one per step, kept through pickling
        self._metrics: DedupMetrics | None = None
        self._ver: Any = _UNREAD  # the key's version as this bundle has read or written it

    def start_bundle(self) -> None:
        self._ver = _UNREAD

    def setup(self) -> None:
        self._metrics = DedupMetrics()
        self._tag = f"{_WORKER}:{os.getpid()}:{self._uid[:8]}"
        self._g_members = Metrics.gauge(METRICS_NS, INDEX_MEMBERS)
        self._g_bytes = Metrics.gauge(METRICS_NS, INDEX_LOG_BYTES)
        self._c_loads = Metrics.counter(METRICS_NS, INDEX_LOADS)  # index rebuilt from the log (or seeds)
        self._c_batches = Metrics.counter(METRICS_NS, INDEX_BATCHES)

    def _load(self, ver: str | None, log: Any, seeds: Iterable[tuple[int, dict[str, Any]]] | None) -> _Cached:
        idx = DedupIndex(self.cfg)
        n = size = 0
        if ver is None:
            log.clear()
            entries = [e for _, e in seeds] if seeds is not None else []  # the side input is read here only
            ms = seed_members(entries, self.cfg)
            for m in ms:
                idx.add_seed(m)
            if ms:
                chunk = _chunk([encode_member(m) for m in ms])
                log.add(chunk)
                size = len(chunk)
            n = len(ms)
            if seeds is not None:
                _log.info("dedup index: first batch, %d seeds restored (of %d fingerprint entries)", n, len(entries))
        else:
            for chunk in log.read():
                size += len(chunk)
                for b in _unchunk(chunk):
                    idx.add_seed(decode_member(b))
                    n += 1
        self._c_loads.inc()
        return _Cached(idx, n, size)

    def process(self, element: tuple[int, list[tuple[Envelope, bytes]]],
                log=beam.DoFn.StateParam(LOG), ver=beam.DoFn.StateParam(VER)) -> Iterator[Any]:
        return self._batch(element, log, ver, None)

    def _batch(self, element: tuple[int, list[tuple[Envelope, bytes]]], log: Any, ver: Any,
               seeds: Iterable[tuple[int, dict[str, Any]]] | None) -> Iterator[Any]:
        if self._metrics is None:
            self.setup()
        # one read of the version per bundle: a bundle's state is a snapshot taken when it began,
        # and later batches of the bundle see what the earlier ones wrote
        v = ver.read() if self._ver is _UNREAD else self._ver
        with _CACHE_LOCK:
            c = _CACHE.get(self._uid)
            if c is not None and not (v is None or v in c.vers):
                c = None  # the state moved on elsewhere (another worker, a restart): rebuild
            if c is None:
                c = self._load(v, log, seeds)
                _CACHE.pop(self._uid, None)
                while len(_CACHE) >= _CACHE_MAX:
                    _CACHE.pop(next(iter(_CACHE)))
                _CACHE[self._uid] = c
            c.active += 1
        try:
            with c.lock:
                try:
                    yield from self._decide(element[1], c, log, ver, fresh=(v is not None and v == c.cur))
                    self._ver = c.cur
                except BaseException:
                    with _CACHE_LOCK:  # half a batch is in the index: rebuild from the state next time
                        if _CACHE.get(self._uid) is c:
                            del _CACHE[self._uid]
                    raise
        finally:
            with _CACHE_LOCK:
                c.active -= 1

    def _decide(self, items: list[tuple[Envelope, bytes]], c: _Cached, log: Any, ver: Any,
                fresh: bool) -> Iterator[Any]:
        self._c_batches.inc()
        idx, cfg = c.index, self.cfg
        ms = [decode_member(blob) for _item, blob in items]
        decisions = idx.process_batch(ms)  # in order, each against the index and the batch before it
        logged = [encode_member(x) for x in idx.inserted]
        for (item, _blob), m, d in zip(items, ms, decisions):
            record = item.record
            remember_features(m)
            out = dataclasses.replace(item, record=annotate(record, m, d))
            drop = cfg.drop_duplicates and not (d.is_canonical or (d.is_update and cfg.keep_updates))
            if drop and (cfg.force or item.force):
                drop = False  # --force / "force": true: reprocess what dedup would skip (still annotated)
            self._metrics.decided(record.id, d, drop)
            yield beam.pvalue.TaggedOutput(DROPPED, out) if drop else out
        c.logged += len(logged)
        compact = fresh and c.active == 1 and c.logged > 2 * len(idx) + 1024
        if compact:
            # compaction, only from a current snapshot of the state and with no other batch of
            # this step in flight here (a runner may run a key's bundles concurrently, each with
            # the state as it was when it began): a stale or concurrent one appends only
            log.clear()
            live = idx.members()
            chunk = _chunk([encode_member(x) for x in live])
            c.logged, c.log_bytes = len(live), 0
        else:
            chunk = _chunk(logged)
        log.add(chunk)
        c.log_bytes += len(chunk)
        self._g_members.set(len(idx))
        self._g_bytes.set(c.log_bytes)
        if compact or not fresh:
            # the state does not hold the version written last here (a rebuild, a lost commit),
            # or the log was rewritten: a new version. Otherwise the state's version is still
            # this process's latest and the append alone is the batch's state write.
            c.writes += 1
            c.cur = f"{self._tag}:{c.writes}"
            c.vers.append(c.cur)
            ver.write(c.cur)

    def teardown(self) -> None:
        with _CACHE_LOCK:
            _CACHE.pop(self._uid, None)


class _SeededIndex(_Index):
    """:class:`_Index` with the seeds as a side input: ``(0, fingerprint entry)`` pairs as a lazy
    iterable (``AsIter``), read only when the index is first built. (``AsList`` would fetch
    the whole list before every bundle: Prism gives no cache tokens, so nothing is kept.)"""

    LOG = _Index.LOG
    VER = _Index.VER

    def process(self, element: tuple[int, list[tuple[Envelope, bytes]]],  # type: ignore[override]
                seeds: Iterable[tuple[int, dict[str, Any]]], log=beam.DoFn.StateParam(LOG),
                ver=beam.DoFn.StateParam(VER)) -> Iterator[Any]:
        return self._batch(element, log, ver, seeds)


class Deduplicate(beam.PTransform):
    """Annotate (or, with ``drop_duplicates``, filter) near-duplicate and exact copies.

    ``Deduplicate(config, seed=None)`` applied to a ``PCollection[Envelope]`` (of article records) returns
    ``(records, dropped)``: ``records`` holds every record annotated (only canonical records
    and updates when ``config.drop_duplicates``), ``dropped`` the suppressed ones (empty
    unless ``drop_duplicates``). Each input record is in exactly one of the two.

    ``seed``: an optional ``PCollection`` of :func:`fingerprint_entry` dicts (e.g. read from a
    compacted topic the job writes) that restore the index after a restart. Seeds are a
    side input: the index waits until it is complete; they produce no output themselves.
    """

    def __init__(self, config: DedupConfig | None = None, seed: beam.PCollection | None = None) -> None:
        super().__init__()
        self.config = config or DedupConfig()
        self.seed = seed

    def expand(self, pcoll: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        cfg = self.config
        batches = pcoll | "Prepare" >> beam.ParDo(_Prepare(cfg)).with_output_types(KV[int, DedupBatch])
        batches.element_type = KV[int, DedupBatch]  # a VarInt key and the compact batch coder
        if self.seed is not None:
            # the side input is typed as KV pairs: Beam 2.77 picks the stateful ParDo's key coder
            # from an arbitrary one of its inputs (ParDo._get_key_and_window_coder), so every
            # input must be KV-typed with the same key coder
            seeds = self.seed | "SeedPairs" >> beam.Map(lambda e: (0, e)).with_output_types(KV[int, Any])
            index = beam.ParDo(_SeededIndex(cfg), beam.pvalue.AsIter(seeds))
        else:
            index = beam.ParDo(_Index(cfg)).with_input_types(KV[int, DedupBatch])
        decided = batches | "Index" >> index.with_outputs(DROPPED, main="records")
        return decided.records, decided[DROPPED]


def entries_of(records: Iterable[ArticleRecord], cfg: DedupConfig | None = None) -> list[dict[str, Any]]:
    """:func:`fingerprint_entry` of each record (convenience for tests and tools)."""
    return [fingerprint_entry(r, cfg) for r in records]
