"""Compact coders for the Beam dedup stage's shuffled elements and state
(:mod:`copydesk.transforms.dedup.stage`).

Without them Beam encodes the keyed elements, the answers and the bag entries with
``FastPrimitivesCoder``/``PickleCoder``: each :class:`~copydesk.transforms.dedup.core.Member`
(a NamedTuple with a 256-byte signature) is pickled, 35 times per record plus once per answer
member and once per stored entry. These coders write a member as one ``struct`` header and
the raw fields (signature as raw bytes, strings as UTF-8):

``MemberCoder``
    ``Member`` -> ``<B q d I I I I I I I i I`` (flags, stamp, ts, the lengths of token, id,
    sig, domain, content_hash, cluster_id, canonical, the shingle count, the length of the
    entity sketch) followed by the fields. Flags: bit 0
    ``agency``, bit 1 ``cluster_id`` present, bit 2 ``canonical`` present, bit 3 the stamp does
    not fit in 64 bits (it then follows as decimal text, and the ``q`` field is 0).
``EntryCoder``
    a ``Lookup`` bag entry ``(value, ts, encoded member)``: ``<Q d`` + the member's bytes.
``LookupCoder``
    a lookup ``(key index, value, n, encoded member)``: ``<I Q I`` + the member's bytes.
``DecideMsgCoder``
    what ``Decide`` receives and keeps in its bag: the record message
    ``(0, n, record, member)`` (``<B I I I`` with the member's length, the member, the record
    pickled) or an answer ``(1, n, key index, [encoded member, ...])`` (``<B I I I`` +
    length-prefixed members).

A member is encoded once, in ``Prepare``, and travels as bytes through its lookups, the bag
entries and the answers; ``Lookup`` reads only ``value``, ``ts`` and the token
(:func:`member_ts_token`), and ``Decide`` decodes only the members that were visible.

All but ``DecideMsgCoder`` are deterministic (fixed layout, no dict or pickle); the record in
a record message is pickled, as ``PickleCoder`` did, and is never part of a key.

The typehints :data:`LookupMsg`, :data:`EntryMsg` and :data:`DecideMsg` are marker classes
registered with Beam's coder registry, so ``KV[int, LookupMsg]`` and ``KV[str, DecideMsg]``
give ``VarIntCoder``/``StrUtf8Coder`` keys with these value coders.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

from apache_beam import coders

from copydesk.transforms.dedup.core import Member

__all__ = [
    "DecideMsg",
    "DecideMsgCoder",
    "EntryCoder",
    "EntryMsg",
    "LookupCoder",
    "LookupMsg",
    "MemberCoder",
    "decode_member",
    "encode_member",
    "member_ts_token",
]

_HDR = struct.Struct("<BqdIIIIIIIiI")
_ENTRY = struct.Struct("<Qd")
_HDR_HEAD = struct.Struct("<BqdI")
_LOOKUP = struct.Struct("<IQI")
_REC = struct.Struct("<BIII")  # tag, n, member length, (record follows the member)
_ANS = struct.Struct("<BIII")  # tag, n, key index, member count
_I64 = (-(1 << 63), (1 << 63) - 1)


def encode_member(m: Member) -> bytes:
    tok = m.token.encode("utf-8")
    mid = m.id.encode("utf-8")
    dom = m.domain.encode("utf-8")
    ch = m.content_hash.encode("utf-8")
    cid = b"" if m.cluster_id is None else m.cluster_id.encode("utf-8")
    can = b"" if m.canonical is None else m.canonical.encode("utf-8")
    flags = (1 if m.agency else 0) | (2 if m.cluster_id is not None else 0) | (4 if m.canonical is not None else 0)
    stamp = int(m.stamp)
    extra = b""
    if not _I64[0] <= stamp <= _I64[1]:
        flags |= 8
        extra = str(stamp).encode("ascii")
        stamp = 0
    sig = bytes(m.sig)
    ents = bytes(m.ents)
    return b"".join((
        _HDR.pack(flags, stamp, float(m.ts), len(tok), len(mid), len(sig), len(dom), len(ch), len(cid), len(can),
                  int(m.nsh), len(ents)),
        tok, mid, sig, dom, ch, cid, can, ents, extra,
    ))


def decode_member(b: bytes | memoryview, pos: int = 0, end: int | None = None) -> Member:
    flags, stamp, ts, lt, li, ls, ld, lc, lk, ln, nsh, le = _HDR.unpack_from(b, pos)
    p = pos + _HDR.size
    mv = memoryview(b)
    tok = str(mv[p:p + lt], "utf-8"); p += lt
    mid = str(mv[p:p + li], "utf-8"); p += li
    sig = bytes(mv[p:p + ls]); p += ls
    dom = str(mv[p:p + ld], "utf-8"); p += ld
    ch = str(mv[p:p + lc], "utf-8"); p += lc
    cid = str(mv[p:p + lk], "utf-8") if flags & 2 else None; p += lk
    can = str(mv[p:p + ln], "utf-8") if flags & 4 else None; p += ln
    ents = bytes(mv[p:p + le]); p += le
    if flags & 8:
        stamp = int(str(mv[p:len(b) if end is None else end], "ascii"))
    return Member(token=tok, id=mid, stamp=stamp, ts=ts, sig=sig, domain=dom, agency=bool(flags & 1),
                  content_hash=ch, cluster_id=cid, canonical=can, nsh=nsh, ents=ents)


class _Base(coders.Coder):
    def is_deterministic(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class MemberCoder(_Base):
    """A :class:`Member`, compact and deterministic."""

    def encode(self, value: Member) -> bytes:
        return encode_member(value)

    def decode(self, encoded: bytes) -> Member:
        return decode_member(encoded)


def member_ts_token(blob: bytes) -> tuple[float, str]:
    """Event time and token of an encoded member, without decoding the rest."""
    _flags, _stamp, ts, lt = _HDR_HEAD.unpack_from(blob)
    return ts, str(memoryview(blob)[_HDR.size:_HDR.size + lt], "utf-8")


def _pack_blob(b: bytes) -> bytes:
    if not isinstance(b, bytes):
        raise TypeError(f"expected an encoded member (bytes), got {type(b).__name__}")
    return b


class EntryCoder(_Base):
    """A ``Lookup`` bag entry ``(value, ts, encoded member)``: ``<Q d`` + the member's bytes.
    The member stays encoded in the bag: only the entries under the asked value are decoded
    (in ``Decide``), the rest are filtered on ``value`` and ``ts``."""

    def encode(self, value: tuple[int, float, bytes]) -> bytes:
        return _ENTRY.pack(value[0], value[1]) + _pack_blob(value[2])

    def decode(self, encoded: bytes) -> tuple[int, float, bytes]:
        v, ts = _ENTRY.unpack_from(encoded)
        return (v, ts, encoded[_ENTRY.size:])


class LookupCoder(_Base):
    """A lookup ``(key index, value, n, encoded member)``: ``<I Q I`` + the member's bytes
    (``Prepare`` encodes the member once for all its lookups)."""

    def encode(self, value: tuple[int, int, int, bytes]) -> bytes:
        idx, v, n, blob = value
        return _LOOKUP.pack(idx, v, n) + _pack_blob(blob)

    def decode(self, encoded: bytes) -> tuple[int, int, int, bytes]:
        idx, v, n = _LOOKUP.unpack_from(encoded)
        return (idx, v, n, encoded[_LOOKUP.size:])


class DecideMsgCoder(_Base):
    """A ``Decide`` message: ``(0, n, record, member)`` or ``(1, n, key index, [encoded members])``."""

    def is_deterministic(self) -> bool:
        return False  # the record is pickled

    def encode(self, value: tuple[Any, ...]) -> bytes:
        tag, n, a, b = value
        if tag == 0:
            mb = encode_member(b)
            return b"".join((_REC.pack(0, n, len(mb), 0), mb, pickle.dumps(a, protocol=pickle.HIGHEST_PROTOCOL)))
        if not b:
            return _ANS.pack(1, n, a, 0)
        for mb in b:
            _pack_blob(mb)
        k = len(b)
        return _ANS.pack(1, n, a, k) + struct.pack(f"<{k}I", *map(len, b)) + b"".join(b)

    def decode(self, encoded: bytes) -> tuple[Any, ...]:
        tag = encoded[0]
        if tag == 0:
            _, n, lm, _ = _REC.unpack_from(encoded)
            p = _REC.size
            m = decode_member(encoded, p, p + lm)
            return (0, n, pickle.loads(memoryview(encoded)[p + lm:]), m)
        _, n, idx, count = _ANS.unpack_from(encoded)
        if not count:
            return (1, n, idx, [])
        lens = struct.unpack_from(f"<{count}I", encoded, _ANS.size)
        p = _ANS.size + 4 * count
        ms = []
        for lm in lens:
            ms.append(encoded[p:p + lm])
            p += lm
        if p != len(encoded):
            raise ValueError("malformed answer message")
        return (1, n, idx, ms)


class LookupMsg:
    """Typehint of a lookup (coded by :class:`LookupCoder`)."""


class EntryMsg:
    """Typehint of a ``Lookup`` bag entry (coded by :class:`EntryCoder`)."""


class DecideMsg:
    """Typehint of a ``Decide`` message (coded by :class:`DecideMsgCoder`)."""


coders.registry.register_coder(LookupMsg, LookupCoder)
coders.registry.register_coder(EntryMsg, EntryCoder)
coders.registry.register_coder(DecideMsg, DecideMsgCoder)
