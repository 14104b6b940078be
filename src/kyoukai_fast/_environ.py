"""
The request side both WSGI twins share: the environ's constant part, request targets, and the
probe that lets a twin build werkzeug ``Request`` objects directly.

Neither twin owns this module. Each twin keeps its own fast versions of what runs per request
(header keys, the common target, the request builder) and calls these for everything else.
"""
from __future__ import annotations

import sys
from urllib.parse import unquote_to_bytes

from werkzeug.datastructures import EnvironHeaders
from werkzeug.wrappers import Request as WerkzeugRequest

__all__ = (
    "ENVIRON_BASE",
    "ENVIRON_KEYS_MAX",
    "EnvironHeaders",
    "UPPER_METHODS",
    "environ_key",
    "split_target",
    "target_from_text",
    "fast_request_type",
    "server_of",
    "root_path_of",
)

#: The constant part of every environ (the ``wsgi.*`` keys as ``to_wsgi_environment`` sets them).
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

#: Bound of every cache keyed by a client's header names: random names cannot grow one.
ENVIRON_KEYS_MAX = 4096

#: Method names as werkzeug's ``Request.method`` holds them (already upper case).
UPPER_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


def environ_key(name: str) -> str:
    """The WSGI environ key of a request header name (case-insensitive, ``-`` becomes ``_``)."""
    key = name.upper().replace("-", "_")
    if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = "HTTP_" + key
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


# --- request objects --------------------------------------------------------------------------
#
# ``app.request_class(environ, False)`` is werkzeug's Request in nearly every app, and its
# constructor re-derives from the environ, in several Python calls, values that are mostly
# constant per server (server tuple, root path) or trivial for an ASCII path. Each twin's
# ``new_request`` builds the same object directly: the same attributes, set in the same order by
# plain attribute assignment (so a subclass's descriptors see what they would see), from the same
# environ values. Only classes that keep werkzeug's constructor qualify, and only once the probe
# below showed that both ways give identical objects under the installed werkzeug.

_REQUEST_INIT = WerkzeugRequest.__init__

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
    return [(name, (type(value), _state(value)) if isinstance(value, EnvironHeaders) else value)
            for name, value in vars(obj).items()]


def fast_request_type(cls, build) -> bool:
    """Whether ``build(cls, environ)`` may stand in for ``cls(environ, False)``.

    ``build`` is a twin's own builder (compiled or pure), so each is checked against werkzeug
    itself. Not hot: the twins remember the answer per class.
    """
    try:
        if not (isinstance(cls, type) and issubclass(cls, WerkzeugRequest)
                and type(cls).__call__ is type.__call__ and cls.__new__ is object.__new__
                and cls.__init__ is _REQUEST_INIT
                and EnvironHeaders.__new__ is object.__new__):
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
