"""Near-duplicate fingerprints: comparing sketches, LSH band values, the fingerprint string.

Pure functions only (no Beam). The sketch itself (tokens, shingle hashes, the vectorised
MinHash, the entity sketch) is computed in :mod:`copydesk.transforms.sketch`, a leaf shared
with the extraction workers; its names are re-exported here.

LSH
    The signature is cut into ``bands`` bands of ``rows`` values; a band value is the 64-bit
    integer of its ``rows`` 16-bit values (rows 1, 2 or 4) or their BLAKE2b-64 (other sizes). Two
    texts with Jaccard ``J`` share at least one band with probability ``1 - (1 - J**rows)**bands``.
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np

from copydesk.transforms.sketch import (
    EMPTY_SIGNATURE,
    MinHasher,
    Sketch,
    SketchParams,
    decode_sketch,
    distinct,
    encode_sketch,
    entity_sketch,
    features,
    minhasher,
    shingle_hashes,
    sketch,
    text_features,
    token_hashes,
    tokens,
)
from copydesk.transforms.words import content_hash, normalized_words

__all__ = [
    "EMPTY_SIGNATURE",
    "MinHasher",
    "SketchParams",
    "decode_sketch",
    "encode_sketch",
    "text_features",
    "band_values",
    "content_hash",
    "normalized_words",
    "decode_signature",
    "distinct",
    "encode_signature",
    "entity_containment",
    "entity_sketch",
    "features",
    "jaccard",
    "lead_share",
    "Sketch",
    "sketch",
    "overlap",
    "shingle_hashes",
    "similarity",
    "token_hashes",
    "tokens",
]

_FP_PREFIX = "mh1:"


def similarity(sig_a: bytes, sig_b: bytes) -> float:
    """Estimated Jaccard similarity of two signatures (share of equal values); 0.0 if either
    is empty or their lengths differ."""
    if not sig_a or not sig_b or len(sig_a) != len(sig_b):
        return 0.0
    a = np.frombuffer(sig_a, dtype="<u2")
    b = np.frombuffer(sig_b, dtype="<u2")
    return float(np.count_nonzero(a == b)) / a.size


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sets of shingle hashes (for measurements and tests)."""
    a, b = np.unique(a), np.unique(b)
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def lead_share(sig_a: bytes, sig_b: bytes, lead: bytes) -> float | None:
    """Share of the permutations where two signatures agree whose minimum lies in the first
    half of the body ``lead`` belongs to (:meth:`MinHasher.parts`): where in that body the
    text the two share sits. ``None`` when unknown (no lead bits, no agreement)."""
    if not lead or not sig_a or len(sig_a) != len(sig_b):
        return None
    eq = np.frombuffer(sig_a, dtype="<u2") == np.frombuffer(sig_b, dtype="<u2")
    n = int(np.count_nonzero(eq))
    if not n:
        return None
    bits = np.unpackbits(np.frombuffer(lead, dtype=np.uint8), bitorder="little")[:eq.size].astype(bool)
    return float(np.count_nonzero(bits & eq)) / n


def overlap(sim: float, n_a: int, n_b: int) -> tuple[float, float]:
    """Shares of the smaller and of the larger shingle set covered by the intersection,
    estimated from the Jaccard estimate ``sim`` and the two sets' sizes:
    ``|A & B| = J / (1 + J) * (|A| + |B|)``. ``(sim, sim)`` when a size is unknown (0)."""
    if n_a <= 0 or n_b <= 0:
        return sim, sim
    inter = sim / (1.0 + sim) * (n_a + n_b)
    return min(1.0, inter / min(n_a, n_b)), min(1.0, inter / max(n_a, n_b))


def entity_containment(a: bytes, b: bytes, k: int = 48) -> float:
    """Share of the smaller entity set found in the other, estimated from two
    :func:`entity_sketch` values (a full sketch holds the ``k`` smallest hashes: both are
    compared below the smaller of their largest values). 0.0 when either is empty."""
    if not a or not b:
        return 0.0
    x, y = np.frombuffer(a, dtype="<u2"), np.frombuffer(b, dtype="<u2")
    cut = min(x[-1] if x.size >= k else 0xFFFF, y[-1] if y.size >= k else 0xFFFF)
    x, y = x[x <= cut], y[y <= cut]
    n = min(x.size, y.size)
    if n == 0:
        return 0.0
    return float(np.intersect1d(x, y, assume_unique=True).size) / n


BAND_DTYPE = {1: "<u2", 2: "<u4", 4: "<u8"}


def band_values(sig: bytes, bands: int, rows: int) -> list[int]:
    """The ``bands`` LSH band values of a signature (64-bit ints); [] for an empty signature.

    Uses the first ``bands * rows`` signature values.
    """
    if not sig:
        return []
    need = bands * rows * 2
    if len(sig) < need:
        raise ValueError(f"signature has {len(sig) // 2} values, bands*rows needs {bands * rows}")
    if rows in BAND_DTYPE:
        return np.frombuffer(sig, dtype=BAND_DTYPE[rows], count=bands).tolist()
    step = rows * 2
    return [
        int.from_bytes(hashlib.blake2b(sig[i * step : (i + 1) * step], digest_size=8).digest(), "little")
        for i in range(bands)
    ]


def encode_signature(sig: bytes) -> str:
    """The record's ``fingerprint`` string: ``"mh1:"`` + URL-safe base64 of the signature
    (``"mh1:"`` alone when the text was too short for a near-duplicate signature)."""
    return _FP_PREFIX + base64.urlsafe_b64encode(sig).decode("ascii").rstrip("=")


def decode_signature(fp: str) -> bytes:
    """Inverse of :func:`encode_signature`; raises ``ValueError`` on anything else."""
    if not isinstance(fp, str) or not fp.startswith(_FP_PREFIX):
        raise ValueError(f"not a MinHash fingerprint: {fp!r:.40}")
    body = fp[len(_FP_PREFIX) :]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)) if body else EMPTY_SIGNATURE
