"""What dedup keeps of a body (its sketch), as pure functions of the text: word tokens, 64-bit
shingle hashes, a vectorised MinHash, the entity sketch, and a compact encoding of the whole.

A shared leaf (numpy and the standard library, :mod:`copydesk.transforms.words`): the dedup
stage computes a sketch for a record that comes without one, and the extraction workers
compute it where the text is made (in parallel processes, from the same tokens as the
record's content hash), so the dedup stage, which runs in one process, need not.
Everything here is deterministic across processes and machines: token hashes come from
BLAKE2b, the permutation parameters from a fixed seed.

MinHash
    Each shingle (``k`` consecutive normalised words, see
    :func:`copydesk.transforms.words.normalized_words`) is hashed to 64 bits. Permutation
    ``i`` is the multiply-add-shift hash ``h_i(x) = ((a_i * x + b_i) mod 2**64) >> 32`` (``a_i``
    odd), evaluated for all shingles and all permutations at once with numpy; the signature
    value is the minimum over shingles, truncated to its low 16 bits. A truncated minimum
    still equals for two texts with probability ``J + (1 - J) / 65536`` (b-bit MinHash), so
    the Jaccard estimate is unbiased to 2e-5 while a 128-permutation signature is 256 bytes.

Scripts written without spaces (Han, Hiragana, Katakana) are split into single characters
before shingling, so Chinese and Japanese text gets character shingles instead of one
"word" per sentence.
"""

from __future__ import annotations

import array
import hashlib
import re
import struct
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from copydesk.transforms.words import hash_words, normalized_words

__all__ = [
    "DEFAULT_PARAMS",
    "EMPTY_SIGNATURE",
    "MinHasher",
    "Sketch",
    "SketchParams",
    "decode_sketch",
    "distinct",
    "encode_sketch",
    "entity_sketch",
    "features",
    "minhasher",
    "shingle_hashes",
    "sketch",
    "text_features",
    "token_hashes",
    "tokens",
]

EMPTY_SIGNATURE = b""
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SHINGLE_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd constant of the polynomial shingle combination


def tokens(text: str) -> list[str]:
    """Normalised word tokens; runs of Han/kana characters are split into single characters."""
    return _split_cjk(normalized_words(text), text)


def _split_cjk(words: list[str], text: str) -> list[str]:
    if _CJK.search(text) is None:
        return words
    out: list[str] = []
    for w in words:
        if _CJK.search(w):
            # keep Latin/digit runs inside a CJK token together, split the CJK characters
            buf = ""
            for ch in w:
                if _CJK.match(ch):
                    if buf:
                        out.append(buf)
                        buf = ""
                    out.append(ch)
                else:
                    buf += ch
            if buf:
                out.append(buf)
        else:
            out.append(w)
    return out


_TOKEN_CACHE: dict[str, int] = {}
_TOKEN_CACHE_MAX = 1 << 19


def _token_hash(tok: str) -> int:
    """BLAKE2b-64 of a token, memoised (word frequencies are Zipfian: most lookups hit)."""
    h = _TOKEN_CACHE.get(tok)
    if h is None:
        if len(_TOKEN_CACHE) >= _TOKEN_CACHE_MAX:
            _TOKEN_CACHE.clear()
        h = _TOKEN_CACHE[tok] = int.from_bytes(
            hashlib.blake2b(tok.encode("utf-8"), digest_size=8).digest(), "little"
        )
    return h


def token_hashes(toks: Sequence[str]) -> np.ndarray:
    """BLAKE2b-64 of each token (uint64), each distinct token hashed once (memoised)."""
    vals = list(map(_TOKEN_CACHE.get, toks))
    if None in vals:
        vals = [_token_hash(t) if v is None else v for t, v in zip(toks, vals)]
    return np.frombuffer(array.array("Q", vals), dtype=np.uint64) if vals else np.empty(0, dtype=np.uint64)


def shingle_hashes(toks: Sequence[str], k: int = 5) -> np.ndarray:
    """64-bit hashes of the ``k``-token shingles of ``toks`` in text order (uint64; a repeated
    shingle repeats its hash, which does not change a MinHash; use ``np.unique`` for a set):
    the token hashes combined with numpy, ``h = h * C + t`` over the ``k`` tokens.

    A text shorter than ``k`` tokens gives one shingle of all its tokens; an empty text none.
    """
    n = len(toks)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    th = token_hashes(toks)
    if n < k:
        k = n
    m = n - k + 1
    acc = th[:m].copy()
    with np.errstate(over="ignore"):
        for j in range(1, k):
            acc *= _SHINGLE_MUL
            acc += th[j : j + m]
    return acc


def distinct(hashes: np.ndarray) -> int:
    """The number of distinct values of a uint64 array (a sort, no ``np.unique`` arrays)."""
    if hashes.size < 2:
        return int(hashes.size)
    s = np.sort(hashes)
    return int(np.count_nonzero(s[1:] != s[:-1])) + 1


class MinHasher:
    """Vectorised MinHash over 64-bit shingle hashes, producing 16-bit values (b-bit MinHash).

    ``num_perm`` permutations with parameters drawn from ``numpy.random.default_rng(seed)``.
    """

    def __init__(self, num_perm: int = 128, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self._a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
        self._a_col, self._b_col = self._a[:, None], self._b[:, None]
        self._chunk = max(1, (1 << 18) // num_perm)  # shingles per block: bounds the temporary matrix (2 MiB)

    def _mins(self, hashes: np.ndarray) -> np.ndarray:
        """Per permutation, the minimum over ``hashes`` of ``(a * x + b) mod 2**64`` (uint64).
        The permutation's value is its high 32 bits; ``>> 32`` is monotonic, so the minimum
        of the values is the minimum's ``>> 32`` and the shift is done once, on the minima.
        Computed as a ``(num_perm, shingles)`` block, reduced along its rows (contiguous)."""
        mins = None
        with np.errstate(over="ignore"):
            for s in range(0, hashes.size, self._chunk):
                h = np.multiply(self._a_col, hashes[None, s : s + self._chunk])
                h += self._b_col
                m = h.min(axis=1)
                mins = m if mins is None else np.minimum(mins, m, out=mins)
        if mins is None:
            return np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        return mins

    def signature(self, hashes: np.ndarray) -> bytes:
        """The signature of a set of shingle hashes: ``num_perm`` little-endian uint16 values.

        An empty set gives :data:`EMPTY_SIGNATURE` (no near-duplicate matching for it).
        """
        return self.parts(hashes)[0]

    def parts(self, hashes: np.ndarray, n_hi: int = 0) -> tuple[bytes, bytes, bytes]:
        """``(signature, hi, lead)`` of shingle hashes in text order: the signature; the high
        16 bits of the first ``n_hi`` 32-bit minima (``hi``: with the signature's low 16 bits,
        the full minimum, an LSH key of one value that does not collide by chance); and
        ``lead``, one bit per permutation (``num_perm / 8`` bytes, little-endian bit order):
        set when the shingle holding the minimum occurs in the first half of the text."""
        if hashes.size == 0:
            return EMPTY_SIGNATURE, b"", b""
        half = (hashes.size + 1) // 2
        first = self._mins(hashes[:half])
        mins = np.minimum(first, self._mins(hashes[half:])) if hashes.size > half else first.copy()
        first >>= np.uint64(32)
        mins >>= np.uint64(32)
        lead = np.packbits(first == mins, bitorder="little").tobytes()
        hi = (mins[:n_hi] >> np.uint64(16)).astype("<u2").tobytes() if n_hi else b""
        return mins.astype("<u2").tobytes(), hi, lead

    def text_signature(self, text: str, k: int = 5) -> tuple[bytes, int]:
        """Signature of ``text`` and its number of tokens."""
        toks = tokens(text)
        return self.signature(shingle_hashes(toks, k)), len(toks)


@lru_cache(maxsize=8)
def minhasher(num_perm: int, seed: int) -> MinHasher:
    """A cached :class:`MinHasher` (building one draws the permutation parameters)."""
    return MinHasher(num_perm, seed)


class Sketch(NamedTuple):
    """What dedup keeps of a body (:func:`sketch`)."""

    sig: bytes  # MinHash signature, num_perm x 16 bits
    nsh: int  # distinct shingles
    ents: bytes  # entity sketch
    hi: bytes  # high 16 bits of the first minima (full-precision LSH keys)
    lead: bytes  # one bit per permutation: its minimum is in the first half of the text


def sketch(text: str, k: int = 5, min_words: int = 30, num_perm: int = 128, seed: int = 1,
           entity_k: int = 48, n_hi: int = 0) -> Sketch:
    """What dedup keeps of a body: its MinHash signature (empty below ``min_words`` tokens:
    exact matching only), its number of distinct shingles, its entity sketch and
    (:meth:`MinHasher.parts`) the high bits of the first ``n_hi`` minima and the lead bits."""
    return _sketch_of(tokens(text), text, SketchParams(k, min_words, num_perm, seed, entity_k, n_hi))


def features(text: str, k: int = 5, min_words: int = 30, num_perm: int = 128, seed: int = 1,
             entity_k: int = 48, signature: bool = True) -> tuple[bytes, int, bytes]:
    """What dedup keeps of a body: its MinHash signature (empty below ``min_words`` tokens:
    exact matching only; not computed with ``signature=False``), its number of distinct
    shingles and its entity sketch."""
    toks = tokens(text)
    if len(toks) < min_words:
        return EMPTY_SIGNATURE, 0, b""
    hs = shingle_hashes(toks, k)
    sig = minhasher(num_perm, seed).signature(hs) if signature else EMPTY_SIGNATURE
    return sig, distinct(hs), entity_sketch(text, entity_k)


class SketchParams(NamedTuple):
    """The parameters a sketch is made with (``DedupConfig.sketch_params``); a stored sketch
    is used only by a reader with the same ones."""

    k: int = 5  # words per shingle
    min_words: int = 30  # fewer tokens: no signature (exact matching only)
    num_perm: int = 128
    seed: int = 1
    entity_k: int = 48
    n_hi: int = 48  # high bits kept of the first n_hi minima (the LSH keys)


DEFAULT_PARAMS = SketchParams()


def text_features(text: str, params: SketchParams = DEFAULT_PARAMS) -> tuple[str, Sketch]:
    """The content hash (:func:`copydesk.transforms.words.content_hash`) and the sketch of a
    body from one tokenisation (what the extraction workers compute for each article)."""
    words = normalized_words(text)
    return hash_words(words), _sketch_of(_split_cjk(words, text), text, params)


def _sketch_of(toks: list[str], text: str, p: SketchParams) -> Sketch:
    if len(toks) < p.min_words:
        return Sketch(EMPTY_SIGNATURE, 0, b"", b"", b"")
    hs = shingle_hashes(toks, p.k)
    sig, hi, lead = minhasher(p.num_perm, p.seed).parts(hs, p.n_hi)
    return Sketch(sig, distinct(hs), entity_sketch(text, p.entity_k), hi, lead)


_SKETCH = struct.Struct("<BBHHIHHIHHHH")  # format, the parameters, nsh, the lengths of sig, ents, hi, lead
_SKETCH_FORMAT = 1


def encode_sketch(sk: Sketch, params: SketchParams = DEFAULT_PARAMS) -> bytes:
    """A sketch as bytes, with the parameters it was made with (~400 bytes): it travels with
    the record from the extraction worker to the dedup stage (``Envelope.sketch``)."""
    return _SKETCH.pack(_SKETCH_FORMAT, params.k, params.min_words, params.num_perm, params.seed & 0xFFFFFFFF,
                        params.entity_k, params.n_hi, sk.nsh, len(sk.sig), len(sk.ents), len(sk.hi),
                        len(sk.lead)) + sk.sig + sk.ents + sk.hi + sk.lead


def decode_sketch(blob: bytes, params: SketchParams = DEFAULT_PARAMS) -> Sketch | None:
    """The sketch of :func:`encode_sketch`, or ``None`` when it was made with other
    parameters or is not one (the reader then computes its own)."""
    if len(blob) < _SKETCH.size:
        return None
    fmt, k, mw, npm, seed, ek, nhi, nsh, ls, le, lh, ll = _SKETCH.unpack_from(blob)
    if fmt != _SKETCH_FORMAT or (k, mw, npm, seed, ek, nhi) != (params.k, params.min_words, params.num_perm,
                                                                params.seed & 0xFFFFFFFF, params.entity_k, params.n_hi):
        return None
    p = _SKETCH.size
    if len(blob) != p + ls + le + lh + ll:
        return None
    sig = blob[p:p + ls]
    ents = blob[p + ls:p + ls + le]
    hi = blob[p + ls + le:p + ls + le + lh]
    return Sketch(sig, nsh, ents, hi, blob[p + ls + le + lh:])


# a word that follows whitespace after a character that does not end a sentence (so not the
# first word of a sentence or of a line)
_UPPER = "".join(chr(i) for i in range(0x10000) if chr(i).isupper())
_INNER_WORD = re.compile(r"[ \t](?<=[^.!?\s][ \t])[ \t]*([" + re.escape(_UPPER) + r"]\w+)")
# (the pattern starts with its blank, so the regex engine scans for one instead of trying the
# look-behind at every character: the same matches as ``(?<=[^.!?\s])[ \t]+([UPPER]\w+)``)
_QUOTE = re.compile(r"[\"\u201c\u201e\u00ab\u00bb\u2018\u201d]"  # an opening quote mark,
                    r"([^\"\u201c\u201d\u201e\u00ab\u00bb]{20,400})"  # 20-400 characters,
                    r"[\"\u201d\u201c\u00bb\u00ab\u2019]")  # a closing one
_CRC_CACHE: dict[str, int] = {}


def _crc16(item: str) -> int:
    h = _CRC_CACHE.get(item)
    if h is None:
        if len(_CRC_CACHE) >= _TOKEN_CACHE_MAX:
            _CRC_CACHE.clear()
        h = _CRC_CACHE[item] = zlib.crc32(item.encode("utf-8")) & 0xFFFF
    return h


def entity_sketch(text: str, k: int = 48) -> bytes:
    """Bottom-``k`` sketch of a body's names and quotes: capitalised words that do not start
    a sentence or a line (names and places; in German all nouns) and quoted spans of 20-400
    characters, case-folded, hashed to 16 bits (CRC-32), the ``k`` smallest distinct values
    as sorted little-endian uint16 (at most ``2 * k`` bytes; empty for caseless scripts)."""
    items = {w.casefold() for w in set(_INNER_WORD.findall(text))}
    for q in _QUOTE.findall(text):
        items.add("\x00" + " ".join(normalized_words(q)))
    if not items:
        return b""
    hs = sorted({_crc16(i) for i in items})[:k]
    return struct.pack(f"<{len(hs)}H", *hs)
