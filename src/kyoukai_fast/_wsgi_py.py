"""
Pure-Python WSGI environ construction and response formatting.

The twin of ``_wsgi_c.pyx``: both produce the same bytes for the same input, and the tests hold
them to werkzeug's own WSGI output. What the twins share lives in :mod:`._environ` and
:mod:`._rendering`. Import these through :mod:`kyoukai_fast._wsgi`.
"""
from __future__ import annotations

import io

from ._environ import (
    ENVIRON_BASE,
    ENVIRON_KEYS_MAX,
    UPPER_METHODS,
    EnvironHeaders,
    environ_key,
    fast_request_type,
    root_path_of,
    server_of,
    split_target,
    target_from_text,
)
from ._rendering import (
    CONNECTION,
    CONTENT_LENGTH,
    DATE,
    HEADER_KINDS,
    INVALID_NAME,
    ORDINARY,
    body_length_error,
    classify_header,
    date_line,
    declared_size,
    fast_response_type,
    format_general,
    invalid_name_message,
    render_general,
)

__all__ = (
    "to_wsgi_environment",
    "get_formatted_response",
    "header_environ_key",
    "header_environ_key_of_bytes",
    "add_header",
    "new_request",
    "build_request",
    "render_response",
)

_BytesIO = io.BytesIO
_new_object = object.__new__

# --- request side ---------------------------------------------------------------------------

#: Header name -> environ key, and the same for raw (latin-1 bytes) names, which then need no
#: decoding. Bounded, so that a client sending random names cannot grow them.
_environ_keys: dict = {}
_environ_keys_of_bytes: dict = {}


def header_environ_key(name: str) -> str:
    """The WSGI environ key of a request header name (case-insensitive, ``-`` becomes ``_``)."""
    key = _environ_keys.get(name)
    if key is None:
        key = environ_key(name)
        if len(_environ_keys) < ENVIRON_KEYS_MAX:
            _environ_keys[name] = key
    return key


def header_environ_key_of_bytes(name: bytes):
    """:func:`header_environ_key` of a raw header name as the parser reports it.

    ``None`` for a name with ``_``: the server drops such a field, as werkzeug's and gunicorn's
    servers do, since ``X_Forwarded_For`` would otherwise land on the same environ key as
    ``X-Forwarded-For`` (and ``Content_Length`` on ``CONTENT_LENGTH``).
    """
    key = _environ_keys_of_bytes.get(name)
    if key is None:
        key = None if b"_" in name else header_environ_key(name.decode("latin-1"))
        if len(_environ_keys_of_bytes) < ENVIRON_KEYS_MAX:
            _environ_keys_of_bytes[name] = key
    return key


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
# Built directly where ``fast_request_type`` (in ``_environ``, with why) accepted the class.

#: The last SERVER_NAME / SERVER_PORT / SCRIPT_NAME objects seen and what they gave: every
#: environ of one server holds the same objects, so the usual lookup is an identity check.
#: Each cache is one tuple, replaced whole, so a reader never sees half an update.
_server_cache: tuple = (None, None, None)  # SERVER_NAME, SERVER_PORT, server
_root_cache: tuple = (None, "")            # SCRIPT_NAME, root_path


def build_request(cls, environ: dict):
    """``cls(environ, False)`` for a class :func:`fast_request_type` accepted."""
    global _server_cache, _root_cache
    request = _new_object(cls)
    method = environ.get("REQUEST_METHOD", "GET")
    request.method = UPPER_METHODS.get(method) or method.upper()
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
    headers = _new_object(EnvironHeaders)
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

#: Header name -> kind (see ``_rendering``), remembered per spelling. Bounded.
_header_kinds: dict = dict(HEADER_KINDS)
_HEADER_KINDS_MAX = 4096


def _header_kind(name: str) -> int:
    kind = _header_kinds.get(name)
    if kind is None:
        kind = classify_header(name)
        if len(_header_kinds) < _HEADER_KINDS_MAX:
            _header_kinds[name] = kind
    return kind


def _render_fast(response, environ: dict, version: str, keep_alive: bool, server_headers: bool):
    """The one-pass rendering of a plain werkzeug response with a buffered body, or ``None``.

    The twin of the compiled ``_render_fast``: same cases, same bytes (``render_general`` gives
    them too, in several passes). With ``server_headers`` it adds ``Date`` and ``Connection`` as
    a server does.
    """
    if not fast_response_type(type(response)) or response.direct_passthrough:
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
    pieces = ["HTTP/" + version + " ", status, "\r\n"]
    have_length = have_date = False
    connection = length = None
    for name, value in response.headers._list:
        kind = _header_kind(name)
        if kind == CONTENT_LENGTH:
            if have_length and value != length:
                raise body_length_error(length + ", " + value, None)
            have_length = True
            length = value
        elif kind == CONNECTION:
            connection = value.lower()
        elif kind == DATE:
            have_date = True
        elif kind == INVALID_NAME:
            raise ValueError(invalid_name_message(name))
        elif kind != ORDINARY:
            return None
        # The name is a token (an invalid one raised above): only the value can hold a newline.
        if "\n" in value or "\r" in value:
            raise ValueError("header names and values must not contain newline characters")
        pieces += (name, ": ", value, "\r\n")
    if server_headers and connection is not None and not keep_alive and "close" not in connection:
        return None  # the app's Connection header would keep a closing connection: general path
    if not have_length and not response.automatically_set_content_length:
        return None  # a length the app leaves unsaid: framed as a stream (render_general)
    body = b"".join([c.encode() if isinstance(c, str) else c for c in chunks])
    if have_length:
        if declared_size(length) != len(body):
            raise body_length_error(length, len(body))
    else:
        pieces += ("Content-Length: ", str(len(body)), "\r\n")
    if response._on_close:
        response.close()
    if server_headers:
        if not have_date:
            pieces.append(date_line())
        if connection is not None:
            keep_alive = keep_alive and "close" not in connection
        elif version == "1.1":
            if not keep_alive:
                pieces.append("Connection: close\r\n")
        elif keep_alive:
            pieces.append("Connection: keep-alive\r\n")
    pieces.append("\r\n")
    head = "".join(pieces).encode("latin-1")
    if body and environ.get("REQUEST_METHOD") != "HEAD":
        return head + body, None, keep_alive, False
    return head, None, keep_alive, False


def render_response(response, environ: dict, version: str, keep_alive: bool):
    """What a server writes for ``response``: ``(data, app_iter, keep_alive, chunked)``.

    ``data`` is the whole response when the body is buffered (``app_iter`` is then ``None``),
    otherwise only the head, and the body is to be streamed from ``app_iter``: with chunked
    transfer coding when ``chunked``, else as is (its length is known, or the connection closes
    after it). Adds ``Date`` and the ``Connection`` header the keep-alive decision needs.
    """
    return (_render_fast(response, environ, version, keep_alive, True)
            or render_general(response, environ, version, keep_alive))


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
    return format_general(response, environment)
