"""
kyoukai_fast's HTTP/2 server protocol (RFC 9113), in plain Python above an HTTP/2 engine
(``_http2_events`` describes the interface): libnghttp2's with the compiled implementation, h2's
otherwise (``_http2_engine`` selects it).

Every HTTP/2 connection kyoukai_fast accepts ends up here: a TLS connection that negotiated ALPN
``h2``, a cleartext request with ``Upgrade: h2c`` (answered on stream 1), and a cleartext
connection that opens with the HTTP/2 connection preface. The HTTP/1.1 protocol objects detect
these in their cold paths and hand the transport over (``transport.set_protocol``).

The request path is the HTTP/1.1 one: the environ starts from the server's template, and
``_request_cycle`` gives it its body (``set_input``), builds the request object and calls the
app (``start_handler``: the one place the app is called) and takes the response apart
(``final_response_parts``: werkzeug's WSGI output, ``StreamingBody`` streamed); errors are
werkzeug's pages. What is HTTP/2's own:

* many streams at once, each with its own handler; at most ``http2_max_concurrent_streams``;
* flow control both ways. A request body is taken (and its credit returned) as it arrives, up
  to ``max_body_size`` per stream; while the bodies a connection holds pass
  ``max_body_size + http2_connection_window``, credit is held back. Responses are sent a frame
  per stream per round (fair interleaving), only as far as the client's windows and the
  transport's buffer allow; a streamed body is read from the app only as fast as it is sent;
* the known attacks are answered with GOAWAY (ENHANCE_YOUR_CALM or PROTOCOL_ERROR) and a close:
  rapid reset, floods of control or empty frames, oversized header blocks (the engines bound
  CONTINUATION runs and decoded header lists), windows kept closed (``http2_send_timeout``).
"""
from __future__ import annotations

import asyncio
import collections
import time

from werkzeug.exceptions import (
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
    RequestURITooLarge,
)

from ._config import server_state_for
from ._conformance import DeclaredLength
from ._environ import split_target
from ._errors import HTTPLimitExceeded, error_page, half_close, logger
from ._flow_control import FlowControl
from ._http2_engine import ENGINE
from ._http2_events import (
    CLOSED,
    CONTROL,
    DATA,
    EMPTY_DATA,
    ENDED,
    ENHANCE_YOUR_CALM,
    GONE,
    INTERNAL_ERROR,
    NO_ERROR,
    REFUSED_STREAM,
    REQUEST,
    RESET,
    TRAILERS,
    EngineError,
)
from ._rendering import date_line, invalid_name_message, valid_field_name
from ._request_cycle import final_response_parts, response_or_error, set_input, start_handler
from ._request_hooks import before_request
from ._wsgi_py import add_header, header_environ_key_of_bytes, new_request

__all__ = ("HTTP2Protocol", "PREFACE")

#: The client connection preface (RFC 9113 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Attack budgets (token buckets: a burst, refilled per second). Ordinary clients stay far below
# them; a client that goes beyond gets GOAWAY ENHANCE_YOUR_CALM.
#: Streams a client may reset (RST_STREAM) or have refused: rapid reset, CVE-2023-44487.
RESET_BURST, RESET_RATE = 200.0, 100.0
#: Frames that carry nothing for a request (PING, SETTINGS, PRIORITY, empty DATA).
FLOOD_BURST, FLOOD_RATE = 1000.0, 200.0
#: Bytes of control frames (SETTINGS and PING acknowledgements, resets) the server may have
#: waiting in the transport for a client that does not read them.
MAX_UNREAD_OUTPUT = 1024 * 1024

#: Response headers an app may set that have no place in HTTP/2 (RFC 9113 8.2.2).
_DROPPED_RESPONSE_HEADERS = frozenset(("connection", "keep-alive", "proxy-connection",
                                       "transfer-encoding", "upgrade"))

_monotonic = time.monotonic

# --- response headers -----------------------------------------------------------------------

#: App header name -> its HTTP/2 form (lower-case bytes), or None when it is dropped. Bounded.
_response_names: dict = {}
_RESPONSE_NAMES_MAX = 4096


def _response_name(name: str):
    lower = name.lower()
    if lower in _DROPPED_RESPONSE_HEADERS:
        encoded = None
    elif not valid_field_name(name):
        raise ValueError(invalid_name_message(name))
    else:
        encoded = lower.encode("latin-1")
    if len(_response_names) < _RESPONSE_NAMES_MAX:
        _response_names[name] = encoded
    return encoded


_date_second = -1
_date_value = b""


def _date() -> bytes:
    global _date_second, _date_value
    now = int(time.time())
    if now != _date_second:
        _date_value = date_line()[6:-2].encode("ascii")
        _date_second = now
    return _date_value


def response_headers(status: str, headers) -> list:
    """The HTTP/2 header list of a response: ``:status``, the app's fields (lower case, the
    connection-specific ones dropped) and ``date`` when the app set none."""
    out = [(b":status", status[:3].encode("ascii"))]
    have_date = False
    names = _response_names
    for name, value in headers:
        encoded = names.get(name, False)
        if encoded is False:
            encoded = _response_name(name)
        if encoded is None:
            continue
        if encoded == b"date":
            have_date = True
        if "\n" in value or "\r" in value or "\0" in value:
            raise ValueError("header values must not contain newline or NUL characters")
        out.append((encoded, value.encode("latin-1")))
    if not have_date:
        out.append((b"date", _date()))
    return out


# --- per-stream state -----------------------------------------------------------------------

class _Stream:
    """One request and its response, from HEADERS to the end of both directions."""

    __slots__ = ("id", "environ", "method", "body", "body_size", "held", "unacked", "complete",
                 "dispatched", "refused", "task", "headers_sent", "out", "out_size",
                 "out_end", "ended", "waiter", "remote_closed", "touched")

    def __init__(self, stream_id: int, environ: dict):
        self.id = stream_id
        self.environ = environ
        self.method = "GET"
        self.body = None          # list of received body pieces
        self.body_size = 0
        self.held = 0             # bytes of body this stream holds (received, or handed to the app)
        self.unacked = 0          # bytes received whose credit is held back
        self.complete = False     # the client ended its side
        self.dispatched = False
        self.refused = False      # answered with an error page: the body is discarded
        self.task = None          # the handler's task, or the task streaming its body
        self.headers_sent = False
        self.out = None           # deque of bytes waiting for window
        self.out_size = 0
        self.out_end = False      # END_STREAM follows the waiting bytes
        self.ended = False        # END_STREAM sent
        self.waiter = None        # a streaming producer waiting for out to drain
        self.remote_closed = False
        self.touched = 0.0        # when the request last made progress (HEADERS, DATA)


class _Bucket:
    """A token bucket: ``take()`` is False once more than ``burst`` were taken faster than
    ``rate`` per second refills them."""

    __slots__ = ("tokens", "burst", "rate", "stamp")

    def __init__(self, burst: float, rate: float):
        self.tokens = self.burst = burst
        self.rate = rate
        self.stamp = _monotonic()

    def take(self) -> bool:
        now = _monotonic()
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - 1.0
        self.stamp = now
        self.tokens = tokens
        return tokens >= 0.0


class HTTP2Protocol(asyncio.Protocol):
    """One HTTP/2 connection: streams, flow control, limits, on an HTTP/2 engine."""

    #: The HTTP/2 state machine (``_http2_events`` describes it): libnghttp2's when the
    #: compiled implementation is live and it was built, else h2's.
    engine_class = ENGINE

    def __init__(self, component, parent_context, server_port=None, url_scheme="http"):
        self.component = component
        self.app = component.app
        self.parent_context = parent_context
        self.server_port = server_port
        self._server = server_state_for(component, server_port)
        self._config = config = self._server.config
        self._url_scheme = url_scheme
        self.transport = None
        self.ip = None
        self.client_port = None
        self._loop = None
        self._flow = None
        self._streams = {}
        self._sending = {}        # streams with output waiting, in round-robin order
        self._held = 0            # request body bytes held by live streams
        self._starved = []        # streams whose credit is held back
        self._closing = False
        self._draining = None     # last stream id of a graceful GOAWAY
        self._last_activity = 0.0
        self._send_blocked_since = 0.0
        self._linger_until = 0.0
        self._resets = _Bucket(RESET_BURST, RESET_RATE)
        self._floods = _Bucket(FLOOD_BURST, FLOOD_RATE)
        self.engine = self.engine_class(config.http2_max_concurrent_streams,
                                        config.http2_stream_window,
                                        config.http2_connection_window, config.max_head_size)

    # --- taking over a connection -------------------------------------------------------------

    @classmethod
    def from_http1(cls, protocol, url_scheme):
        """The HTTP/2 protocol that takes over ``protocol``'s (an HTTP/1.1 one) connection."""
        return cls(protocol.component, protocol.parent_context, protocol.server_port, url_scheme)

    def connection_made(self, transport):
        """A fresh connection (TLS with ALPN ``h2``): the server speaks first."""
        self._start(transport)
        self.engine.start()
        self._flush()
        self.component.connection_made.dispatch(protocol=self)

    def take_over_preface(self, transport, data: bytes):
        """A cleartext connection whose HTTP/1.1 protocol read the connection preface."""
        self._start(transport)
        self.engine.start()
        self._flush()
        self.data_received(data)

    def accept_upgrade(self, settings: str) -> bool:
        """Take the ``HTTP2-Settings`` of an ``Upgrade: h2c`` request. False when invalid."""
        try:
            self.engine.upgrade(settings.encode("ascii"))
        except ValueError:
            logger.info("Refusing h2c upgrade with invalid HTTP2-Settings", exc_info=True)
            return False
        return True

    def take_over_upgrade(self, transport, environ: dict, body: bytes, rest: bytes,
                          switching: bytes):
        """After :meth:`accept_upgrade`: write ``switching`` (the 101), then answer the request
        on stream 1."""
        self._start(transport)
        transport.write(switching)
        self._flush()
        stream = _Stream(1, self._upgraded_environ(environ))
        stream.method = stream.environ.get("REQUEST_METHOD", "GET")
        self._streams[1] = stream
        stream.remote_closed = stream.complete = True
        if body:
            stream.body = [body]
            stream.body_size = stream.held = len(body)
            self._held += len(body)
        self._dispatch(stream)
        self._flush()
        if rest:
            self.data_received(rest)

    def _start(self, transport):
        self.transport = transport
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = self.app.loop
        self._flow = FlowControl(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.ip, self.client_port = peer[0], peer[1]
        try:
            transport.set_write_buffer_limits(high=self._config.write_high_water)
        except (AttributeError, NotImplementedError):
            pass
        self._last_activity = _monotonic()
        self._server.add_connection(self, self._loop)

    def _upgraded_environ(self, environ: dict) -> dict:
        environ = dict(environ)
        for key in ("HTTP_CONNECTION", "HTTP_UPGRADE", "HTTP_HTTP2_SETTINGS", "HTTP_KEEP_ALIVE",
                    "HTTP_PROXY_CONNECTION", "HTTP_TRANSFER_ENCODING"):
            environ.pop(key, None)
        environ["SERVER_PROTOCOL"] = "HTTP/2"
        environ["kyoukai.protocol"] = self
        return environ

    # --- asyncio callbacks --------------------------------------------------------------------

    def connection_lost(self, exc):
        self._closing = True
        self._server.remove_connection(self)
        if self._flow is not None:
            self._flow.connection_lost()
        streams = list(self._streams.values())
        self._streams.clear()
        self._sending.clear()
        self._starved = []
        for stream in streams:
            self._wake(stream, ConnectionResetError("connection lost"))
            if stream.task is not None:
                stream.task.cancel()
        # The HTTP/1.1 protocol that handed over announced the connection (connection_made
        # here announced a TLS one): its end is announced here.
        self.component.connection_lost.dispatch(protocol=self)

    def pause_writing(self):
        self._flow.pause_writing()

    def resume_writing(self):
        self._flow.resume_writing()
        if not self._closing:
            self._pump()

    def eof_received(self):
        return None  # HTTP/2 has no half-closed connections: close

    def data_received(self, data):
        if self._closing:
            return
        self._last_activity = _monotonic()
        try:
            events = self.engine.receive(data)
        except EngineError as exc:
            self._protocol_error(exc)
            return
        try:
            for event in events:
                self._on_event(event)
                if self._closing:
                    return
        except Exception:
            logger.exception("HTTP/2 connection failed")
            self._close_connection(INTERNAL_ERROR)
            return
        self._flush()
        self._pump()

    def _on_event(self, event):
        kind = event[0]
        if kind == DATA:
            self._on_data(event[1], event[2], event[3])
        elif kind == REQUEST:
            self._on_request(event[1], event[2], event[3])
        elif kind == ENDED:
            stream = self._streams.get(event[1])
            if stream is not None:
                stream.remote_closed = True
                if not stream.refused:
                    stream.complete = True
                    self._dispatch(stream)
                else:
                    self._maybe_free(stream)
        elif kind == RESET:
            if not self._resets.take():
                self._calm_down("too many streams reset")
                return
            self._on_reset(event[1])
        elif kind == CLOSED:
            self._on_reset(event[1])
        elif kind == EMPTY_DATA:
            if not self._floods.take():
                self._calm_down("empty frame flood")
        elif kind == TRAILERS:
            self._on_trailers(event[1], event[2])
        elif kind == CONTROL:
            if not self._floods.take():
                self._calm_down("control frame flood")
        elif kind == GONE:
            self._closing = True
            self._flush()
            self.transport.close()

    # --- requests -----------------------------------------------------------------------------

    def _on_request(self, stream_id, headers, ended):
        if self._draining is not None and stream_id > self._draining:
            # Opened after the GOAWAY: the client retries it elsewhere (RFC 9113 6.8).
            self._reset(stream_id, REFUSED_STREAM)
            return
        config = self._config
        environ = self._server.environ_template.copy()
        stream = _Stream(stream_id, environ)
        stream.touched = self._last_activity
        self._streams[stream_id] = stream
        method = path = authority = None
        count = 0
        error = None
        limit_size = config.max_header_size
        for name, value in headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue
            count += 1
            if len(name) + len(value) > limit_size:
                error = RequestHeaderFieldsTooLarge()
                continue
            key = header_environ_key_of_bytes(name)
            if key is None:
                continue  # a name with "_": dropped, as in HTTP/1.1
            text = value.decode("latin-1")
            if key in environ:
                add_header(environ, key, text)
            else:
                environ[key] = text
        if count > config.max_header_count:
            error = RequestHeaderFieldsTooLarge()
        method = method.decode("ascii", "replace") if method else "GET"
        stream.method = method
        target = path.decode("latin-1") if path else "/"
        if len(target) > config.max_url_size:
            error = RequestURITooLarge()
        if target[:1] == "/" and "?" not in target and "%" not in target and "#" not in target:
            path_info, query = target, ""
        else:
            path_info, query = split_target(target)
        if "HTTP_HOST" not in environ and authority is not None:
            environ["HTTP_HOST"] = authority.decode("latin-1")
        environ["REQUEST_METHOD"] = method
        environ["PATH_INFO"] = path_info
        environ["QUERY_STRING"] = query
        environ["RAW_URI"] = target
        environ["SERVER_PROTOCOL"] = "HTTP/2"
        environ["REMOTE_ADDR"] = self.ip
        environ["REMOTE_PORT"] = str(self.client_port)
        environ["wsgi.url_scheme"] = self._url_scheme
        environ["kyoukai.protocol"] = self
        try:
            before_request(self._server.hooks, self, environ)  # proxy headers, root path...
        except HTTPLimitExceeded as exc:
            error = error or exc.http_error
        if ended:
            stream.remote_closed = True
        if error is None:
            length = environ.get("CONTENT_LENGTH")
            if length is not None and length.isdigit() and int(length) > config.max_body_size:
                error = RequestEntityTooLarge()
        if error is not None:
            self._refuse(stream, error)
            return
        if not stream.remote_closed:
            expect = environ.get("HTTP_EXPECT")
            if expect is not None and expect.lower() == "100-continue":
                self.engine.send_headers(stream_id, [(b":status", b"100")], False)

    def _on_data(self, stream_id, data, size):
        stream = self._streams.get(stream_id)
        if stream is None or stream.refused:
            # Discarded: its credit goes back at once.
            if size:
                self.engine.acknowledge(stream_id, size)
            return
        stream.touched = self._last_activity
        stream.body_size += len(data)
        if stream.body_size > self._config.max_body_size:
            if size:
                self.engine.acknowledge(stream_id, size)
            self._refuse(stream, RequestEntityTooLarge())
            return
        if data:
            if stream.body is None:
                stream.body = [data]
            else:
                stream.body.append(data)
            stream.held += len(data)
            self._held += len(data)
        if not size:
            return
        if self._held > self._config.max_body_size + self._config.http2_connection_window:
            # Bodies enough held on this connection: this one's credit waits for them to go.
            if not stream.unacked:
                self._starved.append(stream)
            stream.unacked += size
        else:
            self.engine.acknowledge(stream_id, size)

    def _on_trailers(self, stream_id, headers):
        # Trailer fields are never merged into the header fields (as in HTTP/1.1); they still
        # count against the header limits.
        stream = self._streams.get(stream_id)
        if stream is None or stream.refused:
            return
        config = self._config
        if (len(headers) > config.max_header_count
                or any(len(n) + len(v) > config.max_header_size for n, v in headers)):
            self._refuse(stream, RequestHeaderFieldsTooLarge())

    def _dispatch(self, stream):
        """The request is complete: give it its body, build the request object, call the app
        (``_request_cycle``, the request path HTTP/1.1 takes too)."""
        if stream.dispatched:
            return
        stream.dispatched = True
        environ = stream.environ
        chunks = stream.body
        stream.body = None
        if chunks and "CONTENT_LENGTH" not in environ:
            environ["CONTENT_LENGTH"] = str(stream.body_size)  # HTTP/2 needs no content-length
        try:
            set_input(environ, chunks, self._config.max_body_size)
        except HTTPException as exc:
            self._refuse(stream, exc)
            return
        app = self.app
        try:
            request = new_request(app.request_class, environ)
            task, result, error = start_handler(self._server.request_handler, request,
                                                self.parent_context, self._loop)
        except (Exception, asyncio.CancelledError) as exc:
            self._handler_failed(stream, exc)
            return
        if task is None:  # finished without suspending
            if error is None:
                self._respond(stream, result)
            else:
                self._handler_failed(stream, error)
            return
        stream.task = task
        task.add_done_callback(lambda t: self._handler_done(t, stream))

    def _handler_done(self, task, stream):
        stream.task = None
        if self._closing or self._streams.get(stream.id) is not stream:
            return  # reset by the client, or the connection is gone
        if task.cancelled():
            self._handler_failed(stream, asyncio.CancelledError())
        else:
            exc = task.exception()
            if exc is not None:
                self._handler_failed(stream, exc)
            else:
                self._respond(stream, task.result())
        self._flush()
        self._pump()

    def _handler_failed(self, stream, exc):
        logger.error("Error handling %s %s", stream.method, stream.environ.get("RAW_URI"),
                     exc_info=exc)
        if stream.headers_sent:
            self._reset(stream.id, INTERNAL_ERROR)
            self._free(stream)
        else:
            self._send_page(stream, InternalServerError())

    # --- responses ----------------------------------------------------------------------------

    def _respond(self, stream, response):
        if self._streams.get(stream.id) is not stream:
            return
        app_iter = None
        try:
            response = response_or_error(response, stream)
            status, headers, body, app_iter = final_response_parts(response, stream.environ)
            head = response_headers(status, headers)
        except Exception as exc:
            _close(app_iter)
            self._handler_failed(stream, exc)
            return
        if app_iter is not None:
            for name, value in head:
                if name == b"content-length" and value.isdigit():
                    # more would break the stream's framing, fewer is reset (RFC 9113 8.1.1)
                    app_iter = DeclaredLength(app_iter, int(value))
                    break
        self._send_response(stream, head, body, app_iter is None)
        if app_iter is not None:
            stream.task = self._loop.create_task(self._stream_body(stream, app_iter))

    def _send_response(self, stream, head, body, last):
        end = last and not body
        if not self.engine.send_headers(stream.id, head, end):
            self._free(stream)  # the stream was closed meanwhile
            return
        stream.headers_sent = True
        access_log = self._server.hooks.access_log
        if access_log is not None:
            access_log.record(stream.environ, head[0][1].decode("ascii"),
                              len(body) if last else _declared_size(head))
        if end:
            self._sent_end(stream)
        elif body or last:
            self._queue(stream, body, last)

    def _send_page(self, stream, error):
        status, headers, body = error_page(error, "1.1", stream.method)
        if stream.method == "HEAD":
            body = b""
        self._send_response(stream, response_headers(status, headers), body, True)

    def _refuse(self, stream, error):
        """Answer ``stream`` with ``error``'s page; whatever more of its body comes is
        discarded (and the stream reset once the answer is out, RFC 9113 8.1)."""
        stream.refused = True
        self._held -= stream.held
        stream.held = 0
        stream.body = None
        self._release(stream)
        if not stream.headers_sent:
            self._send_page(stream, error)

    def _queue(self, stream, data, last):
        if data:
            if stream.out is None:
                stream.out = collections.deque()
            stream.out.append(data)
            stream.out_size += len(data)
        if last:
            stream.out_end = True
        if stream.id not in self._sending:
            self._sending[stream.id] = stream

    async def _stream_body(self, stream, app_iter):
        """Send a streamed body, reading the app's iterable only as fast as it is sent."""
        high = self._config.write_high_water
        try:
            for chunk in app_iter:
                if type(chunk) is not bytes:
                    chunk = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                if not chunk:
                    continue
                if self._closing or self._streams.get(stream.id) is not stream:
                    return
                self._queue(stream, chunk, False)
                self._pump()
                if stream.out_size > high:
                    stream.waiter = self._loop.create_future()
                    await stream.waiter
            if self._streams.get(stream.id) is stream and not self._closing:
                self._queue(stream, b"", True)
                self._pump()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("Error while streaming the response to %s %s", stream.method,
                             stream.environ.get("RAW_URI"))
            if self._streams.get(stream.id) is stream and not self._closing:
                self._reset(stream.id, INTERNAL_ERROR)
                self._free(stream)
                self._flush()
        finally:
            _close(app_iter)
            stream.task = None

    def _pump(self):
        """Send what streams have waiting, a frame per stream per round, as far as the flow
        control windows and the transport's buffer allow."""
        sending = self._sending
        if not sending or self._closing:
            return
        engine = self.engine
        flow = self._flow
        frame_size = engine.max_frame_size
        high = self._config.write_high_water
        progressed = any_progress = False
        while sending and not flow.writing_paused:
            progressed = False
            for stream in list(sending.values()):
                del sending[stream.id]
                if self._streams.get(stream.id) is not stream:
                    continue
                if stream.out_size:
                    window = engine.window(stream.id)
                    if window <= 0:
                        sending[stream.id] = stream  # waits for a WINDOW_UPDATE
                        continue
                    piece = self._take(stream, min(window, frame_size))
                    last = stream.out_end and not stream.out_size
                    engine.send_data(stream.id, piece, last)
                    progressed = True
                    if last:
                        self._sent_end(stream)
                        continue
                    if stream.out_size:
                        sending[stream.id] = stream
                    if stream.waiter is not None and stream.out_size <= high:
                        self._wake(stream, None)
                elif stream.out_end:
                    engine.send_data(stream.id, b"", True)
                    progressed = True
                    self._sent_end(stream)
                else:
                    self._wake(stream, None)
            self._flush()
            if not progressed or self._closing:
                break
            any_progress = True
        if not sending:
            self._send_blocked_since = 0.0
        elif any_progress or progressed or not self._send_blocked_since:
            self._send_blocked_since = _monotonic()

    @staticmethod
    def _take(stream, size):
        """Up to ``size`` bytes of ``stream``'s waiting output, as one frame's data."""
        out = stream.out
        piece = out[0]
        if len(piece) > size:
            if type(piece) is not memoryview:
                piece = memoryview(piece)  # the rest is sliced without copying it
            out[0] = piece[size:]
            piece = piece[:size]
        else:
            out.popleft()
            if out and len(piece) + len(out[0]) <= size:
                pieces = [piece]
                length = len(piece)
                while out and length + len(out[0]) <= size:  # small pieces share a frame
                    length += len(out[0])
                    pieces.append(out.popleft())
                piece = b"".join(pieces)
        stream.out_size -= len(piece)
        return piece

    def _wake(self, stream, exc):
        waiter = stream.waiter
        if waiter is None:
            return
        stream.waiter = None
        if not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)
                waiter.exception()

    def _sent_end(self, stream):
        stream.ended = True
        if not stream.remote_closed:
            # Answered before the request ended (a refusal, or an app that did not read the
            # body): the rest of the request is not wanted (RFC 9113 8.1).
            self._reset(stream.id, NO_ERROR)
        self._free(stream)

    def _maybe_free(self, stream):
        if stream.ended and stream.remote_closed:
            self._free(stream)

    def _free(self, stream):
        """Forget a finished (or reset) stream; hand back what its body held."""
        if self._streams.pop(stream.id, None) is None:
            return
        self._sending.pop(stream.id, None)
        self._held -= stream.held
        stream.held = 0
        stream.body = None
        self._release(stream)
        stream.out = None
        self._wake(stream, ConnectionResetError("stream closed"))
        if self._starved:
            self._return_credit()
        if self._draining is not None and not self._streams:
            self._close_connection(NO_ERROR)

    def _release(self, stream):
        if stream.unacked:
            size, stream.unacked = stream.unacked, 0
            self.engine.acknowledge(stream.id, size)
            try:
                self._starved.remove(stream)
            except ValueError:
                pass

    def _return_credit(self):
        limit = self._config.max_body_size + self._config.http2_connection_window
        while self._starved and self._held <= limit:
            stream = self._starved.pop(0)
            size, stream.unacked = stream.unacked, 0
            if size:
                self.engine.acknowledge(stream.id, size)

    def _on_reset(self, stream_id):
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        task = stream.task
        self._free(stream)
        if task is not None:
            task.cancel()

    def _reset(self, stream_id, code):
        self.engine.reset(stream_id, code)

    # --- connection management ----------------------------------------------------------------

    def _flush(self):
        data = self.engine.data_to_send()
        if data:
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            transport.write(data)
            if (self._flow.writing_paused
                    and transport.get_write_buffer_size() > MAX_UNREAD_OUTPUT):
                # Only control frames are written while paused: a client flooding them and
                # not reading the answers.
                logger.info("HTTP/2 client does not read: closing the connection")
                self._closing = True
                transport.abort()

    def _protocol_error(self, exc):
        logger.info("HTTP/2 protocol error: %s", exc)
        self._close_connection(exc.code)

    def _calm_down(self, why):
        logger.warning("HTTP/2 client misbehaves (%s): closing the connection", why)
        self._close_connection(ENHANCE_YOUR_CALM)

    def _close_connection(self, code):
        """GOAWAY with ``code``, then close once it is sent."""
        if self._closing:
            return
        self.engine.close(code)
        self._flush()
        self._closing = True
        transport = self.transport
        if transport is None:
            return
        # Half-close and go on reading (discarding) for a while: closing with unread input
        # would make the kernel reset the connection, and the GOAWAY could be lost.
        timeout = self._config.linger_timeout
        if timeout > 0 and half_close(transport):
            self._linger_until = _monotonic() + timeout
        else:
            transport.close()

    def shutdown(self):
        """Graceful shutdown: GOAWAY now (no new streams), close once the open ones are done."""
        if self._closing:
            return
        if not self._streams:
            self._close_connection(NO_ERROR)
            return
        if self._draining is not None:
            return
        # The final GOAWAY goes once they are done.
        last = self.engine.last_stream_id
        self._draining = last
        self.engine.goaway(last)
        self._flush()

    def check_timeouts(self, now):
        """Close a connection idle too long, or one whose client does not take its responses."""
        if self._closing:
            if self._linger_until and now >= self._linger_until:
                self._linger_until = 0.0
                self.transport.close()
            return
        config = self._config
        blocked = self._send_blocked_since
        if blocked and now >= blocked + config.http2_send_timeout:
            logger.info("HTTP/2 client took nothing for %.0f s: closing the connection",
                        config.http2_send_timeout)
            self._close_connection(ENHANCE_YOUR_CALM)
        elif not self._streams:
            if now >= self._last_activity + config.keepalive_timeout:
                self._close_connection(NO_ERROR)
        else:
            # A request that makes no progress for header_timeout (slowloris: a stream opened,
            # its body never finished, the connection kept busy by other frames) gets 408.
            deadline = now - config.header_timeout
            late = [stream for stream in self._streams.values()
                    if not (stream.dispatched or stream.refused) and stream.touched <= deadline]
            if late:
                from werkzeug.exceptions import RequestTimeout

                for stream in late:
                    self._refuse(stream, RequestTimeout())
                self._flush()
                self._pump()

    def close(self):
        """Close the connection (GOAWAY NO_ERROR first)."""
        self._close_connection(NO_ERROR)


def _declared_size(head: list):
    """The ``content-length`` of a streamed response's header list, else ``None``."""
    for name, value in head:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def _close(app_iter):
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()
