"""
The connection layer: what an HTTP/1.1 connection does besides serving its requests, written
once for both protocol twins.

``_protocol_py.KyoukaiProtocol`` and ``_protocol_c.KyoukaiProtocol`` both inherit
:class:`HTTPConnection`. The twins keep only the hot path, where the compiled one differs in how
(parser callbacks, header accumulation, request start, response writing, the queue); everything
here runs at most once per connection, per refusal, per suspended handler or per large read:

* the connection's life: ``connection_made`` / ``connection_lost``, the server's bookkeeping;
* flow control: :class:`~._flow_control.FlowControl`, the one every protocol uses (writing
  paused by the transport, reading paused while the pipeline is full), made on the first pause;
* the read backlog: a large read is parsed in slices and what follows a full pipeline waits;
* refusals and lingering close (half-close, read and discard, close later);
* timeouts (keep-alive, slow request heads, lingering) and graceful shutdown;
* upgrades: h2c with its request body, and the hand-over to the HTTP/2 protocol.

State that most connections never need lives in a :class:`ColdState` made on first use, so an
idle connection does not pay for it. What the layer needs of a twin is listed in
:class:`HTTPConnection`'s docstring.
"""
from __future__ import annotations

import asyncio
import time

import httptools
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError, RequestTimeout

from ._access_log import START_KEY, refused_environ
from ._conformance import head_too_large
from ._errors import HTTPLimitExceeded, error_response, half_close, logger, parser_error_to_http
from ._flow_control import FlowControl
from ._upgrade import (
    UpgradeBody,
    hand_over_h2c,
    hand_over_preface,
    hand_over_tls,
    http2_enabled,
    is_preface_error,
    upgrade_refusal,
)

__all__ = ("HTTPConnection", "ColdState", "FEED_SLICE", "slice_end", "PARSING", "PARSE_FAILED",
           "UPGRADED")

_monotonic = time.monotonic

#: ``_parse_state``: bytes are parsed as HTTP/1.1; a parse error or limit stopped parsing (the
#: refusal is queued); an upgrade request ended it (what follows is another protocol's).
PARSING, PARSE_FAILED, UPGRADED = 0, 1, 2

#: A read larger than this is given to the parser in pieces of this size, so that parsing can
#: stop once ``max_pipelined_requests`` wait: a client pipelining thousands of tiny requests in
#: one read cannot make the server hold thousands of parsed requests. The rest of the read waits,
#: unparsed, with reading paused.
FEED_SLICE = 8 * 1024


def slice_end(data: bytes, start: int, req) -> int:
    """Where the slice of ``data`` fed to the parser from ``start`` ends.

    The rest of a body of known length goes in one piece: no request can hide in it, and an
    upload stays one piece. A head that announces a body ends its slice, so that its body starts
    one of its own. Otherwise a slice is at most :data:`FEED_SLICE` bytes, ending after the last
    complete head in them.
    """
    if req is not None:
        environ = req.environ
        if "REQUEST_METHOD" in environ:  # reading its body
            length = environ.get("CONTENT_LENGTH")
            if length is not None and length.isdigit():
                left = int(length) - req.body_size
                if left > 0:
                    return start + left
    end = start + FEED_SLICE
    first = data.find(b"\r\n\r\n", start, end)
    if first < 0:
        return end
    head = data[start:first].lower()
    if b"content-length:" in head or b"transfer-encoding:" in head:
        return first + 4
    last = data.rfind(b"\r\n\r\n", first + 4, end)
    return (last if last >= 0 else first) + 4


class ColdState:
    """Per-connection state most connections never need; made on first use."""

    __slots__ = ("flow", "upgrade_body", "backlog", "backlog_scheduled", "linger_until",
                 "refused_upgrade")

    def __init__(self):
        self.flow = None              # FlowControl, made on the first pause (reading or writing)
        self.upgrade_body = None      # UpgradeBody of an h2c upgrade still receiving its body
        self.backlog = None           # bytes read but not parsed while the pipeline was full
        self.backlog_scheduled = False
        self.linger_until = 0.0       # set while a refused client's connection is half closed
        self.refused_upgrade = None   # environ of an upgrade request refused (the access log)

    # What the twins' hot path asks, once a connection has a cold state at all.

    @property
    def writing_paused(self) -> bool:
        flow = self.flow
        return flow is not None and flow.writing_paused

    @property
    def reading_paused(self) -> bool:
        flow = self.flow
        return flow is not None and flow.reading_paused


class HTTPConnection:
    """The cold behaviour of an HTTP/1.1 connection, shared by both protocol twins.

    A twin provides, under these names: the stock backend's public attributes (``component``,
    ``app``, ``parent_context``, ``transport``, ``parser``, ``ip``, ``client_port``); ``_server``
    (the :class:`~._config.ServerState`) and ``_config``; ``_loop``, ``_url_scheme``,
    ``_current`` (the request being parsed), ``_queue``, ``_handler``, ``_out``, ``_cold``,
    ``_last_activity`` and ``_message_started`` (``time.monotonic()`` readings); the flags
    ``_busy``, ``_closing``, ``_close_when_idle``, ``_parse_state``, ``_continue_pending``;
    ``_wsgi`` (its WSGI twin); and the hot methods
    ``_enqueue``, ``_run_queue``, ``_flush``, ``_write_result``, ``_raw_write`` and
    ``data_received``.
    """

    __slots__ = ()

    def _cold_state(self) -> ColdState:
        cold = self._cold
        if cold is None:
            cold = self._cold = ColdState()
        return cold

    def _flow_control(self) -> FlowControl:
        cold = self._cold_state()
        flow = cold.flow
        if flow is None:
            flow = cold.flow = FlowControl(self.transport)
        return flow

    # --- the connection's life --------------------------------------------------------------

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
        cold = self._cold
        if cold is not None:
            if cold.flow is not None:
                cold.flow.connection_lost()
            cold.backlog = None
        self._queue = None
        self.component.connection_lost.dispatch(protocol=self)

    def eof_received(self):
        if self._busy or self._queue:
            # Answer what was already asked, then close (a half-closed client still reads).
            self._close_when_idle = True
            return True
        return None

    def close(self):
        """Close the connection once what was written is sent."""
        self._closing = True
        self._flush()
        if self.transport is not None:
            self.transport.close()
        cold = self._cold
        if cold is not None and cold.flow is not None:
            # Nothing more is written: a streamed body waiting to write stops now rather than
            # when the client has read what the transport still holds.
            cold.flow.close()

    def shutdown(self):
        """Graceful shutdown: close now if idle, else after the current response."""
        if not self._busy and not self._queue and self._current is None:
            self.close()
        else:
            self._close_when_idle = True

    # --- flow control --------------------------------------------------------------------------

    def pause_writing(self):
        self._flow_control().pause_writing()

    def resume_writing(self):
        cold = self._cold
        if cold is not None and cold.flow is not None:
            cold.flow.resume_writing()
        if not self._busy and not self._closing:
            self._run_queue()

    def _stream_write(self, data):
        """One piece of a streamed body (``stream_body``): ``False`` once closing, else the
        drain coroutine to await while writing is paused, or ``None``."""
        if self._closing:
            return False
        self._raw_write(data)
        cold = self._cold
        if cold is not None and cold.writing_paused:
            return cold.flow.drain()
        return None

    def _pause_reading(self):
        """The pipeline is full: read nothing more until it drained."""
        self._flow_control().pause_reading()

    def _resume_reading(self):
        """The pipeline drained: parse what was read but not parsed first; read again after."""
        if not self._schedule_backlog():
            self._cold.flow.resume_reading()

    # --- the read backlog --------------------------------------------------------------------

    def _feed_in_slices(self, data):
        """Parse a large read piece by piece; stop once the pipeline is full.

        The unparsed rest waits in the cold state's ``backlog`` (reading is paused) until the
        queue drains. Called by the twin's ``data_received`` while its parser may call back.
        """
        if type(data) is not bytes:
            data = bytes(data)
        view = memoryview(data)
        size = len(view)
        start = 0
        limit = self._config.max_pipelined_requests
        feed = self.parser.feed_data
        while start < size:
            end = slice_end(data, start, self._current)
            try:
                feed(view[start:end])
            except httptools.HttpParserUpgrade as upgrade:
                # the offset of the upgrade, in ``data`` rather than in this piece
                raise httptools.HttpParserUpgrade(start + upgrade.args[0]) from None
            start = end
            queue = self._queue
            if queue is not None and len(queue) >= limit and start < size:
                self._cold_state().backlog = bytes(view[start:])
                self._pause_reading()
                return

    def _feed_backlog(self):
        cold = self._cold_state()
        cold.backlog_scheduled = False
        data, cold.backlog = cold.backlog, None
        if data is not None and not self._closing:
            self.data_received(data)

    def _schedule_backlog(self) -> bool:
        """With the queue drained: parse the backlog soon. False if there is none."""
        cold = self._cold
        if cold is None or cold.backlog is None:
            return False
        if not cold.backlog_scheduled:
            cold.backlog_scheduled = True
            self._loop.call_soon(self._feed_backlog)
        return True

    def _unparsed_size(self) -> int:
        """Bytes of the last read still waiting in the backlog."""
        cold = self._cold
        return len(cold.backlog) if cold is not None and cold.backlog is not None else 0

    def _read_ended_in_request(self, size):
        """A read of ``size`` bytes ended inside a request: bound its head across reads."""
        req = self._current
        if "REQUEST_METHOD" in req.environ:
            return  # its head is complete: the body limit applies
        size -= self._unparsed_size()
        try:
            req.head_received = head_too_large(req.head_received, size,
                                               self._config.max_head_size)
        except HTTPLimitExceeded as exc:
            self._parse_state = PARSE_FAILED
            self._enqueue(exc.http_error)

    # --- handlers -----------------------------------------------------------------------------

    def _handler_done(self, task, req):
        """A suspended handler finished: answer it, then go on with the queue."""
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

    def _stream_done(self, task):
        """A streamed body was sent (or failed): go on with the queue."""
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

    def _handler_failed(self, req, exc):
        logger.error("Error handling %s %s", req.method, req.environ.get("RAW_URI"),
                     exc_info=exc)
        self._refuse(InternalServerError(), req)

    # --- refusals and lingering close --------------------------------------------------------

    def _refuse(self, error, req=None, linger=False):
        """Answer ``error`` (a werkzeug HTTPException) and close the connection.

        ``linger``: the client may still be sending; half-close instead (see ``_linger``).
        """
        version = req.version if req is not None else "1.1"
        method = req.method if req is not None else "GET"
        if not self._closing:
            data = error_response(error, version, method)
            self._raw_write(data)
            on_response = self._server.hooks.on_response
            if on_response is not None:  # the access log
                on_response(self._refused_environ(req), data, False)
            if linger:
                self._linger()
                return
        self.close()

    def _refused_environ(self, req) -> dict:
        """The environ the access log reads for a refusal of ``req``; without one, of the
        request being parsed when parsing stopped (a limit, a parse error, a timeout)."""
        if req is None:
            req = self._current
        if req is not None:
            environ = req.environ
        else:  # an upgrade request's refusal: the request is complete, and not queued
            cold = self._cold
            environ = cold.refused_upgrade if cold is not None else None
        if environ is not None and START_KEY in environ:
            return environ  # a complete head the hooks saw: as the app's responses
        # when the message began, on the access log's clock
        started = time.perf_counter() - (_monotonic() - self._message_started)
        return refused_environ(environ, self.ip, self.client_port, started)

    def _linger(self):
        """Close after a refusal without a TCP reset: half-close, discard what still comes.

        The connection closes when the client does, or ``linger_timeout`` seconds later.
        """
        self._closing = True
        self._queue = None
        self._flush()
        transport = self.transport
        timeout = self._config.linger_timeout
        if timeout > 0 and transport is not None and half_close(transport):
            cold = self._cold_state()
            cold.linger_until = _monotonic() + timeout
            if cold.flow is not None:
                cold.flow.resume_reading()  # to read and discard
        elif transport is not None:
            transport.close()

    def _parse_error(self, exc, data=None, at_boundary=True):
        """The parser refused the bytes (``feed_data`` raised ``exc`` for the read ``data``,
        which began between requests when ``at_boundary``): parsing stops, and the refusal
        waits behind the requests already parsed. Unless it was the HTTP/2 connection preface:
        the connection then goes to the HTTP/2 protocol."""
        self._parse_state = PARSE_FAILED
        if data and self._hand_over_preface(exc, data):
            return
        self._enqueue(parser_error_to_http(exc, data, at_boundary))

    def handle_parser_exception(self, exc):
        """Answer a parser exception with the matching HTTP error and close the connection."""
        self._parse_state = PARSE_FAILED
        self._refuse(parser_error_to_http(exc))

    # --- timeouts ------------------------------------------------------------------------------

    def check_timeouts(self, now):
        """Close an idle keep-alive connection or a client too slow with its request.

        Called by the server's timeout check (``ServerState``) with ``time.monotonic()``: one
        timer per server instead of one per connection.
        """
        cold = self._cold
        if self._closing or self._busy or self._queue or (cold is not None
                                                         and cold.backlog is not None):
            if cold is not None and cold.linger_until and now >= cold.linger_until:
                cold.linger_until = 0.0
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
                self._refuse(RequestTimeout())
        else:
            # Idle since the last message or response: bytes that start no request (a trickle
            # of empty lines, which llhttp skips) do not keep a connection open.
            upgrading = cold is not None and cold.upgrade_body is not None
            idle_since = self._last_activity if upgrading else self._message_started
            if now >= idle_since + config.keepalive_timeout:
                self.close()

    # --- upgrades ------------------------------------------------------------------------------

    def _on_upgrade(self, rest=b""):
        """The parser stopped at an upgrade request; ``rest`` is what followed it in the read."""
        self._parse_state = UPGRADED  # nothing after the upgrade request is HTTP/1.1
        queue = self._queue
        item = queue[-1] if queue else None
        environ = None
        if item is not None and not isinstance(item, HTTPException) and self._current is None:
            # The upgrading request is complete and last in the queue: it is never handed to
            # the app as a plain HTTP/1.1 request.
            queue.pop()
            environ = item.environ
            upgrade = (environ.get("HTTP_UPGRADE") or "").strip().lower()
            if upgrade == "h2c" and not queue and not self._busy:
                try:
                    self._cold_state().upgrade_body = UpgradeBody(
                        environ, self._config.max_body_size, item, http2_enabled(self))
                except HTTPException as exc:
                    self._cold_state().refused_upgrade = environ
                    self._enqueue(exc)
                    return
                self._feed_upgrade_body(rest)
                return
        if environ is not None:
            self._cold_state().refused_upgrade = environ
        self._enqueue(upgrade_refusal(environ))

    def _received_after_parsing(self, data):
        """Bytes read once parsing stopped: an h2c upgrade's body, or nothing to read."""
        cold = self._cold
        if cold is None or cold.upgrade_body is None or self._closing:
            return
        self._last_activity = _monotonic()
        self._feed_upgrade_body(data)
        if not self._busy:
            self._run_queue()

    def _feed_upgrade_body(self, data):
        cold = self._cold
        pending = cold.upgrade_body
        parts = pending.feed(data)
        if parts is None:
            return  # more of the body to come
        cold.upgrade_body = None
        if not pending.http2:
            # HTTP/2 is off: the upgrade is ignored, the request answered in HTTP/1.1 (and the
            # connection closed after it: what follows was sent for HTTP/2).
            request = pending.request
            request.body = [parts[0]] if parts[0] else None
            request.keep_alive = False
            self._enqueue(request)
        elif hand_over_h2c(self, self.transport, pending.environ, parts[0], parts[1]):
            self._handed_over()
        else:
            cold.refused_upgrade = pending.environ
            self._enqueue(BadRequest("Unsupported protocol upgrade."))

    def _hand_over_preface(self, exc, data) -> bool:
        """After a parser error: whether it was llhttp stopping at the HTTP/2 connection preface
        (``PRI * HTTP/2.0``, prior knowledge) and the connection went to the HTTP/2 protocol.
        False when it is another error, or HTTP/2 is off (the caller refuses it as before)."""
        if not is_preface_error(exc, not self._busy and not self._queue, self.parser):
            return False
        if not hand_over_preface(self, self.transport, data):
            return False
        self._handed_over()
        return True

    def _handed_over(self):
        """The transport now belongs to another protocol object: let go of it."""
        self._closing = True
        self._queue = None
        self._out = None
        self._server.remove_connection(self)

    # --- public API of the stock backend -------------------------------------------------------

    def write_response(self, response, environ):
        """Write a werkzeug response for ``environ``'s request (no connection management)."""
        self._raw_write(self._wsgi.get_formatted_response(response, environ))

    def write(self, data):
        """Write a ``str`` (UTF-8) to the client."""
        self._raw_write(data.encode())

    def raw_write(self, data):
        """Write ``bytes`` to the client."""
        self._raw_write(data)
