# cython: language_level=3
"""
Compiled WSGI environ construction and response formatting.

The twin of ``_wsgi_py.py``, which stays the reference: every case this module does not handle
itself (werkzeug subclasses that override WSGI methods, ``direct_passthrough``, streamed bodies,
status codes without a body, ``Location`` headers) is delegated to it, so both give the same bytes.
"""
import io
import sys

from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsLatin1String
from libc.time cimport time as c_time, time_t

from . import _wsgi_py

cdef object _BytesIO = io.BytesIO
cdef object _stderr = sys.stderr
cdef object _py_split_target = _wsgi_py.split_target
cdef object _target_from_text = _wsgi_py.target_from_text
cdef object _py_render = _wsgi_py.render_response
cdef object _py_get_formatted_response = _wsgi_py.get_formatted_response
cdef object _py_is_fast_type = _wsgi_py._is_fast_type
cdef object _py_version_of = _wsgi_py._version_of
from email.utils import formatdate as _formatdate

cdef dict _environ_keys = {}
cdef Py_ssize_t _ENVIRON_KEYS_MAX = 4096
cdef dict _status_lines = {}
cdef Py_ssize_t _STATUS_LINES_MAX = 2048
cdef dict _fast_types = {}

cdef bytes _CLOSE = b"Connection: close\r\n"
cdef bytes _KEEP_ALIVE = b"Connection: keep-alive\r\n"
cdef bytes _CRLF = b"\r\n"

# --- request side -----------------------------------------------------------------------------

cdef str header_environ_key(str name):
    cdef PyObject* cached = PyDict_GetItem(_environ_keys, name)
    if cached != NULL:
        return <str>cached
    cdef str key = name.upper().replace("-", "_")
    if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
        key = "HTTP_" + key
    if len(_environ_keys) < _ENVIRON_KEYS_MAX:
        _environ_keys[name] = key
    return key


cdef void add_header(dict environ, str key, str value) except *:
    cdef PyObject* old = PyDict_GetItem(environ, key)
    if old == NULL:
        PyDict_SetItem(environ, key, value)
    elif key == "HTTP_COOKIE":
        PyDict_SetItem(environ, key, (<str>old) + "; " + value)
    else:
        PyDict_SetItem(environ, key, (<str>old) + ", " + value)


cdef tuple split_target(str target):
    # The common origin-form target without escapes is split here; anything else (absolute
    # form, fragments, percent-escapes) by the reference implementation.
    cdef Py_ssize_t q
    if target.startswith("/") and "%" not in target and "#" not in target:
        q = target.find("?")
        if q < 0:
            return (target, "")
        return (target[:q], target[q + 1:])
    return _py_split_target(target)


def to_wsgi_environment(headers, method, path, http_version, body=None):
    """Produce a WSGI environ (a plain ``dict``) for one request.

    Same contract as :func:`kyoukai_fast._wsgi_py.to_wsgi_environment`.
    """
    cdef tuple split = split_target(_target_from_text(path))
    cdef dict environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": split[0],
        "QUERY_STRING": split[1],
        "SERVER_PROTOCOL": "HTTP/" + http_version,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": body if body is not None else _BytesIO(),
        "wsgi.errors": _stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.async": True,
    }
    if isinstance(headers, dict):
        headers = headers.items()
    for name, value in headers:
        add_header(environ, header_environ_key(name), value)
    return environ

# --- response side ----------------------------------------------------------------------------

cdef bytes status_line(str version, str status):
    cdef tuple key = (version, status)
    cdef PyObject* cached = PyDict_GetItem(_status_lines, key)
    if cached != NULL:
        return <bytes>cached
    line = _wsgi_py.status_line(version, status)
    if len(_status_lines) < _STATUS_LINES_MAX:
        _status_lines[key] = line
    return line


cdef time_t _date_second = -1
cdef bytes _date_header = b""


cdef bytes http_date():
    global _date_second, _date_header
    cdef time_t now = c_time(NULL)
    if now != _date_second:
        _date_header = b"Date: " + _formatdate(<double>now, usegmt=True).encode("ascii") + _CRLF
        _date_second = now
    return _date_header


cdef inline bint _is_fast_type(type cls) except -1:
    cdef PyObject* cached = PyDict_GetItem(_fast_types, cls)
    if cached != NULL:
        return <object>cached is True
    fast = bool(_py_is_fast_type(cls))
    _fast_types[cls] = fast
    return fast


cdef inline bytes _body_bytes(list chunks):
    cdef Py_ssize_t n = PyList_GET_SIZE(chunks)
    if n == 1:
        chunk = chunks[0]
        if type(chunk) is bytes:
            return <bytes>chunk
    elif n == 0:
        return b""
    return b"".join([c.encode() if isinstance(c, str) else c for c in chunks])


cpdef tuple render_response(object response, dict environ, str version, bint keep_alive):
    """``(data, app_iter, keep_alive, chunked)``: see ``_wsgi_py.render_response``.

    Handles a plain werkzeug ``Response`` with a buffered body in one pass over its headers;
    everything else goes to the reference implementation.
    """
    cdef list body_list, header_list, pieces
    cdef int code
    cdef bint have_length = False, have_date = False, is_head
    cdef str name, value, lower, connection = None, status
    cdef tuple pair
    cdef bytes body, head
    cdef Py_UCS4 first

    if not _is_fast_type(type(response)) or response.direct_passthrough:
        return _py_render(response, environ, version, keep_alive)
    body_obj = response.response
    if type(body_obj) is not list:
        return _py_render(response, environ, version, keep_alive)
    code = response._status_code
    if code < 200 or code == 204 or code == 304:
        return _py_render(response, environ, version, keep_alive)
    body_list = <list>body_obj
    header_list = response.headers._list
    pieces = []
    for item in header_list:
        pair = <tuple>item
        name = <str>pair[0]
        value = <str>pair[1]
        first = name[0] if len(name) else 0
        if first == u'c' or first == u'C':
            lower = name.lower()
            if lower == "content-length":
                have_length = True
            elif lower == "content-location":
                return _py_render(response, environ, version, keep_alive)
            elif lower == "connection":
                connection = value.lower()
        elif first == u'l' or first == u'L':
            if name.lower() == "location":
                return _py_render(response, environ, version, keep_alive)
        elif first == u'd' or first == u'D':
            if name.lower() == "date":
                have_date = True
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError("header names and values must not contain newline characters")
        pieces.append(name)
        pieces.append(": ")
        pieces.append(value)
        pieces.append("\r\n")
    body = _body_bytes(body_list)
    if not have_length and response.automatically_set_content_length:
        pieces.append("Content-Length: ")
        pieces.append(str(PyBytes_GET_SIZE(body)))
        pieces.append("\r\n")
    if response._on_close:
        response.close()
    is_head = environ.get("REQUEST_METHOD") == "HEAD"
    status = response._status
    head = PyUnicode_AsLatin1String("".join(pieces))
    if connection is not None:
        keep_alive = keep_alive and "close" not in connection
        tail = b""
    elif version == "1.1":
        tail = b"" if keep_alive else _CLOSE
    else:
        tail = _KEEP_ALIVE if keep_alive else b""
    data = b"".join((
        status_line(version, status),
        head,
        b"" if have_date else http_date(),
        tail,
        _CRLF,
        b"" if is_head else body,
    ))
    return (data, None, keep_alive, False)


def get_formatted_response(response, environment):
    """Transform a werkzeug response into the bytes of an HTTP/1.x response.

    Same contract as :func:`kyoukai_fast._wsgi_py.get_formatted_response`.
    """
    if _fast_path_ok(response):
        return _format_fast(response, environment, _py_version_of(environment))
    return _py_get_formatted_response(response, environment)


cdef bint _fast_path_ok(response) except -1:
    if not _is_fast_type(type(response)) or response.direct_passthrough:
        return False
    if type(response.response) is not list:
        return False
    cdef int code = response._status_code
    if code < 200 or code == 204 or code == 304:
        return False
    for name, _ in response.headers._list:
        lower = name.lower()
        if lower == "location" or lower == "content-location":
            return False
    return True


cdef bytes _format_fast(response, dict environ, str version):
    # get_formatted_response's contract has no Date and no Connection header: strip what
    # render_response adds for a server.
    cdef list header_list = response.headers._list
    cdef list pieces = [status_line(version, response._status)]
    cdef bint have_length = False
    for name, value in header_list:
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError("header names and values must not contain newline characters")
        if name.lower() == "content-length":
            have_length = True
        pieces.append(PyUnicode_AsLatin1String(name + ": " + value + "\r\n"))
    body = _body_bytes(response.response)
    if not have_length and response.automatically_set_content_length:
        pieces.append(b"Content-Length: %d\r\n" % PyBytes_GET_SIZE(body))
    if response._on_close:
        response.close()
    pieces.append(_CRLF)
    if environ.get("REQUEST_METHOD") != "HEAD":
        pieces.append(body)
    return b"".join(pieces)
