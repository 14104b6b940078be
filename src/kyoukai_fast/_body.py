"""
Request body decoding (``Content-Encoding``), shared by both protocol implementations.

Not on the hot path: only requests that declare a content coding come here.
"""
from __future__ import annotations

import zlib

from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

__all__ = ("decode_body",)

_CHUNK = 64 * 1024


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    decoder = zlib.decompressobj(wbits)
    out = []
    size = 0
    try:
        # Decompress in bounded steps so that a small "zip bomb" cannot take the memory.
        piece = decoder.decompress(data, _CHUNK)
        while True:
            size += len(piece)
            if size > limit:
                raise RequestEntityTooLarge()
            out.append(piece)
            if not decoder.unconsumed_tail:
                break
            piece = decoder.decompress(decoder.unconsumed_tail, _CHUNK)
        tail = decoder.flush()
        size += len(tail)
        if size > limit:
            raise RequestEntityTooLarge()
        out.append(tail)
    except zlib.error:
        raise BadRequest("Invalid compressed data.") from None
    if not decoder.eof:
        raise BadRequest("Invalid compressed data: truncated stream.")
    return b"".join(out)


def _inflate_deflate(data: bytes, limit: int) -> bytes:
    # RFC 9110 "deflate" is zlib-wrapped; some clients send raw deflate. Accept both.
    if len(data) >= 2 and (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0:
        return _inflate(data, zlib.MAX_WBITS, limit)
    return _inflate(data, -zlib.MAX_WBITS, limit)


def decode_body(body: bytes, content_encoding: str, limit: int) -> bytes:
    """Undo the content codings of ``body`` (listed in the order they were applied).

    :raises BadRequest: the data is not valid for its coding.
    :raises RequestEntityTooLarge: the decoded body is larger than ``limit``.
    :raises UnsupportedMediaType: a coding this server does not know (RFC 9110 15.5.16).
    """
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, limit)
        elif coding == "deflate":
            body = _inflate_deflate(body, limit)
        else:
            raise UnsupportedMediaType(f"Unsupported Content-Encoding: {coding}")
    return body
