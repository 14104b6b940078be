"""
The pure-Python HTTP/1.1 protocol: the fallback twin of ``_protocol_c.pyx``.

Both implementations follow the same design; behaviour that is not hot (error pages, body
decoding, upgrades, limits, settings) lives once in the shared modules they both import.

One connection, one protocol object:

* httptools parses; its callbacks fill a per-request :class:`RequestState` (environ built in
  place), so pipelined requests never share mutable state.
* Parsed requests wait in a small queue; at most one handler runs per connection, so responses
  go out in request order. Reading pauses while the queue is full.
* A handler coroutine is first stepped by hand; only one that really suspends gets a task.
* One lazily re-armed timer per connection enforces the keep-alive and header timeouts.
"""
from __future__ import annotations

import asyncio
import contextvars
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
    RequestURITooLarge,
)

from . import _wsgi_py
from ._body import decode_body
from ._config import FEED_SLICE, server_state_for, slice_end
from ._conformance import (TRAILER_BASE, VALID_HOSTS, check_head, head_too_large,
                           hold_to_declared_length, interim_status_error, trailer_field)
from ._input import EMPTY_INPUT
from ._read_buffer import read_buffer, read_bytes
from ._errors import (HTTPLimitExceeded, error_response, half_close, logger, parser_error_to_http,
                      request_parser)
from ._streaming import stream_body
from ._tasks import start_handler
from ._upgrade import (UpgradeBody, after_upgrade as _after_upgrade, hand_over_h2c, hand_over_tls,
                       upgrade_refusal)

__all__ = ("KyoukaiProtocol", "RequestState", "PROTOCOL_CLASS")

PROTOCOL_CLASS = "KyoukaiProtocol"

_BytesIO = io.BytesIO
_copy_context = contextvars.copy_context
_monotonic = time.monotonic
_environ_keys_of_bytes = _wsgi_py.environ_keys_of_bytes
_header_environ_key_of_bytes = _wsgi_py.header_environ_key_of_bytes
_add_header = _wsgi_py.add_header
_split_target = _wsgi_py.split_target
_new_request = _wsgi_py.new_request
_render_fast = _wsgi_py.render_fast
_render_general = _wsgi_py.render_general
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}


class RequestState:
    """Everything about one request while it is parsed and waits for its handler."""

    __slots__ = ("environ", "url", "body", "body_size", "version", "keep_alive", "method",
                 "header_count", "complete", "head_received")

    def __init__(self, environ: dict):
        self.environ = environ
        self.url = b""
        self.body = None
        self.body_size = 0
        self.version = "1.1"
        self.keep_alive = True
        self.method = "GET"
        self.header_count = 0
        self.complete = False
        self.head_received = 0


class KyoukaiProtocol(asyncio.BufferedProtocol, asyncio.Protocol):
    """The Kyoukai HTTP/1.0 and HTTP/1.1 protocol (pure Python implementation).

    Transports read into this thread's shared buffer (``get_buffer``/``buffer_updated``, see
    ``_read_buffer``); ``data_received`` stays, as in every ``asyncio.Protocol``.
    """

    # Slots, like the compiled twin's typed fields: an instance dict would hold more keys than
    # CPython shares between instances, costing memory per connection and time per attribute.
    __slots__ = (
        "component", "app", "parent_context", "server_ip", "server_port", "transport", "parser",
        "ip", "client_port", "_server", "_config", "_loop", "_url_scheme", "_current", "_queue",
        "_handler", "_busy", "_closing", "_eof", "_parse_failed", "_reading_paused",
        "_writing_paused", "_drain_waiter", "_last_activity", "_message_started", "_linger_until",
        "_continue_pending", "_batching", "_out", "_out_size", "_upgrade_body", "_backlog",
        "_backlog_scheduled", "_read_buffer",
    )

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
        self._busy = False          # a handler or a streamed response is running
        self._closing = False
        self._eof = False
        self._parse_failed = False
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter = None
        self._last_activity = 0.0
        self._message_started = 0.0  # read time at the last message boundary (begin or end)
        self._linger_until = 0.0    # set while a refused client's connection is half closed
        self._continue_pending = False
        self._batching = False      # while set, writes collect in _out for one transport.write
        self._out = None
        self._out_size = 0          # bytes in _out once it holds more than one write
        self._upgrade_body = None   # UpgradeBody of an h2c upgrade still receiving its body
        self._backlog = None        # bytes read but not parsed while the pipeline was full
        self._backlog_scheduled = False
        self._read_buffer = read_buffer()  # this thread's, shared by its connections

    # --- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = self.app.loop
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.ip, self.client_port = peer[0], peer[1]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._url_scheme = "https"
            if ssl_object.selected_alpn_protocol() == "h2" and hand_over_tls(self, transport):
                return
        try:
            transport.set_write_buffer_limits(high=self._config.write_high_water)
        except (AttributeError, NotImplementedError):
            pass
        self._last_activity = self._message_started = _monotonic()
        self._server.add_connection(self, self._loop)
        self.component.connection_made.dispatch(protocol=self)

    def connection_lost(self, exc):
        self._closing = True
        self._server.remove_connection(self)
        handler = self._handler
        if handler is not None:
            handler.cancel()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
            waiter.exception()  # retrieved: nobody may be waiting any more
        self._drain_waiter = None
        self._queue = None
        self._backlog = None
        self.component.connection_lost.dispatch(protocol=self)

    def get_buffer(self, sizehint):
        return self._read_buffer

    def buffer_updated(self, nbytes):
        self.data_received(read_bytes(self._read_buffer, nbytes))

    def data_received(self, data):
        if self._closing or self._parse_failed:
            if self._upgrade_body is not None and not self._closing:
                self._last_activity = self._loop.time()
                self._feed_upgrade_body(data)
                if not self._busy:
                    self._run_queue()
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
                self._on_upgrade(_after_upgrade(data, upgrade))
            except httptools.HttpParserError as exc:
                self._parse_failed = True
                self._enqueue(parser_error_to_http(exc, data, at_boundary))
            if self._current is not None and not self._parse_failed:
                backlog = self._backlog
                self._request_incomplete(len(data) - (len(backlog) if backlog is not None else 0))
            if not self._busy:
                self._drain_queue()  # what _run_queue does while batching, one call less
        finally:
            self._batching = False
            self._flush()

    def _feed_in_slices(self, data):
        """Parse a large read piece by piece; stop once the pipeline backlog is full.

        The unparsed rest waits in ``_backlog`` (reading is paused) until the queue drains.
        """
        if type(data) is not bytes:
            data = bytes(data)
        view = memoryview(data)
        size = len(view)
        start = 0
        limit = self._config.max_pipelined_requests
        while start < size:
            end = slice_end(data, start, self._current)
            try:
                self.parser.feed_data(view[start:end])
            except httptools.HttpParserUpgrade as upgrade:
                # the offset of the upgrade, in ``data`` rather than in this piece
                raise httptools.HttpParserUpgrade(start + upgrade.args[0]) from None
            start = end
            queue = self._queue
            if queue is not None and len(queue) >= limit and start < size:
                self._backlog = bytes(view[start:])
                if not self._reading_paused:
                    self._reading_paused = True
                    self.transport.pause_reading()
                return

    def _feed_backlog(self):
        self._backlog_scheduled = False
        data = self._backlog
        self._backlog = None
        if data is not None and not self._closing:
            self.data_received(data)

    def eof_received(self):
        if self._busy or self._queue:
            # Answer what was already asked, then close (a half-closed client still reads).
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
            if trailer_field(req.header_count, len(name) + len(value),
                             self._config.max_header_count, self._config.max_header_size):
                return  # a trailer field: never merged into the header fields (RFC 9110 6.5.1)
            raise HTTPLimitExceeded(RequestHeaderFieldsTooLarge())
        # _wsgi_py.add_header, inlined: a function call per header is a good part of the cost.
        key = _environ_keys_of_bytes.get(name)
        if key is None:
            key = _header_environ_key_of_bytes(name)
            if key is None:
                return  # a name with "_": dropped (it would alias the one with "-")
        environ = req.environ
        value = value.decode("latin-1")
        if key in environ:
            _add_header(environ, key, value)
        else:
            environ[key] = value

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
        if target[:1] == "/" and "?" not in target and "%" not in target and "#" not in target:
            path, query = target, ""  # what _split_target gives for it, without its call
        else:
            path, query = _split_target(target)
        environ["REQUEST_METHOD"] = req.method
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = query
        environ["RAW_URI"] = target
        environ["SERVER_PROTOCOL"] = "HTTP/1.0" if req.version == "1.0" else "HTTP/1.1"
        environ["REMOTE_ADDR"] = self.ip
        environ["REMOTE_PORT"] = str(self.client_port)
        environ["wsgi.url_scheme"] = self._url_scheme
        environ["kyoukai.protocol"] = self
        if (environ.get("HTTP_HOST") not in VALID_HOSTS or not target.startswith("/")
                or "HTTP_TRANSFER_ENCODING" in environ):
            if check_head(environ, req.method, req.version, target):
                req.header_count = TRAILER_BASE  # what the parser reports now is a trailer
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
        if self._queue is None:
            self._queue = [req]  # _enqueue's common case, without its call
        else:
            self._enqueue(req)

    def _request_incomplete(self, size):
        """A read ended inside a request: bound the size of its head across reads."""
        req = self._current
        if req.head_received < 0:
            return  # reading its body
        try:
            req.head_received = head_too_large(req.environ, req.head_received, size,
                                               self._config.max_head_size)
        except HTTPLimitExceeded as exc:
            self._parse_failed = True
            self._enqueue(exc.http_error)

    # --- request queue ----------------------------------------------------------------------

    def _enqueue(self, item):
        queue = self._queue
        if queue is None:
            self._queue = [item]
        else:
            queue.append(item)
            if len(queue) >= self._config.max_pipelined_requests and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()

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
            if not queue or self._busy or self._closing or self._writing_paused:
                break
            item = queue.pop(0)
            if type(item) is not RequestState:  # an HTTPException: refuse, then close
                self._refuse(item, linger=True)
                return
            self._start_request(item)
        if self._closing:
            return
        if not self._queue:
            self._queue = None  # an idle connection keeps no list
        if self._reading_paused and not self._busy and not self._queue:
            if self._backlog is not None:
                # What was read but not parsed comes first; reading resumes after it.
                if not self._backlog_scheduled:
                    self._backlog_scheduled = True
                    self._loop.call_soon(self._feed_backlog)
            else:
                self._reading_paused = False
                self.transport.resume_reading()
        if not self._busy and not self._queue:
            if self._eof:
                self.close()
            elif self._continue_pending and self._current is not None:
                self._continue_pending = False
                self._raw_write(_CONTINUE)

    def _start_request(self, req):
        environ = req.environ
        chunks = req.body
        if chunks is None:
            body = b""
        elif len(chunks) == 1:
            body = chunks[0]
        else:
            body = b"".join(chunks)
        encoding = environ.get("HTTP_CONTENT_ENCODING")
        if encoding is not None and body:
            try:
                body = decode_body(body, encoding, self._config.max_body_size)
            except HTTPException as exc:
                self._refuse(exc, req, linger=True)
                return
            environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = _BytesIO(body) if body else EMPTY_INPUT
        context = _copy_context()
        app = self.app
        try:
            request = _new_request(app.request_class, environ)
            coro = app.process_request(request, self.parent_context)
        except Exception as exc:
            self._handler_failed(req, exc)
            return
        task, value, error = start_handler(self._loop, coro, context)
        if task is None:  # finished without suspending
            if error is None:
                self._write_result(req, value)
            else:
                self._handler_failed(req, error)
            return
        self._busy = True
        self._handler = task
        task.add_done_callback(lambda t: self._handler_done(t, req))

    def _handler_done(self, task, req):
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

    def _handler_failed(self, req, exc):
        logger.error("Error handling %s %s", req.method, req.environ.get("RAW_URI"),
                     exc_info=exc)
        self._refuse(InternalServerError(), req)

    def _refuse(self, error, req=None, linger=False):
        """Answer ``error`` (a werkzeug HTTPException) and close the connection.

        ``linger``: the client may still be sending; half-close instead (see ``_linger``).
        """
        version = req.version if req is not None else "1.1"
        method = req.method if req is not None else "GET"
        if not self._closing:
            self._raw_write(error_response(error, version, method))
            if linger:
                self._linger()
                return
        self.close()

    def _linger(self):
        """Close after a refusal without a TCP reset: half-close, discard what still comes.

        The connection closes when the client does, or ``linger_timeout`` seconds later.
        """
        self._closing = True
        self._queue = None
        self._flush()
        timeout = self._config.linger_timeout
        if timeout > 0 and self.transport is not None and half_close(self.transport):
            self._linger_until = _monotonic() + timeout
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
        elif self.transport is not None:
            self.transport.close()

    # --- responses --------------------------------------------------------------------------

    def _write_result(self, req, response):
        if self._closing:
            return
        if response is None:
            # Stock Kyoukai returns None for an HTTP error without a custom handler.
            logger.error("process_request returned no response for %s %s", req.method,
                         req.environ.get("RAW_URI"))
            response = InternalServerError().get_response(req.environ)
        keep_alive = req.keep_alive and not self._server.closing
        try:
            # render_response, without its own call: the fast case, else the general one
            data, app_iter, keep_alive, chunked = (
                _render_fast(response, req.environ, req.version, keep_alive, True)
                or _render_general(response, req.environ, req.version, keep_alive))
        except Exception as exc:
            self._handler_failed(req, exc)
            return
        if data[9] == 49:  # "HTTP/1.x 1..": not a final response
            if app_iter is not None and hasattr(app_iter, "close"):
                app_iter.close()
            self._handler_failed(req, interim_status_error(data))
            return
        self._raw_write(data)
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

    def _stream_write(self, data):
        """One piece of a streamed body (``stream_body``): ``False`` once closing, else the
        drain coroutine to await while writing is paused, or ``None``."""
        if self._closing:
            return False
        self._raw_write(data)
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
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self._loop.create_future()
        await waiter

    # --- timeouts ---------------------------------------------------------------------------

    def check_timeouts(self, now):
        """Close an idle keep-alive connection or a client too slow with its request.

        Called by the server's timeout check (``ServerState``) with ``time.monotonic()``: one
        timer per server instead of one per connection.
        """
        if self._closing or self._busy or self._queue or self._backlog is not None:
            if self._linger_until and now >= self._linger_until:
                self._linger_until = 0.0
                self.transport.close()
            return
        config = self._config
        req = self._current
        if req is not None and not req.complete:
            if "REQUEST_METHOD" not in req.environ:  # still reading the head
                started = self._message_started
            else:
                started = self._last_activity
            if now >= started + config.header_timeout:
                from werkzeug.exceptions import RequestTimeout
                self._refuse(RequestTimeout())
        else:
            # Idle since the last message or response: bytes that start no request (a trickle
            # of empty lines, which llhttp skips) do not keep a connection open.
            idle_since = (self._last_activity if self._upgrade_body is not None
                          else self._message_started)
            if now >= idle_since + config.keepalive_timeout:
                self.close()

    # --- upgrades ---------------------------------------------------------------------------

    def _on_upgrade(self, rest=b""):
        self._parse_failed = True  # nothing after the upgrade request is HTTP/1.1
        queue = self._queue
        req = queue[-1] if queue else None
        environ = None
        if isinstance(req, RequestState) and self._current is None:
            # The upgrading request is complete and last in the queue: it is never handed to
            # the app as a plain HTTP/1.1 request.
            queue.pop()
            environ = req.environ
            upgrade = (req.environ.get("HTTP_UPGRADE") or "").strip().lower()
            if upgrade == "h2c" and not queue and not self._busy:
                try:
                    self._upgrade_body = UpgradeBody(req.environ, self._config.max_body_size)
                except HTTPException as exc:
                    self._enqueue(exc)
                    return
                self._feed_upgrade_body(rest)
                return
        self._enqueue(upgrade_refusal(environ))

    def _feed_upgrade_body(self, data):
        pending = self._upgrade_body
        parts = pending.feed(data)
        if parts is None:
            return  # more of the body to come
        self._upgrade_body = None
        if hand_over_h2c(self, self.transport, pending.environ, parts[0], parts[1]):
            self._handed_over()
        else:
            self._enqueue(BadRequest("Unsupported protocol upgrade."))

    def _handed_over(self):
        """The transport now belongs to another protocol object: let go of it."""
        self._closing = True
        self._queue = None
        self._out = None
        self._server.remove_connection(self)

    # --- public API of the stock backend ----------------------------------------------------

    def handle_parser_exception(self, exc):
        """Answer a parser exception with the matching HTTP error and close the connection."""
        self._parse_failed = True
        self._refuse(parser_error_to_http(exc))

    def write_response(self, response, environ):
        """Write a werkzeug response for ``environ``'s request (no connection management)."""
        self.raw_write(_wsgi_py.get_formatted_response(response, environ))

    def write(self, data):
        """Write a ``str`` (UTF-8) to the client."""
        self.raw_write(data.encode())

    def raw_write(self, data):
        """Write ``bytes`` to the client."""
        self._raw_write(data)

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
            self._eof = True  # close once the queue is drained
