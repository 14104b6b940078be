"""
Error responses, shared by both protocol implementations.

Everything here is off the hot path: it runs when a request is refused (parser errors, limits,
bad bodies) or when the app fails. The pages are werkzeug's own, so a client sees the same error
pages it would see from any werkzeug application, and every one of them closes the connection.
"""
from __future__ import annotations

import logging

import httptools
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    InternalServerError,
    NotImplemented as HTTPNotImplemented,
)

from ._rendering import date_line, format_head, response_parts

__all__ = (
    "HTTPLimitExceeded",
    "half_close",
    "error_response",
    "parser_error_to_http",
    "logger",
)

logger = logging.getLogger("kyoukai_fast")


class HTTPLimitExceeded(Exception):
    """Raised inside a parser callback to stop parsing with a specific HTTP error."""

    def __init__(self, http_error: HTTPException):
        super().__init__(http_error)
        self.http_error = http_error


def parser_error_to_http(exc: BaseException) -> HTTPException:
    """The HTTP error a client gets for an exception raised by ``feed_data``."""
    cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else exc
    if isinstance(cause, HTTPLimitExceeded):
        return cause.http_error
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
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


def error_response(error: HTTPException, version: str = "1.1", method: str = "GET",
                   keep_alive: bool = False) -> bytes:
    """The bytes of werkzeug's page for ``error``, framed with ``Connection: close``."""
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
    extra = date_line().encode("ascii")
    if not keep_alive:
        extra += b"Connection: close\r\n"
    return format_head(version, status, headers, extra) + body
