# cython: language_level=3
"""
The compiled HTTP/1.1 protocol: the fast twin of ``_protocol_py.py``.

Same design and same behaviour (the tests run against both); see the pure-Python module for the
walk-through. What differs is how: typed per-connection state in a ``cdef class``, parser callbacks
that build the environ with C-level dict operations, handler coroutines stepped with
``PyIter_Send`` (no StopIteration per request), and responses rendered by ``_wsgi_c``.
Behaviour that is not hot is shared with the fallback through the plain-Python modules.
"""
import asyncio
import io
import time

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

from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit
from cpython.dict cimport PyDict_Copy, PyDict_GetItem
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeLatin1

from ._wsgi_c cimport add_header, header_environ_key, render_response, split_target

from ._input import EMPTY_INPUT

from . import _wsgi_c
from ._body import decode_body
from ._config import server_state_for
from ._errors import HTTPLimitExceeded, error_response, logger, parser_error_to_http
from ._tasks import continue_in_task
from ._upgrade import UpgradeBody, after_upgrade as _after_upgrade, hand_over_h2c, hand_over_tls

cdef extern from "Python.h":
    # PYGEN_RETURN = 0, PYGEN_ERROR = -1 (exception set), PYGEN_NEXT = 1
    int PyIter_Send(object iterator, object arg, PyObject** presult) except -1

PROTOCOL_CLASS = "KyoukaiProtocol"

cdef object _BytesIO = io.BytesIO
cdef object _monotonic = time.monotonic
cdef object _HttpParserUpgrade = httptools.HttpParserUpgrade
cdef object _HttpParserError = httptools.HttpParserError
cdef object _HTTPException = HTTPException
cdef bytes _CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
cdef dict _METHODS = {m.encode(): m for m in
                      ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


cdef class RequestState:
    """Everything about one request while it is parsed and waits for its handler."""

    def __cinit__(self, dict environ):
        self.environ = environ
        self.url = b""
        self.body = None
        self.body_size = 0
        self.version = "1.1"
        self.keep_alive = True
        self.method = "GET"
        self.header_count = 0
        self.complete = False


cdef class HTTPProtocolCore:
    """The compiled protocol; :class:`KyoukaiProtocol` adds ``asyncio.Protocol`` as a base."""

    def __init__(self, component, parent_context, server_ip, server_port):
        self.component = component
        self.app = component.app
        self.parent_context = parent_context
        self.server_ip = server_ip
        self.server_port = server_port
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.ip = None
        self.client_port = None
        self._server = server_state_for(component, server_port)
        self._environ_template = self._server.environ_template
        config = self._server.config
        self._max_body_size = config.max_body_size
        self._max_url_size = config.max_url_size
        self._max_header_count = config.max_header_count
        self._max_header_size = config.max_header_size
        self._max_pipelined = config.max_pipelined_requests
        self._keepalive_timeout = config.keepalive_timeout
        self._header_timeout = config.header_timeout
        self._url_scheme = "http"

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
            transport.set_write_buffer_limits(high=self._server.config.write_high_water)
        except (AttributeError, NotImplementedError):
            pass
        self._last_activity = _monotonic()
        self._server.add_connection(self, self._loop)
        self.component.connection_made.dispatch(protocol=self)

    def connection_lost(self, exc):
        self._closing = True
        self._server.connections.discard(self)
        handler = self._handler
        if handler is not None:
            handler.cancel()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
            waiter.exception()  # retrieved: nobody may be waiting any more
        self._drain_waiter = None
        self._queue = None
        self.component.connection_lost.dispatch(protocol=self)

    def data_received(self, data):
        if self._closing or self._parse_failed:
            if self._upgrade_body is not None and not self._closing:
                self._last_activity = _monotonic()
                self._feed_upgrade_body(data)
                if not self._busy:
                    self._run_queue()
            return
        self._last_activity = _monotonic()
        # Everything written while this chunk is handled (several pipelined responses, an
        # interim 100 Continue) goes out in one transport.write: one send() instead of many.
        self._batching = True
        try:
            try:
                self.parser.feed_data(data)
            except _HttpParserUpgrade as upgrade:
                self._flush()
                self._on_upgrade(_after_upgrade(data, upgrade))
            except _HttpParserError as exc:
                self._parse_failed = True
                self._enqueue(parser_error_to_http(exc))
            if not self._busy:
                self._run_queue()
        finally:
            self._batching = False
            self._flush()

    def eof_received(self):
        if self._busy or self._queue:
            self._eof = True
            return True
        return None

    def pause_writing(self):
        self._writing_paused = True

    def resume_writing(self):
        self._writing_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if not self._busy and not self._closing:
            self._run_queue()

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self):
        self._message_started = self._last_activity
        self._current = RequestState(PyDict_Copy(self._environ_template))

    def on_url(self, bytes url):
        cdef RequestState req = self._current
        if PyBytes_GET_SIZE(req.url) == 0:
            req.url = url
        else:
            req.url = req.url + url
        if PyBytes_GET_SIZE(req.url) > self._max_url_size:
            raise HTTPLimitExceeded(RequestURITooLarge())

    def on_header(self, bytes name, bytes value):
        cdef RequestState req = self._current
        req.header_count += 1
        if (req.header_count > self._max_header_count
                or PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) > self._max_header_size):
            raise HTTPLimitExceeded(RequestHeaderFieldsTooLarge())
        add_header(
            req.environ,
            header_environ_key(PyUnicode_DecodeLatin1(name, PyBytes_GET_SIZE(name), NULL)),
            PyUnicode_DecodeLatin1(value, PyBytes_GET_SIZE(value), NULL),
        )

    def on_headers_complete(self):
        cdef RequestState req = self._current
        cdef dict environ = req.environ
        cdef PyObject* found
        parser = self.parser
        method = parser.get_method()
        found = PyDict_GetItem(_METHODS, method)
        req.method = <str>found if found != NULL else method.decode("ascii")
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
        environ["SERVER_PROTOCOL"] = "HTTP/1.0" if req.version == "1.0" else "HTTP/1.1"
        environ["REMOTE_ADDR"] = self.ip
        environ["REMOTE_PORT"] = str(self.client_port)
        environ["wsgi.url_scheme"] = self._url_scheme
        environ["kyoukai.protocol"] = self
        found = PyDict_GetItem(environ, "CONTENT_LENGTH")
        if found != NULL:
            length = <str>found
            if length.isdigit() and int(length) > self._max_body_size:
                raise HTTPLimitExceeded(RequestEntityTooLarge())
        found = PyDict_GetItem(environ, "HTTP_EXPECT")
        if found != NULL and req.version == "1.1" and (<str>found).lower() == "100-continue":
            if not self._busy and not self._queue:
                self._write(_CONTINUE)
            else:
                self._continue_pending = True

    def on_body(self, bytes body):
        cdef RequestState req = self._current
        req.body_size += PyBytes_GET_SIZE(body)
        if req.body_size > self._max_body_size:
            raise HTTPLimitExceeded(RequestEntityTooLarge())
        if req.body is None:
            req.body = [body]
        else:
            req.body.append(body)

    def on_message_complete(self):
        cdef RequestState req = self._current
        self._current = None
        self._continue_pending = False
        req.complete = True
        self._enqueue(req)

    # --- request queue ------------------------------------------------------------------------

    cdef _enqueue(self, item):
        cdef list queue = self._queue
        if queue is None:
            self._queue = [item]
        else:
            queue.append(item)
            if len(queue) >= self._max_pipelined and not self._reading_paused:
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
                self._refuse(item)
                return
        if self._closing:
            return
        if not self._queue:
            self._queue = None  # an idle connection keeps no list
        if self._reading_paused and not self._busy and not self._queue:
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
        cdef PyObject* result = NULL
        cdef int status
        if req.body is None:
            body = b""
        elif len(req.body) == 1:
            body = req.body[0]
        else:
            body = b"".join(req.body)
        found = PyDict_GetItem(environ, "HTTP_CONTENT_ENCODING")
        if found != NULL and PyBytes_GET_SIZE(body):
            try:
                body = decode_body(body, <str>found, self._max_body_size)
            except _HTTPException as exc:
                self._refuse(exc, req)
                return
            environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = _BytesIO(body) if PyBytes_GET_SIZE(body) else EMPTY_INPUT
        context = PyContext_CopyCurrent()
        app = self.app
        try:
            request = app.request_class(environ, False)
            coro = app.process_request(request, self.parent_context)
            PyContext_Enter(context)
            try:
                status = PyIter_Send(coro, None, &result)
            finally:
                PyContext_Exit(context)
        except (Exception, asyncio.CancelledError) as exc:
            self._handler_failed(req, exc)
            return
        value = <object>result
        Py_XDECREF(result)
        if status == 0:  # PYGEN_RETURN: the handler finished without suspending
            self._write_result(req, value)
            return
        self._busy = True
        task = continue_in_task(self._loop, coro, value, context)
        self._handler = task
        task.add_done_callback(_HandlerDone(self, req))

    def _handler_done(self, task, RequestState req):
        self._handler = None
        self._busy = False
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

    cdef _refuse(self, error, RequestState req=None):
        version = req.version if req is not None else "1.1"
        method = req.method if req is not None else "GET"
        if not self._closing:
            self._write(error_response(error, version, method))
        self.close()

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
        keep_alive = req.keep_alive and not self._server.closing
        try:
            rendered = render_response(response, req.environ, req.version, keep_alive)
        except Exception as exc:
            self._handler_failed(req, exc)
            return
        self._write(<bytes>rendered[0])
        keep_alive = rendered[2]
        app_iter = rendered[1]
        if app_iter is not None:
            self._busy = True
            task = self._loop.create_task(self._stream(req, app_iter, keep_alive, rendered[3]))
            self._handler = task
            task.add_done_callback(self._stream_done)
            return
        if not keep_alive:
            self.close()

    async def _stream(self, RequestState req, app_iter, bint keep_alive, bint chunked):
        try:
            for chunk in app_iter:
                if type(chunk) is not bytes:
                    # werkzeug passes bytes-like items (bytearray, memoryview) through as is.
                    chunk = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                if not chunk:
                    continue
                if self._closing:
                    return
                if chunked:
                    self._write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self._write(chunk)
                if self._writing_paused:
                    await self._drain()
            if chunked and not self._closing:
                self._write(b"0\r\n\r\n")
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("Error while streaming the response to %s %s", req.method,
                             req.environ.get("RAW_URI"))
            keep_alive = False
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        if not keep_alive:
            self.close()

    def _stream_done(self, task):
        self._handler = None
        self._busy = False
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
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self._loop.create_future()
        await waiter

    # --- timeouts -----------------------------------------------------------------------------

    def check_timeouts(self, double now):
        """Close an idle keep-alive connection or a client too slow with its request.

        Called by the server's timeout check (``ServerState``) with ``time.monotonic()``.
        """
        cdef RequestState req = self._current
        if self._closing or self._busy or self._queue:
            return
        if req is not None and not req.complete:
            if "REQUEST_METHOD" not in req.environ:  # still reading the head
                if now >= self._message_started + self._header_timeout:
                    self._refuse(RequestTimeout())
            elif now >= self._last_activity + self._header_timeout:
                self._refuse(RequestTimeout())
        elif now >= self._last_activity + self._keepalive_timeout:
            self.close()

    # --- upgrades -----------------------------------------------------------------------------

    cdef _on_upgrade(self, bytes rest):
        self._parse_failed = True  # nothing after the upgrade request is HTTP/1.1
        cdef list queue = self._queue
        cdef RequestState req
        item = queue[len(queue) - 1] if queue else None
        if type(item) is RequestState and self._current is None:
            # The upgrading request is complete and last in the queue: it is never handed to
            # the app as a plain HTTP/1.1 request.
            queue.pop()
            req = <RequestState>item
            upgrade = (req.environ.get("HTTP_UPGRADE") or "").strip().lower()
            if upgrade == "h2c" and not queue and not self._busy:
                try:
                    self._upgrade_body = UpgradeBody(req.environ, self._max_body_size)
                except _HTTPException as exc:
                    self._enqueue(exc)
                    return
                self._feed_upgrade_body(rest)
                return
        self._enqueue(BadRequest("Unsupported protocol upgrade."))

    cdef _feed_upgrade_body(self, data):
        pending = self._upgrade_body
        parts = pending.feed(data)
        if parts is None:
            return  # more of the body to come
        self._upgrade_body = None
        if hand_over_h2c(self, self.transport, pending.environ, parts[0], parts[1]):
            self._handed_over()
        else:
            self._enqueue(BadRequest("Unsupported protocol upgrade."))

    cdef _handed_over(self):
        """The transport now belongs to another protocol object: let go of it."""
        self._closing = True
        self._queue = None
        self._out = None
        self._server.connections.discard(self)

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
            else:
                self._out = [pending, data]
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


class KyoukaiProtocol(HTTPProtocolCore, asyncio.Protocol):
    """The Kyoukai HTTP/1.0 and HTTP/1.1 protocol (compiled implementation)."""

    __slots__ = ()
