"""
Request smuggling and bad message framing (RFC 9112 6, 7): conflicting or malformed
``Content-Length`` / ``Transfer-Encoding``, obsolete line folding, chunk and trailer abuse, on
both implementations, in one read and byte by byte. Each is refused before anything after it is
read as a request.
"""
from __future__ import annotations

import json

import pytest

from fakes import (
    SMUGGLED,
    refused,
    served,
)
from wire import get

SMUGGLING = {
    "cl-and-te": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te-and-cl": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 5\r\n\r\n0\r\n\r\n", 400),
    "duplicate-cl-equal": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                           b"Content-Length: 3\r\n\r\nabc", 400),
    "duplicate-cl-differing": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                               b"Content-Length: 40\r\n\r\nabc", 400),
    "cl-list": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    "cl-plus": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", 400),
    "cl-negative": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -3\r\n\r\nabc", 400),
    "cl-hex": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\nabc", 400),
    "cl-empty": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\nabc", 400),
    "cl-overflow": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n"
                    b"\r\nabc", 400),
    "obs-fold-space": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", 400),
    "obs-fold-tab": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc", 400),
    "chunk-size-invalid": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\n", 400),
    "chunk-size-negative": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"-1\r\nabc\r\n0\r\n\r\n", 400),
    "chunk-size-0x": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"0x3\r\nabc\r\n0\r\n\r\n", 400),
    "chunk-size-overflow": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400),
    # Whitespace after the size is BWS (accepted, see test_request_line); within or before the
    # size it is not.
    "chunk-size-whitespace": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"3 3\r\nabc\r\n0\r\n\r\n", 400),
    "chunk-size-leading-whitespace": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
                                      b"chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n", 400),
    "chunk-data-too-long": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabcd\r\n0\r\n\r\n", 400),
    "chunk-bare-lf": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3\nabc\n0\n\n", 400),
    "te-chunked-not-last": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n"
                            b"\r\n0\r\n\r\n", 400),
    "te-not-chunked": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
    "te-chunked-twice": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te-unknown": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n"
                   b"3\r\nabc\r\n0\r\n\r\n", 400),
    "te-in-http10": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\n\r\n", 400),
    "te-gzip-then-chunked": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n"
                             b"\r\n3\r\nabc\r\n0\r\n\r\n", 501),
    "te-gzip-then-chunked-fields": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                                    501),
    "bare-lf-request-line": (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    "bare-lf-header": (b"GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n", 400),
    "bare-cr": (b"GET / HTTP/1.1\rHost: h\r\n\r\n", 400),
    "ctl-in-value": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n", 400),
    "nul-in-value": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400),
    "del-in-value": (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n", 400),
    "invalid-name": (b"GET / HTTP/1.1\r\nHost: h\r\nX(A): b\r\n\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "http-0.9": (b"GET / HTTP/0.9\r\n\r\n", 505),
    "http-1.2": (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 400),
}


@pytest.mark.parametrize("split", ["one-read", "byte-by-byte"])
@pytest.mark.parametrize("case", list(SMUGGLING))
def test_smuggling_and_bad_framing_refused(impl, case, split, no_errors_logged):
    data, status = SMUGGLING[case]
    data += SMUGGLED
    reads = [data[i:i + 1] for i in range(len(data))] if split == "byte-by-byte" else None
    paths, responses = refused(impl, data, status, reads=reads)
    assert len(responses) == 1
    assert paths == []  # neither the broken request nor the one hidden after it


@pytest.mark.parametrize("case", ["cl-and-te", "duplicate-cl-differing", "obs-fold-space",
                                  "chunk-size-invalid", "te-gzip-then-chunked"])
def test_request_before_the_bad_one_is_answered(impl, case):
    data, status = SMUGGLING[case]
    paths, responses = refused(impl, get("/first") + data + SMUGGLED, status)
    assert [r.status for r in responses] == [200, status]
    assert paths == ["/first"]


def test_trailer_fields_are_not_merged(impl):
    (response, _), (request, _) = served(
        impl, b"POST / HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n0\r\nHost: evil.example\r\nX-T: 1\r\n\r\n"
              + get("/next"), count=2)
    assert response.status == 200
    assert request.environ["HTTP_HOST"] == "h.example"
    assert "HTTP_X_T" not in request.environ
    assert json.loads(response.body)["body"] == "abc"


def test_too_many_trailer_fields_is_431(impl, no_errors_logged):
    trailers = b"".join(b"X-T%d: 1\r\n" % i for i in range(6))
    refused(impl, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n" + SMUGGLED, 431, max_header_count=5)
