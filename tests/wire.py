"""
HTTP/1.x as bytes: requests written for a test, responses split strictly for its assertions.

* :func:`get`: the bytes of one request.
* :func:`parse_responses`: split the bytes a server wrote into responses, strictly (RFC 9112
  framing), so a test can assert on each one.
"""
from __future__ import annotations

import dataclasses
import re

__all__ = ("get", "ParsedResponse", "parse_responses")


def get(path="/", headers=(), version="1.1", method="GET", body=b"", host="example.com"):
    """One request's bytes; a ``body`` gets its ``Content-Length``."""
    lines = [f"{method} {path} HTTP/{version}", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_STATUS = re.compile(rb"HTTP/(1\.[01]) (\d{3})(?: ([^\r\n]*))?\r\n")


@dataclasses.dataclass
class ParsedResponse:
    version: str
    status: int
    reason: str
    headers: list
    body: bytes
    end: int = 0  # offset just past this response in the parsed bytes

    def header(self, name: str, default=None):
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else default


def parse_responses(data: bytes, head_requests=(), closed=True, maybe_head=False) -> list:
    """Split ``data`` into responses (RFC 9112 section 6 framing). Raises on malformed bytes.

    ``head_requests``: indexes of responses that answer HEAD requests (they have no body).
    ``closed``: the connection was closed, so a response without a length ends at the end.
    ``maybe_head``: which responses answer HEAD is unknown (fuzzed input): a response with a
    length may also have no body, and the split that parses the whole of ``data`` is taken.
    """
    if maybe_head:
        found = _parse_any_head(data, 0, [], closed)
        if found is None:
            # Report the error of the plain interpretation.
            return parse_responses(data, head_requests, closed)
        return found
    responses = []
    pos = 0
    while pos < len(data):
        response, pos = _parse_one(data, pos, len(responses) in head_requests, closed)
        responses.append(response)
    return responses


def _parse_any_head(data, pos, responses, closed):
    if pos >= len(data):
        return responses
    try:
        response, end = _parse_one(data, pos, False, closed)
    except AssertionError:
        response = None
    if response is not None:
        found = _parse_any_head(data, end, responses + [response], closed)
        if found is not None:
            return found
    try:
        head_response, head_end = _parse_one(data, pos, True, closed)
    except AssertionError:
        return None
    if response is not None and head_end == end:
        return None  # no body either way: nothing new to try
    return _parse_any_head(data, head_end, responses + [head_response], closed)


_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,16})(?:;[^\r\n]*)?\r\n")


def _parse_one(data: bytes, pos: int, head: bool, closed: bool):
    """One response starting at ``pos``: ``(response, end)``."""
    match = _STATUS.match(data, pos)
    if not match:
        raise AssertionError(f"not a status line at {pos}: {data[pos:pos + 60]!r}")
    try:
        end = data.index(b"\r\n\r\n", pos)
    except ValueError:
        raise AssertionError(f"response head not terminated at {pos}") from None
    lines = data[match.end():end].split(b"\r\n") if end > match.end() - 2 else []
    headers = []
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise AssertionError(f"malformed header line {line!r}")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    status = int(match.group(2))
    response = ParsedResponse(match.group(1).decode(), status,
                              (match.group(3) or b"").decode("latin-1"), headers, b"")
    pos = end + 4
    no_body = head or 100 <= status < 200 or status in (204, 304)
    te = (response.header("Transfer-Encoding") or "").lower()
    length = response.header("Content-Length")
    if no_body:
        pass
    elif "chunked" in te:
        if length is not None:
            raise AssertionError("both Transfer-Encoding: chunked and Content-Length")
        body = bytearray()
        while True:
            size_line = _CHUNK_SIZE.match(data, pos)
            if not size_line:
                raise AssertionError(f"bad chunk size line at {pos}: {data[pos:pos + 30]!r}")
            size = int(size_line.group(1), 16)
            pos = size_line.end()
            if size == 0:
                if data[pos:pos + 2] != b"\r\n":
                    raise AssertionError("last chunk not followed by CRLF")
                pos += 2
                break
            if pos + size + 2 > len(data):
                raise AssertionError("chunk shorter than its size")
            body += data[pos:pos + size]
            if data[pos + size:pos + size + 2] != b"\r\n":
                raise AssertionError("chunk not followed by CRLF")
            pos += size + 2
        response.body = bytes(body)
    elif length is not None:
        if "," in length or not length.isdigit():
            raise AssertionError(f"invalid Content-Length: {length}")
        n = int(length)
        if pos + n > len(data):
            raise AssertionError("body shorter than Content-Length")
        response.body = data[pos:pos + n]
        pos += n
    elif closed:
        response.body = data[pos:]
        pos = len(data)
    else:
        raise AssertionError("response without framing on an open connection")
    response.end = pos
    return response, pos
