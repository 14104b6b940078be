"""
The pure-Python HTTP/1.1 protocol: the reference twin of ``_protocol_c.pyx``.

Both twins keep only the hot path here: parser callbacks, header accumulation, request start,
response writing and the queue. Everything else a connection does (its life, flow control, the
read backlog, refusals and lingering close, timeouts, shutdown, upgrades) is written once in
:class:`~._connection.HTTPConnection`, which both inherit.

One connection, one protocol object:

* httptools parses; its callbacks fill a per-request :class:`RequestState` (environ built in
  place), so pipelined requests never share mutable state.
* Parsed requests wait in a small queue; at most one handler runs per connection, so responses
  go out in request order. Reading pauses while the queue is full.
* A handler coroutine is first stepped by hand; only one that really suspends gets a task.
* The server's one timer checks every connection's keep-alive and header timeouts.
"""
from __future__ import annotations

import asyncio
import time

import httptools
from werkzeug.exceptions import (
    HTTPException,
    HTTPVersionNotSupported,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
    RequestURITooLarge,
)

from . import _wsgi_py
from ._config import server_state_for
from ._conformance import VALID_HOSTS, check_head, hold_to_declared_length, interim_status_error
from ._connection import FEED_SLICE, PARSING, HTTPConnection
from ._environ import split_target
from ._errors import HTTPLimitExceeded, request_parser
from ._proxy import apply_proxy_headers as _apply_proxy_headers
from ._read_buffer import read_buffer, read_bytes
from ._request_cycle import response_or_error, set_input, start_handler
from ._streaming import stream_body
from ._upgrade import after_upgrade

__all__ = ("KyoukaiProtocol", "RequestState", "PROTOCOL_CLASS")

PROTOCOL_CLASS = "KyoukaiProtocol"

_monotonic = time.monotonic
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


class RequestState:
    """Everything about one request while it is parsed and waits for its handler."""

    __slots__ = ("environ", "url", "body", "body_size", "version", "keep_alive", "method",
                 "header_count", "in_trailers", "complete", "head_received")

    def __init__(self, environ: dict):
        self.environ = environ
        self.url = b""
        self.body = None
        self.body_size = 0
        self.version = "1.1"
        self.keep_alive = True
        self.method = "GET"
        self.header_count = 0     # header fields so far; trailer fields once in_trailers
        self.in_trailers = False  # the head of a chunked request is complete
        self.complete = False
        self.head_received = 0  # bytes of an incomplete head after its first read


class KyoukaiProtocol(HTTPConnection, asyncio.BufferedProtocol, asyncio.Protocol):
    """The Kyoukai HTTP/1.0 and HTTP/1.1 protocol (pure Python implementation).

    Transports read into this thread's shared buffer (``get_buffer``/``buffer_updated``, see
    ``_read_buffer``); ``data_received`` stays, as in every ``asyncio.Protocol``.
    """

    # Slots, like the compiled twin's typed fields: an instance dict would hold more keys than
    # CPython shares between instances, costing memory per connection and time per attribute.
    __slots__ = (
        "component", "app", "parent_context", "server_ip", "server_port", "transport", "parser",
        "ip", "client_port", "_server", "_config", "_loop", "_url_scheme", "_current", "_queue",
        "_handler", "_cold", "_busy", "_closing", "_close_when_idle", "_parse_state",
        "_last_activity", "_message_started",
        "_continue_pending", "_batching", "_out", "_out_size", "_read_buffer",
    )

    _wsgi = _wsgi_py

    def __init__(self, component, parent_context, server_ip, server_port):
        self.component = component
        self.app = component.app
        self.parent_context = parent_context
        self.server_ip = server_ip
        self.server_port = server_port
        self.transport = None
        self.parser = request_parser(self)
        self.ip = None
        self.client_port = None
        self._server = server_state_for(component, server_port)
        self._config = self._server.config
        self._loop = None
        self._url_scheme = "http"
        self._current = None        # RequestState being parsed
        self._queue = None          # parsed RequestStates (or HTTPExceptions) not yet handled
        self._handler = None        # the task of a suspended handler or a streamed response
        self._cold = None           # ColdState, made on first use (see _connection)
        self._busy = False          # a handler or a streamed response is running
        self._closing = False
        self._close_when_idle = False
        self._parse_state = PARSING
        self._last_activity = 0.0
        self._message_started = 0.0  # read time at the last message boundary (begin or end)
        self._continue_pending = False
        self._batching = False      # while set, writes collect in _out for one transport.write
        self._out = None
        self._out_size = 0          # bytes in _out once it holds more than one write
        self._read_buffer = read_buffer()  # this thread's, shared by its connections

    # --- reading ------------------------------------------------------------------------------

    def get_buffer(self, sizehint):
        return self._read_buffer

    def buffer_updated(self, nbytes):
        self.data_received(read_bytes(self._read_buffer, nbytes))

    def data_received(self, data):
        if self._closing or self._parse_state != PARSING:
            self._received_after_parsing(data)
            return
        self._last_activity = _monotonic()
        # Everything written while this chunk is handled (several pipelined responses, an
        # interim 100 Continue) goes out in one transport.write: one send() instead of many.
        self._batching = True
        at_boundary = self._current is None
        try:
            try:
                if len(data) > FEED_SLICE:
                    self._feed_in_slices(data)
                else:
                    self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                self._flush()
                self._on_upgrade(after_upgrade(data, upgrade))
            except httptools.HttpParserError as exc:
                self._parse_error(exc, data, at_boundary)
            if self._current is not None and self._parse_state == PARSING:
                self._read_ended_in_request(len(data))
            if not self._busy:
                self._run_queue()
        finally:
            self._batching = False
            self._flush()

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self):
        self._message_started = self._last_activity
        self._current = RequestState(self._server.environ_template.copy())

    def on_url(self, url):
        req = self._current
        req.url += url
        if len(req.url) > self._config.max_url_size:
            raise HTTPLimitExceeded(RequestURITooLarge())

    def on_header(self, name, value):
        req = self._current
        if value and value[-1] in (32, 9):
            # llhttp keeps trailing whitespace; it is not part of the value (RFC 9110 5.5).
            value = value.rstrip(b" \t")
        req.header_count += 1
        if (req.header_count > self._config.max_header_count
                or len(name) + len(value) > self._config.max_header_size):
            raise HTTPLimitExceeded(RequestHeaderFieldsTooLarge())
        if req.in_trailers:
            return  # a trailer field: never merged into the header fields (RFC 9110 6.5.1)
        key = _wsgi_py.header_environ_key_of_bytes(name)
        if key is None:
            return  # a name with "_": dropped (it would alias the one with "-")
        _wsgi_py.add_header(req.environ, key, value.decode("latin-1"))

    def on_headers_complete(self):
        req = self._current
        parser = self.parser
        environ = req.environ
        method = parser.get_method()
        req.method = _METHODS.get(method) or method.decode("ascii")
        keep_alive = req.keep_alive = parser.should_keep_alive()
        # get_http_version() formats a new string each call. llhttp only accepts 0.9, 1.0, 1.1
        # and 2.0, and with no Connection header it keeps alive exactly for 1.1: so that common
        # case needs no call.
        if not keep_alive or "HTTP_CONNECTION" in environ:
            req.version = parser.get_http_version()
            if req.version != "1.0" and req.version != "1.1":
                # llhttp also accepts 0.9 and 2.0 request lines; neither is served here.
                raise HTTPLimitExceeded(HTTPVersionNotSupported())
        target = req.url.decode("latin-1")
        path, query = split_target(target)
        environ["REQUEST_METHOD"] = req.method
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = query
        environ["RAW_URI"] = target
        environ["SERVER_PROTOCOL"] = "HTTP/1.0" if req.version == "1.0" else "HTTP/1.1"
        environ["REMOTE_ADDR"] = self.ip
        environ["REMOTE_PORT"] = str(self.client_port)
        environ["wsgi.url_scheme"] = self._url_scheme
        environ["kyoukai.protocol"] = self
        hooks = self._server.hooks
        if hooks.proxies is not None and ("HTTP_X_FORWARDED_FOR" in environ
                                          or "HTTP_FORWARDED" in environ
                                          or "HTTP_X_FORWARDED_PROTO" in environ):
            _apply_proxy_headers(environ, hooks.proxies)
        if hooks.on_request is not None:
            hooks.on_request(self, environ)
        if (environ.get("HTTP_HOST") not in VALID_HOSTS or not target.startswith("/")
                or "HTTP_TRANSFER_ENCODING" in environ):
            if check_head(environ, req.method, req.version, target):  # chunked
                req.in_trailers = True  # what the parser reports from now on is a trailer
                req.header_count = 0
        length = environ.get("CONTENT_LENGTH")
        if length is not None and length.isdigit() and int(length) > self._config.max_body_size:
            raise HTTPLimitExceeded(RequestEntityTooLarge())
        expect = environ.get("HTTP_EXPECT")
        if expect is not None and req.version == "1.1" and expect.lower() == "100-continue":
            if not self._busy and not self._queue:
                self._raw_write(_CONTINUE)
            else:
                self._continue_pending = True

    def on_body(self, body):
        req = self._current
        req.body_size += len(body)
        if req.body_size > self._config.max_body_size:
            raise HTTPLimitExceeded(RequestEntityTooLarge())
        if req.body is None:
            req.body = [body]
        else:
            req.body.append(body)

    def on_message_complete(self):
        req = self._current
        self._message_started = self._last_activity
        self._current = None
        self._continue_pending = False
        req.complete = True
        self._enqueue(req)

    # --- request queue ----------------------------------------------------------------------

    def _enqueue(self, item):
        queue = self._queue
        if queue is None:
            self._queue = [item]
        else:
            queue.append(item)
            if len(queue) >= self._config.max_pipelined_requests:
                self._pause_reading()

    def _run_queue(self):
        """Start handling queued requests, in order, one at a time; their writes batched."""
        if self._batching:
            self._drain_queue()
            return
        self._batching = True
        try:
            self._drain_queue()
        finally:
            self._batching = False
            self._flush()

    def _drain_queue(self):
        while True:
            queue = self._queue
            if not queue or self._busy or self._closing or (
                    self._cold is not None and self._cold.writing_paused):
                break
            item = queue.pop(0)
            if type(item) is not RequestState:  # an HTTPException: refuse, then close
                self._refuse(item, None, True)
                return
            self._start_request(item)
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
                self._raw_write(_CONTINUE)

    def _start_request(self, req):
        try:
            set_input(req.environ, req.body, self._config.max_body_size)
        except HTTPException as exc:
            self._refuse(exc, req, True)
            return
        app = self.app
        try:
            request = _wsgi_py.new_request(app.request_class, req.environ)
            task, value, error = start_handler(
                self._server.request_handler, request, self.parent_context, self._loop)
        except (Exception, asyncio.CancelledError) as exc:
            self._handler_failed(req, exc)
            return
        if task is None:  # finished without suspending
            if error is None:
                self._write_result(req, value)
            else:
                self._handler_failed(req, error)
            return
        self._busy = True
        self._handler = task
        task.add_done_callback(lambda t: self._handler_done(t, req))

    # --- responses --------------------------------------------------------------------------

    def _write_result(self, req, response):
        if self._closing:
            return
        if response is None:
            response = response_or_error(response, req)
        keep_alive = req.keep_alive and not self._server.closing
        try:
            data, app_iter, keep_alive, chunked = _wsgi_py.render_response(
                response, req.environ, req.version, keep_alive)
        except Exception as exc:
            self._handler_failed(req, exc)
            return
        if data[9] == 49:  # "HTTP/1.x 1..": not a final response
            if app_iter is not None and hasattr(app_iter, "close"):
                app_iter.close()
            self._handler_failed(req, interim_status_error(data))
            return
        self._raw_write(data)
        if self._server.hooks.on_response is not None:
            self._server.hooks.on_response(req.environ, data, app_iter is not None)
        if app_iter is not None:
            if not chunked:
                app_iter = hold_to_declared_length(app_iter, data)
            self._busy = True
            task = self._loop.create_task(stream_body(self, req, app_iter, keep_alive, chunked))
            self._handler = task
            task.add_done_callback(self._stream_done)
            return
        if not keep_alive:
            self.close()

    def _raw_write(self, data):
        transport = self.transport
        if transport is None or self._closing:
            return
        if self._batching:
            # One write is kept as is (no list): the common case of one response per read.
            out = self._out
            if out is None:
                self._out = data
                return
            if type(out) is list:
                out.append(data)
                self._out_size += len(data)
            else:
                self._out = [out, data]
                self._out_size = len(out) + len(data)
            if self._out_size > self._config.write_high_water:
                # Many pipelined responses in one batch: hand them to the transport now, so
                # that pause_writing can stop the next ones (memory stays bounded).
                self._flush()
            return
        if transport.is_closing():  # lost, and connection_lost not yet called
            return
        try:
            transport.write(data)
        except OSError:
            pass

    def _flush(self):
        out = self._out
        if out is None:
            return
        self._out = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            transport.write(b"".join(out) if type(out) is list else out)
        except OSError:
            pass
