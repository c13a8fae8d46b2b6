"""Word normalisation: the one definition that the content hash, the shingles of dedup and
the text rules of extraction are built on (a leaf module: only the standard library)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["WORD", "normalized_words", "content_hash", "hash_words"]

WORD = re.compile(r"\w+", re.UNICODE)


def normalized_words(text: str) -> list[str]:
    """Case-folded NFKC word tokens (accents kept)."""
    return WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def content_hash(text: str) -> str:
    """Hash of the normalised words: the same article text under any whitespace/punctuation."""
    return hash_words(normalized_words(text))


def hash_words(words: list[str]) -> str:
    """:func:`content_hash` of a text from its :func:`normalized_words` (computed once for the
    hash and the dedup sketch)."""
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).hexdigest()
