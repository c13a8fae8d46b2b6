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

import base64
import collections
import datetime as _dt
import functools
import hashlib
import itertools
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from copydesk.transforms import agencies
import numpy as np

from copydesk.transforms.dedup.minhash import (
    BAND_DTYPE,
    EMPTY_SIGNATURE,
    SketchParams,
    band_values,
    decode_signature,
    encode_signature,
    entity_containment,
    features,
    lead_share,
    overlap,
    sketch,
    similarity,
)

__all__ = [
    "DEFAULT_AGENCY_DOMAINS",
    "Decision",
    "DedupConfig",
    "DedupIndex",
    "Member",
    "VETO",
    "decide",
    "event_time",
    "fingerprint_entry",
    "is_agency_domain",
    "key_values",
    "index_keys",
    "member_from_entry",
    "relation",
    "resolve",
]

DEFAULT_AGENCY_DOMAINS: tuple[str, ...] = agencies.DOMAINS

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


@dataclass(frozen=True, slots=True)
class DedupConfig:
    """Settings of the de-duplication stage (frozen, picklable).

    threshold: estimated Jaccard similarity of word shingles at or above which two bodies
        are copies (chosen from ``benchmarks/bench_dedup.py``, as are the next six).
    containment / min_cover: two bodies are also copies when the intersection of their
        shingle sets (estimated from the MinHash and both set sizes) covers at least
        ``containment`` of the smaller and ``min_cover`` of the larger: a truncated copy or
        an excerpt, not a short item quoted inside a long page.
    same_site_threshold: the Jaccard estimate above which two bodies of one site are copies
        (shared templates make text overlap less telling within a site; a same-site version
        below it needs the second signal).
    version_overlap / version_entities: the second signal, for versions (write-thrus): the
        intersection covers at least ``version_overlap`` of the smaller body and at least
        ``version_entities`` of the smaller body's names and quotes
        (:func:`~copydesk.transforms.dedup.minhash.entity_sketch`) are in the other's.
    version_lead: the version signal does not hold when at least this share of the text the
        two bodies share lies in the smaller body's first half
        (:func:`~copydesk.transforms.dedup.minhash.lead_share`): that page carries the smaller
        body's opening and little else of it (a list, a newsletter, a roundup's item on it),
        and a story names who, where and when in its opening, so it shares the names too; a
        version rewrites the top and keeps the body. Not known for members from older entries
        (not applied).
    roundup_cover / roundup_extra / roundup_share: two bodies of one site where one
        carries at least ``roundup_cover`` of the other verbatim, and that is more than
        ``roundup_share`` of it but at least ``roundup_extra`` of it is its own text, are
        different pages (a roundup, a compilation), never a match. A page where the quoted
        body is at most ``roundup_share`` is the expansion of a short first item (the
        agency's pattern), matched as an update.
    entity_k / min_entities: size of the entity sketch (bottom-k of 16-bit hashes); the
        version signal needs at least ``min_entities`` names in both bodies.
    expansion_lead: two pages of one site where the smaller is at most ``roundup_share`` of the
        larger (a short first item and its expansion, or a page quoting part of another) match
        only when at least this share of the text they share lies in the larger page's first
        half (:func:`~copydesk.transforms.dedup.minhash.lead_share`): an expansion starts with
        its first item, a roundup or compilation carries other pages' text after its own.
    num_perm / bands / rows: MinHash permutations and LSH banding (``bands * rows <= num_perm``).
        ``rows=1``: a band is one permutation's full 32-bit minimum (the signature keeps its
        low 16 bits, the member ``hi`` the high ones), so two bodies are candidates when they
        share one of ``bands`` minima, ``1 - (1 - J)**bands``; ``rows`` 2 or 4: that many
        16-bit values per band, ``1 - (1 - J**rows)**bands``.
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
    shard_bits: unused since the stage keeps one index (kept so that existing options parse).
    prune_seeds: drop seeds (fingerprint entries read on start-up) older than the newest
        seed's event time minus ``horizon_seconds`` before they are expanded into keyed
        entries (Beam stage only; see ``docs/dedup.md``, "Restart on the local runner").
    seed: seed of the MinHash permutation parameters (changing it invalidates stored
        fingerprints).
    """

    threshold: float = 0.5
    containment: float = 0.8
    min_cover: float = 0.2
    same_site_threshold: float = 0.6
    version_overlap: float = 0.3
    version_entities: float = 0.8
    version_sum: float = 0.0
    version_lead: float = 0.9
    roundup_cover: float = 0.9
    roundup_extra: float = 0.15
    roundup_share: float = 0.5
    expansion_lead: float = 0.2
    entity_k: int = 48
    min_entities: int = 5
    num_perm: int = 128
    bands: int = 48
    rows: int = 1
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
        if self.rows not in (1, 2, 4):
            raise ValueError("rows must be 1, 2 or 4 (a band value is at most 64 bits)")

    @property
    def n_hi(self) -> int:
        """Permutations whose full minimum a member carries (``hi``): the bands when ``rows=1``."""
        return self.bands if self.rows == 1 else 0

    @property
    def sketch_params(self) -> SketchParams:
        """The parameters of the sketch this configuration reads (a precomputed sketch made with
        other ones is not used: :func:`~copydesk.transforms.sketch.decode_sketch`)."""
        return SketchParams(self.shingle_size, self.min_words, self.num_perm, self.seed, self.entity_k, self.n_hi)

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
    nsh / ents: the number of distinct shingles and the entity sketch (containment and the
        version signal; 0 and empty in fingerprint entries written before they existed).
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
    nsh: int = 0  # distinct shingles of the body (0: unknown, e.g. an old fingerprint entry)
    ents: bytes = b""  # entity sketch (names and quotes)
    hi: bytes = b""  # high 16 bits of the first minima: full-precision LSH keys (b"": an older member)
    lead: bytes = b""  # one bit per permutation: its minimum lies in the body's first half

    @property
    def order(self) -> tuple[int, str]:
        return (self.stamp, self.token)


# --- the member's compact encoding (state, the log, shuffled batches; copydesk.transforms.dedup.coders)

MEMBER_HEADER = struct.Struct("<BqdIIIIIIIiI")
_HI_LEAD = struct.Struct("<HH")  # after the entity sketch when flag 16 is set: the lengths of hi and lead
_I64 = (-(1 << 63), (1 << 63) - 1)


def encode_member(m: Member) -> bytes:
    tok = m.token.encode("utf-8")
    mid = m.id.encode("utf-8")
    dom = m.domain.encode("utf-8")
    ch = m.content_hash.encode("utf-8")
    cid = b"" if m.cluster_id is None else m.cluster_id.encode("utf-8")
    can = b"" if m.canonical is None else m.canonical.encode("utf-8")
    flags = (1 if m.agency else 0) | (2 if m.cluster_id is not None else 0) | (4 if m.canonical is not None else 0)
    hi, lead = bytes(m.hi), bytes(m.lead)
    if hi or lead:
        flags |= 16
    stamp = int(m.stamp)
    extra = b""
    if not _I64[0] <= stamp <= _I64[1]:
        flags |= 8
        extra = str(stamp).encode("ascii")
        stamp = 0
    sig = bytes(m.sig)
    ents = bytes(m.ents)
    return b"".join((
        MEMBER_HEADER.pack(flags, stamp, float(m.ts), len(tok), len(mid), len(sig), len(dom), len(ch), len(cid), len(can),
                  int(m.nsh), len(ents)),
        tok, mid, sig, dom, ch, cid, can, ents,
        _HI_LEAD.pack(len(hi), len(lead)) + hi + lead if flags & 16 else b"",
        extra,
    ))


def decode_member(b: bytes | memoryview, pos: int = 0, end: int | None = None) -> Member:
    flags, stamp, ts, lt, li, ls, ld, lc, lk, ln, nsh, le = MEMBER_HEADER.unpack_from(b, pos)
    p = pos + MEMBER_HEADER.size
    mv = memoryview(b)
    tok = str(mv[p:p + lt], "utf-8"); p += lt
    mid = str(mv[p:p + li], "utf-8"); p += li
    sig = bytes(mv[p:p + ls]); p += ls
    dom = str(mv[p:p + ld], "utf-8"); p += ld
    ch = str(mv[p:p + lc], "utf-8"); p += lc
    cid = str(mv[p:p + lk], "utf-8") if flags & 2 else None; p += lk
    can = str(mv[p:p + ln], "utf-8") if flags & 4 else None; p += ln
    ents = bytes(mv[p:p + le]); p += le
    hi = lead = b""
    if flags & 16:
        lh, ll = _HI_LEAD.unpack_from(b, p)
        p += _HI_LEAD.size
        hi = bytes(mv[p:p + lh]); p += lh
        lead = bytes(mv[p:p + ll]); p += ll
    if flags & 8:
        stamp = int(str(mv[p:len(b) if end is None else end], "ascii"))
    return Member(token=tok, id=mid, stamp=stamp, ts=ts, sig=sig, domain=dom, agency=bool(flags & 1),
                  content_hash=ch, cluster_id=cid, canonical=can, nsh=nsh, ents=ents, hi=hi, lead=lead)



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


@functools.lru_cache(maxsize=4096)  # a record's id and hash are asked for by its keys, the index and its matches
def _value_of_str(h: str) -> int:
    """64-bit value of an id or content hash (BLAKE2b of the whole string)."""
    return int.from_bytes(hashlib.blake2b(h.encode("utf-8"), digest_size=8).digest(), "little")


def key_values(m: Member, cfg: DedupConfig) -> list[tuple[int, int]]:
    """The (key index, value) pairs a member is looked up and stored under: one per LSH band
    (none when the signature is empty), then the URL key and the content-hash key."""
    vals, salt = band_keys(m, cfg)
    out = [(i + salt, int(v)) for i, v in enumerate(vals.tolist())]
    out.append((cfg.url_key, _value_of_str(m.id)))
    if m.content_hash:
        out.append((cfg.hash_key, _value_of_str(m.content_hash)))
    return out


def shard_key(index: int, value: int, shard_bits: int) -> int:
    """The Beam state key of a (key index, value): ``index * 2**shard_bits + shard``."""
    shard = ((value * _GOLDEN) & _MASK64) >> (64 - shard_bits) if shard_bits else 0
    return (index << shard_bits) | shard


VETO = "veto"


_SAME_TEXT = ("exact_url", "update_url", "exact")


def _vetoed(pairs: Sequence[tuple[Member, str]]) -> list[tuple[Member, str]]:
    """The matches left when the record is a roundup of some member (:data:`VETO`): then it
    is a page of its own, the version of no story (it matches the short first item of the
    story it quotes whole, or another story it quotes a part of, as an expansion would):
    only the same URL or the same text still join it. No chain through a roundup."""
    if not any(rel == VETO for _, rel in pairs):
        return list(pairs)
    return [(m, rel) for m, rel in pairs if rel in _SAME_TEXT]


def relation(r: Member, m: Member, cfg: DedupConfig, sim: float | None = None) -> str | None:
    """How member ``m`` matches record ``r``: ``"exact_url"`` / ``"update_url"`` (same id, same
    or new text), ``"exact"`` (same content hash), ``"update"`` (a copy or a version from the
    same site), ``"near"`` (a copy or a version from another site), :data:`VETO` (``r`` is a
    roundup of ``m``: no match, nor any but same-text ones for ``r``), or ``None``.

    Copy: estimated Jaccard ``>= threshold``, or the shingle intersection covers
    ``containment`` of the smaller body and ``min_cover`` of the larger. Version: it covers
    ``version_overlap`` of the smaller body and ``version_entities`` of the smaller body's
    names and quotes are in the other's, unless ``version_lead`` of the text they share lies
    in the smaller body's first half (a page quoting its opening). Two bodies of one site
    where one carries ``roundup_cover`` of the other, as more than ``roundup_share`` but at most
    ``1 - roundup_extra`` of its own text, never match (a roundup quoting a story is not
    that story's update; a full story expanding its short first item is). Two pages of one
    site where the smaller is at most ``roundup_share`` of the larger match only when at
    least ``expansion_lead`` of the text they share lies in the larger's first half
    (:func:`~copydesk.transforms.dedup.minhash.lead_share`; unknown for members from older
    entries: not applied). ``sim``: the Jaccard estimate when the caller has computed it
    already."""
    if m.id == r.id:
        return "exact_url" if m.content_hash == r.content_hash else "update_url"
    if r.content_hash and m.content_hash == r.content_hash:
        return "exact"
    if not r.sig or not m.sig:
        return None
    j = similarity(r.sig, m.sig) if sim is None else sim
    cs, cl = overlap(j, r.nsh, m.nsh)
    same_site = bool(r.domain) and r.domain == m.domain
    if same_site and cs >= cfg.roundup_cover and cl <= 1.0 - cfg.roundup_extra:
        # one carries the other whole plus text of its own: the record is a roundup when it is
        # the larger and the quoted body is most of it (a larger record where it is not is the
        # full story after its short first item); a record quoted whole by an earlier page
        # of its site is not that page's version
        if r.nsh <= m.nsh:
            return None
        if cl > cfg.roundup_share:
            return VETO
    ok = j >= (cfg.same_site_threshold if same_site else cfg.threshold) or (
        cs >= cfg.containment and cl >= cfg.min_cover)
    if not ok and cs >= cfg.version_overlap and min(len(r.ents), len(m.ents)) >= 2 * cfg.min_entities:
        e = entity_containment(r.ents, m.ents, cfg.entity_k)
        ok = e >= cfg.version_entities and cs + e >= cfg.version_sum
        if ok and cfg.version_lead <= 1.0:
            # what they share is the smaller body's opening alone: a list or roundup item quoting it
            share = lead_share(r.sig, m.sig, (r if r.nsh <= m.nsh else m).lead)
            ok = share is None or share < cfg.version_lead
    if not ok:
        return None
    if same_site and cfg.expansion_lead > 0 and 0 < min(r.nsh, m.nsh) <= cfg.roundup_share * max(r.nsh, m.nsh):
        # the smaller is at most half of the larger: an expansion of a short first item carries
        # it at its top; a page carrying another's text in its back half is a compilation
        share = lead_share(r.sig, m.sig, (r if r.nsh >= m.nsh else m).lead)
        if share is not None and share < cfg.expansion_lead:
            return None
    return "update" if same_site else "near"


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
        rel = relation(r, m, cfg)
        if rel is None:
            continue
        # keys the two share: if r did not see m under one of them, m was inserted after r
        # there (processed concurrently elsewhere), so m also sees r: order them by stamp.
        shared = {i for i, v in key_values(m, cfg) if r_vals.get(i) == v}
        mutual = bool(shared - seen_in[tok])
        if mutual and m.order > r.order:
            if rel != VETO:
                concurrent_later.append(m)
            continue
        preceding.append((m, rel))
    return resolve(r, _vetoed(preceding), concurrent_later)


def resolve(r: Member, preceding: Sequence[tuple[Member, str]], concurrent_later: Sequence[Member] = ()) -> Decision:
    """The decision of ``r`` from its matching members that precede it (with their
    :func:`relation`) and the matching ones processed concurrently that order after it."""
    if preceding:
        root = min((m for m, _ in preceding), key=lambda m: m.order)
        cluster_id = root.cluster_id or root.id
        root_canonical = root.canonical or root.id
    else:
        root = None
        cluster_id = r.id
        root_canonical = r.id

    everyone = sorted([m for m, _ in preceding] + list(concurrent_later) + [r], key=lambda m: m.order)
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


_KEY_MUL = np.uint64(0xD6E8FEB86659FD93)
_BAND_VIEW = BAND_DTYPE  # a band value is its rows' 16-bit values as one integer
LEGACY_SALT = 1 << 16  # key index offset of the bands of a member without ``hi`` (rows=1 only)


def band_keys(m: Member, cfg: DedupConfig, legacy: bool = False) -> tuple[np.ndarray, int]:
    """The LSH band values of a member (uint64) and the key-index offset of their kind.

    ``rows=1``: each of the first ``bands`` permutations' full 32-bit minimum (``hi << 16 |
    sig``). A member without ``hi`` (restored from an older fingerprint entry or state) has
    2-row bands of its 16-bit values instead, under key indices offset by
    :data:`LEGACY_SALT`; ``legacy=True`` gives those of any member (a live record probes
    them while the index holds such members). Other ``rows``: the 16-bit values ``rows`` at a
    time, as before."""
    if not m.sig:
        return np.empty(0, dtype=np.uint64), 0
    if cfg.rows == 1:
        if len(m.hi) >= 2 * cfg.bands and not legacy:
            lo = np.frombuffer(m.sig, dtype="<u2", count=cfg.bands).astype(np.uint64)
            hi = np.frombuffer(m.hi, dtype="<u2", count=cfg.bands).astype(np.uint64)
            return (hi << np.uint64(16)) | lo, 0
        return np.frombuffer(m.sig, dtype="<u4", count=cfg.bands).astype(np.uint64), LEGACY_SALT
    if cfg.rows in _BAND_VIEW:
        return np.frombuffer(m.sig, dtype=_BAND_VIEW[cfg.rows], count=cfg.bands).astype(np.uint64), 0
    return np.asarray(band_values(m.sig, cfg.bands, cfg.rows), dtype=np.uint64), 0


def _hash_keys(vals: np.ndarray, idx: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (vals ^ (idx * _KEY_MUL)) * np.uint64(_GOLDEN)
    return (h >> np.uint64(32)).astype(np.uint32)


def legacy_keys(m: Member, cfg: DedupConfig) -> np.ndarray:
    """The band keys of ``m`` as a member without ``hi`` has them (:func:`band_keys`)."""
    vals, salt = band_keys(m, cfg, legacy=True)
    return _hash_keys(vals, np.arange(vals.size, dtype=np.uint64) + np.uint64(salt))


def index_keys(m: Member, cfg: DedupConfig) -> np.ndarray:
    """32-bit hash-table keys of a member: one per LSH band (none without a signature), then
    the id and the content hash (a candidate filter: every candidate is verified, so a
    collision costs one comparison). Vectorised equivalent of hashing :func:`key_values`."""
    bv, salt = band_keys(m, cfg)
    n_b = bv.size
    vals = np.empty(n_b + 2, dtype=np.uint64)
    vals[:n_b] = bv
    vals[n_b] = _value_of_str(m.id)
    vals[n_b + 1] = _value_of_str(m.content_hash) if m.content_hash else 0
    idx = np.arange(n_b + 2, dtype=np.uint64)
    if not n_b:
        idx += np.uint64(cfg.bands)
    else:
        idx[:n_b] += np.uint64(salt)
    keys = _hash_keys(vals, idx)
    return keys if m.content_hash else keys[:-1]


class DedupIndex:
    """The index of the members inside the horizon, in compact numpy arrays, and the serial
    decision (the Beam stage keeps one of these in its ``Index`` step; see ``docs/dedup.md``).

    Members live in a ring of ``capacity`` positions (columns: signature, shingle count,
    event time, sequence number, 64-bit hashes of id and content hash, and the member without
    its signature in its compact encoding, :func:`encode_member`), in arrival order. A
    member's keys (:func:`index_keys`: its LSH bands, id and content hash as 32-bit hashes)
    are entries of a chained hash table kept in arrays: ``head[bucket]`` (the bucket is the
    key's low bits) is the newest entry of a bucket, ``nxt[entry]`` the next older one, an
    entry being ``position * k + column`` and holding the key's high 16 bits. Chains run
    strictly from newer to older members, so a link to a position that was reused by a newer
    member, or to one released, ends the chain: nothing is ever unlinked. A member is released
    when its event time is older than the newest event time seen minus the horizon (the ring
    releases in arrival order, so one with a later event time holds the ones behind it for a
    while). The ring grows by half (entries relinked) when it is full of members inside the
    horizon.

    Per position: the signature (256 bytes), the high bits of the band minima (``2 x bands``,
    96 bytes) and the lead bits (16 bytes), ``(2 + 4 + 2) x (bands + 2)`` bytes of keys,
    links and table (400 bytes at 48 bands), ~40 bytes of columns and the encoded member
    (~330 bytes with its entity sketch); ``benchmarks/bench_dedup.py --part core`` measures
    the RSS. Members without ``hi`` (older fingerprint entries or state) are kept under
    their 2-row 16-bit bands; a live record probes those too while any are kept.
    """

    MAX_CHAIN = 64  # entries walked per key at most: a key shared by very many members (boilerplate) is capped

    def __init__(self, cfg: DedupConfig, capacity: int = 4096) -> None:
        self.cfg = cfg
        self._k = cfg.bands + 2
        self._now = -math.inf
        self._start = 0  # sequence number of the oldest member kept
        self._end = 0  # next sequence number
        self.last: Member | None = None  # the member :meth:`process` inserted last
        self.inserted: list[Member] = []  # the members :meth:`process_batch` inserted
        self._grows = 0
        self._decoded: dict[int, Member] = {}  # position -> its member, decoded (recently matched ones)
        self._alloc(max(16, capacity))

    def _alloc(self, cap: int) -> None:
        if cap * self._k >= 2**31:
            raise MemoryError("dedup index: more than 2**31 entries")
        self._cap = cap
        self._sig = np.zeros((cap, self.cfg.num_perm), dtype=np.uint16)
        self._nsh = np.zeros(cap, dtype=np.int32)
        self._ts = np.zeros(cap, dtype=np.float64)
        self._seq = np.full(cap, -1, dtype=np.int64)  # sequence number of the member at a position
        self._keys = np.zeros(cap * self._k, dtype=np.uint16)  # high 16 bits of each key (the bucket has the low ones)
        self._nxt = np.full(cap * self._k, -1, dtype=np.int32)
        self._blob: list[bytes | None] = [None] * cap  # the member without its signature, encoded
        self._has_sig = np.zeros(cap, dtype=bool)
        self._hi = np.zeros((cap, self.cfg.n_hi), dtype=np.uint16)  # high bits of the band minima (rows=1)
        self._has_hi = np.zeros(cap, dtype=bool)
        self._lead = np.zeros((cap, (self.cfg.num_perm + 7) // 8), dtype=np.uint8)
        self._has_lead = np.zeros(cap, dtype=bool)
        self._n_legacy = 0  # members kept with a signature but no hi (their bands are 2-row ones)
        self._idh = np.zeros(cap, dtype=np.uint64)  # 64-bit hashes of the id and the content hash
        self._chh = np.zeros(cap, dtype=np.uint64)
        nb = 1
        while nb < cap * self._k // 2:
            nb <<= 1
        self._mask = np.uint32(nb - 1)
        self._head = np.full(nb, -1, dtype=np.int32)

    def __len__(self) -> int:
        return self._end - self._start

    def tokens(self) -> list[str]:
        """Tokens of the members kept (tests, diagnostics)."""
        return [m.token for m in self.members()]

    def _prune(self) -> None:
        lo = self._now - self.cfg.horizon_seconds
        cap = self._cap
        while self._start < self._end and self._ts[self._start % cap] < lo:
            p = self._start % cap
            self._n_legacy -= self._legacy_at(p)
            self._blob[p] = None
            self._decoded.pop(p, None)
            self._seq[p] = -1
            self._start += 1

    def _grow(self) -> None:
        """Half as many positions again: the live members are laid out in arrival order from
        position 0 and the table is rebuilt from their keys in one vectorised pass (the keys
        of position ``p`` in columns ``0..k-1``: the bands, the id, the content hash)."""
        cfg, k = self.cfg, self._k
        ps = np.arange(self._start, self._end, dtype=np.int64) % self._cap
        n = ps.size
        old = (self._sig[ps], self._nsh[ps], self._ts[ps], self._has_sig[ps], self._idh[ps], self._chh[ps],
               self._hi[ps], self._has_hi[ps], self._lead[ps], self._has_lead[ps], [self._blob[p] for p in ps.tolist()])
        n_legacy = self._n_legacy
        self._grows += 1
        self._decoded.clear()
        self._alloc(self._cap * 3 // 2)
        (self._sig[:n], self._nsh[:n], self._ts[:n], self._has_sig[:n], self._idh[:n], self._chh[:n], self._hi[:n],
         self._has_hi[:n], self._lead[:n], self._has_lead[:n]) = old[:10]
        self._blob[:n] = old[10]
        self._n_legacy = n_legacy
        self._seq[:n] = np.arange(n)
        self._start, self._end = 0, n
        vals = np.zeros((n, k), dtype=np.uint64)
        valid = np.zeros((n, k), dtype=bool)
        B = cfg.bands
        legacy = np.empty(0, dtype=np.int64)
        if cfg.rows == 1:  # full minima where the member has hi, else its 2-row bands (band_keys)
            vals[:, :B] = self._sig[:n].view("<u4")[:, :B]
            hh = np.flatnonzero(self._has_hi[:n])
            vals[hh, :B] = (self._hi[hh].astype(np.uint64) << np.uint64(16)) | self._sig[hh, :B]
            legacy = np.flatnonzero(self._has_sig[:n] & ~self._has_hi[:n])
        elif cfg.rows in _BAND_VIEW:
            vals[:, :B] = self._sig[:n].view(_BAND_VIEW[cfg.rows])[:, :B]
        else:
            for i in np.flatnonzero(self._has_sig[:n]).tolist():
                vals[i, :B] = band_values(self._sig[i].tobytes(), B, cfg.rows)
        valid[:, :B] = self._has_sig[:n, None]
        vals[:, B], vals[:, B + 1] = self._idh[:n], self._chh[:n]
        valid[:, B], valid[:, B + 1] = True, self._chh[:n] != 0
        keys = _hash_keys(vals, np.arange(k, dtype=np.uint64)[None, :])
        if legacy.size:
            keys[legacy, :B] = _hash_keys(vals[legacy, :B], np.arange(B, dtype=np.uint64)[None, :] + np.uint64(LEGACY_SALT))
        flat = keys.ravel()
        self._keys[:n * k] = flat >> np.uint32(16)
        ents = np.flatnonzero(valid.ravel()).astype(np.int64)  # entry ids, oldest first
        buckets = (flat[ents] & self._mask).astype(np.int64)
        order = np.lexsort((ents, buckets))
        e, b = ents[order], buckets[order]
        same = np.zeros(e.size, dtype=bool)
        same[1:] = b[1:] == b[:-1]
        self._nxt[e] = np.where(same, np.roll(e, 1), -1)
        last = np.ones(e.size, dtype=bool)
        last[:-1] = b[1:] != b[:-1]
        self._head[b[last]] = e[last]

    DECODED_MAX = 1024  # decoded members kept (a copy's candidates are mostly its story's recent members; ~3 MiB)

    def _member(self, p: int) -> Member:
        m = self._decoded.get(p)
        if m is not None:
            return m
        b = self._blob[p]
        assert b is not None
        m = decode_member(b)
        if self._has_sig[p]:
            m = m._replace(sig=self._sig[p].tobytes(), lead=self._lead[p].tobytes() if self._has_lead[p] else b"",
                           hi=self._hi[p].tobytes() if self._has_hi[p] else b"")
        if len(self._decoded) >= self.DECODED_MAX:
            self._decoded.clear()
        self._decoded[p] = m
        return m

    def _legacy_at(self, p: int) -> int:
        return int(self.cfg.rows == 1 and bool(self._has_sig[p]) and not self._has_hi[p])

    def _insert(self, m: Member, keys: np.ndarray) -> int:
        """Insert ``m`` under ``keys``; its ring position."""
        if self._end - self._start >= self._cap:
            self._grow()
        seq = self._end
        p = seq % self._cap
        self._end += 1
        self._decoded.pop(p, None)
        if m.sig:
            self._sig[p] = np.frombuffer(m.sig, dtype="<u2")
        has_hi = bool(m.sig) and self.cfg.n_hi > 0 and len(m.hi) >= 2 * self.cfg.n_hi
        if has_hi:
            self._hi[p] = np.frombuffer(m.hi, dtype="<u2", count=self.cfg.n_hi)
        has_lead = bool(m.sig) and len(m.lead) == self._lead.shape[1]
        self._lead[p] = np.frombuffer(m.lead, dtype=np.uint8) if has_lead else 0
        self._has_lead[p] = has_lead
        self._nsh[p] = m.nsh
        self._ts[p] = m.ts
        self._seq[p] = seq
        self._blob[p] = encode_member(m._replace(sig=b"", hi=b"", lead=b""))
        self._has_sig[p] = bool(m.sig)
        self._has_hi[p] = has_hi
        self._n_legacy += self._legacy_at(p)
        self._idh[p] = _value_of_str(m.id)
        self._chh[p] = _value_of_str(m.content_hash) if m.content_hash else 0
        n = keys.size
        base = p * self._k + (0 if m.sig else self.cfg.bands)  # the columns of _grow's layout
        self._nxt[p * self._k:(p + 1) * self._k] = -1
        self._keys[base:base + n] = keys >> np.uint32(16)
        buckets = (keys & self._mask).astype(np.int64)
        ids = np.arange(base, base + n, dtype=np.int32)
        if len(set(buckets.tolist())) == n:
            self._nxt[base:base + n] = self._head[buckets]
            self._head[buckets] = ids
        else:  # two keys of one member in one bucket: link them in order
            for b, e in zip(buckets.tolist(), ids.tolist()):
                self._nxt[e] = self._head[b]
                self._head[b] = e
        return p

    def add_seed(self, m: Member) -> None:
        """Insert a restored member without deciding anything for it."""
        if m.ts > self._now:
            self._now = m.ts
            self._prune()
        self._insert(m, index_keys(m, self.cfg))

    def _is_legacy(self, m: Member) -> bool:
        """Whether ``m`` is kept under its 2-row bands (a signature, no full minima: :func:`band_keys`)."""
        return self.cfg.rows == 1 and bool(m.sig) and not (self.cfg.n_hi > 0 and len(m.hi) >= 2 * self.cfg.n_hi)

    def _probes(self, m: Member, keys: np.ndarray, legacy: bool) -> np.ndarray:
        """The keys ``m`` looks up: its own and, with ``legacy``, its 2-row bands (members from
        older entries are kept under those)."""
        return np.concatenate([keys, legacy_keys(m, self.cfg)]) if legacy and m.sig and m.hi else keys

    def _walk(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The entries stored under ``keys`` (uint32, any number, looked up together): four
        arrays, one row per entry found -- the index into ``keys``, the depth in its bucket's
        chain (at most :attr:`MAX_CHAIN`), the ring position and the member's sequence number.
        A chain ends at a released member or a link to a newer one (a reused position)."""
        cur = self._head[keys & self._mask]
        probe = np.arange(keys.size, dtype=np.int64)
        live = cur >= 0
        if not live.all():
            cur, keys, probe = cur[live], keys[live], probe[live]
        hi = (keys >> np.uint32(16)).astype(np.uint16)
        prev = np.full(cur.size, self._end, dtype=np.int64)  # chains must go to older members
        k, start, seq_of, nxt, ekeys = self._k, self._start, self._seq, self._nxt, self._keys
        f_probe, f_depth, f_p, f_s = [], [], [], []
        for depth in range(self.MAX_CHAIN):
            if not cur.size:
                break
            p = cur // k
            s = seq_of[p]
            ok = (s >= start) & (s <= prev)  # (<=: two keys of one member may share a bucket)
            if not ok.all():
                cur, hi, p, s, probe = cur[ok], hi[ok], p[ok], s[ok], probe[ok]
            hit = ekeys[cur] == hi
            if hit.any():
                f_probe.append(probe[hit])
                f_p.append(p[hit])
                f_s.append(s[hit])
                f_depth.append(np.full(f_p[-1].size, depth, dtype=np.int64))
            cur = nxt[cur]
            live = cur >= 0
            if not live.all():
                cur, hi, s, probe = cur[live], hi[live], s[live], probe[live]
            prev = s
        if not f_p:
            e = np.empty(0, dtype=np.int64)
            return e, e, e, e
        return (np.concatenate(f_probe), np.concatenate(f_depth), np.concatenate(f_p).astype(np.int64),
                np.concatenate(f_s))

    def _in_horizon(self, m: Member, ps: np.ndarray) -> np.ndarray:
        """Distinct positions ``ps`` inside ``m``'s horizon, oldest first."""
        ps = np.unique(ps)
        if not ps.size:
            return ps
        ps = ps[self._ts[ps] >= m.ts - self.cfg.horizon_seconds]
        return ps[np.argsort(self._seq[ps], kind="stable")]

    def candidates(self, m: Member, keys: np.ndarray | None = None) -> np.ndarray:
        """Ring positions of the kept members sharing a key with ``m`` and inside its
        horizon, oldest first."""
        keys = index_keys(m, self.cfg) if keys is None else keys
        _probe, _depth, ps, _s = self._walk(self._probes(m, keys, bool(self._n_legacy)))
        return self._in_horizon(m, ps)

    def matches(self, m: Member, keys: np.ndarray | None = None, ps: np.ndarray | None = None
                ) -> list[tuple[Member, str]]:
        """The kept members that match ``m`` (:func:`relation`, :data:`VETO` included), oldest
        first; ``ps``: its candidates when known (:meth:`candidates`)."""
        ps = self.candidates(m, keys) if ps is None else ps
        if not ps.size:
            return []
        cfg = self.cfg
        if m.sig:  # a slot without a signature may hold an older member's: masked
            sims = (self._sig[ps] == np.frombuffer(m.sig, dtype="<u2")).sum(axis=1) / cfg.num_perm
            sims = np.where(self._has_sig[ps], sims, 0.0)
        else:
            sims = np.zeros(ps.size)
        # a cheap bound first: the share of the smaller body the intersection can cover
        n_c = self._nsh[ps].astype(np.float64)
        inter = sims / (1.0 + sims) * (n_c + m.nsh)
        cover = np.where((n_c > 0) & (m.nsh > 0), inter / np.maximum(np.minimum(n_c, m.nsh), 1.0), sims)
        maybe = (sims >= cfg.threshold) | (cover >= min(cfg.containment, cfg.version_overlap))
        maybe |= self._idh[ps] == np.uint64(_value_of_str(m.id))
        if m.content_hash:
            maybe |= self._chh[ps] == np.uint64(_value_of_str(m.content_hash))
        out = []
        for p, sim in zip(ps[maybe].tolist(), sims[maybe].tolist()):
            c = self._member(p)
            if c.token == m.token:
                continue
            rel = relation(m, c, cfg, sim if m.sig and c.sig else 0.0)
            if rel is not None:
                out.append((c, rel))
        return out

    def lookup(self, m: Member) -> dict[int, list[Member]]:
        """What each of ``m``'s keys returns (visible members per key index; for tests of
        :func:`decide` against the serial index)."""
        out: dict[int, list[Member]] = {}
        mine = dict(key_values(m, self.cfg))
        for p in self.candidates(m).tolist():
            c = self._member(p)
            if c.token == m.token:
                continue
            for i, v in key_values(c, self.cfg):
                if mine.get(i) == v:
                    out.setdefault(i, []).append(c)
        return out

    def process(self, m: Member) -> Decision:
        """Decide for ``m`` against the current index, then insert it."""
        return self.process_batch([m])[0]

    def process_batch(self, ms: Sequence[Member]) -> list[Decision]:
        """Decide for each of ``ms`` in order against the index and the ones before it, inserting
        each with its decision (:attr:`inserted`: those members, :attr:`last`: the last one).

        The same decisions as one :meth:`process` call after another, with the chain walk of
        the whole batch in one vectorised pass over the index as it was before the batch:
        each record then adds what the batch's earlier records inserted (a dict of their
        keys, walked as the chain would be: newest first, within :attr:`MAX_CHAIN` together
        with the older entries, ending at a released member) and drops what was released
        since (the ring releases in arrival order, so a sequence number below the first kept
        one). When the ring grows (positions and sequence numbers are laid out anew), the
        rest of the batch starts over."""
        self.inserted: list[Member] = []
        out: list[Decision] = []
        i = 0
        while i < len(ms):
            i = self._run(ms, i, out)
        return out

    def _run(self, ms: Sequence[Member], i0: int, out: list[Decision]) -> int:
        cfg, chain_max, mask = self.cfg, self.MAX_CHAIN, int(self._mask)
        rest = ms[i0:]
        keys = [index_keys(m, cfg) for m in rest]
        legacy = bool(self._n_legacy) or any(self._is_legacy(m) for m in rest)
        probes = [self._probes(m, ks, legacy) for m, ks in zip(rest, keys)]
        sizes = np.fromiter((p.size for p in probes), dtype=np.int64, count=len(probes))
        offs = np.zeros(len(probes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offs[1:])
        probe, depth, pos, seq = self._walk(np.concatenate(probes))
        owner = np.searchsorted(offs, probe, side="right") - 1
        order = np.argsort(owner, kind="stable")
        owner, col, depth, pos, seq = owner[order], (probe - offs[owner])[order], depth[order], pos[order], seq[order]
        cuts = np.searchsorted(owner, np.arange(len(rest) + 1))
        grows, first = self._grows, self._end  # the batch's first sequence number
        # the batch's own entries: bucket -> how many, (high bits, bucket) -> the newest position
        # holding it (an entry matches a key on exactly those: _walk) and, per position, the
        # previous one for each of its keys. Maps of ints updated in C (map, zip): containers
        # made per key would cost more in the garbage collector than the lookups themselves
        by_bucket: collections.Counter[int] = collections.Counter()
        by_key: dict[int, int] = {}
        before: dict[int, dict[int, int | None]] = {}
        m32 = np.uint32(mask)
        for j, m in enumerate(rest):
            if m.ts > self._now:
                self._now = m.ts
                self._prune()
            start = self._start
            use_legacy = bool(self._n_legacy and m.sig and m.hi)
            n_probe = int(sizes[j]) if use_legacy else keys[j].size
            budget = None  # chain depth left for the older entries, per probe (None: all of it)
            found: list[int] = []
            if by_bucket:
                pk = probes[j][:n_probe]
                bl = (pk & m32).tolist()
                shared = by_bucket.keys() & bl
                if start > first or (shared and max(map(by_bucket.__getitem__, shared)) >= chain_max):
                    # a batch member released since, or a bucket as deep as a walk: walk the table
                    # as it is now (what one record after another does)
                    found = self._walk(self._probes(m, keys[j], use_legacy))[2].tolist()
                    n_probe = 0  # (the older entries are in that walk)
                elif shared:  # every batch entry of those buckets is visited: all hits, less depth left
                    tags = (((pk >> np.uint32(16)).astype(np.int64) << 32) | (pk & m32)).tolist()
                    for t in by_key.keys() & tags:
                        q: int | None = by_key[t]
                        while q is not None:
                            found.append(q)
                            q = before[q].get(t)
                    budget = chain_max - np.fromiter(map(by_bucket.get, bl, itertools.repeat(0)), dtype=np.int64,
                                                     count=len(bl))
            a, b = cuts[j], cuts[j + 1]
            if b > a:
                cj = col[a:b]
                keep = (cj < n_probe) & (seq[a:b] >= start)
                if budget is not None:
                    keep[keep] &= depth[a:b][keep] < budget[cj[keep]]
                older = pos[a:b][keep]
            else:
                older = pos[:0]
            if found:
                ps = self._in_horizon(m, np.concatenate([older, np.asarray(found, dtype=np.int64)]))
            else:
                ps = self._in_horizon(m, older) if older.size else older
            d = resolve(m, _vetoed(self.matches(m, keys[j], ps)) if ps.size else [])
            # kept with its decision: a later copy that matches only this one joins its cluster
            self.last = m._replace(cluster_id=d.cluster_id, canonical=d.duplicate_of or m.id)
            self.inserted.append(self.last)
            out.append(d)
            p = self._insert(self.last, keys[j])
            if self._grows != grows:
                return i0 + j + 1
            if j + 1 < len(rest):
                kj = keys[j]
                tags = (((kj >> np.uint32(16)).astype(np.int64) << 32) | (kj & m32)).tolist()
                by_bucket.update((kj & m32).tolist())
                before[p] = dict(zip(tags, map(by_key.get, tags)))
                by_key.update(zip(tags, itertools.repeat(p)))
        return i0 + len(rest)

    def members(self) -> list[Member]:
        """The members kept, oldest first (with their signatures)."""
        return [self._member(s % self._cap) for s in range(self._start, self._end)]


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


_SEEN: collections.OrderedDict[tuple[str, str], tuple[int, bytes, bytes, bytes]] = collections.OrderedDict()
_SEEN_MAX = 8192


def remember_features(m: Member) -> None:
    """Keep a decided member's shingle count and entity sketch for a moment, so that
    :func:`fingerprint_entry` of its record (written right after, usually in the same
    process) need not tokenise the body again."""
    _SEEN[(m.id, m.content_hash)] = (m.nsh, m.ents, m.hi, m.lead)
    if len(_SEEN) > _SEEN_MAX:
        _SEEN.popitem(last=False)


def _features_of(record: Any, cfg: DedupConfig) -> tuple[int, bytes, bytes, bytes]:
    got = _SEEN.get((record.id, record.content_hash or ""))
    if got is not None:
        return got
    sk = sketch(record.text or "", cfg.shingle_size, cfg.min_words, cfg.num_perm, cfg.seed, cfg.entity_k, cfg.n_hi)
    return sk.nsh, sk.ents, sk.hi, sk.lead


def fingerprint_entry(record: Any, cfg: DedupConfig | None = None) -> dict[str, Any]:
    """The small, JSON-able entry that restores a de-duplicated record into the index.

    ``record`` is an annotated :class:`~copydesk.schemas.records.ArticleRecord` (its
    ``fingerprint`` is the MinHash fingerprint set by the dedup stage). Keys: ``v`` (format
    version), ``id``, ``cluster_id``, ``canonical`` (the cluster's canonical id as decided),
    ``fp`` (the fingerprint string), ``domain``, ``ts`` (event time, epoch s), ``agency``,
    ``content_hash``, since format 2 ``n`` (distinct shingles) and ``ents`` (the entity
    sketch, URL-safe base64), and since format 3 ``hi`` (the high bits of the band minima)
    and ``lead`` (the lead bits), URL-safe base64, all from the record's text. Key it by
    ``id`` in a compacted topic.
    """
    cfg = cfg or DedupConfig()
    domain = record.source_domain or ""
    nsh, ents, hi, lead = _features_of(record, cfg)
    return {
        "v": 3,
        "id": record.id,
        "cluster_id": record.cluster_id or record.id,
        "canonical": record.duplicate_of or record.id,
        "fp": record.fingerprint if str(record.fingerprint).startswith("mh1:") else encode_signature(EMPTY_SIGNATURE),
        "domain": domain,
        "ts": event_time(record),
        "agency": is_agency_domain(domain, cfg.agency_domains),
        "content_hash": record.content_hash or "",
        "n": nsh,
        "ents": base64.urlsafe_b64encode(ents).decode("ascii"),
        "hi": base64.urlsafe_b64encode(hi).decode("ascii"),
        "lead": base64.urlsafe_b64encode(lead).decode("ascii"),
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
        nsh=int(entry.get("n") or 0),
        ents=base64.urlsafe_b64decode(entry.get("ents") or ""),
        hi=base64.urlsafe_b64decode(entry.get("hi") or ""),
        lead=base64.urlsafe_b64decode(entry.get("lead") or ""),
    )
