# cython: language_level=3
"""
The compiled HTTP/1.1 protocol: the fast twin of ``_protocol_py.py``.

Same design and same behaviour (the tests run against both); see the pure-Python module for the
walk-through. Only the hot path is here, as in the pure twin; what differs is how: typed
per-connection state in a ``cdef class``, parser callbacks that build the environ with C-level
dict operations, handler coroutines started as eager tasks (``_tasks``),
and responses rendered by ``_wsgi_c``. Everything else is the shared connection layer,
``_connection.HTTPConnection``, which :class:`KyoukaiProtocol` inherits.
"""
import asyncio
import io
import time
import types

import httptools
from werkzeug.exceptions import (
    HTTPException,
    HTTPVersionNotSupported,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
    RequestURITooLarge,
)

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.contextvars cimport PyContext_CopyCurrent
from cpython.dict cimport PyDict_Copy, PyDict_GetItem, PyDict_GetItemWithError
from cpython.object cimport PyObject
from cpython.list cimport PyList_GET_ITEM
from cpython.memoryview cimport PyMemoryView_GET_BUFFER
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.string cimport memcmp

from ._wsgi_c cimport (
    add_header,
    header_environ_key_of_bytes,
    new_request,
    presized_copy,
    render_response,
    split_target,
)

from . import _wsgi_c
from ._access_line_c import AccessLine
from ._body import decode_body
from ._config import server_state_for
from ._conformance import VALID_HOSTS, check_head, hold_to_declared_length, interim_status_error
from ._connection import FEED_SLICE, PARSING, HTTPConnection
from ._errors import HTTPLimitExceeded, request_parser
from ._input import EMPTY_INPUT
from ._proxy import apply_proxy_headers
from ._read_buffer import bad_read_size, read_buffer
from ._request_cycle import response_or_error
from ._streaming import stream_body
from ._tasks import start_in_task
from ._upgrade import after_upgrade as _after_upgrade

PROTOCOL_CLASS = "KyoukaiProtocol"

cdef object _BytesIO = io.BytesIO
cdef str _HTTP = "http"  # the default wsgi.url_scheme (compared by identity)
# A module attribute, not a C global: the tests replace it with a clock of their own.
_monotonic = time.monotonic
cdef unsigned char _PARSING = PARSING


# Each server's ServerShared (limits and the environ template, copied into a table with room
# for a whole request: see _wsgi_c.presized_copy), made on its first connection and kept on the
# ServerState itself (``typed_copy``), so it lives exactly as long as the server's state. The
# config and template are constant once the server exists.
cdef ServerShared _server_shared(server):
    existing = server.typed_copy
    if existing is not None:
        return <ServerShared>existing
    cdef ServerShared shared = ServerShared.__new__(ServerShared)
    config = server.config
    shared.server = server
    shared.request_handler = server.request_handler
    # With the values most requests get, set once here: a request overwrites them only when
    # its own differ (HTTP/1.0, TLS, a body), which saves dict writes per request.
    shared.environ_template = presized_copy(
        {**server.environ_template, "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": _HTTP,
         "wsgi.input": EMPTY_INPUT}, _wsgi_c.ENVIRON_CAPACITY)
    shared.max_body_size = config.max_body_size
    shared.max_url_size = config.max_url_size
    shared.max_header_count = config.max_header_count
    shared.max_header_size = config.max_header_size
    shared.max_pipelined = config.max_pipelined_requests
    shared.keepalive_timeout = config.keepalive_timeout
    shared.header_timeout = config.header_timeout
    shared.write_high_water = config.write_high_water
    hooks = server.hooks
    shared.proxies = hooks.proxies
    shared.on_request, shared.on_response = hooks.for_twin(AccessLine)
    server.typed_copy = shared
    return shared


cdef class ServerShared:
    pass


cdef object _HttpParserUpgrade = httptools.HttpParserUpgrade
cdef object _HttpParserError = httptools.HttpParserError
cdef object _HTTPException = HTTPException
cdef object _start_in_task = start_in_task
cdef dict _VALID_HOSTS = VALID_HOSTS
cdef Py_ssize_t _FEED_SLICE = FEED_SLICE
cdef bytes _CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
cdef dict _METHODS = {m.encode(): m for m in
                      ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


cdef inline str _method_name(bytes method):
    """The method as ``str``: the usual three by comparison (the parser's bytes are new each
    time, so a dict lookup would hash them), the others from ``_METHODS`` or decoded."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(method)
    cdef const char* data = PyBytes_AS_STRING(method)
    if size == 3 and memcmp(data, b"GET", 3) == 0:
        return "GET"
    if size == 4 and memcmp(data, b"POST", 4) == 0:
        return "POST"
    if size == 4 and memcmp(data, b"HEAD", 4) == 0:
        return "HEAD"
    cdef PyObject* found = PyDict_GetItem(_METHODS, method)
    return <str>found if found != NULL else method.decode("ascii")


# The Host value last found in VALID_HOSTS: the next request's value (a new str) usually equals
# it, and comparing costs less than hashing it. Validity depends on the value alone.
cdef str _last_valid_host = None


cdef inline bint _valid_host_known(str host):
    global _last_valid_host
    if host == _last_valid_host:
        return True
    if PyDict_GetItem(_VALID_HOSTS, host) == NULL:
        return False
    _last_valid_host = host
    return True


# REMOTE_PORT strings of recent client ports, in slots by port number: str(port) per request
# costs more than finding it here; a port sharing a slot with another replaces it.
cdef list _port_strings = [None] * 256


cdef inline str _port_string(object port):
    cdef long number
    cdef PyObject* entry
    if type(port) is not int or not 0 <= port <= 65535:
        return str(port)
    number = port
    entry = PyList_GET_ITEM(_port_strings, number & 255)
    if <object>entry is not None and <long>(<tuple>entry)[0] == number:
        return <str>(<tuple>entry)[1]
    text = str(port)
    _port_strings[number & 255] = (number, text)
    return text


# The connection whose bytes httptools is parsing in this thread: set by data_received around
# feed_data, which is the only place the parser calls back. Every connection's parser is given
# the same callback object, whose attributes are plain functions: httptools keeps what getattr
# returns for each callback, and a connection's own bound methods would cost an idle connection
# six objects. The pointer is thread-local: a callback may run Python code (the head checks)
# that lets another thread run, which feeds its own connections meanwhile. It is borrowed: the
# connection is alive while data_received runs.
cdef extern from *:
    """
    #if defined(_MSC_VER)
    #  define KF_THREAD_LOCAL __declspec(thread)
    #elif defined(__GNUC__) || defined(__clang__)
    #  define KF_THREAD_LOCAL __thread
    #else
    #  define KF_THREAD_LOCAL _Thread_local
    #endif
    static KF_THREAD_LOCAL PyObject *kf_feeding = NULL;
    """
    PyObject* kf_feeding


cdef inline HTTPProtocolCore _fed():
    cdef PyObject* feeding = kf_feeding
    if feeding == NULL:
        raise RuntimeError("a kyoukai_fast parser was fed outside data_received")
    return <HTTPProtocolCore>feeding


def _parser_on_message_begin():
    _fed()._on_message_begin()


def _parser_on_url(bytes url):
    _fed()._on_url(url)


def _parser_on_header(bytes name, bytes value):
    _fed()._on_header(name, value)


def _parser_on_headers_complete():
    _fed()._on_headers_complete()


def _parser_on_body(bytes body):
    _fed()._on_body(body)


def _parser_on_message_complete():
    _fed()._on_message_complete()


_PARSER_CALLBACKS = types.SimpleNamespace(
    on_message_begin=_parser_on_message_begin,
    on_url=_parser_on_url,
    on_header=_parser_on_header,
    on_headers_complete=_parser_on_headers_complete,
    on_body=_parser_on_body,
    on_message_complete=_parser_on_message_complete,
)


cdef class RequestState:
    """Everything about one request while it is parsed and waits for its handler."""


cdef inline RequestState _new_request_state(dict environ):
    """A RequestState (made without a Python-level constructor call: one per request)."""
    cdef RequestState req = RequestState.__new__(RequestState)
    req.environ = environ
    req.url = b""
    req.body = None
    req.body_size = 0
    req.version = "1.1"
    req.keep_alive = True
    req.method = "GET"
    req.header_count = 0
    req.in_trailers = False
    req.complete = False
    req.head_received = 0
    return req


cdef class HTTPProtocolCore:
    """The compiled protocol; :class:`KyoukaiProtocol` adds the asyncio protocol bases."""

    def __init__(self, component, parent_context, server_ip, server_port):
        self.component = component
        self.app = component.app
        self.parent_context = parent_context
        self.server_ip = server_ip
        self.server_port = server_port
        self.transport = None
        self.parser = request_parser(_PARSER_CALLBACKS)
        self.ip = None
        self.client_port = None
        self._shared = _server_shared(server_state_for(component, server_port))
        self._url_scheme = _HTTP
        self._read_buffer = read_buffer()  # this thread's, shared by its connections

    # The server's ServerState and settings, as the connection layer reads them.

    @property
    def _server(self):
        return self._shared.server

    @property
    def _config(self):
        return self._shared.server.config

    # --- reading ------------------------------------------------------------------------------

    def get_buffer(self, sizehint):
        return self._read_buffer

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef Py_buffer* buffer = PyMemoryView_GET_BUFFER(self._read_buffer)
        if not 0 <= nbytes <= buffer.len:
            raise bad_read_size(nbytes)
        data = PyBytes_FromStringAndSize(<char*>buffer.buf, nbytes)
        if type(self) is KyoukaiProtocol:
            self._received(data)
        else:
            self.data_received(data)  # a subclass may override it

    def data_received(self, data):
        self._received(data)

    cdef _received(self, data):
        if self._closing or self._parse_state != _PARSING:
            self._received_after_parsing(data)
            return
        self._last_activity = _monotonic()
        # Everything written while this chunk is handled (several pipelined responses, an
        # interim 100 Continue) goes out in one transport.write: one send() instead of many.
        self._batching = True
        global kf_feeding
        cdef PyObject* feeding = kf_feeding  # restored after: feeding may nest
        cdef bint at_boundary = self._current is None
        try:
            kf_feeding = <PyObject*>self
            try:
                if len(data) > _FEED_SLICE:
                    self._feed_in_slices(data)
                else:
                    self.parser.feed_data(data)
            except _HttpParserUpgrade as upgrade:
                self._flush()
                self._on_upgrade(_after_upgrade(data, upgrade))
            except _HttpParserError as exc:
                self._parse_error(exc, data, at_boundary)
            kf_feeding = feeding  # the parser is done; what follows may run the app
            if self._current is not None and self._parse_state == _PARSING:
                self._read_ended_in_request(len(data))
            if not self._busy:
                self._run_queue()
        finally:
            kf_feeding = feeding
            self._batching = False
            self._flush()

    # --- httptools callbacks ------------------------------------------------------------------

    cdef _on_message_begin(self):
        self._message_started = self._last_activity
        self._current = _new_request_state(PyDict_Copy(self._shared.environ_template))

    cdef _on_url(self, bytes url):
        cdef RequestState req = self._current
        if PyBytes_GET_SIZE(req.url) == 0:
            req.url = url
        else:
            req.url = req.url + url
        if PyBytes_GET_SIZE(req.url) > self._shared.max_url_size:
            raise HTTPLimitExceeded(RequestURITooLarge())

    cdef _on_header(self, bytes name, bytes value):
        cdef RequestState req = self._current
        cdef Py_ssize_t size = PyBytes_GET_SIZE(value)
        if size and (PyBytes_AS_STRING(value)[size - 1] == b' '
                     or PyBytes_AS_STRING(value)[size - 1] == b'\t'):
            # llhttp keeps trailing whitespace; it is not part of the value (RFC 9110 5.5).
            value = value.rstrip(b" \t")
        req.header_count += 1
        if (req.header_count > self._shared.max_header_count
                or PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) > self._shared.max_header_size):
            raise HTTPLimitExceeded(RequestHeaderFieldsTooLarge())
        if req.in_trailers:
            return  # a trailer field: never merged into the header fields (RFC 9110 6.5.1)
        cdef str key = header_environ_key_of_bytes(name)
        if key is None:
            return  # a name with "_": dropped (it would alias the one with "-")
        add_header(req.environ, key, PyUnicode_DecodeLatin1(value, PyBytes_GET_SIZE(value), NULL))

    cdef _on_headers_complete(self):
        cdef RequestState req = self._current
        cdef dict environ = req.environ
        cdef PyObject* found
        parser = self.parser
        req.method = _method_name(parser.get_method())
        req.keep_alive = parser.should_keep_alive()
        # get_http_version() formats a new string each call. llhttp only accepts 0.9, 1.0, 1.1
        # and 2.0, and with no Connection header it keeps alive exactly for 1.1: so that common
        # case needs no call.
        if req.keep_alive and PyDict_GetItemWithError(environ, "HTTP_CONNECTION") == NULL:
            req.version = "1.1"
        else:
            req.version = parser.get_http_version()
            if req.version != "1.0" and req.version != "1.1":
                # llhttp also accepts 0.9 and 2.0 request lines; neither is served here.
                raise HTTPLimitExceeded(HTTPVersionNotSupported())
        cdef str target = PyUnicode_DecodeLatin1(req.url, PyBytes_GET_SIZE(req.url), NULL)
        cdef tuple split = split_target(target)
        environ["REQUEST_METHOD"] = req.method
        environ["PATH_INFO"] = split[0]
        environ["QUERY_STRING"] = split[1]
        environ["RAW_URI"] = target
        if req.version == "1.0":
            environ["SERVER_PROTOCOL"] = "HTTP/1.0"  # the template says HTTP/1.1
        environ["REMOTE_ADDR"] = self.ip
        environ["REMOTE_PORT"] = _port_string(self.client_port)
        if self._url_scheme is not _HTTP:
            environ["wsgi.url_scheme"] = self._url_scheme  # the template says http
        environ["kyoukai.protocol"] = self
        # ``in`` (PyDict_Contains) and PyDict_GetItemWithError, not PyDict_GetItem: CPython's
        # PyDict_GetItem saves and restores the error indicator around every lookup, which
        # doubles the cost of a miss. A str key in a dict of str keys cannot raise.
        if self._shared.proxies is not None and (
                "HTTP_X_FORWARDED_FOR" in environ or "HTTP_FORWARDED" in environ
                or "HTTP_X_FORWARDED_PROTO" in environ):
            apply_proxy_headers(environ, self._shared.proxies)
        if self._shared.on_request is not None:
            self._shared.on_request(self, environ)
        found = PyDict_GetItemWithError(environ, "HTTP_HOST")
        if (found == NULL or type(<object>found) is not str or not _valid_host_known(<str>found)
                or not target.startswith("/")
                or PyDict_GetItemWithError(environ, "HTTP_TRANSFER_ENCODING") != NULL):
            if check_head(environ, req.method, req.version, target):  # chunked
                req.in_trailers = True  # what the parser reports from now on is a trailer
                req.header_count = 0
        found = PyDict_GetItemWithError(environ, "CONTENT_LENGTH")
        if found != NULL:
            length = <str>found
            if length.isdigit() and int(length) > self._shared.max_body_size:
                raise HTTPLimitExceeded(RequestEntityTooLarge())
        found = PyDict_GetItemWithError(environ, "HTTP_EXPECT")
        if found != NULL and req.version == "1.1" and (<str>found).lower() == "100-continue":
            if not self._busy and not self._queue:
                self._write(_CONTINUE)
            else:
                self._continue_pending = True

    cdef _on_body(self, bytes body):
        cdef RequestState req = self._current
        req.body_size += PyBytes_GET_SIZE(body)
        if req.body_size > self._shared.max_body_size:
            raise HTTPLimitExceeded(RequestEntityTooLarge())
        if req.body is None:
            req.body = [body]
        else:
            req.body.append(body)

    cdef _on_message_complete(self):
        cdef RequestState req = self._current
        self._message_started = self._last_activity
        self._current = None
        self._continue_pending = False
        req.complete = True
        self._enqueue(req)

    # The same callbacks under httptools' names, the public API of the stock backend. The parser
    # itself calls the module's shared callbacks (``_PARSER_CALLBACKS``), which reach the cdef
    # methods directly.

    def on_message_begin(self):
        self._on_message_begin()

    def on_url(self, bytes url):
        self._on_url(url)

    def on_header(self, bytes name, bytes value):
        self._on_header(name, value)

    def on_headers_complete(self):
        self._on_headers_complete()

    def on_body(self, bytes body):
        self._on_body(body)

    def on_message_complete(self):
        self._on_message_complete()

    # --- request queue ------------------------------------------------------------------------

    cpdef _enqueue(self, item):
        cdef list queue = self._queue
        if queue is None:
            self._queue = [item]
        else:
            queue.append(item)
            if len(queue) >= self._shared.max_pipelined:
                self._pause_reading()

    cpdef _run_queue(self):
        if self._batching:
            self._drain_queue()
            return
        self._batching = True
        try:
            self._drain_queue()
        finally:
            self._batching = False
            self._flush()

    cdef _drain_queue(self):
        cdef list queue
        while True:
            queue = self._queue
            if not queue or self._busy or self._closing or (
                    self._cold is not None and self._cold.writing_paused):
                break
            item = queue.pop(0)
            if type(item) is RequestState:
                self._start_request(<RequestState>item)
            else:
                self._refuse(item, None, True)
                return
        if self._closing:
            return
        if not self._queue:
            self._queue = None  # an idle connection keeps no list
        if not self._busy and not self._queue:
            if self._cold is not None and self._cold.reading_paused:
                self._resume_reading()
            if self._close_when_idle:
                self.close()
            elif self._continue_pending and self._current is not None:
                self._continue_pending = False
                self._write(_CONTINUE)

    cdef _start_request(self, RequestState req):
        cdef dict environ = req.environ
        cdef bytes body
        if req.body is None:
            body = b""
        elif len(req.body) == 1:
            body = req.body[0]
        else:
            body = b"".join(req.body)
        found = PyDict_GetItemWithError(environ, "HTTP_CONTENT_ENCODING")
        if found != NULL and PyBytes_GET_SIZE(body):
            try:
                body = decode_body(body, <str>found, self._shared.max_body_size)
            except _HTTPException as exc:
                self._refuse(exc, req, True)
                return
            environ["CONTENT_LENGTH"] = str(len(body))
        if PyBytes_GET_SIZE(body):
            environ["wsgi.input"] = _BytesIO(body)  # the template has EMPTY_INPUT
        context = PyContext_CopyCurrent()
        app = self.app
        try:
            request = new_request(app.request_class, environ)
            coro = self._shared.request_handler(request, self.parent_context)
        except (Exception, asyncio.CancelledError) as exc:
            self._handler_failed(req, exc)
            return
        cdef tuple started = <tuple>_start_in_task(self._loop, coro, context)
        task = started[0]
        if task is None:  # finished without suspending
            if started[2] is None:
                self._write_result(req, started[1])
            else:
                self._handler_failed(req, started[2])
            return
        self._busy = True
        self._handler = task
        task.add_done_callback(_HandlerDone(self, req))

    # --- responses ----------------------------------------------------------------------------

    cpdef _write_result(self, RequestState req, response):
        cdef tuple rendered
        cdef bint keep_alive
        if self._closing:
            return
        if response is None:
            response = response_or_error(response, req)
        keep_alive = req.keep_alive and not self._shared.server.closing
        try:
            rendered = render_response(response, req.environ, req.version, keep_alive)
        except Exception as exc:
            self._handler_failed(req, exc)
            return
        data = <bytes>rendered[0]
        app_iter = rendered[1]
        if PyBytes_AS_STRING(data)[9] == b'1':  # "HTTP/1.x 1..": not a final response
            if app_iter is not None and hasattr(app_iter, "close"):
                app_iter.close()
            self._handler_failed(req, interim_status_error(data))
            return
        self._write(data)
        if self._shared.on_response is not None:
            self._shared.on_response(req.environ, data, app_iter is not None)
        keep_alive = rendered[2]
        if app_iter is not None:
            if not rendered[3]:
                app_iter = hold_to_declared_length(app_iter, data)
            self._busy = True
            task = self._loop.create_task(
                stream_body(self, req, app_iter, keep_alive, rendered[3]))
            self._handler = task
            task.add_done_callback(self._stream_done)
            return
        if not keep_alive:
            self.close()

    def _raw_write(self, data):
        # Any bytes-like object, as the transport (and the pure-Python twin) accepts.
        self._write(data if type(data) is bytes else bytes(data))

    cdef _write(self, bytes data):
        if self._closing or self.transport is None:
            return
        if self._batching:
            pending = self._out
            if pending is None:
                self._out = data
            elif type(pending) is list:
                (<list>pending).append(data)
                self._out_size += PyBytes_GET_SIZE(data)
            else:
                self._out = [pending, data]
                self._out_size = PyBytes_GET_SIZE(<bytes>pending) + PyBytes_GET_SIZE(data)
            if pending is not None and self._out_size > self._shared.write_high_water:
                # Many pipelined responses in one batch: hand them to the transport now, so
                # that pause_writing can stop the next ones (memory stays bounded).
                self._flush()
            return
        if self.transport.is_closing():  # lost, and connection_lost not yet called
            return
        try:
            self.transport.write(data)
        except OSError:
            pass

    cpdef _flush(self):
        pending = self._out
        if pending is None:
            return
        self._out = None
        if self.transport is None or self.transport.is_closing():
            return
        try:
            self.transport.write(b"".join(<list>pending) if type(pending) is list else pending)
        except OSError:
            pass


cdef class _HandlerDone:
    """Done-callback of a suspended handler's task (a closure, without a Python cell)."""
    cdef HTTPProtocolCore protocol
    cdef RequestState req

    def __cinit__(self, HTTPProtocolCore protocol, RequestState req):
        self.protocol = protocol
        self.req = req

    def __call__(self, task):
        self.protocol._handler_done(task, self.req)


class KyoukaiProtocol(HTTPProtocolCore, HTTPConnection, asyncio.BufferedProtocol,
                      asyncio.Protocol):
    """The Kyoukai HTTP/1.0 and HTTP/1.1 protocol (compiled implementation).

    Transports read into this thread's shared buffer (``get_buffer``/``buffer_updated``, see
    ``_read_buffer``); ``data_received`` stays, as in every ``asyncio.Protocol``.
    """

    __slots__ = ()

    _wsgi = _wsgi_c
