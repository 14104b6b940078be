"""
The pure-Python HTTP/2 engine: ``h2`` (python-hyper), the engine of the pure-Python
implementation and the fallback where libnghttp2's engine was not built. The interface and its
events are described in ``_http2_events``.
"""
from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from ._http2_events import (
    CLOSED,
    CONTROL,
    DATA,
    EMPTY_DATA,
    ENDED,
    GONE,
    PROTOCOL_ERROR,
    REQUEST,
    RESET,
    TRAILERS,
    EngineError,
)

__all__ = ("H2Engine",)

_CONFIG = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                    validate_inbound_headers=True,
                                    normalize_inbound_headers=True,
                                    validate_outbound_headers=False,
                                    normalize_outbound_headers=False)

_RequestReceived = h2.events.RequestReceived
_DataReceived = h2.events.DataReceived
_StreamEnded = h2.events.StreamEnded
_StreamReset = h2.events.StreamReset
_TrailersReceived = h2.events.TrailersReceived
_ConnectionTerminated = h2.events.ConnectionTerminated
_CONTROL_EVENTS = (h2.events.PingReceived, h2.events.RemoteSettingsChanged,
                   h2.events.PriorityUpdated)
_ProtocolError = h2.exceptions.ProtocolError


class _Connection(h2.connection.H2Connection):
    # h2 remembers how each of the last 65,536 closed streams closed, about 10 MiB on one
    # long-lived connection. A thousand covers the frames still in flight for recent streams;
    # a frame for a stream closed long before gets the stream error or connection error h2
    # gives any closed stream.
    MAX_CLOSED_STREAMS = 1000


class H2Engine:
    """One server connection's HTTP/2 state, on ``h2``."""

    name = "h2"

    def __init__(self, max_concurrent_streams: int, stream_window: int,
                 connection_window: int, max_header_list_size: int):
        conn = self.conn = _Connection(config=_CONFIG)
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream_window,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        # In force before the client acknowledged the settings, too.
        conn.decoder.max_header_list_size = max_header_list_size
        self._connection_window = connection_window

    def start(self):
        self.conn.initiate_connection()
        self._open_connection_window()

    def upgrade(self, settings: bytes):
        try:
            self.conn.initiate_upgrade_connection(settings)
        except Exception as exc:
            raise ValueError(f"invalid HTTP2-Settings: {exc}") from exc
        self._open_connection_window()

    def _open_connection_window(self):
        extra = self._connection_window - 65535
        if extra > 0:
            self.conn.increment_flow_control_window(extra)

    def receive(self, data) -> list:
        try:
            events = self.conn.receive_data(data)
        except _ProtocolError as exc:
            raise EngineError(getattr(exc, "error_code", None) or PROTOCOL_ERROR,
                              str(exc)) from exc
        out = []
        append = out.append
        for event in events:
            kind = type(event)
            if kind is _DataReceived:
                if event.data or event.stream_ended:
                    append((DATA, event.stream_id, event.data, event.flow_controlled_length))
                else:
                    append((EMPTY_DATA, event.stream_id))
            elif kind is _RequestReceived:
                append((REQUEST, event.stream_id, event.headers,
                        event.stream_ended is not None))
            elif kind is _StreamEnded:
                append((ENDED, event.stream_id))
            elif kind is _StreamReset:
                append((RESET if event.remote_reset else CLOSED, event.stream_id,
                        int(event.error_code)))
            elif kind is _TrailersReceived:
                append((TRAILERS, event.stream_id, event.headers))
            elif kind in _CONTROL_EVENTS:
                append((CONTROL,))
            elif kind is _ConnectionTerminated:
                append((GONE, int(event.error_code)))
        return out

    def data_to_send(self) -> bytes:
        return self.conn.data_to_send()

    def send_headers(self, stream_id: int, headers, end_stream: bool) -> bool:
        """False when the stream is closed."""
        try:
            self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        except _ProtocolError:
            return False
        return True

    def send_data(self, stream_id: int, data, end_stream: bool):
        self.conn.send_data(stream_id, data, end_stream=end_stream)

    def window(self, stream_id: int) -> int:
        return self.conn.local_flow_control_window(stream_id)

    @property
    def max_frame_size(self) -> int:
        return self.conn.max_outbound_frame_size

    def acknowledge(self, stream_id: int, size: int):
        try:
            self.conn.acknowledge_received_data(size, stream_id)
        except (_ProtocolError, ValueError):
            pass  # the stream is closed; h2 returned the connection's credit

    def reset(self, stream_id: int, code: int):
        try:
            self.conn.reset_stream(stream_id, error_code=code)
        except _ProtocolError:
            pass  # already closed

    def goaway(self, last_stream_id: int):
        # A GOAWAY of our own: h2's would end the connection for the streams still answering.
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = 0
        self.conn._data_to_send += frame.serialize()

    def close(self, code: int):
        try:
            self.conn.close_connection(error_code=code)
        except _ProtocolError:
            pass

    @property
    def last_stream_id(self) -> int:
        return self.conn.highest_inbound_stream_id
