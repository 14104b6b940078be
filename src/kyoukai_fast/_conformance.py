"""
Request checks that RFC 9110 / RFC 9112 ask of a server and llhttp leaves to it, shared by both
protocol implementations.

llhttp (through httptools, with its default strict settings) already refuses most malformed
framing: ``Content-Length`` with ``Transfer-Encoding``, duplicate or invalid ``Content-Length``,
obsolete line folding, invalid chunk sizes, ``chunked`` that is not the final transfer coding,
bare CR/LF and control characters. What it accepts and a server must still refuse is checked here:

* ``Host`` (RFC 9112 3.2): missing in an HTTP/1.1 request, given more than once, or invalid
  → 400. For an absolute-form target the target's authority replaces ``Host``.
* request targets: ``*`` is only for ``OPTIONS``; an absolute-form target must be ``http(s)``
  without userinfo → 400.
* ``Transfer-Encoding`` (RFC 9112 6.1): in an HTTP/1.0 request the framing is faulty → 400;
  a transfer coding other than ``chunked`` is not implemented → 501.
* trailer fields (RFC 9110 6.5.1) are never merged into the request's header fields.
* the head of a request may not grow without bound across reads (httptools buffers an incomplete
  header field internally, so the per-field limit alone cannot bound it) → 431.

And on the response side: an app's 1xx status is not a final response (500 instead), and a
streamed body on a kept-alive connection is held to the ``Content-Length`` its app declared.

The protocol's hot path calls :func:`check_head` only when a request is not the common case (a
``Host`` value not seen valid before, a target not in origin-form, a ``Transfer-Encoding``).
"""
from __future__ import annotations

import re

from werkzeug.exceptions import BadRequest, RequestHeaderFieldsTooLarge
from werkzeug.exceptions import NotImplemented as HTTPNotImplemented

from ._errors import HTTPLimitExceeded

__all__ = (
    "VALID_HOSTS", "check_head", "valid_host", "head_too_large", "interim_status_error",
    "hold_to_declared_length", "DeclaredLength",
)

#: ``Host`` values already found valid: the hot path looks a value up here before calling
#: :func:`check_head`. Bounded, so that a client sending random hosts cannot grow it.
VALID_HOSTS: dict = {}
_VALID_HOSTS_MAX = 1024

# RFC 3986 host (IP-literal / IPv4address / reg-name) and an optional port.
_HOST = re.compile(
    r"(?:\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]"
    r"|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)"
    r"(?::[0-9]*)?\Z"
)


def valid_host(host: str) -> bool:
    """Whether ``host`` is a valid ``Host`` field value (``uri-host [ ":" port ]``)."""
    if host in VALID_HOSTS:
        return True
    if _HOST.match(host) is None:
        return False
    if len(VALID_HOSTS) < _VALID_HOSTS_MAX:
        VALID_HOSTS[host] = None
    return True


def _bad(description: str) -> HTTPLimitExceeded:
    return HTTPLimitExceeded(BadRequest(description))


def check_head(environ: dict, method: str, version: str, target: str) -> bool:
    """Check a request head that is not the common case; fix up ``environ`` where RFC 9112 asks.

    :return: whether the request is chunked (its later header fields are trailer fields).
    :raises HTTPLimitExceeded: with the HTTP error the request is refused with.
    """
    host = environ.get("HTTP_HOST")
    if host is None:
        if version != "1.0":
            raise _bad("An HTTP/1.1 request must have a Host header field.")
    elif not valid_host(host):
        if ", " in host:  # repeated fields are joined with ", " (and a space is never valid)
            raise _bad("More than one Host header field.")
        raise _bad("Invalid Host header field.")
    if target[:1] != "/":
        _check_target(environ, method, target)
    coding = environ.get("HTTP_TRANSFER_ENCODING")
    if coding is None:
        return False
    if version == "1.0":
        # RFC 9112 6.1: the framing of an HTTP/1.0 message with Transfer-Encoding is faulty.
        raise _bad("Transfer-Encoding is not allowed in an HTTP/1.0 request.")
    codings = [c.strip().lower() for c in coding.split(",")]
    if codings[-1] != "chunked":
        # RFC 9112 6.3: the body length cannot be determined (llhttp would refuse it too, but
        # only after the head, and this check comes first).
        raise _bad("Transfer-Encoding must end with chunked.")
    other = codings[:-1]
    if "chunked" in other:
        raise _bad("chunked applied more than once.")  # RFC 9112 7
    if other:
        raise HTTPLimitExceeded(HTTPNotImplemented(
            "Transfer coding not implemented: " + ", ".join(other)))
    return True


def _check_target(environ: dict, method: str, target: str) -> None:
    if method == "CONNECT":
        return  # authority-form, validated by llhttp; refused as an upgrade (501)
    if target == "*":
        if method != "OPTIONS":
            raise _bad("The asterisk request target is only for OPTIONS.")
        return
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise _bad("Invalid request target.")
    authority = rest
    for end in "/?#":
        authority = authority.partition(end)[0]
    if "@" in authority or not authority or not valid_host(authority):
        raise _bad("Invalid authority in the request target.")
    # RFC 9112 3.2.2: the target's authority wins over the Host header field.
    environ["HTTP_HOST"] = authority


def head_too_large(received: int, size: int, limit: int) -> int:
    """Account for one read that ended inside a request's head.

    ``received`` is what was counted so far for this request (0: nothing yet), ``size`` the
    length of this read. The read that started the head also carried the requests before it, so
    it is not counted: a head may reach ``limit`` plus one read (256 KiB in asyncio) at most.

    :return: the new count.
    :raises HTTPLimitExceeded: 431 once the head is over ``limit``.
    """
    if received == 0:
        return 1
    received += size
    if received > limit:
        raise HTTPLimitExceeded(RequestHeaderFieldsTooLarge())
    return received


# --- responses --------------------------------------------------------------------------------

def interim_status_error(head: bytes):
    """An error when a rendered response has a 1xx status, else ``None``.

    A 1xx response is interim (RFC 9110 15.2): sent as the app's final answer, the client would
    wait for another response, or switch protocols on a 101 that the server never made.
    """
    return ValueError("an app returned an interim (1xx) status as its response: "
                      + head.split(b"\r\n", 1)[0].decode("latin-1"))


class DeclaredLength:
    """A streamed body held to the ``Content-Length`` its app declared.

    The client takes exactly that many bytes as the body: more would be read as the start of
    the next response (or be garbage after this one), fewer would swallow part of the next.
    Extra bytes are cut off; a body that ends short raises, and the protocol then closes the
    connection (the client sees a truncated response instead of a desynchronised one).
    """

    __slots__ = ("app_iter", "left")

    def __init__(self, app_iter, length: int):
        self.app_iter = app_iter
        self.left = length

    def __iter__(self):
        for chunk in self.app_iter:
            if isinstance(chunk, str):
                chunk = chunk.encode()
            if len(chunk) >= self.left:
                chunk, self.left = chunk[:self.left], 0
                if chunk:
                    yield chunk
                return
            self.left -= len(chunk)
            yield chunk
        if self.left:
            raise ValueError(f"streamed body ended {self.left} bytes short of its Content-Length")

    def close(self):
        close = getattr(self.app_iter, "close", None)
        if close is not None:
            close()


def declared_length(head: bytes):
    """The ``Content-Length`` a rendered response head declares, or ``None``."""
    lower = head.lower()
    start = lower.find(b"\r\ncontent-length:")
    if start < 0:
        return None
    end = lower.find(b"\r\n", start + 2)
    try:
        return int(head[start + 17:end])
    except ValueError:
        return None


def hold_to_declared_length(app_iter, head: bytes):
    """``app_iter`` of a streamed response, held to its declared length if any (also when the
    connection closes after it: more bytes than declared are never sent)."""
    length = declared_length(head)
    return app_iter if length is None else DeclaredLength(app_iter, length)
