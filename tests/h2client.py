"""
A raw HTTP/2 client for tests: h2's client state machine over a blocking socket (with a
timeout), so that a test controls every frame (windows, resets, floods) and sees every event.
"""
from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame

__all__ = ("H2Client", "TIMEOUT")

TIMEOUT = 5.0


class H2Client:
    """``H2Client(port)``: a prior-knowledge HTTP/2 connection to 127.0.0.1 (or ``wrap`` it)."""

    def __init__(self, port, wrap=None, settings=None, preface=True):
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock = wrap(sock) if wrap is not None else sock
        self.sock.settimeout(TIMEOUT)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.events = []
        self.closed = False
        self.goaway = None
        self.responses = {}  # stream id -> {"headers", "body", "ended", "reset"}
        self.auto_ack = True
        self._buffer = bytearray()  # received bytes not yet a whole frame
        self._raw = False  # frames read by hand once h2's client closed (after a GOAWAY)
        if preface:
            if settings:
                self.conn.local_settings = h2.settings.Settings(client=True,
                                                                initial_values=settings)
            self.conn.initiate_connection()
            self.flush()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def request(self, path="/", method="GET", body=b"", headers=(), end=True):
        """Open a stream; returns its id."""
        stream_id = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":path", path), (":scheme", "http"),
                  (":authority", "127.0.0.1"), *headers]
        self.conn.send_headers(stream_id, fields, end_stream=end and not body)
        self.responses[stream_id] = {"headers": None, "body": b"", "ended": False,
                                     "reset": None, "informational": []}
        if body:
            self.send_body(stream_id, body, end)
        self.flush()
        return stream_id

    def send_body(self, stream_id, body, end=True):
        """Send ``body`` as the windows allow, reading (and acknowledging) meanwhile."""
        view = memoryview(body)
        while view:
            window = self.conn.local_flow_control_window(stream_id)
            size = min(window, self.conn.max_outbound_frame_size, len(view))
            if size <= 0:
                self.flush()
                self.receive()
                continue
            self.conn.send_data(stream_id, bytes(view[:size]))
            view = view[size:]
            self.flush()
        if end:
            self.conn.end_stream(stream_id)
            self.flush()

    def receive(self) -> bool:
        """One read; False once the server closed."""
        if self.closed:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        # Frame by frame, so that a frame h2's client refuses (any frame after a GOAWAY: its
        # state machine is closed then, though streams up to the GOAWAY's last stream id are
        # still answered, RFC 9113 6.8) loses no other frame's events; from there on frames
        # are read by hand.
        self._buffer += data
        while len(self._buffer) >= 9:
            end = 9 + int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < end:
                break
            frame = bytes(self._buffer[:end])
            del self._buffer[:end]
            if not self._raw:
                try:
                    events = self.conn.receive_data(frame)
                except h2.exceptions.ProtocolError:
                    if self.goaway is None:
                        raise
                    self._raw = True
                else:
                    for event in events:
                        self._event(event)
                    continue
            self._raw_frame(frame)
        try:
            self.flush()
        except OSError:
            pass
        return True

    def _event(self, event):
        self.events.append(event)
        stream = self.responses.get(getattr(event, "stream_id", None))
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream["headers"] = event.headers
        elif isinstance(event, h2.events.InformationalResponseReceived) and stream:
            stream["informational"].append(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            if stream is not None:
                stream["body"] += event.data
            if self.auto_ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream["ended"] = True
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream["reset"] = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def _raw_frame(self, data):
        frame, _ = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:]))
        if isinstance(frame, GoAwayFrame):
            event = h2.events.ConnectionTerminated()
            event.error_code = frame.error_code
            event.last_stream_id = frame.last_stream_id
            self.goaway = event
            return
        stream = self.responses.get(frame.stream_id)
        if stream is None:
            return
        if isinstance(frame, HeadersFrame):
            headers = self.conn.decoder.decode(frame.data, raw=False)
            if stream["headers"] is None:
                stream["headers"] = headers
        elif isinstance(frame, DataFrame):
            stream["body"] += frame.data
        if "END_STREAM" in frame.flags:
            stream["ended"] = True

    def until(self, condition, timeout=TIMEOUT):
        """Read until ``condition()`` holds (or fail after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events: {self.events[-10:]}")
            if not self.receive():
                if condition():
                    return
                raise AssertionError(f"connection closed; events: {self.events[-10:]}")

    def until_closed(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while self.receive():
            if time.monotonic() > deadline:
                raise AssertionError("the server did not close the connection")

    def response(self, stream_id):
        """``(status, headers dict, body)`` once the stream ended."""
        stream = self.responses[stream_id]
        self.until(lambda: stream["ended"] or stream["reset"] is not None)
        headers = dict(stream["headers"] or ())
        return int(headers.get(":status", 0)), headers, stream["body"]

    def get(self, path="/", **kwargs):
        return self.response(self.request(path, **kwargs))
