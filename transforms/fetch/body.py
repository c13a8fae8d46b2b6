"""Bounded body reading: raw bytes and decompressed bytes both count against one cap.

httpx decompresses transparently in ``aiter_bytes``, but its decoders inflate a whole
network chunk at once: 64 KB of gzipped zeros become ~64 MB in one call. We therefore read
``aiter_raw`` and decompress here with an output limit per call (zlib ``max_length``,
brotli ``output_buffer_limit``), so a gzip bomb is cut off at ``max_bytes`` with memory
bounded by the cap, never by the compression ratio.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Protocol

from copydesk.schemas.reasons import Reason
from copydesk.transforms.fetch.errors import FetchFailure

try:  # optional: brotli >= 1.2 has the output limit needed to bound a brotli bomb
    import brotli as _brotli

    HAVE_BROTLI = hasattr(_brotli.Decompressor(), "can_accept_more_data")
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None
    HAVE_BROTLI = False

ACCEPT_ENCODING = "gzip, deflate, br" if HAVE_BROTLI else "gzip, deflate"
_GZIP_MAGIC = b"\x1f\x8b"


def too_large(limit: int, what: str, **detail: object) -> FetchFailure:
    return FetchFailure(Reason.TOO_LARGE, f"{what} over {limit} bytes", max_bytes=limit, **detail)


class _Decoder(Protocol):
    def decode(self, data: bytes, limit: int) -> bytes:
        """Decompress ``data``; return at most ``limit + 1`` bytes (more than limit = too large)."""
        ...


class _ZlibDecoder:
    """gzip (also concatenated members) and deflate (zlib-wrapped or, as some servers send, raw)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._d = zlib.decompressobj(47 if gzip else 15)  # 47: gzip or zlib header, auto-detected
        self._started = False

    def decode(self, data: bytes, limit: int) -> bytes:
        out: list[bytes] = []
        produced = 0
        buf = data
        while buf:
            try:
                chunk = self._d.decompress(buf, limit - produced + 1)
            except zlib.error as exc:
                if self._gzip or self._started:
                    raise FetchFailure(Reason.DECODE, f"corrupt compressed body: {exc}") from exc
                self._d = zlib.decompressobj(-15)  # raw deflate without zlib header
                self._started = True
                continue
            self._started = True
            out.append(chunk)
            produced += len(chunk)
            if produced > limit:
                break
            buf = self._d.unconsumed_tail
            if not buf and self._d.eof and self._d.unused_data:
                rest = self._d.unused_data
                if not (self._gzip and rest.startswith(_GZIP_MAGIC)):
                    break  # trailing garbage after the stream: ignored, as browsers do
                self._d = zlib.decompressobj(47)
                buf = rest
        return b"".join(out)


class _BrotliDecoder:
    def __init__(self) -> None:
        assert _brotli is not None
        self._d = _brotli.Decompressor()

    def decode(self, data: bytes, limit: int) -> bytes:
        try:
            out = [self._d.process(data, output_buffer_limit=limit + 1)]
            produced = len(out[0])
            while produced <= limit and not self._d.can_accept_more_data():
                more = self._d.process(b"", output_buffer_limit=limit - produced + 1)
                if not more:
                    break
                out.append(more)
                produced += len(more)
        except _brotli.error as exc:
            raise FetchFailure(Reason.DECODE, f"corrupt brotli body: {exc}") from exc
        return b"".join(out)


def _decoders(content_encoding: str | None) -> list[_Decoder]:
    """Decoders in the order to apply them (the header lists encodings in applied order)."""
    chain: list[_Decoder] = []
    for token in reversed([t.strip().lower() for t in (content_encoding or "").split(",") if t.strip()]):
        if token in ("identity", "none"):
            continue
        if token in ("gzip", "x-gzip"):
            chain.append(_ZlibDecoder(gzip=True))
        elif token == "deflate":
            chain.append(_ZlibDecoder(gzip=False))
        elif token == "br" and HAVE_BROTLI:
            chain.append(_BrotliDecoder())
        else:
            raise FetchFailure(Reason.DECODE, f"unsupported content encoding {token!r}", content_encoding=token)
    return chain


async def read_capped(
    chunks: AsyncIterator[bytes], content_encoding: str | None, max_bytes: int, *, truncate: bool = False
) -> tuple[bytes, int]:
    """Read a raw (possibly compressed) stream into at most ``max_bytes`` decoded bytes.

    Returns ``(body, raw_byte_count)``. Over the cap: ``too_large``, or with ``truncate``
    the first ``max_bytes`` bytes (robots.txt is parsed from its head, like Google does).
    """
    chain = _decoders(content_encoding)
    body = bytearray()
    raw = 0
    async for chunk in chunks:
        raw += len(chunk)
        if raw > max_bytes and not truncate:
            raise too_large(max_bytes, "body", raw_bytes=raw)
        data = chunk
        for dec in chain:
            data = dec.decode(data, max_bytes - len(body))
        if len(body) + len(data) > max_bytes:
            if truncate:
                body += data[: max_bytes - len(body)]
                break
            raise too_large(max_bytes, "decompressed body" if chain else "body", raw_bytes=raw)
        body += data
        if truncate and raw >= max_bytes:
            break
    return bytes(body), raw
