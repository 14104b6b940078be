"""
Error responses, shared by both protocol implementations.

Everything here is off the hot path: it runs when a request is refused (parser errors, limits,
bad bodies) or when the app fails. The pages are werkzeug's own, so a client sees the same error
pages it would see from any werkzeug application, and every one of them closes the connection.
"""
from __future__ import annotations

import logging
import re

import httptools
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError
from werkzeug.exceptions import NotImplemented as HTTPNotImplemented

from ._rendering import date_line, format_head, response_parts

__all__ = (
    "HTTPLimitExceeded",
    "request_parser",
    "half_close",
    "error_response",
    "error_page",
    "parser_error_to_http",
    "logger",
)

logger = logging.getLogger("kyoukai_fast")


def request_parser(callbacks) -> httptools.HttpRequestParser:
    """httptools' request parser, accepting whitespace before a chunk extension.

    RFC 9112 7.1.1 allows BWS before the ``;`` of a chunk extension (``5 ;name=value``), which
    llhttp refuses unless told otherwise; httptools before 0.6.2 cannot tell it (then refused).
    """
    parser = httptools.HttpRequestParser(callbacks)
    lenient = getattr(parser, "set_dangerous_leniencies", None)
    if lenient is not None:
        lenient(lenient_spaces_after_chunk_size=True)
    return parser


class HTTPLimitExceeded(Exception):
    """Raised inside a parser callback to stop parsing with a specific HTTP error."""

    def __init__(self, http_error: HTTPException):
        super().__init__(http_error)
        self.http_error = http_error


def parser_error_to_http(exc: BaseException, data=None, at_boundary: bool = True
                         ) -> HTTPException:
    """The HTTP error a client gets for an exception raised by ``feed_data``.

    ``data``: the bytes of the read being parsed, ``at_boundary``: whether that read began
    between two requests; they tell a malformed method (400) from an unknown one (501).
    """
    cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else exc
    if isinstance(cause, HTTPLimitExceeded):
        return cause.http_error
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        # llhttp refuses every method it does not know, well-formed or not.
        if data is not None and not _is_token(_failed_method(bytes(data), at_boundary)):
            # RFC 9112 3, RFC 9110 9.1: method = token; anything else is a malformed line.
            return BadRequest("Malformed HTTP request: invalid method.")
        # RFC 9110 15.6.2: 501 is the answer to a method the server does not recognize for any
        # resource. (405 is for a method a resource does not allow, and needs an Allow field
        # naming the methods it does: the app's routing answers those.)
        return HTTPNotImplemented("Unknown request method.")
    if isinstance(exc, httptools.HttpParserUpgrade):
        return BadRequest("Unsupported protocol upgrade.")
    if isinstance(exc, httptools.HttpParserCallbackError):
        logger.error("kyoukai_fast parser callback failed", exc_info=cause)
        return InternalServerError()
    if isinstance(exc, httptools.HttpParserError):
        return BadRequest(_describe(exc))
    return InternalServerError()


# RFC 9110 5.6.2: tchar.
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _is_token(text: bytes) -> bool:
    return bool(text) and all(byte in _TCHAR for byte in text)


class _Counter:
    """Parser callbacks that count complete messages."""

    __slots__ = ("complete",)

    def __init__(self):
        self.complete = 0

    def on_message_complete(self):
        self.complete += 1


def _parsed_messages(data: bytes) -> tuple[int, bool]:
    """Messages a fresh parser completes in ``data``, and whether it then failed."""
    counter = _Counter()
    try:
        request_parser(counter).feed_data(data)
    except httptools.HttpParserError:
        return counter.complete, True
    return counter.complete, False


def _failed_method(data: bytes, at_boundary: bool) -> bytes:
    """The method of the request llhttp refused in ``data``, up to the space after it.

    When the read began between requests, a fresh parser goes through the same states: the
    refused request starts where its messages before it end (found by bisection, only on this
    error path). Otherwise the read began inside a request, and the refused one is taken to
    start the first line, after the end of a head, that a fresh parser refuses at once.
    """
    start = None
    if at_boundary:
        before, failed = _parsed_messages(data)
        if failed:
            low, high = 0, len(data)  # the shortest prefix completing ``before`` messages
            while low < high:
                middle = (low + high) // 2
                if _parsed_messages(data[:middle])[0] >= before:
                    high = middle
                else:
                    low = middle + 1
            start = low
    if start is None:
        start = 0
        for candidate in [0] + [m.end() for m in _HEAD_END.finditer(data)]:
            if _parsed_messages(data[candidate:]) == (0, True):
                start = candidate
                break
    line = data[start:].lstrip(b"\r\n")
    return _METHOD_END.split(line, 1)[0]


_HEAD_END = re.compile(rb"\r?\n\r?\n")
_METHOD_END = re.compile(rb"[ \r\n]")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    # llhttp's messages ("Invalid header value char") are useful to a client developer and
    # carry no request data.
    return "Malformed HTTP request: " + text if text else "Malformed HTTP request."


def half_close(transport) -> bool:
    """Stop writing to the client (once the buffer is sent) but keep reading. False if impossible.

    After a refusal the client may still be sending (a body, pipelined requests). Closing a
    socket with unread data makes the kernel send a TCP reset, which can destroy the refusal
    before the client has read it; a half-close lets the client finish, read the answer and see
    the end of the connection.
    """
    try:
        if not transport.can_write_eof():
            return False
        transport.write_eof()
    except (AttributeError, NotImplementedError, OSError, RuntimeError):
        return False
    return True


def error_page(error: HTTPException, version: str = "1.1", method: str = "GET"):
    """``(status, headers, body)`` of werkzeug's page for ``error`` (``body`` is bytes)."""
    environ = {
        "REQUEST_METHOD": method,
        "SERVER_PROTOCOL": "HTTP/" + version,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "wsgi.url_scheme": "http",
    }
    response = error.get_response(environ)
    status, headers, body = response_parts(response, environ)
    if not isinstance(body, bytes):
        body = b"".join(body)
    return status, headers, body


def error_response(error: HTTPException, version: str = "1.1", method: str = "GET",
                   keep_alive: bool = False) -> bytes:
    """The bytes of werkzeug's page for ``error``, framed with ``Connection: close``."""
    status, headers, body = error_page(error, version, method)
    extra = date_line().encode("ascii")
    if not keep_alive:
        extra += b"Connection: close\r\n"
    return format_head(version, status, headers, extra) + body
