"""De-duplication and wire-copy clustering in the stream (Beam stage).

``records, dropped = articles | Deduplicate(DedupConfig(), seed=fingerprint_entries)``

Three keyed steps, all state bounded by the horizon (see ``docs/dedup.md``):

1. ``Prepare`` (stateless): MinHash signature of the body (:mod:`copydesk.transforms.dedup.minhash`),
   an arrival stamp, a unique token; emits one lookup per key -- each LSH band, the canonical
   URL (record id) and the content hash -- keyed by a *bounded* shard key
   ``key index * 2**shard_bits + shard(value)``, and the record itself keyed by its token.
2. ``Lookup`` (stateful per shard key): a bag of ``(value, member)`` entries. For a lookup it
   returns the members under the same value within the horizon (keyed by the asking token),
   then stores the asker. Entries older than ``newest event time - horizon`` are pruned
   whenever the key is touched; because the key space is bounded (``bands + 2`` kinds x
   ``2**shard_bits``) every key is touched regularly, so memory follows the records inside
   the horizon with no timers (on the local runner timers fire right after the bundle).
   Seeds (fingerprint entries from before a restart) arrive as a side input and are merged
   into a key's bag the first time the key is touched.
3. ``Decide`` (stateful per token): collects the record and its ``bands + 2`` answers in one
   bag (its length is the count), runs :func:`copydesk.transforms.dedup.core.decide`, clears
   its state and emits the annotated record on ``records`` or, with ``drop_duplicates``,
   non-canonical ones on ``dropped``.

Keys are typed (``VarIntCoder`` shard keys, ``StrUtf8Coder`` tokens) and members travel
encoded (:mod:`copydesk.transforms.dedup.coders`): encoded once in ``Prepare``, decoded in
``Decide`` only when visible. Seeds older than the newest seed minus the horizon are dropped
before expansion (``DedupConfig.prune_seeds``; see ``docs/dedup.md``).

Every input record leaves on exactly one of the two outputs, with its ``ref``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.typehints import KV
from apache_beam.transforms.userstate import BagStateSpec

from copydesk.schemas.records import ArticleRecord
from copydesk.transforms.dedup.coders import (
    DecideMsg,
    DecideMsgCoder,
    EntryCoder,
    EntryMsg,
    LookupMsg,
    decode_member,
    encode_member,
    member_ts_token,
)
from copydesk.transforms.dedup.core import (
    DEFAULT_AGENCY_DOMAINS,
    Decision,
    DedupConfig,
    DedupIndex,
    Member,
    decide,
    event_time,
    fingerprint_entry,
    is_agency_domain,
    key_values,
    member_from_entry,
    shard_key,
)
from copydesk.transforms.dedup.minhash import encode_signature, features
from copydesk.transforms.stage_metrics import DedupMetrics

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
_REC = 0
_ANS = 1


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
               element_ts: float | None = None) -> Member:
    """The index member of a live record: signature, arrival stamp (``time.time_ns()``) and a
    token unique to this delivery."""
    if sig is None:
        sig, nsh, ents = features_for(record.text, cfg)
    else:
        _, nsh, ents = features(record.text or "", cfg.shingle_size, cfg.min_words, cfg.num_perm, cfg.seed,
                                cfg.entity_k, signature=False)
    n = next(_counter)
    return Member(
        token=f"{record.id}:{_WORKER}:{os.getpid()}:{n}",
        id=record.id,
        stamp=time.time_ns() if stamp is None else stamp,
        ts=event_time(record, element_ts),
        sig=sig,
        domain=record.source_domain or "",
        agency=is_agency_domain(record.source_domain or "", cfg.agency_domains),
        content_hash=record.content_hash or "",
        nsh=nsh,
        ents=ents,
    )


def annotate(record: ArticleRecord, member: Member, d: Decision) -> ArticleRecord:
    """A copy of ``record`` carrying the decision and the MinHash fingerprint (``ref`` kept)."""
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
    """Record -> (token, record msg) on the main output, (shard key, lookup) on ``lookups``."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self._metrics: DedupMetrics | None = None

    def setup(self) -> None:
        self._metrics = DedupMetrics()

    def process(self, record: ArticleRecord, ts=beam.DoFn.TimestampParam) -> Iterator[Any]:
        if self._metrics is None:
            self.setup()
        self._metrics.record_in()
        try:
            ets = float(ts.micros) / 1e6
        except (AttributeError, OverflowError, TypeError):
            ets = None
        m = member_for(record, self.cfg, element_ts=ets)
        blob = encode_member(m)  # encoded once for all its lookups, entries and answers
        kv = key_values(m, self.cfg)
        n = len(kv)
        yield (m.token, (_REC, n, record, m))
        for idx, value in kv:
            yield beam.pvalue.TaggedOutput("lookups", (shard_key(idx, value, self.cfg.shard_bits), (idx, value, n, blob)))


def seed_cutoff(entries: Iterable[dict[str, Any]], cfg: DedupConfig) -> float:
    """Event time below which a seed is dropped before expansion: the newest seed's event time
    minus the horizon (``-inf`` with ``cfg.prune_seeds=False`` or no seeds). A record whose
    event time is at or after the newest seed's cannot see an older one (it is outside the
    record's horizon); see docs/dedup.md for records with older event times (backfills)."""
    if not cfg.prune_seeds:
        return -math.inf
    newest = max((float(e["ts"]) for e in entries), default=-math.inf)
    return newest - cfg.horizon_seconds


class _SeedKeys(beam.DoFn):
    """Seed entry -> its ``bands + 2`` keyed bag entries, unless it is older than
    :func:`seed_cutoff` (computed once per bundle from the whole seed input, a side input)."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self._all: Any = None
        self._lo = -math.inf

    def process(self, entry: dict[str, Any], all_entries: list[dict[str, Any]]) -> Iterator[Any]:
        if all_entries is not self._all:  # the side input is one object per bundle
            self._all = all_entries
            self._lo = seed_cutoff(all_entries, self.cfg)
        if float(entry["ts"]) < self._lo:
            return
        yield from _seed_keys(entry, self.cfg)


def _seed_keys(entry: dict[str, Any], cfg: DedupConfig) -> Iterator[tuple[int, tuple[int, float, bytes]]]:
    m = member_from_entry(entry)
    blob = encode_member(m)
    for idx, value in key_values(m, cfg):
        yield (shard_key(idx, value, cfg.shard_bits), (value, m.ts, blob))


class _Lookup(beam.DoFn):
    """Per shard key: answer a lookup with the visible members, then store the asker.

    Bag entries are ``(value, ts, encoded member)``; members stay encoded here (what
    :func:`~copydesk.transforms.dedup.core.visible_for` selects is computed from ``value``,
    ``ts`` and the token alone) and ``Decide`` decodes the few that are visible. Without
    seeds the stage uses this DoFn (no side input, no ``seeded`` state: Beam's per-element
    side-input and state-parameter plumbing is a large part of the cost on the local
    runner); with seeds, :class:`_SeededLookup`."""

    ENTRIES = BagStateSpec("entries", EntryCoder())

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg

    def _answer(self, element: tuple[int, tuple[int, int, int, bytes]], entries: Any,
                seeds: Any = None) -> list[tuple[str, tuple[int, int, int, list[bytes]]]]:
        key, (idx, value, n, blob) = element
        ts, token = member_ts_token(blob)
        current = list(entries.read())
        added: list[tuple[int, float, bytes]] = []
        if seeds is not None:
            marked = [e for e in current if not e[2]]
            if marked:
                current = [e for e in current if e[2]]
            else:  # first touch of this key: merge its seeds, mark it
                added = [_SEEDED] + list(seeds[key])
        horizon = self.cfg.horizon_seconds
        newest = ts
        for e in current:
            if e[1] > newest:
                newest = e[1]
        for e in added:
            if e[1] > newest and e[2]:
                newest = e[1]
        lo = newest - horizon
        live = [e for e in current if e[1] >= lo]
        pruned = len(live) != len(current)
        if added:
            live.extend(e for e in added if e[1] >= lo)
        # = visible_for(member, live, value, horizon): same value, within the horizon, not itself.
        # "Not itself" compares the encoded member: equal bytes <=> equal token here, because a
        # live token is unique per delivery and never equal to a seed's ("seed:...").
        lo_r = ts - horizon
        visible = [b for v, t, b in live if v == value and t >= lo_r and b and b != blob]
        if pruned:
            entries.clear()
            if seeds is not None and not added:
                entries.add(_SEEDED)
            for e in live:
                entries.add(e)
        else:
            for e in live[len(current):]:
                entries.add(e)
        entries.add((value, ts, blob))
        return [(token, (_ANS, n, idx, visible))]

    def process(
        self,
        element: tuple[int, tuple[int, int, int, bytes]],
        entries=beam.DoFn.StateParam(ENTRIES),
    ) -> list[tuple[str, tuple[int, int, int, list[bytes]]]]:
        return self._answer(element, entries)


_SEEDED = (0, math.inf, b"")  # bag marker: this key's seeds are merged (an empty blob is never a member)


class _SeededLookup(_Lookup):
    """:class:`_Lookup` with seeds (a side input ``shard key -> [(value, ts, encoded member)]``),
    merged into a key's bag the first time the key is touched. A marker entry in the bag
    (:data:`_SEEDED`) records that, so no second state is read and written per element."""

    ENTRIES = _Lookup.ENTRIES

    def process(  # type: ignore[override]
        self,
        element: tuple[int, tuple[int, int, int, bytes]],
        seeds: dict[int, list[tuple[int, float, bytes]]],
        entries=beam.DoFn.StateParam(ENTRIES),
    ) -> list[tuple[str, tuple[int, int, int, list[bytes]]]]:
        return self._answer(element, entries, seeds)


class _Decide(beam.DoFn):
    """Per token: gather the record and its answers, decide, emit, release the state."""

    MSGS = BagStateSpec("msgs", DecideMsgCoder())

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self._metrics: DedupMetrics | None = None
        self._open: dict[str, list[tuple]] = {}

    def setup(self) -> None:
        self._metrics = DedupMetrics()

    def start_bundle(self) -> None:
        # token -> its messages (state as read once in this bundle + what arrived since): the bag
        # is read once per token and bundle, each message is one blind append, and the bag's
        # length is the count (empty answers are kept, ~17 bytes each), so no second state.
        self._open = {}

    def process(
        self,
        element: tuple[str, tuple],
        msgs=beam.DoFn.StateParam(MSGS),
    ) -> Iterator[Any]:
        token, msg = element
        n = msg[1]
        got = self._open.get(token)
        if got is None:
            got = self._open[token] = list(msgs.read())
        got.append(msg)
        if len(got) < n + 1:  # n answers + the record
            msgs.add(msg)
            return
        del self._open[token]
        msgs.clear()
        record: ArticleRecord | None = None
        member: Member | None = None
        visible: dict[int, list[Member]] = {}
        decoded: dict[bytes, Member] = {}  # a copy seen under many bands is decoded once
        for g in got:
            if g[0] == _REC:
                record, member = g[2], g[3]
            elif g[3]:
                ms = []
                for b in g[3]:
                    m = decoded.get(b)
                    if m is None:
                        m = decoded[b] = decode_member(b)
                    ms.append(m)
                visible[g[2]] = ms
        assert record is not None and member is not None
        d = decide(member, visible, self.cfg)
        out = annotate(record, member, d)
        drop = self.cfg.drop_duplicates and not (d.is_canonical or (d.is_update and self.cfg.keep_updates))
        if drop and (self.cfg.force or record.force):
            drop = False  # --force / "force": true: reprocess what dedup would skip (still annotated)
        if self._metrics is None:
            self.setup()
        self._metrics.decided(record.id, d, drop)
        if drop:
            yield beam.pvalue.TaggedOutput(DROPPED, out)
        else:
            yield out


class Deduplicate(beam.PTransform):
    """Annotate (or, with ``drop_duplicates``, filter) near-duplicate and exact copies.

    ``Deduplicate(config, seed=None)`` applied to a ``PCollection[ArticleRecord]`` returns
    ``(records, dropped)``: ``records`` holds every record annotated (only canonical records
    and updates when ``config.drop_duplicates``), ``dropped`` the suppressed ones (empty
    unless ``drop_duplicates``). Each input record is in exactly one of the two.

    ``seed``: an optional ``PCollection`` of :func:`fingerprint_entry` dicts (e.g. read from a
    compacted topic the job writes) that restore the index after a restart. Seeds are a
    side input: lookups wait until it is complete, produce no output themselves.
    """

    def __init__(self, config: DedupConfig | None = None, seed: beam.PCollection | None = None) -> None:
        super().__init__()
        self.config = config or DedupConfig()
        self.seed = seed

    def expand(self, pcoll: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        cfg = self.config
        prepared = pcoll | "Prepare" >> beam.ParDo(_Prepare(cfg)).with_outputs("lookups", main="records")
        # typed keys and compact value coders (copydesk.transforms.dedup.coders) instead of
        # FastPrimitivesCoder/PickleCoder on every keyed element
        prepared.records.element_type = KV[str, DecideMsg]
        prepared.lookups.element_type = KV[int, LookupMsg]
        if self.seed is not None:
            seed_kvs = self.seed | "SeedKeys" >> beam.ParDo(_SeedKeys(cfg), beam.pvalue.AsList(self.seed)).with_output_types(
                KV[int, EntryMsg])
            lookup = beam.ParDo(_SeededLookup(cfg), beam.pvalue.AsMultiMap(seed_kvs)).with_input_types(
                KV[int, LookupMsg], Any)
        else:
            lookup = beam.ParDo(_Lookup(cfg)).with_input_types(KV[int, LookupMsg])
        answers = prepared.lookups | "Lookup" >> lookup.with_output_types(KV[str, DecideMsg])
        decided = (
            (prepared.records, answers)
            | "Gather" >> beam.Flatten().with_output_types(KV[str, DecideMsg])
            | "Decide" >> beam.ParDo(_Decide(cfg)).with_input_types(KV[str, DecideMsg]).with_outputs(DROPPED, main="records")
        )
        return decided.records, decided[DROPPED]


def entries_of(records: Iterable[ArticleRecord], cfg: DedupConfig | None = None) -> list[dict[str, Any]]:
    """:func:`fingerprint_entry` of each record (convenience for tests and tools)."""
    return [fingerprint_entry(r, cfg) for r in records]
