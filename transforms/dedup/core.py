"""The de-duplication core: configuration, index entries, the cluster-decision rule and a
serial in-memory index with a horizon (pure Python, no Beam).

The Beam stage in :mod:`copydesk.transforms.dedup.stage` distributes exactly this logic: the
per-key lookups of :class:`DedupIndex` become keyed state per LSH band (and per URL and per
content hash), and :func:`decide` runs unchanged on the lookups' answers. The serial index
is what the unit tests and the 1M-record benchmark exercise.

Keys
    Every record is looked up and then inserted under ``bands + 2`` keys: one per LSH band
    (band index, band value), one for its id (= canonical URL) and one for its content hash.
    A lookup returns the *visible* members: entries already present under the same key and
    value whose event time is within the horizon of the record's.

Decision rule (see :func:`decide`)
    A member ``m`` matches record ``r`` when it has the same id, the same content hash, or an
    estimated Jaccard similarity ``>= threshold``. ``m`` *precedes* ``r`` when ``r`` saw ``m``
    in every key they share (``m`` was inserted first everywhere), or, when each saw the
    other under some key (they were processed concurrently on different workers), when
    ``m`` has the smaller ``(stamp, token)``. The record joins the earliest preceding match
    (smallest ``(stamp, token)``): its ``cluster_id`` is that member's cluster id (its own id
    for a live member, the recorded one for a seed from before a restart); with no preceding
    match the record starts a cluster whose id is its own id.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from copydesk.transforms import agencies
from copydesk.transforms.dedup.minhash import (
    EMPTY_SIGNATURE,
    band_values,
    decode_signature,
    encode_signature,
    similarity,
)

__all__ = [
    "DEFAULT_AGENCY_DOMAINS",
    "Decision",
    "DedupConfig",
    "DedupIndex",
    "Member",
    "decide",
    "event_time",
    "fingerprint_entry",
    "is_agency_domain",
    "key_values",
    "member_from_entry",
]

DEFAULT_AGENCY_DOMAINS: tuple[str, ...] = agencies.DOMAINS

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


@dataclass(frozen=True, slots=True)
class DedupConfig:
    """Settings of the de-duplication stage (frozen, picklable).

    threshold: estimated Jaccard similarity of word shingles at or above which two bodies
        are near-duplicates (chosen from ``benchmarks/bench_dedup.py``).
    num_perm / bands / rows: MinHash permutations and LSH banding (``bands * rows <= num_perm``).
    shingle_size: words per shingle.
    min_words: bodies with fewer tokens get no near-duplicate matching (exact only): short
        teasers are mostly site boilerplate.
    horizon_seconds: how long (event time) a record stays matchable; state older than that
        is released.
    drop_duplicates: emit only canonical records (and updates when ``keep_updates``) on the
        main output; the others go to the ``dropped`` output.
    keep_updates: with ``drop_duplicates``, still emit records flagged as updates.
    force: emit every record on the main output even when ``drop_duplicates`` would drop it
        (``--force``; a single message asks for the same with ``"force": true``). The
        record is still annotated (``duplicate_of``, ``duplicate_kind`` ...).
    agency_domains: domains whose copy is the canonical member of a cluster.
    shard_bits: the key space per lookup kind is ``2**shard_bits`` keys (Beam stage only);
        bounded so that every key is touched often and lazily pruned.
    prune_seeds: drop seeds (fingerprint entries read on start-up) older than the newest
        seed's event time minus ``horizon_seconds`` before they are expanded into keyed
        entries (Beam stage only; see ``docs/dedup.md``, "Restart on the local runner").
    seed: seed of the MinHash permutation parameters (changing it invalidates stored
        fingerprints).
    """

    threshold: float = 0.5
    num_perm: int = 128
    bands: int = 32
    rows: int = 4
    shingle_size: int = 5
    min_words: int = 30
    horizon_seconds: float = 7 * 24 * 3600.0
    drop_duplicates: bool = False
    keep_updates: bool = True
    force: bool = False
    agency_domains: tuple[str, ...] = DEFAULT_AGENCY_DOMAINS
    shard_bits: int = 12
    seed: int = 1
    prune_seeds: bool = True

    def __post_init__(self) -> None:
        if self.bands * self.rows > self.num_perm:
            raise ValueError("bands * rows must not exceed num_perm")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        if self.horizon_seconds <= 0:
            raise ValueError("horizon_seconds must be positive")

    @property
    def url_key(self) -> int:
        """Key index of the canonical-URL lookup."""
        return self.bands

    @property
    def hash_key(self) -> int:
        """Key index of the content-hash lookup."""
        return self.bands + 1


def is_agency_domain(domain: str, agency_domains: Iterable[str]) -> bool:
    """True when ``domain`` is one of ``agency_domains`` or a subdomain of one."""
    d = (domain or "").lower().removeprefix("www.")
    return any(d == a or d.endswith("." + a) for a in agency_domains)


class Member(NamedTuple):
    """What the index keeps per record (and what a lookup returns).

    token: unique per processed element (two deliveries of one URL have distinct tokens).
    stamp: arrival order key in ns (time of entering the dedup stage; for seeds derived from
        the event time, which is earlier than any live arrival).
    ts: event time in epoch seconds (the horizon is measured on it).
    sig: MinHash signature (may be empty: exact matching only).
    cluster_id / canonical: known for seeds (restored state); ``None`` for live members.
    """

    token: str
    id: str
    stamp: int
    ts: float
    sig: bytes
    domain: str
    agency: bool
    content_hash: str
    cluster_id: str | None = None
    canonical: str | None = None

    @property
    def order(self) -> tuple[int, str]:
        return (self.stamp, self.token)


@dataclass(slots=True)
class Decision:
    """The annotation of one record."""

    cluster_id: str
    duplicate_of: str | None
    is_canonical: bool
    is_update: bool
    duplicate_kind: str | None
    cluster_outlets: list[str] = field(default_factory=list)
    matched: int = 0  # number of matching members seen (diagnostics)


def _value_of_str(h: str) -> int:
    """64-bit value of an id or content hash (BLAKE2b of the whole string)."""
    return int.from_bytes(hashlib.blake2b(h.encode("utf-8"), digest_size=8).digest(), "little")


def key_values(m: Member, cfg: DedupConfig) -> list[tuple[int, int]]:
    """The (key index, value) pairs a member is looked up and stored under: one per LSH band
    (none when the signature is empty), then the URL key and the content-hash key."""
    out = list(enumerate(band_values(m.sig, cfg.bands, cfg.rows))) if m.sig else []
    out.append((cfg.url_key, _value_of_str(m.id)))
    if m.content_hash:
        out.append((cfg.hash_key, _value_of_str(m.content_hash)))
    return out


def shard_key(index: int, value: int, shard_bits: int) -> int:
    """The Beam state key of a (key index, value): ``index * 2**shard_bits + shard``."""
    shard = ((value * _GOLDEN) & _MASK64) >> (64 - shard_bits) if shard_bits else 0
    return (index << shard_bits) | shard


def _matches(r: Member, m: Member, cfg: DedupConfig) -> tuple[bool, float]:
    if m.id == r.id or (r.content_hash and m.content_hash == r.content_hash):
        return True, 1.0
    s = similarity(r.sig, m.sig)
    return s >= cfg.threshold, s


def decide(r: Member, visible: Mapping[int, Sequence[Member]], cfg: DedupConfig) -> Decision:
    """The cluster decision for record ``r`` given what each of its lookups returned.

    ``visible`` maps key index -> members found under ``r``'s value for that key (members
    inserted earlier and within the horizon). Missing key indices count as empty answers.
    Pure and deterministic: the same inputs give the same decision on any worker.
    """
    cands: dict[str, Member] = {}
    seen_in: dict[str, set[int]] = {}
    for idx, ms in visible.items():
        for m in ms:
            if m.token == r.token:
                continue
            cands.setdefault(m.token, m)
            seen_in.setdefault(m.token, set()).add(idx)

    r_vals = dict(key_values(r, cfg))
    preceding: list[tuple[Member, str]] = []  # (member, relation)
    concurrent_later: list[Member] = []
    for tok, m in cands.items():
        ok, _sim = _matches(r, m, cfg)
        if not ok:
            continue
        # keys the two share: if r did not see m under one of them, m was inserted after r
        # there (processed concurrently elsewhere), so m also sees r: order them by stamp.
        shared = {i for i, v in key_values(m, cfg) if r_vals.get(i) == v}
        mutual = bool(shared - seen_in[tok])
        if mutual and m.order > r.order:
            concurrent_later.append(m)
            continue
        if m.id == r.id:
            rel = "exact_url" if (m.content_hash == r.content_hash) else "update_url"
        elif r.content_hash and m.content_hash == r.content_hash:
            rel = "exact"
        elif m.domain == r.domain:
            rel = "update"
        else:
            rel = "near"
        preceding.append((m, rel))

    if preceding:
        root = min((m for m, _ in preceding), key=lambda m: m.order)
        cluster_id = root.cluster_id or root.id
        root_canonical = root.canonical or root.id
    else:
        root = None
        cluster_id = r.id
        root_canonical = r.id

    everyone = sorted([m for m, _ in preceding] + concurrent_later + [r], key=lambda m: m.order)
    agencies = [m for m in everyone if m.agency]
    if agencies:
        canon = agencies[0]
        canonical_id, canonical_tok = canon.id, canon.token
    else:
        canonical_id = root_canonical
        canonical_tok = root.token if root is not None else r.token
    is_canonical = canonical_tok == r.token

    rels = {rel for _, rel in preceding}
    kind: str | None = None
    for k in ("exact_url", "update_url", "exact", "update", "near"):
        if k in rels:
            kind = "update" if k == "update_url" else k
            break
    is_update = kind == "update"
    if is_canonical and not is_update:
        kind = None

    outlets: list[str] = []
    for m in everyone:
        if m.domain and m.domain not in outlets:
            outlets.append(m.domain)
    return Decision(
        cluster_id=cluster_id,
        duplicate_of=None if is_canonical else canonical_id,
        is_canonical=is_canonical,
        is_update=is_update,
        duplicate_kind=kind,
        cluster_outlets=outlets,
        matched=len(preceding) + len(concurrent_later),
    )


def visible_for(r: Member, entries: Iterable[tuple[int, Member]], value: int, horizon: float) -> list[Member]:
    """Members among a key's ``(value, member)`` entries that ``r`` can see: same value, event
    time within ``horizon`` of ``r``'s, not ``r`` itself."""
    lo = r.ts - horizon
    return [m for v, m in entries if v == value and m.ts >= lo and m.token != r.token]


class DedupIndex:
    """Serial index with the same semantics as the Beam stage (one process, one key space).

    Memory is proportional to the members inside the horizon: every :meth:`process` call
    first releases members whose event time is older than ``max event time seen - horizon``.
    """

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self._buckets: dict[tuple[int, int], list[Member]] = {}
        self._expiry: list[tuple[float, str, tuple[tuple[int, int], ...]]] = []
        self._members: dict[str, Member] = {}
        self._now = -math.inf

    def __len__(self) -> int:
        return len(self._members)

    def _prune(self) -> None:
        lo = self._now - self.cfg.horizon_seconds
        while self._expiry and self._expiry[0][0] < lo:
            _, tok, keys = heapq.heappop(self._expiry)
            self._members.pop(tok, None)
            for k in keys:
                lst = self._buckets.get(k)
                if lst is None:
                    continue
                lst[:] = [m for m in lst if m.token != tok]
                if not lst:
                    del self._buckets[k]

    def _insert(self, m: Member, kv: list[tuple[int, int]]) -> None:
        keys = tuple(kv)
        for k in keys:
            self._buckets.setdefault(k, []).append(m)
        self._members[m.token] = m
        heapq.heappush(self._expiry, (m.ts, m.token, keys))

    def add_seed(self, m: Member) -> None:
        """Insert a restored member without deciding anything for it."""
        self._now = max(self._now, m.ts)
        self._insert(m, key_values(m, self.cfg))

    def lookup(self, m: Member, kv: list[tuple[int, int]] | None = None) -> dict[int, list[Member]]:
        """What each of ``m``'s keys returns (visible members per key index)."""
        kv = key_values(m, self.cfg) if kv is None else kv
        lo = m.ts - self.cfg.horizon_seconds
        out: dict[int, list[Member]] = {}
        for k in kv:
            lst = self._buckets.get(k)
            if lst:
                vis = [x for x in lst if x.ts >= lo and x.token != m.token]
                if vis:
                    out[k[0]] = vis
        return out

    def process(self, m: Member) -> Decision:
        """Decide for ``m`` against the current index, then insert it."""
        if m.ts > self._now:
            self._now = m.ts
            self._prune()
        kv = key_values(m, self.cfg)
        d = decide(m, self.lookup(m, kv), self.cfg)
        self._insert(m, kv)
        return d


# --- event time, fingerprint entries -------------------------------------------------------


def parse_iso(s: str | None) -> float | None:
    """Epoch seconds of an ISO-8601 timestamp (naive = UTC); ``None`` if absent or invalid."""
    if not s:
        return None
    try:
        t = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except (ValueError, TypeError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def event_time(record: Any, element_ts: float | None = None) -> float:
    """The event time the horizon is measured on: ``fetched_at`` (when the pipeline got the
    copy), else ``published_at``, else the element timestamp when finite, else 0."""
    for attr in ("fetched_at", "published_at"):
        t = parse_iso(getattr(record, attr, None))
        if t is not None:
            return t
    if element_ts is not None and math.isfinite(element_ts) and abs(element_ts) < 1e11:
        return float(element_ts)
    return 0.0


def fingerprint_entry(record: Any, cfg: DedupConfig | None = None) -> dict[str, Any]:
    """The small, JSON-able entry that restores a de-duplicated record into the index.

    ``record`` is an annotated :class:`~copydesk.schemas.records.ArticleRecord` (its
    ``fingerprint`` is the MinHash fingerprint set by the dedup stage). Keys: ``v`` (format
    version), ``id``, ``cluster_id``, ``canonical`` (the cluster's canonical id as decided),
    ``fp`` (the fingerprint string), ``domain``, ``ts`` (event time, epoch s), ``agency``,
    ``content_hash``. Key it by ``id`` in a compacted topic.
    """
    cfg = cfg or DedupConfig()
    domain = record.source_domain or ""
    return {
        "v": 1,
        "id": record.id,
        "cluster_id": record.cluster_id or record.id,
        "canonical": record.duplicate_of or record.id,
        "fp": record.fingerprint if str(record.fingerprint).startswith("mh1:") else encode_signature(EMPTY_SIGNATURE),
        "domain": domain,
        "ts": event_time(record),
        "agency": is_agency_domain(domain, cfg.agency_domains),
        "content_hash": record.content_hash or "",
    }


def member_from_entry(entry: Mapping[str, Any]) -> Member:
    """The index member of a fingerprint entry (a seed). Its stamp is its event time in ns,
    so it orders before every live arrival."""
    ts = float(entry["ts"])
    return Member(
        token=f"seed:{entry['id']}:{ts!r}",
        id=entry["id"],
        stamp=int(ts * 1e9),
        ts=ts,
        sig=decode_signature(entry.get("fp") or "mh1:"),
        domain=entry.get("domain") or "",
        agency=bool(entry.get("agency")),
        content_hash=entry.get("content_hash") or "",
        cluster_id=entry.get("cluster_id") or entry["id"],
        canonical=entry.get("canonical") or entry["id"],
    )
