"""
Pure-Python WSGI environ construction and response formatting.

The twin of ``_wsgi_c.pyx``: both produce the same bytes for the same input, and the tests hold
them to werkzeug's own WSGI output. Import these through :mod:`kyoukai_fast._wsgi`.
"""
from __future__ import annotations

import io
import re
import sys
import time
from email.utils import formatdate
from urllib.parse import unquote_to_bytes

from werkzeug.datastructures import EnvironHeaders as _EnvironHeaders
from werkzeug.wrappers import Request as _WerkzeugRequest
from werkzeug.wrappers import Response as _WerkzeugResponse

from ._streaming import StreamingBody, wsgi_response_of_stream

__all__ = (
    "to_wsgi_environment",
    "get_formatted_response",
    "header_environ_key",
    "header_environ_key_of_bytes",
    "split_target",
    "target_from_text",
    "status_line",
    "format_head",
    "response_parts",
    "http_date",
    "render_response",
    "add_header",
    "needs_length",
    "new_request",
    "fast_request_type",
    "build_request",
)

_BytesIO = io.BytesIO

# --- request side ---------------------------------------------------------------------------

#: Raw header name -> environ key. Bounded so that a client sending random names cannot grow it.
_environ_keys: dict = {}
_ENVIRON_KEYS_MAX = 4096


def header_environ_key(name: str) -> str:
    """The WSGI environ key of a request header name (case-insensitive, ``-`` becomes ``_``)."""
    key = _environ_keys.get(name)
    if key is None:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        if len(_environ_keys) < _ENVIRON_KEYS_MAX:
            _environ_keys[name] = key
    return key


#: Raw (latin-1 bytes) header name -> environ key: a known name needs no decoding. Bounded.
environ_keys_of_bytes: dict = {}


def header_environ_key_of_bytes(name: bytes):
    """:func:`header_environ_key` of a raw header name (the protocols look the cache up first).

    ``None`` for a name with ``_``: the server drops such a field, as werkzeug's and gunicorn's
    servers do, since ``X_Forwarded_For`` would otherwise land on the same environ key as
    ``X-Forwarded-For`` (and ``Content_Length`` on ``CONTENT_LENGTH``).
    """
    key = environ_keys_of_bytes.get(name)
    if key is None:
        key = None if b"_" in name else header_environ_key(name.decode("latin-1"))
        if len(environ_keys_of_bytes) < _ENVIRON_KEYS_MAX:
            environ_keys_of_bytes[name] = key
    return key


def split_target(target: str) -> tuple:
    """Split a request target into ``(PATH_INFO, QUERY_STRING)``.

    PATH_INFO is percent-decoded and carried as latin-1, as PEP 3333 requires (werkzeug decodes
    it back to UTF-8). An absolute-form target (``http://host/path``) contributes its path.
    """
    path, sep, query = target.partition("?")
    if "#" in query:
        query = query.partition("#")[0]
    elif not sep and "#" in path:
        path = path.partition("#")[0]
    if path[:1] != "/" and "://" in path:
        # absolute-form: scheme://authority/path
        rest = path.partition("://")[2]
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else "/"
    if "%" in path:
        # bytes in, bytes out: unquote_to_bytes would UTF-8-encode a str's non-ASCII characters,
        # which here already stand for single bytes.
        path = unquote_to_bytes(path.encode("latin-1")).decode("latin-1")
    return path, query


def target_from_text(target: str) -> str:
    """A request target given as text, in the byte-per-character (latin-1) form of the wire.

    PEP 3333 carries bytes in ``str``; a target given as text (an IRI) becomes its UTF-8 bytes.
    """
    if target.isascii():
        return target
    return target.encode("utf-8", "surrogateescape").decode("latin-1")


#: The constant part of every environ ``to_wsgi_environment`` builds.
ENVIRON_BASE = {
    "SCRIPT_NAME": "",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "wsgi.input_terminated": True,
    "wsgi.async": True,
}


def to_wsgi_environment(headers, method, path, http_version, body=None):
    """Produce a WSGI environ (a plain ``dict``) for one request.

    :param headers: ``(name, value)`` pairs (or a mapping); repeated names are joined with
        ``", "`` (``"; "`` for ``Cookie``), names are case-insensitive.
    :param method: the request method, e.g. ``"GET"``.
    :param path: the request target as text, not yet percent-decoded (it is decoded here).
        Non-ASCII characters are taken as UTF-8, as Kyoukai's own backend decodes the target
        and as werkzeug's ``EnvironBuilder`` does (IRI).
    :param http_version: ``"1.0"`` or ``"1.1"``.
    :param body: a file-like object holding the request body, or ``None``.
    """
    if isinstance(headers, dict):
        headers = headers.items()
    path_info, query = split_target(target_from_text(path))
    environ = dict(ENVIRON_BASE)
    environ["REQUEST_METHOD"] = method
    environ["PATH_INFO"] = path_info
    environ["QUERY_STRING"] = query
    environ["SERVER_PROTOCOL"] = "HTTP/" + http_version
    environ["wsgi.input"] = body if body is not None else _BytesIO()
    for name, value in headers:
        add_header(environ, header_environ_key(name), value)
    return environ


def add_header(environ: dict, key: str, value: str) -> None:
    """Add one request header to an environ, joining a repeated one."""
    old = environ.get(key)
    if old is None:
        environ[key] = value
    elif key == "HTTP_COOKIE":
        environ[key] = old + "; " + value
    else:
        environ[key] = old + ", " + value


# --- request objects ------------------------------------------------------------------------
#
# ``app.request_class(environ, False)`` is werkzeug's Request in nearly every app, and its
# constructor re-derives from the environ, in several Python calls, values that are mostly
# constant per server (server tuple, root path) or trivial for an ASCII path. ``new_request``
# builds the same object directly: the same attributes, set in the same order by plain attribute
# assignment (so a subclass's descriptors see what they would see), from the same environ values.
# Only classes that keep werkzeug's constructor qualify, and only once a probe showed that both
# ways give identical objects under the installed werkzeug; anything else is constructed as usual.

_new_object = object.__new__
_UPPER_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_REQUEST_INIT = _WerkzeugRequest.__init__

#: Environs the probe builds requests from: every branch of the constructor (lowercase method,
#: unix-socket and missing server, a root path with a trailing slash, a non-ASCII path given as
#: latin-1, invalid UTF-8, leading slashes, no keys at all).
_PROBE_ENVIRONS = (
    {"REQUEST_METHOD": "GET", "wsgi.url_scheme": "http", "SERVER_NAME": "127.0.0.1",
     "SERVER_PORT": "8080", "SCRIPT_NAME": "", "PATH_INFO": "/hello/world",
     "QUERY_STRING": "a=1&b=2", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8080"},
    {"REQUEST_METHOD": "patch", "wsgi.url_scheme": "https", "SERVER_NAME": "example.org",
     "SERVER_PORT": "443", "SCRIPT_NAME": "/mount/", "PATH_INFO": "//caf\xc3\xa9/\xff",
     "QUERY_STRING": "q=\xe9", "REMOTE_ADDR": None},
    {"SERVER_NAME": "/run/app.sock", "SERVER_PORT": "", "PATH_INFO": "x"},
    {},
)


def _state(obj) -> list:
    """What a constructor left on ``obj``: its attributes in order, headers by their state."""
    return [(name, (type(value), _state(value)) if isinstance(value, _EnvironHeaders) else value)
            for name, value in vars(obj).items()]


def fast_request_type(cls, build) -> bool:
    """Whether ``build(cls, environ)`` may stand in for ``cls(environ, False)``.

    ``build`` is the implementation's own builder (compiled or pure), so each is checked against
    werkzeug itself. Not hot: the callers remember the answer per class.
    """
    try:
        if not (isinstance(cls, type) and issubclass(cls, _WerkzeugRequest)
                and type(cls).__call__ is type.__call__ and cls.__new__ is object.__new__
                and cls.__init__ is _REQUEST_INIT
                and _EnvironHeaders.__new__ is object.__new__):
            return False
        for probe in _PROBE_ENVIRONS:
            environ = dict(probe)
            expected = cls(environ, False)
            built = build(cls, environ)
            if (type(built) is not cls or _state(built) != _state(expected)
                    or built.environ is not environ or built.headers.environ is not environ):
                return False
        return True
    except Exception:  # a werkzeug this was not written for: construct requests as usual
        return False


#: The last SERVER_NAME / SERVER_PORT / SCRIPT_NAME objects seen and what they gave: every
#: environ of one server holds the same objects, so the usual lookup is an identity check.
#: Each cache is one tuple, replaced whole, so a reader never sees half an update.
def server_of(name, port):
    """``Request.server`` for SERVER_NAME and SERVER_PORT, as werkzeug computes it."""
    if name is None:
        return None
    try:
        return (name, int(port))
    except (TypeError, ValueError):  # a unix socket
        return (name, None)


def root_path_of(script: str) -> str:
    """``Request.root_path`` for SCRIPT_NAME, as werkzeug computes it."""
    return script.encode("latin1").decode(errors="replace").rstrip("/")


_server_cache: tuple = (None, None, None)  # SERVER_NAME, SERVER_PORT, server
_root_cache: tuple = (None, "")            # SCRIPT_NAME, root_path


def build_request(cls, environ: dict):
    """``cls(environ, False)`` for a class :func:`fast_request_type` accepted."""
    global _server_cache, _root_cache
    request = _new_object(cls)
    method = environ.get("REQUEST_METHOD", "GET")
    request.method = _UPPER_METHODS.get(method) or method.upper()
    request.scheme = environ.get("wsgi.url_scheme", "http")
    name = environ.get("SERVER_NAME")
    port = environ.get("SERVER_PORT")
    cache = _server_cache
    if name is cache[0] and port is cache[1] and name is not None:
        server = cache[2]
    else:
        server = server_of(name, port)
        if type(name) is str and type(port) is str:
            _server_cache = (name, port, server)
    request.server = server
    script = environ.get("SCRIPT_NAME") or ""
    cache = _root_cache
    if script is cache[0]:
        request.root_path = cache[1]
    else:
        root_path = root_path_of(script)
        if type(script) is str:
            _root_cache = (script, root_path)
        request.root_path = root_path
    path = environ.get("PATH_INFO") or ""
    if not (type(path) is str and path.isascii()):
        path = path.encode("latin1").decode(errors="replace")
    if path[:1] != "/" or path[1:2] == "/":
        path = "/" + path.lstrip("/")
    request.path = path
    request.query_string = environ.get("QUERY_STRING", "").encode("latin1")
    headers = _new_object(_EnvironHeaders)
    headers._list = []
    headers.environ = environ
    request.headers = headers
    request.remote_addr = environ.get("REMOTE_ADDR")
    request.environ = environ
    request.shallow = False
    return request


_fast_request_types: dict = {}


def new_request(cls, environ: dict):
    """``cls(environ, False)``: the request object a protocol hands to ``process_request``."""
    fast = _fast_request_types.get(cls)
    if fast is None:
        fast = fast_request_type(cls, build_request)
        if len(_fast_request_types) < 64:
            _fast_request_types[cls] = fast
    if fast:
        return build_request(cls, environ)
    return cls(environ, False)


# --- response side --------------------------------------------------------------------------

_status_lines: dict = {}
_STATUS_LINES_MAX = 2048


def status_line(version: str, status: str) -> bytes:
    """``b"HTTP/1.1 200 OK\\r\\n"``, built once per (version, status) pair."""
    key = (version, status)
    line = _status_lines.get(key)
    if line is None:
        if "\r" in status or "\n" in status:
            raise ValueError("status must not contain newline characters")
        line = ("HTTP/%s %s\r\n" % (version, status)).encode("latin-1")
        if len(_status_lines) < _STATUS_LINES_MAX:
            _status_lines[key] = line
    return line


_date_second = -1
_date_header = b""


def http_date() -> bytes:
    """The ``Date:`` header line for the current second (RFC 9110 5.6.7), cached per second."""
    global _date_second, _date_header
    now = int(time.time())
    if now != _date_second:
        _date_header = b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        _date_second = now
    return _date_header


def format_head(version: str, status: str, headers, extra: bytes = b"") -> bytes:
    """Status line, header fields, ``extra`` (pre-formatted lines) and the blank line."""
    parts = [status_line(version, status)]
    for name, value in headers:
        if _header_kind(name) == _INVALID_NAME:  # a token holds no newline either
            raise ValueError(invalid_name_message(name))
        if "\n" in value or "\r" in value:
            raise ValueError("header names and values must not contain newline characters")
        parts.append(("%s: %s\r\n" % (name, value)).encode("latin-1"))
    parts.append(extra)
    parts.append(b"\r\n")
    return b"".join(parts)


# Methods of werkzeug's Response that the fast path reproduces; a subclass overriding any of
# them goes through werkzeug's own machinery instead.
_REPRODUCED = ("get_wsgi_headers", "get_app_iter", "get_wsgi_response", "iter_encoded", "__call__")
_fast_types: dict = {}


def _is_fast_type(cls) -> bool:
    fast = _fast_types.get(cls)
    if fast is None:
        fast = issubclass(cls, _WerkzeugResponse) and all(
            getattr(cls, name) is getattr(_WerkzeugResponse, name) for name in _REPRODUCED
        )
        _fast_types[cls] = fast
    return fast


def response_parts(response, environ: dict):
    """``(status, headers, body)`` for a werkzeug response, exactly as its WSGI call yields them.

    ``body`` is ``bytes`` when the body is buffered, otherwise the WSGI app iterator (which the
    caller must close). ``headers`` is a list of ``(name, value)`` strings. A
    :class:`~kyoukai_fast.StreamingBody` is an app iterator of unknown length, never counted.
    """
    if isinstance(response.response, StreamingBody):
        app_iter, status, headers = wsgi_response_of_stream(response, environ)
        return status, headers, app_iter
    if _is_fast_type(type(response)) and not response.direct_passthrough:
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


# What the fast path must notice about a response header, by exact name (the twin of the
# compiled HeaderKind enum); other spellings are classified once with lower() and remembered.
_ORDINARY, _CONTENT_LENGTH, _CONNECTION, _DATE, _NEEDS_WERKZEUG, _INVALID_NAME = range(6)
_header_kinds: dict = {
    "Content-Type": _ORDINARY,
    "Content-Length": _CONTENT_LENGTH,
    "Connection": _CONNECTION,
    "Date": _DATE,
    "Location": _NEEDS_WERKZEUG,  # IRI handling stays werkzeug's
    "Content-Location": _NEEDS_WERKZEUG,
    # Framing is the server's: the general path drops an app's own Transfer-Encoding.
    "Transfer-Encoding": _NEEDS_WERKZEUG,
}
_HEADER_KINDS_MAX = 4096

#: A field name is a token (RFC 9110 5.1): an app's "Bad Name" or "X:Y" would not be one
#: header on the wire. Checked once per name, when it is classified.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def valid_field_name(name: str) -> bool:
    return _FIELD_NAME.match(name) is not None


def invalid_name_message(name: str) -> str:
    return f"invalid header field name {name[:64]!r} (RFC 9110 5.1: a token)"


def _header_kind(name: str) -> int:
    kind = _header_kinds.get(name)
    if kind is None:
        lower = name.lower()
        if not valid_field_name(name):
            kind = _INVALID_NAME
        elif lower == "content-length":
            kind = _CONTENT_LENGTH
        elif lower == "connection":
            kind = _CONNECTION
        elif lower == "date":
            kind = _DATE
        elif lower in ("location", "content-location", "transfer-encoding"):
            kind = _NEEDS_WERKZEUG
        else:
            kind = _ORDINARY
        if len(_header_kinds) < _HEADER_KINDS_MAX:
            _header_kinds[name] = kind
    return kind


_date_str_second = -1
_date_str = ""
_time = time.time


def _http_date_str() -> str:
    global _date_str_second, _date_str
    now = int(time.time())
    if now != _date_str_second:
        _date_str = "Date: " + formatdate(now, usegmt=True) + "\r\n"
        _date_str_second = now
    return _date_str


def _render_fast(response, environ: dict, version: str, keep_alive: bool, server_headers: bool):
    """The one-pass rendering of a plain werkzeug response with a buffered body, or ``None``.

    The twin of the compiled ``_render_fast``: same cases, same bytes (the general path below
    gives them too, in several passes). With ``server_headers`` it adds ``Date`` and
    ``Connection`` as a server does.
    """
    fast = _fast_types.get(type(response))  # _is_fast_type's common case, without its call
    if fast is None:
        fast = _is_fast_type(type(response))
    if not fast or response.direct_passthrough:
        return None
    chunks = response.response
    if type(chunks) is not list:
        return None
    code = response._status_code
    if code < 200 or code == 204 or code == 304:
        return None
    status = response._status
    if "\n" in status or "\r" in status:
        raise ValueError("status must not contain newline characters")
    pieces = ["HTTP/1.1 " if version == "1.1" else "HTTP/" + version + " ", status, "\r\n"]
    have_length = have_date = False
    connection = length = None
    kinds = _header_kinds
    headers = response.headers._list
    for name, value in headers:
        kind = kinds.get(name)
        if kind is None:
            kind = _header_kind(name)
        if kind:
            if kind == _CONTENT_LENGTH:
                if have_length and value != length:
                    raise body_length_error(length + ", " + value, None)
                have_length = True
                length = value
            elif kind == _CONNECTION:
                connection = value.lower()
            elif kind == _DATE:
                have_date = True
            elif kind == _INVALID_NAME:
                raise ValueError(invalid_name_message(name))
            else:
                return None
        pieces += (name, ": ", value, "\r\n")
    if server_headers and connection is not None and not keep_alive and "close" not in connection:
        return None  # the app's Connection header would keep a closing connection: general path
    if not have_length and not response.automatically_set_content_length:
        return None  # a length the app leaves unsaid: framed as a stream (render_general)
    # lines of the head: the status line, the app's header lines, the blank line, and those
    # added below; a newline in a header name or value would make more (checked at the end)
    lines = len(headers) + 2
    if len(chunks) == 1 and type(chunks[0]) is bytes:
        body = chunks[0]
    elif not chunks:
        body = b""
    else:
        body = b"".join([c.encode() if isinstance(c, str) else c for c in chunks])
    if have_length:
        if declared_size(length) != len(body):
            raise body_length_error(length, len(body))
    else:
        pieces += ("Content-Length: ", str(len(body)), "\r\n")
        lines += 1
    if response._on_close:
        response.close()
    if server_headers:
        if not have_date:
            # _http_date_str's common case (the same second), without its call
            pieces.append(_date_str if int(_time()) == _date_str_second else _http_date_str())
            lines += 1
        if connection is not None:
            keep_alive = keep_alive and "close" not in connection
        elif version == "1.1":
            if not keep_alive:
                pieces.append("Connection: close\r\n")
                lines += 1
        elif keep_alive:
            pieces.append("Connection: keep-alive\r\n")
            lines += 1
    pieces.append("\r\n")
    text = "".join(pieces)
    if text.count("\n") != lines or text.count("\r") != lines:
        raise ValueError("header names and values must not contain newline characters")
    head = text.encode("latin-1")
    if body and environ.get("REQUEST_METHOD") != "HEAD":
        return head + body, None, keep_alive, False
    return head, None, keep_alive, False


#: The one-pass case of :func:`render_response` (``None`` when it does not apply), for callers
#: that try it first themselves and call :func:`render_general` otherwise.
render_fast = _render_fast


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


def _version_of(environ: dict) -> str:
    protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
    return "1.0" if protocol == "HTTP/1.0" else "1.1"


def get_formatted_response(response, environment) -> bytes:
    """Transform a werkzeug response into the bytes of an HTTP/1.x response.

    The status line answers in the request's HTTP version (``SERVER_PROTOCOL``). Status, headers
    and body are werkzeug's WSGI output; a body without a known length gets ``Content-Length``.
    """
    environ = environment if type(environment) is dict else dict(environment)
    version = "1.0" if environ.get("SERVER_PROTOCOL") == "HTTP/1.0" else "1.1"
    rendered = _render_fast(response, environ, version, False, False)
    if rendered is not None:
        return rendered[0]
    status, headers, body = response_parts(response, environment)
    if not isinstance(body, bytes):
        app_iter = body
        try:
            body = b"".join(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        if needs_length(status, headers, environment):
            headers = list(headers)
            headers.append(("Content-Length", str(len(body))))
    return format_head(_version_of(environment), status, headers) + body


def needs_length(status: str, headers, environ: dict) -> bool:
    """Whether a server must frame this response itself: it may carry a body and has no length."""
    code = int(status[:3])
    if 100 <= code < 200 or code == 204 or code == 304 or environ.get("REQUEST_METHOD") == "HEAD":
        return False
    for name, _ in headers:
        if name.lower() == "content-length":
            return False
    return True


_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"


def render_response(response, environ: dict, version: str, keep_alive: bool):
    """What a server writes for ``response``: ``(data, app_iter, keep_alive, chunked)``.

    ``data`` is the whole response when the body is buffered (``app_iter`` is then ``None``),
    otherwise only the head, and the body is to be streamed from ``app_iter``: with chunked
    transfer coding when ``chunked``, else as is (its length is known, or the connection closes
    after it). Adds ``Date`` and the ``Connection`` header the keep-alive decision needs.
    """
    return (_render_fast(response, environ, version, keep_alive, True)
            or render_general(response, environ, version, keep_alive))


def render_general(response, environ: dict, version: str, keep_alive: bool):
    """:func:`render_response` for any response, through werkzeug's WSGI machinery."""
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
    extra = b"" if have_date else http_date()
    chunked = False
    if isinstance(body, bytes):
        app_iter = None
        if body and needs_length(status, headers, environ):
            headers = list(headers)
            headers.append(("Content-Length", str(len(body))))
    elif not needs_length(status, headers, environ):
        code = int(status[:3])
        if environ.get("REQUEST_METHOD") == "HEAD" or 100 <= code < 200 or code in (204, 304):
            close = getattr(body, "close", None)
            if close is not None:
                close()
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
        close = getattr(app_iter, "close", None)
        if close is not None:
            close()
        raise
    return head + body, app_iter, keep_alive, chunked
