"""Word normalisation: the one definition that the content hash, the shingles of dedup and
the text rules of extraction are built on (a leaf module: only the standard library)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["WORD", "normalized_words", "content_hash"]

WORD = re.compile(r"\w+", re.UNICODE)


def normalized_words(text: str) -> list[str]:
    """Case-folded NFKC word tokens (accents kept)."""
    return WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def content_hash(text: str) -> str:
    """Hash of the normalised words: the same article text under any whitespace/punctuation."""
    return hashlib.blake2b(" ".join(normalized_words(text)).encode("utf-8"), digest_size=16).hexdigest()
