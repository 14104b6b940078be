# cython: language_level=3
"""
Compiled WSGI environ construction and response formatting.

The twin of ``_wsgi_py.py``, the reference. Every case this module does not handle itself
(werkzeug subclasses that override WSGI methods, ``direct_passthrough``, streamed bodies, status
codes without a body, ``Location`` headers) goes to the shared ``_rendering`` module, so both
twins give the same bytes; the shared request side is ``_environ``.
"""
import io

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Copy, PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.unicode cimport (
    PyUnicode_1BYTE_KIND,
    PyUnicode_AsLatin1String,
    PyUnicode_DATA,
    PyUnicode_GET_LENGTH,
    PyUnicode_DecodeLatin1,
    PyUnicode_KIND,
)
from libc.string cimport memchr, memcmp, memcpy
from libc.time cimport time as c_time, time_t

cdef extern from "Python.h":
    # A dict with room for ``minused`` entries: copies of it (PyDict_Copy clones the table)
    # then take a whole request's keys without growing.
    dict _PyDict_NewPresized(Py_ssize_t minused)
    # The value for ``key``, inserting ``default`` first if absent (borrowed, NULL on error).
    PyObject* PyDict_SetDefault(object d, object key, object default) except NULL
    str PyUnicode_Substring(object s, Py_ssize_t start, Py_ssize_t end)
    bint PyUnicode_IS_ASCII(object o)
    Py_UCS4 PyUnicode_READ_CHAR(object o, Py_ssize_t index)

cdef extern from *:
    """
    /* object.__new__(cls) without the method call: for classes whose __new__ is object's. */
    static PyObject* kyoukai_fast_object_new(PyObject* cls, PyObject* no_args) {
        return PyBaseObject_Type.tp_new((PyTypeObject*)cls, no_args, NULL);
    }
    """
    object _object_new "kyoukai_fast_object_new"(object cls, tuple no_args)

from email.utils import formatdate as _formatdate

from . import _environ, _rendering

cdef object _BytesIO = io.BytesIO
cdef object _environ_key = _environ.environ_key
cdef object _general_split_target = _environ.split_target
cdef object _target_from_text = _environ.target_from_text
cdef object _render_general = _rendering.render_general
cdef object _format_general = _rendering.format_general
cdef object _fast_response_type = _rendering.fast_response_type
cdef object _classify_header_kind = _rendering.classify_header
cdef object _invalid_name_message = _rendering.invalid_name_message
cdef object _body_length_error = _rendering.body_length_error

cdef dict _environ_keys = {}
cdef Py_ssize_t _ENVIRON_KEYS_MAX = _environ.ENVIRON_KEYS_MAX
cdef dict _fast_types = {}

# --- request side -----------------------------------------------------------------------------

cdef inline str header_environ_key(str name):
    # Only the cache lookup, inlined where it is called; a miss goes to the function below.
    cdef PyObject* cached = PyDict_GetItem(_environ_keys, name)
    if cached != NULL:
        return <str>cached
    return _new_header_environ_key(name)


cdef str _new_header_environ_key(str name):
    cdef str key = _environ_key(name)
    if len(_environ_keys) < _ENVIRON_KEYS_MAX:
        _environ_keys[name] = key
    return key


cdef dict _environ_keys_of_bytes = {}


# The names seen last, in slots chosen by length and first and last bytes: each name the parser
# hands over is a new bytes object whose hash (SipHash) costs more than finding it here with one
# memcmp. A slot holds (name, key); a name that shares a slot with another replaces it.
cdef list _recent_request_names = [None] * 64


cdef str header_environ_key_of_bytes(bytes name):
    """``header_environ_key`` of a raw (latin-1) header name, without decoding a known one.

    ``None`` for a name with ``_``: the protocol drops such a field (see the pure twin's).
    """
    cdef Py_ssize_t size = PyBytes_GET_SIZE(name)
    cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(name)
    cdef Py_ssize_t slot = 0
    cdef PyObject* entry
    if size:
        slot = (size * 7 + data[0] + data[size - 1] * 3) & 63
        entry = PyList_GET_ITEM(_recent_request_names, slot)
        if <object>entry is not None:
            known = <bytes>(<tuple>entry)[0]
            if (PyBytes_GET_SIZE(known) == size
                    and memcmp(PyBytes_AS_STRING(known), data, size) == 0):
                return <str>(<tuple>entry)[1]
    cdef PyObject* cached = PyDict_GetItem(_environ_keys_of_bytes, name)
    cdef str key
    if cached != NULL:
        key = <str>cached
    else:
        if memchr(data, b'_', size) != NULL:
            key = None
        else:
            key = header_environ_key(PyUnicode_DecodeLatin1(name, size, NULL))
        if len(_environ_keys_of_bytes) < _ENVIRON_KEYS_MAX:
            _environ_keys_of_bytes[name] = key
    if size:
        _recent_request_names[slot] = (name, key)
    return key


cdef void add_header(dict environ, str key, str value) except *:
    # One lookup for the usual new key: setdefault inserts it, and only a repeated header
    # (the size did not change) is joined with the value already there.
    cdef Py_ssize_t size = len(environ)
    cdef PyObject* old = PyDict_SetDefault(environ, key, value)
    if old == NULL or len(environ) != size:
        return
    if key == "HTTP_COOKIE":
        PyDict_SetItem(environ, key, (<str>old) + "; " + value)
    else:
        PyDict_SetItem(environ, key, (<str>old) + ", " + value)


cdef tuple split_target(str target):
    # The common origin-form target without escapes (starts with "/", no "%", no "#") is split
    # here at its first "?", in one scan of its bytes; anything else (absolute form, fragments,
    # percent-escapes, non-latin-1 text) by the shared general one.
    cdef Py_ssize_t i, n = PyUnicode_GET_LENGTH(target), query = -1
    cdef const unsigned char* data
    cdef unsigned char c
    if n and PyUnicode_KIND(target) == PyUnicode_1BYTE_KIND:
        data = <const unsigned char*>PyUnicode_DATA(target)
        if data[0] == 47:  # "/"
            for i in range(n):
                c = data[i]
                if c == 37 or c == 35:  # "%" or "#"
                    break
                if c == 63 and query < 0:  # "?"
                    query = i
            else:
                if query < 0:
                    return (target, "")
                return (PyUnicode_Substring(target, 0, query),
                        PyUnicode_Substring(target, query + 1, n))
    return _general_split_target(target)


#: Room for the keys of a request's environ in the protocol: the server's template, the
#: request line's, the headers, and what werkzeug and Kyoukai add.
ENVIRON_CAPACITY = 40


cpdef dict presized_copy(dict source, Py_ssize_t capacity):
    """A copy of ``source`` whose table has room for ``capacity`` keys.

    ``PyDict_Copy`` of the result clones that table as it is, so each per-request copy is filled
    without the rehashing of a growing dict. Same keys, values and order as ``source``.
    """
    cdef dict copy = _PyDict_NewPresized(max(capacity, len(source)))
    for key, value in source.items():
        PyDict_SetItem(copy, key, value)
    return copy


# The constant part of every environ to_wsgi_environment builds (one definition, shared), with
# room for the request line's keys and 7 headers (a browser's usual request) in a table small
# enough for Python's small-object allocator; more headers grow the copy as usual.
cdef dict _ENVIRON_BASE = presized_copy(_environ.ENVIRON_BASE, 20)


def to_wsgi_environment(headers, method, path, http_version, body=None):
    """Produce a WSGI environ (a plain ``dict``) for one request.

    Same contract as :func:`kyoukai_fast._wsgi_py.to_wsgi_environment`.
    """
    # An ASCII target is already in its wire form; only others need target_from_text.
    cdef tuple split = split_target(
        <str>path if type(path) is str and PyUnicode_IS_ASCII(path) else _target_from_text(path))
    cdef dict environ = PyDict_Copy(_ENVIRON_BASE)
    environ["REQUEST_METHOD"] = method
    environ["PATH_INFO"] = split[0]
    environ["QUERY_STRING"] = split[1]
    environ["SERVER_PROTOCOL"] = (
        "HTTP/1.1" if http_version == "1.1" else "HTTP/1.0" if http_version == "1.0"
        else "HTTP/" + http_version)
    environ["wsgi.input"] = body if body is not None else _BytesIO()
    if type(headers) is list:
        for item in <list>headers:
            add_header(environ, header_environ_key(<str>(<tuple>item)[0]), (<tuple>item)[1])
        return environ
    if isinstance(headers, dict):
        headers = headers.items()
    for name, value in headers:
        add_header(environ, header_environ_key(name), value)
    return environ


# --- request objects --------------------------------------------------------------------------
# The compiled twin of _wsgi_py.new_request (see _environ for why and when it applies); which
# classes qualify is decided by _environ.fast_request_type, probing this module's builder.

cdef tuple _NO_ARGS = ()
cdef object _EnvironHeaders = _environ.EnvironHeaders
cdef dict _UPPER_METHODS = _environ.UPPER_METHODS
cdef object _fast_request_type = _environ.fast_request_type
cdef dict _fast_request_types = {}
# Cache misses are computed once, by the shared helpers.
cdef object _server_of = _environ.server_of
cdef object _root_path_of = _environ.root_path_of
# The last request class seen and its verdict; the SERVER_NAME / SERVER_PORT / SCRIPT_NAME
# objects last seen and what they gave (every environ of one server holds the same objects).
# Each is one tuple, replaced whole.
cdef tuple _last_request_type = (None, False)
cdef tuple _server_cache = (None, None, None)
cdef tuple _root_cache = (None, "")


cdef object _build_request(object cls, dict environ):
    global _server_cache, _root_cache
    cdef PyObject* found
    cdef Py_ssize_t size
    request = _object_new(cls, _NO_ARGS)
    method = environ.get("REQUEST_METHOD", "GET")
    found = PyDict_GetItem(_UPPER_METHODS, method)
    request.method = <object>found if found != NULL else method.upper()
    request.scheme = environ.get("wsgi.url_scheme", "http")
    name = environ.get("SERVER_NAME")
    port = environ.get("SERVER_PORT")
    cdef tuple cache = _server_cache
    if name is cache[0] and port is cache[1] and name is not None:
        server = cache[2]
    else:
        server = _server_of(name, port)
        if type(name) is str and type(port) is str:
            _server_cache = (name, port, server)
    request.server = server
    script = environ.get("SCRIPT_NAME") or ""
    cache = _root_cache
    if script is cache[0]:
        request.root_path = cache[1]
    else:
        root_path = _root_path_of(script)
        if type(script) is str:
            _root_cache = (script, root_path)
        request.root_path = root_path
    path = environ.get("PATH_INFO") or ""
    if not (type(path) is str and PyUnicode_IS_ASCII(path)):
        path = path.encode("latin1").decode(errors="replace")
    size = PyUnicode_GET_LENGTH(path)
    if (size == 0 or PyUnicode_READ_CHAR(path, 0) != 47  # "/"
            or (size > 1 and PyUnicode_READ_CHAR(path, 1) == 47)):
        path = "/" + path.lstrip("/")
    request.path = path
    query = environ.get("QUERY_STRING", "")
    request.query_string = (PyUnicode_AsLatin1String(query) if type(query) is str
                            else query.encode("latin1"))
    headers = _object_new(_EnvironHeaders, _NO_ARGS)
    headers._list = []
    headers.environ = environ
    request.headers = headers
    request.remote_addr = environ.get("REMOTE_ADDR")
    request.environ = environ
    request.shallow = False
    return request


def build_request(cls, dict environ):
    """The compiled builder itself (for :func:`_environ.fast_request_type` and the tests)."""
    return _build_request(cls, environ)


cpdef object new_request(object cls, dict environ):
    """``cls(environ, False)``: the request object the protocol hands to ``process_request``."""
    global _last_request_type
    cdef tuple last = _last_request_type
    cdef PyObject* found
    if cls is last[0]:
        fast = last[1]
    else:
        found = PyDict_GetItem(_fast_request_types, cls)
        if found != NULL:
            fast = <object>found
        else:
            fast = bool(_fast_request_type(cls, build_request))
            if len(_fast_request_types) < 64:
                _fast_request_types[cls] = fast
        _last_request_type = (cls, fast)
    if fast is True:
        return _build_request(cls, environ)
    return cls(environ, False)


# --- response side ----------------------------------------------------------------------------

cdef time_t _date_second = -1
cdef str _date_line = ""


cdef inline str _current_date_line():
    """The ``Date:`` header line for the current second (``_rendering.date_line``'s twin)."""
    global _date_second, _date_line
    cdef time_t now = c_time(NULL)
    if now != _date_second:
        _date_line = "Date: " + _formatdate(<double>now, usegmt=True) + "\r\n"
        _date_second = now
    return _date_line


# The last class found fast: nearly every response of a server has the same class.
cdef type _last_fast_type = None


cdef inline bint _is_fast_type(type cls) except -1:
    global _last_fast_type
    if cls is _last_fast_type:
        return True
    cdef PyObject* cached = PyDict_GetItem(_fast_types, cls)
    if cached != NULL:
        if <object>cached is True:
            _last_fast_type = cls
            return True
        return False
    fast = bool(_fast_response_type(cls))
    _fast_types[cls] = fast
    if fast:
        _last_fast_type = cls
    return fast


cdef inline bint _has_newline(str text):
    """``"\\n" in text or "\\r" in text``, in one scan for one-byte-per-character text."""
    cdef Py_ssize_t i, n
    cdef const unsigned char* data
    cdef unsigned char c
    if PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
        return "\n" in text or "\r" in text
    n = PyUnicode_GET_LENGTH(text)
    data = <const unsigned char*>PyUnicode_DATA(text)
    for i in range(n):
        c = data[i]
        if c == 10 or c == 13:
            return True
    return False


cdef inline Py_ssize_t _decimal(str text):
    """The value of a ``Content-Length`` (``1*DIGIT``), or -1 when it is not one."""
    cdef Py_ssize_t i, n = PyUnicode_GET_LENGTH(text), number = 0
    cdef const unsigned char* data
    if n == 0 or n > 18 or PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
        return -1
    data = <const unsigned char*>PyUnicode_DATA(text)
    for i in range(n):
        if not 48 <= data[i] <= 57:
            return -1
        number = number * 10 + (data[i] - 48)
    return number


cdef inline bytes _body_bytes(list chunks):
    cdef Py_ssize_t n = PyList_GET_SIZE(chunks)
    if n == 1:
        chunk = chunks[0]
        if type(chunk) is bytes:
            return <bytes>chunk
    elif n == 0:
        return b""
    return b"".join([c.encode() if isinstance(c, str) else c for c in chunks])


# What render_response must notice about a response header (the values of _rendering's kinds),
# by exact name; other spellings are classified once and remembered (bounded).
cdef enum HeaderKind:
    ORDINARY = 0
    CONTENT_LENGTH = 1
    CONNECTION = 2
    DATE = 3
    NEEDS_WERKZEUG = 4   # Location / Content-Location: IRI handling; Transfer-Encoding
    INVALID_NAME = 5     # not a token (RFC 9110 5.1): the response is refused (500)

cdef dict _header_kinds = dict(_rendering.HEADER_KINDS)
cdef Py_ssize_t _HEADER_KINDS_MAX = 4096


# The header name objects seen last, by identity: a response class sets its headers from the
# same string constants every time ("Content-Type" in werkzeug), so a pointer comparison finds
# them before any hashing. _recent_refs keeps each remembered name alive while its slot holds it.
cdef enum:
    RECENT_NAMES = 8
cdef PyObject* _recent_names[RECENT_NAMES]
cdef int _recent_kinds[RECENT_NAMES]
cdef list _recent_refs = [None] * RECENT_NAMES
cdef int _recent_next = 0


cdef int _header_kind(str name) except -1:
    global _recent_next
    cdef int i
    for i in range(RECENT_NAMES):
        if _recent_names[i] == <PyObject*>name:
            return _recent_kinds[i]
    cdef int kind = _classify_header(name)
    i = _recent_next
    _recent_next = (i + 1) % RECENT_NAMES
    _recent_refs[i] = name
    _recent_names[i] = <PyObject*>name
    _recent_kinds[i] = kind
    return kind


cdef int _classify_header(str name) except -1:
    cdef PyObject* cached = PyDict_GetItem(_header_kinds, name)
    if cached != NULL:
        return <int><object>cached
    cdef int kind = _classify_header_kind(name)
    if len(_header_kinds) < _HEADER_KINDS_MAX:
        _header_kinds[name] = kind
    return kind


cpdef tuple render_response(object response, dict environ, str version, bint keep_alive):
    """``(data, app_iter, keep_alive, chunked)``: see ``_wsgi_py.render_response``.

    A plain werkzeug ``Response`` with a buffered body is rendered here in one pass; everything
    else by the shared general path (``_rendering.render_general``).
    """
    cdef tuple rendered = _render_fast(response, environ, version, keep_alive, True)
    if rendered is None:
        return _render_general(response, environ, version, keep_alive)
    return rendered


cdef bytes _latin1_join(list pieces, bytes body):
    """``"".join(pieces).encode("latin-1") + body`` in one allocation.

    Pieces (all ``str``) of one byte per character are copied as they are: that is their latin-1
    encoding. Anything else goes the long way, which raises what encoding such a header raises.
    """
    cdef Py_ssize_t i, n = PyList_GET_SIZE(pieces), size, length = 0
    cdef Py_ssize_t body_size = PyBytes_GET_SIZE(body)
    cdef object piece
    for i in range(n):
        piece = <object>PyList_GET_ITEM(pieces, i)
        if PyUnicode_KIND(piece) != PyUnicode_1BYTE_KIND:
            head = PyUnicode_AsLatin1String("".join(pieces))
            return head + body if body_size else head
        length += PyUnicode_GET_LENGTH(piece)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, length + body_size)
    cdef char* buffer = PyBytes_AS_STRING(out)
    for i in range(n):
        piece = <object>PyList_GET_ITEM(pieces, i)
        size = PyUnicode_GET_LENGTH(piece)
        memcpy(buffer, PyUnicode_DATA(piece), size)
        buffer += size
    if body_size:
        memcpy(buffer, PyBytes_AS_STRING(body), body_size)
    return out


cdef tuple _render_fast(object response, dict environ, str version, bint keep_alive,
                        bint server_headers):
    """The fast path of rendering, or ``None`` where werkzeug's machinery must do it.

    One pass over the headers collects the head's pieces, written with the body into one
    ``bytes``. With ``server_headers`` it also adds what a server adds (``Date``, ``Connection``).
    """
    cdef list pieces
    cdef int code, kind
    cdef bint have_length = False, have_date = False
    cdef str name, value, connection = None, status, line, length = None
    cdef tuple pair
    cdef bytes body

    if not _is_fast_type(type(response)) or response.direct_passthrough:
        return None
    body_obj = response.response
    if type(body_obj) is not list:
        return None
    code = response._status_code
    if code < 200 or code == 204 or code == 304:
        return None
    status = response._status
    if _has_newline(status):
        raise ValueError("status must not contain newline characters")
    line = "HTTP/1.1 " if version == "1.1" else "HTTP/" + version + " "
    pieces = [line, status, "\r\n"]
    for item in response.headers._list:
        pair = <tuple>item
        name = <str>pair[0]
        value = <str>pair[1]
        kind = _header_kind(name)
        if kind != ORDINARY:
            if kind == CONTENT_LENGTH:
                if have_length and value != length:
                    raise _body_length_error(length + ", " + value, None)
                have_length = True
                length = value
            elif kind == CONNECTION:
                connection = value.lower()
            elif kind == DATE:
                have_date = True
            elif kind == INVALID_NAME:
                raise ValueError(_invalid_name_message(name))
            else:
                return None
        # The name is a token (an INVALID_NAME raised above), so only the value can hold a newline.
        if _has_newline(value):
            raise ValueError("header names and values must not contain newline characters")
        pieces.append(name)
        pieces.append(": ")
        pieces.append(value)
        pieces.append("\r\n")
    if server_headers and connection is not None and not keep_alive and "close" not in connection:
        return None  # the app's Connection header would keep a closing connection: general path
    if not have_length and not response.automatically_set_content_length:
        return None  # a length the app leaves unsaid: framed as a stream (the general path)
    body = _body_bytes(<list>body_obj)
    if have_length:
        if _decimal(length) != PyBytes_GET_SIZE(body):
            raise _body_length_error(length, PyBytes_GET_SIZE(body))
    else:
        value = str(PyBytes_GET_SIZE(body))
        pieces.append("Content-Length: ")
        pieces.append(value)
        pieces.append("\r\n")
    if response._on_close:
        response.close()
    if server_headers:
        if not have_date:
            pieces.append(_current_date_line())
        if connection is not None:
            keep_alive = keep_alive and "close" not in connection
        elif version == "1.1":
            if not keep_alive:
                pieces.append("Connection: close\r\n")
        elif keep_alive:
            pieces.append("Connection: keep-alive\r\n")
    pieces.append("\r\n")
    if PyBytes_GET_SIZE(body) and environ.get("REQUEST_METHOD") != "HEAD":
        return (_latin1_join(pieces, body), None, keep_alive, False)
    return (_latin1_join(pieces, b""), None, keep_alive, False)


def get_formatted_response(response, environment):
    """Transform a werkzeug response into the bytes of an HTTP/1.x response.

    Same contract as :func:`kyoukai_fast._wsgi_py.get_formatted_response`.
    """
    cdef dict environ = environment if type(environment) is dict else dict(environment)
    version = "1.0" if environ.get("SERVER_PROTOCOL") == "HTTP/1.0" else "1.1"
    cdef tuple rendered = _render_fast(response, environ, version, False, False)
    if rendered is None:
        return _format_general(response, environment)
    return rendered[0]
