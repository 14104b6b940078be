"""
The response side both WSGI twins share: header classification, the ``Date`` line, the head of
a response, and the general rendering path through werkzeug's own WSGI machinery.

Neither twin owns this module. Each twin renders the common response (a plain werkzeug
``Response`` with a buffered body) in one pass of its own, and hands every other response to
:func:`render_general` here, so both give the same bytes.
"""
from __future__ import annotations

import re
import time
from email.utils import formatdate

from werkzeug.wrappers import Response as WerkzeugResponse

from ._streaming import StreamingBody, wsgi_response_of_stream

__all__ = (
    "ORDINARY", "CONTENT_LENGTH", "CONNECTION", "DATE", "NEEDS_WERKZEUG", "INVALID_NAME",
    "HEADER_KINDS",
    "classify_header",
    "valid_field_name",
    "invalid_name_message",
    "fast_response_type",
    "date_line",
    "format_head",
    "response_parts",
    "needs_length",
    "declared_size",
    "body_length_error",
    "render_general",
    "format_general",
)

# --- header classification --------------------------------------------------------------------

#: What a one-pass renderer must notice about a response header (the compiled twin's HeaderKind
#: enum has the same values).
ORDINARY, CONTENT_LENGTH, CONNECTION, DATE, NEEDS_WERKZEUG, INVALID_NAME = range(6)

#: The usual spellings, classified without ``lower()``.
HEADER_KINDS = {
    "Content-Type": ORDINARY,
    "Content-Length": CONTENT_LENGTH,
    "Connection": CONNECTION,
    "Date": DATE,
    "Location": NEEDS_WERKZEUG,  # IRI handling stays werkzeug's
    "Content-Location": NEEDS_WERKZEUG,
    # Framing is the server's: the general path drops an app's own Transfer-Encoding.
    "Transfer-Encoding": NEEDS_WERKZEUG,
}

#: A field name is a token (RFC 9110 5.1): an app's "Bad Name" or "X:Y" would not be one
#: header on the wire. Checked once per name, when it is classified.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def valid_field_name(name: str) -> bool:
    return _FIELD_NAME.match(name) is not None


def invalid_name_message(name: str) -> str:
    return f"invalid header field name {name[:64]!r} (RFC 9110 5.1: a token)"


def classify_header(name: str) -> int:
    """The kind of a response header name (uncached: each twin remembers the answers)."""
    kind = HEADER_KINDS.get(name)
    if kind is not None:
        return kind
    lower = name.lower()
    if not valid_field_name(name):
        return INVALID_NAME
    if lower == "content-length":
        return CONTENT_LENGTH
    if lower == "connection":
        return CONNECTION
    if lower == "date":
        return DATE
    if lower in ("location", "content-location", "transfer-encoding"):
        return NEEDS_WERKZEUG
    return ORDINARY


# Methods of werkzeug's Response that the one-pass renderers reproduce; a subclass overriding
# any of them goes through werkzeug's own machinery instead.
_REPRODUCED = ("get_wsgi_headers", "get_app_iter", "get_wsgi_response", "iter_encoded", "__call__")
_fast_response_types: dict = {}


def fast_response_type(cls) -> bool:
    """Whether responses of class ``cls`` may be rendered without werkzeug's WSGI machinery."""
    fast = _fast_response_types.get(cls)
    if fast is None:
        fast = issubclass(cls, WerkzeugResponse) and all(
            getattr(cls, name) is getattr(WerkzeugResponse, name) for name in _REPRODUCED)
        _fast_response_types[cls] = fast
    return fast


# --- the head -----------------------------------------------------------------------------------

_date_second = -1
_date_line = ""


def date_line() -> str:
    """The ``Date:`` header line for the current second (RFC 9110 5.6.7), made once a second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_line = "Date: " + formatdate(now, usegmt=True) + "\r\n"
        _date_second = now
    return _date_line


def format_head(version: str, status: str, headers, extra: bytes = b"") -> bytes:
    """Status line, header fields, ``extra`` (pre-formatted lines) and the blank line."""
    if "\r" in status or "\n" in status:
        raise ValueError("status must not contain newline characters")
    parts = [("HTTP/%s %s\r\n" % (version, status)).encode("latin-1")]
    for name, value in headers:
        if classify_header(name) == INVALID_NAME:  # a token holds no newline either
            raise ValueError(invalid_name_message(name))
        if "\n" in value or "\r" in value:
            raise ValueError("header names and values must not contain newline characters")
        parts.append(("%s: %s\r\n" % (name, value)).encode("latin-1"))
    parts.append(extra)
    parts.append(b"\r\n")
    return b"".join(parts)


def response_parts(response, environ: dict):
    """``(status, headers, body)`` for a werkzeug response, exactly as its WSGI call yields them.

    ``body`` is ``bytes`` when the body is buffered, otherwise the WSGI app iterator (which the
    caller must close). ``headers`` is a list of ``(name, value)`` strings. A
    :class:`~kyoukai_fast.StreamingBody` is an app iterator of unknown length, never counted.
    """
    if isinstance(response.response, StreamingBody):
        app_iter, status, headers = wsgi_response_of_stream(response, environ)
        return status, headers, app_iter
    if fast_response_type(type(response)) and not response.direct_passthrough:
        body_list = response.response
        if isinstance(body_list, list):
            code = response.status_code
            if not (100 <= code < 200 or code == 204 or code == 304):
                headers = []
                lengths = []
                for pair in response.headers._list:
                    lower = pair[0].lower()
                    if lower == "content-length":
                        lengths.append(pair[1])
                    elif lower == "location" or lower == "content-location":
                        break  # IRI handling: leave it to werkzeug
                    headers.append(pair)
                else:
                    if not lengths and not response.automatically_set_content_length:
                        # A length the app leaves unsaid: the body goes out as a stream, framed
                        # by the server (render_general).
                        app_iter, status, headers = response.get_wsgi_response(environ)
                        return status, headers, app_iter
                    chunks = [c.encode() if isinstance(c, str) else c for c in body_list]
                    body = b"".join(chunks)
                    if not lengths:
                        headers.append(("Content-Length", str(len(body))))
                    elif any(declared_size(v) != len(body) for v in lengths):
                        response.close()
                        raise body_length_error(", ".join(lengths), len(body))
                    if environ.get("REQUEST_METHOD") == "HEAD":
                        body = b""
                    response.close()
                    return response._status, headers, body
    app_iter, status, headers = response.get_wsgi_response(environ)
    return status, headers, app_iter


def declared_size(value: str) -> int:
    """The value of a ``Content-Length`` (``1*DIGIT``), or -1 when it is not one."""
    if 0 < len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)
    return -1


def body_length_error(declared: str, size) -> ValueError:
    """The error for a buffered body whose length is not the ``Content-Length`` its app set.

    Sent as it is, a client would take the wrong number of bytes as the body and read the rest
    (or the next response) wrongly; the response is answered with 500 instead (and logged).
    """
    if size is None:
        return ValueError(f"the response has conflicting Content-Length values: {declared}")
    return ValueError(f"the response's Content-Length {declared} does not match its body of "
                      f"{size} bytes")


def needs_length(status: str, headers, environ: dict) -> bool:
    """Whether a server must frame this response itself: it may carry a body and has no length."""
    code = int(status[:3])
    if 100 <= code < 200 or code == 204 or code == 304 or environ.get("REQUEST_METHOD") == "HEAD":
        return False
    for name, _ in headers:
        if name.lower() == "content-length":
            return False
    return True


# --- the general path ---------------------------------------------------------------------------

_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"


def _close_iterator(app_iter) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()


def render_general(response, environ: dict, version: str, keep_alive: bool):
    """``render_response`` for any response, through werkzeug's WSGI machinery.

    Returns ``(data, app_iter, keep_alive, chunked)``: see the twins' ``render_response``.
    """
    status, headers, body = response_parts(response, environ)
    have_date = app_coding = False
    connection = None
    for name, value in headers:
        lower = name.lower()
        if lower == "date":
            have_date = True
        elif lower == "connection":
            connection = value.lower()
        elif lower == "transfer-encoding":
            app_coding = True
    if app_coding:
        # Framing is the server's: an app's own Transfer-Encoding would go out beside the
        # server's Content-Length or chunked coding, and the client would misread the body.
        headers = [pair for pair in headers if pair[0].lower() != "transfer-encoding"]
    extra = b"" if have_date else date_line().encode("ascii")
    chunked = False
    if isinstance(body, bytes):
        app_iter = None
        if body and needs_length(status, headers, environ):
            headers = list(headers)
            headers.append(("Content-Length", str(len(body))))
    elif not needs_length(status, headers, environ):
        code = int(status[:3])
        if environ.get("REQUEST_METHOD") == "HEAD" or 100 <= code < 200 or code in (204, 304):
            _close_iterator(body)
            app_iter, body = None, b""
        else:
            app_iter, body = body, b""
    elif version == "1.1":
        app_iter, body, chunked = body, b"", True
        extra += _CHUNKED
    else:
        # HTTP/1.0 has no chunked coding: the end of the body is the end of the connection.
        app_iter, body, keep_alive = body, b"", False
    if connection is not None:
        if "close" in connection:
            keep_alive = False
        elif not keep_alive:
            # The app's Connection header (keep-alive, or other options) would tell the client
            # the connection stays open; the server closes it, and says so (RFC 9112 9.6).
            headers = [pair for pair in headers if pair[0].lower() != "connection"]
            extra += _CLOSE
    elif version == "1.1":
        if not keep_alive:
            extra += _CLOSE
    elif keep_alive:
        extra += _KEEP_ALIVE
    try:
        head = format_head(version, status, headers, extra)
    except BaseException:
        # A bad header: the body will never be sent, so its iterator is done with.
        _close_iterator(app_iter)
        raise
    return head + body, app_iter, keep_alive, chunked


def format_general(response, environ) -> bytes:
    """``get_formatted_response`` for any response, through werkzeug's WSGI machinery.

    The status line answers in the request's HTTP version (``SERVER_PROTOCOL``). Status, headers
    and body are werkzeug's WSGI output; a body without a known length gets ``Content-Length``.
    """
    status, headers, body = response_parts(response, environ)
    if not isinstance(body, bytes):
        app_iter = body
        try:
            body = b"".join(app_iter)
        finally:
            _close_iterator(app_iter)
        if needs_length(status, headers, environ):
            headers = list(headers)
            headers.append(("Content-Length", str(len(body))))
    version = "1.0" if environ.get("SERVER_PROTOCOL", "HTTP/1.1") == "HTTP/1.0" else "1.1"
    return format_head(version, status, headers) + body
