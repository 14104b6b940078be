# cython: language_level=3
"""
The compiled HTTP/1.1 protocol: the fast twin of ``_protocol_py.py``.

Same design and same behaviour (the tests run against both); see the pure-Python module for the
walk-through. What differs is how: typed per-connection state in a ``cdef class``, parser callbacks
that build the environ with C-level dict operations, handler coroutines started as
eager tasks (``_tasks``), and responses rendered by ``_wsgi_c``.
Behaviour that is not hot is shared with the fallback through the plain-Python modules.
"""
import asyncio
import io
import time
import types

import httptools
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    HTTPVersionNotSupported,
    InternalServerError,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
    RequestTimeout,
    RequestURITooLarge,
)

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.contextvars cimport PyContext_CopyCurrent
from cpython.dict cimport PyDict_Copy, PyDict_GetItem
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

from ._input import EMPTY_INPUT
from ._read_buffer import bad_read_size, read_buffer

from . import _wsgi_c
from ._body import decode_body
from ._config import FEED_SLICE, server_state_for, slice_end
from ._conformance import (TRAILER_BASE, VALID_HOSTS, check_head, head_too_large,
                           hold_to_declared_length, interim_status_error, trailer_field)
from ._errors import (HTTPLimitExceeded, error_response, half_close, logger, parser_error_to_http,
                      request_parser)
from ._streaming import stream_body
from ._tasks import start_handler
from ._upgrade import (UpgradeBody, after_upgrade as _after_upgrade, hand_over_h2c, hand_over_tls,
                       upgrade_refusal)

PROTOCOL_CLASS = "KyoukaiProtocol"

cdef object _BytesIO = io.BytesIO
cdef str _HTTP = "http"  # the default wsgi.url_scheme (compared by identity)
cdef object _monotonic = time.monotonic


# Each server's ServerShared (limits and the environ template, copied into a table with room
# for a whole request: see _wsgi_c.presized_copy), made on its first connection and kept on the
# ServerState itself (``compiled``), so it lives exactly as long as the server's state. The
# config and template are constant once the server exists.
cdef ServerShared _server_shared(server):
    existing = server.compiled
    if existing is not None:
        return <ServerShared>existing
    cdef ServerShared shared = ServerShared.__new__(ServerShared)
    config = server.config
    shared.server = server
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
    server.compiled = shared
    return shared


cdef class ServerShared:
    pass


cdef class ColdState:
    pass


cdef object _HttpParserUpgrade = httptools.HttpParserUpgrade
cdef object _HttpParserError = httptools.HttpParserError
cdef object _HTTPException = HTTPException
cdef object _start_handler = start_handler
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

    # --- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = self.app.loop
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.ip = peer[0]
            self.client_port = peer[1]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._url_scheme = "https"
            if ssl_object.selected_alpn_protocol() == "h2" and hand_over_tls(self, transport):
                return
        try:
            transport.set_write_buffer_limits(high=self._shared.write_high_water)
        except (AttributeError, NotImplementedError):
            pass
        self._last_activity = self._message_started = _monotonic()
        self._shared.server.add_connection(self, self._loop)
        self.component.connection_made.dispatch(protocol=self)

    def connection_lost(self, exc):
        self._closing = True
        self._shared.server.remove_connection(self)
        handler = self._handler
        if handler is not None:
            handler.cancel()
        cdef ColdState cold = self._cold
        if cold is not None:
            waiter = cold.drain_waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost"))
                waiter.exception()  # retrieved: nobody may be waiting any more
            cold.drain_waiter = None
            cold.backlog = None
        self._queue = None
        self.component.connection_lost.dispatch(protocol=self)

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
        if self._closing or self._parse_failed:
            if (self._cold is not None and self._cold.upgrade_body is not None
                    and not self._closing):
                self._last_activity = _monotonic()
                self._feed_upgrade_body(data)
                if not self._busy:
                    self._run_queue()
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
                self._parse_failed = True
                self._enqueue(parser_error_to_http(exc, data, at_boundary))
            kf_feeding = feeding  # the parser is done; what follows may run the app
            if self._current is not None and not self._parse_failed:
                # the bytes parsed in this read (a backlog waits unparsed)
                backlog = self._cold.backlog if self._cold is not None else None
                self._request_incomplete(len(data) - (len(backlog)
                                                      if backlog is not None else 0))
            if not self._busy:
                self._run_queue()
        finally:
            kf_feeding = feeding
            self._batching = False
            self._flush()

    cdef _feed_in_slices(self, data):
        """Parse a large read piece by piece; stop once the pipeline backlog is full.

        The unparsed rest waits in the cold state's ``backlog`` (reading is paused) until the queue drains.
        """
        if type(data) is not bytes:
            data = bytes(data)
        view = memoryview(data)
        cdef Py_ssize_t size = len(view)
        cdef Py_ssize_t start = 0
        cdef Py_ssize_t end
        while start < size:
            end = slice_end(data, start, self._current)
            try:
                self.parser.feed_data(view[start:end])
            except _HttpParserUpgrade as upgrade:
                # the offset of the upgrade, in ``data`` rather than in this piece
                raise _HttpParserUpgrade(start + upgrade.args[0]) from None
            start = end
            queue = self._queue
            if queue is not None and len(queue) >= self._shared.max_pipelined and start < size:
                self._cold_state().backlog = bytes(view[start:])
                if not self._reading_paused:
                    self._reading_paused = True
                    self.transport.pause_reading()
                return

    def _feed_backlog(self):
        cdef ColdState cold = self._cold_state()
        cold.backlog_scheduled = False
        data = cold.backlog
        cold.backlog = None
        if data is not None and not self._closing:
            self.data_received(data)

    def eof_received(self):
        if self._busy or self._queue:
            self._eof = True
            return True
        return None

    def pause_writing(self):
        self._writing_paused = True

    def resume_writing(self):
        self._writing_paused = False
        waiter = self._cold.drain_waiter if self._cold is not None else None
        if waiter is not None:
            self._cold.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if not self._busy and not self._closing:
            self._run_queue()

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
            if trailer_field(req.header_count, PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value),
                             self._shared.max_header_count, self._shared.max_header_size):
                return  # a trailer field: never merged into the header fields (RFC 9110 6.5.1)
            raise HTTPLimitExceeded(RequestHeaderFieldsTooLarge())
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
        if req.keep_alive and PyDict_GetItem(environ, "HTTP_CONNECTION") == NULL:
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
        found = PyDict_GetItem(environ, "HTTP_HOST")
        if (found == NULL or type(<object>found) is not str or not _valid_host_known(<str>found)
                or not target.startswith("/")
                or PyDict_GetItem(environ, "HTTP_TRANSFER_ENCODING") != NULL):
            if check_head(environ, req.method, req.version, target):
                req.header_count = TRAILER_BASE  # what the parser reports now is a trailer
        found = PyDict_GetItem(environ, "CONTENT_LENGTH")
        if found != NULL:
            length = <str>found
            if length.isdigit() and int(length) > self._shared.max_body_size:
                raise HTTPLimitExceeded(RequestEntityTooLarge())
        found = PyDict_GetItem(environ, "HTTP_EXPECT")
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

    cdef _request_incomplete(self, Py_ssize_t size):
        """A read ended inside a request: bound the size of its head across reads."""
        cdef RequestState req = self._current
        if req.head_received < 0:
            return  # reading its body
        try:
            req.head_received = head_too_large(req.environ, req.head_received, size,
                                               self._shared.server.config.max_head_size)
        except HTTPLimitExceeded as exc:
            self._parse_failed = True
            self._enqueue(exc.http_error)

    # --- request queue ------------------------------------------------------------------------

    cdef ColdState _cold_state(self):
        if self._cold is None:
            self._cold = ColdState.__new__(ColdState)
        return self._cold

    cdef _enqueue(self, item):
        cdef list queue = self._queue
        if queue is None:
            self._queue = [item]
        else:
            queue.append(item)
            if len(queue) >= self._shared.max_pipelined and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()

    cdef _run_queue(self):
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
            if not queue or self._busy or self._closing or self._writing_paused:
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
        if self._reading_paused and not self._busy and not self._queue:
            if self._cold is not None and self._cold.backlog is not None:
                # What was read but not parsed comes first; reading resumes after it.
                if not self._cold.backlog_scheduled:
                    self._cold.backlog_scheduled = True
                    self._loop.call_soon(self._feed_backlog)
            else:
                self._reading_paused = False
                self.transport.resume_reading()
        if not self._busy and not self._queue:
            if self._eof:
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
        found = PyDict_GetItem(environ, "HTTP_CONTENT_ENCODING")
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
            coro = app.process_request(request, self.parent_context)
        except Exception as exc:
            self._handler_failed(req, exc)
            return
        cdef tuple started = <tuple>_start_handler(self._loop, coro, context)
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

    def _handler_done(self, task, RequestState req):
        self._handler = None
        self._busy = False
        # keep-alive idleness starts after the response
        self._last_activity = self._message_started = _monotonic()
        if task.cancelled():
            if self._closing:
                return  # cancelled by connection_lost or shutdown: nobody to answer
            # The handler cancelled itself: answer it, or the next response would be taken
            # for this one.
            self._handler_failed(req, asyncio.CancelledError())
            return
        exc = task.exception()
        if exc is not None:
            self._handler_failed(req, exc)
        else:
            self._write_result(req, task.result())
        if not self._busy:
            self._run_queue()

    cdef _handler_failed(self, RequestState req, exc):
        logger.error("Error handling %s %s", req.method, req.environ.get("RAW_URI"),
                     exc_info=exc)
        self._refuse(InternalServerError(), req)

    cdef _refuse(self, error, RequestState req=None, bint linger=False):
        """Answer ``error`` and close; ``linger``: half-close instead (see ``_linger``)."""
        version = req.version if req is not None else "1.1"
        method = req.method if req is not None else "GET"
        if not self._closing:
            self._write(error_response(error, version, method))
            if linger:
                self._linger()
                return
        self.close()

    cdef _linger(self):
        """Close after a refusal without a TCP reset: half-close, discard what still comes.

        The connection closes when the client does, or ``linger_timeout`` seconds later.
        """
        self._closing = True
        self._queue = None
        self._flush()
        timeout = self._shared.server.config.linger_timeout
        if timeout > 0 and self.transport is not None and half_close(self.transport):
            self._cold_state().linger_until = _monotonic() + timeout
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
        elif self.transport is not None:
            self.transport.close()

    # --- responses ----------------------------------------------------------------------------

    cdef _write_result(self, RequestState req, response):
        cdef tuple rendered
        cdef bint keep_alive
        if self._closing:
            return
        if response is None:
            logger.error("process_request returned no response for %s %s", req.method,
                         req.environ.get("RAW_URI"))
            response = InternalServerError().get_response(req.environ)
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

    def _stream_write(self, bytes data):
        """One piece of a streamed body (``stream_body``): ``False`` once closing, else the
        drain coroutine to await while writing is paused, or ``None``."""
        if self._closing:
            return False
        self._write(data)
        return self._drain() if self._writing_paused else None

    def _stream_done(self, task):
        self._handler = None
        self._busy = False
        self._last_activity = self._message_started = _monotonic()
        if not task.cancelled():
            exc = task.exception()
            if exc is not None and not isinstance(exc, ConnectionError):
                logger.error("Streaming failed", exc_info=exc)
                self.close()
        if not self._closing:
            self._run_queue()

    async def _drain(self):
        if self._closing:
            raise ConnectionResetError("connection lost")
        cdef ColdState cold = self._cold_state()
        waiter = cold.drain_waiter
        if waiter is None:
            waiter = cold.drain_waiter = self._loop.create_future()
        await waiter

    # --- timeouts -----------------------------------------------------------------------------

    def check_timeouts(self, double now):
        """Close an idle keep-alive connection or a client too slow with its request.

        Called by the server's timeout check (``ServerState``) with ``time.monotonic()``.
        """
        cdef RequestState req = self._current
        cdef ColdState cold = self._cold
        if (self._closing or self._busy or self._queue
                or (cold is not None and cold.backlog is not None)):
            if cold is not None and cold.linger_until and now >= cold.linger_until:
                cold.linger_until = 0.0
                self.transport.close()
            return
        if req is not None and not req.complete:
            if "REQUEST_METHOD" not in req.environ:  # still reading the head
                if now >= self._message_started + self._shared.header_timeout:
                    self._refuse(RequestTimeout())
            elif now >= self._last_activity + self._shared.header_timeout:
                self._refuse(RequestTimeout())
        else:
            # Idle since the last message or response: bytes that start no request (a trickle
            # of empty lines, which llhttp skips) do not keep a connection open.
            if now >= (self._last_activity
                       if cold is not None and cold.upgrade_body is not None
                       else self._message_started) + self._shared.keepalive_timeout:
                self.close()

    # --- upgrades -----------------------------------------------------------------------------

    cdef _on_upgrade(self, bytes rest):
        self._parse_failed = True  # nothing after the upgrade request is HTTP/1.1
        cdef list queue = self._queue
        cdef RequestState req
        item = queue[len(queue) - 1] if queue else None
        environ = None
        if type(item) is RequestState and self._current is None:
            # The upgrading request is complete and last in the queue: it is never handed to
            # the app as a plain HTTP/1.1 request.
            queue.pop()
            req = <RequestState>item
            environ = req.environ
            upgrade = (req.environ.get("HTTP_UPGRADE") or "").strip().lower()
            if upgrade == "h2c" and not queue and not self._busy:
                try:
                    self._cold_state().upgrade_body = UpgradeBody(req.environ,
                                                                  self._shared.max_body_size)
                except _HTTPException as exc:
                    self._enqueue(exc)
                    return
                self._feed_upgrade_body(rest)
                return
        self._enqueue(upgrade_refusal(environ))

    cdef _feed_upgrade_body(self, data):
        pending = self._cold.upgrade_body
        parts = pending.feed(data)
        if parts is None:
            return  # more of the body to come
        self._cold.upgrade_body = None
        if hand_over_h2c(self, self.transport, pending.environ, parts[0], parts[1]):
            self._handed_over()
        else:
            self._enqueue(BadRequest("Unsupported protocol upgrade."))

    cdef _handed_over(self):
        """The transport now belongs to another protocol object: let go of it."""
        self._closing = True
        self._queue = None
        self._out = None
        self._shared.server.remove_connection(self)

    # --- public API of the stock backend ------------------------------------------------------

    def handle_parser_exception(self, exc):
        """Answer a parser exception with the matching HTTP error and close the connection."""
        self._parse_failed = True
        self._refuse(parser_error_to_http(exc))

    def write_response(self, response, environ):
        """Write a werkzeug response for ``environ``'s request (no connection management)."""
        self.raw_write(_wsgi_c.get_formatted_response(response, environ))

    def write(self, data):
        """Write a ``str`` (UTF-8) to the client."""
        self.raw_write(data.encode())

    def raw_write(self, data):
        """Write ``bytes`` to the client."""
        self._raw_write(data)

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

    cdef _flush(self):
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

    def close(self):
        """Close the connection once what was written is sent."""
        self._closing = True
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def shutdown(self):
        """Graceful shutdown: close now if idle, else after the current response."""
        if not self._busy and not self._queue and self._current is None:
            self.close()
        else:
            self._eof = True


cdef class _HandlerDone:
    """Done-callback of a suspended handler's task (a closure, without a Python cell)."""
    cdef HTTPProtocolCore protocol
    cdef RequestState req

    def __cinit__(self, HTTPProtocolCore protocol, RequestState req):
        self.protocol = protocol
        self.req = req

    def __call__(self, task):
        self.protocol._handler_done(task, self.req)


class KyoukaiProtocol(HTTPProtocolCore, asyncio.BufferedProtocol, asyncio.Protocol):
    """The Kyoukai HTTP/1.0 and HTTP/1.1 protocol (compiled implementation).

    Transports read into this thread's shared buffer (``get_buffer``/``buffer_updated``, see
    ``_read_buffer``); ``data_received`` stays, as in every ``asyncio.Protocol``.
    """

    __slots__ = ()
