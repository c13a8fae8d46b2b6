"""Compact coders of the Beam dedup stage (:mod:`copydesk.transforms.dedup.stage`).

``MemberCoder`` / :func:`encode_member`
    ``Member`` -> ``<B q d I I I I I I I i I`` (flags, stamp, ts, the lengths of token, id,
    sig, domain, content_hash, cluster_id, canonical, the shingle count, the length of the
    entity sketch) followed by the fields (signature and sketch as raw bytes, strings as
    UTF-8). Flags: bit 0 ``agency``, bit 1 ``cluster_id`` present, bit 2 ``canonical``
    present, bit 3 the stamp does not fit in 64 bits (it then follows as decimal text, and
    the ``q`` field is 0). Deterministic. ~450 bytes for a live member (a pickled one: ~600).
``BatchCoder``
    a batch of records with their encoded members, ``Prepare`` -> ``Index``: ``<I`` count,
    then per item the member and the pickled record, length-prefixed.

A member is encoded once, in ``Prepare``; the ``Index`` step's log (its state) holds the
decided members in this encoding. :data:`DedupBatch` is the marker typehint registered with
Beam's coder registry, so ``KV[int, DedupBatch]`` gives a ``VarIntCoder`` key and this value
coder.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

from apache_beam import coders

from copydesk.transforms.dedup.core import MEMBER_HEADER, Member, decode_member, encode_member

_HDR_HEAD = struct.Struct("<BqdI")

__all__ = [
    "BatchCoder",
    "DedupBatch",
    "MemberCoder",
    "decode_member",
    "encode_member",
    "member_ts_token",
]

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
    return ts, str(memoryview(blob)[MEMBER_HEADER.size:MEMBER_HEADER.size + lt], "utf-8")


class BatchCoder(_Base):
    """A batch ``[(record, encoded member), ...]``: ``<I`` count, then per item ``<I I`` (the
    member's and the pickled record's lengths) and the two. Not deterministic (pickle); a
    batch is never a key."""

    def is_deterministic(self) -> bool:
        return False

    def encode(self, value: list[tuple[Any, bytes]]) -> bytes:
        parts = [struct.pack("<I", len(value))]
        for rec, blob in value:
            if not isinstance(blob, bytes):
                raise TypeError(f"expected an encoded member (bytes), got {type(blob).__name__}")
            pr = pickle.dumps(rec, protocol=pickle.HIGHEST_PROTOCOL)
            parts += [struct.pack("<II", len(blob), len(pr)), blob, pr]
        return b"".join(parts)

    def decode(self, encoded: bytes) -> list[tuple[Any, bytes]]:
        (n,) = struct.unpack_from("<I", encoded)
        p, out, mv = 4, [], memoryview(encoded)
        for _ in range(n):
            lb, lr = struct.unpack_from("<II", encoded, p)
            p += 8
            blob = encoded[p:p + lb]
            p += lb
            out.append((pickle.loads(mv[p:p + lr]), blob))
            p += lr
        if p != len(encoded):
            raise ValueError("malformed dedup batch")
        return out


class DedupBatch:
    """Typehint of a batch of records and their encoded members (coded by :class:`BatchCoder`)."""


coders.registry.register_coder(DedupBatch, BatchCoder)
