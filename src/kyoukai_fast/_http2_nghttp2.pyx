"""
The compiled HTTP/2 engine: a server session of libnghttp2 (the reference C implementation
curl, Apache and h2load use). The interface and its events are described in
``_http2_events``; ``_nghttp2.pxd`` declares the part of libnghttp2 used here.

The session runs with ``NGHTTP2_OPT_NO_AUTO_WINDOW_UPDATE``: a request body's credit goes back
only when the protocol says so (``acknowledge``), as the app takes the body. Frames are read
with ``nghttp2_session_mem_recv`` (its callbacks collect the events) and written with
``nghttp2_session_mem_send``. Response bodies go through one data provider per stream, fed by
``send_data``; ``window`` counts what is queued there as spent already, so the protocol's fair
scheduling sees the windows as h2 would report them.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy

from binascii import Error as _Base64Error
from base64 import urlsafe_b64decode

from ._http2_events import (
    CLOSED, CONTROL, DATA, EMPTY_DATA, ENDED, ENHANCE_YOUR_CALM, GONE, INTERNAL_ERROR,
    PROTOCOL_ERROR, REQUEST, RESET, TRAILERS, EngineError,
)

from ._nghttp2 cimport *

__all__ = ("Nghttp2Engine", "LIBRARY_VERSION")

#: The version of libnghttp2 this process loaded (it may be newer than the one built against).
LIBRARY_VERSION = nghttp2_version(0).version_str.decode("ascii")

# One callbacks table for every session (nghttp2 copies it into each).
cdef nghttp2_session_callbacks *_callbacks = NULL


cdef class _Outgoing:
    """A stream's response bytes handed to ``send_data`` and not yet taken by nghttp2."""
    cdef list chunks
    cdef Py_ssize_t offset     # into chunks[0]
    cdef Py_ssize_t size
    cdef bint end
    cdef bint deferred         # the provider said DEFERRED: resume it when more comes

    def __cinit__(self):
        self.chunks = []


cdef class Nghttp2Engine:
    """One server connection's HTTP/2 state, on libnghttp2."""

    name = "nghttp2"

    cdef nghttp2_session *session
    cdef list events
    cdef dict outgoing            # stream id -> _Outgoing
    cdef dict reset_after_end     # stream id -> code: RST_STREAM once its last DATA is out
    cdef Py_ssize_t queued        # bytes in outgoing, all streams
    cdef list block               # the header block being decoded
    cdef list cookies             # its cookie fields, joined at its end
    cdef Py_ssize_t block_size
    cdef Py_ssize_t max_header_list_size
    cdef int32_t stream_window
    cdef int32_t connection_window
    cdef uint32_t max_concurrent_streams
    cdef bint receiving
    cdef int own_goaways          # GOAWAYs the protocol asked for (goaway, close), not sent yet
    cdef long broken              # error code of a GOAWAY nghttp2 sent on its own, or -1
    cdef int fatal                # a connection error a callback decided, or -1
    cdef object callback_error
    cdef bytearray early          # frames serialized while receiving, not yet sent

    def __cinit__(self, max_concurrent_streams, stream_window, connection_window,
                  max_header_list_size):
        cdef nghttp2_option *option = NULL
        self.session = NULL
        if _callbacks is NULL:
            _make_callbacks()
        if nghttp2_option_new(&option) != 0:
            raise MemoryError()
        try:
            # Credit goes back as the app takes the body (acknowledge).
            nghttp2_option_set_no_auto_window_update(option, 1)
            # No closed streams kept for the RFC 7540 priority tree: memory stays flat.
            nghttp2_option_set_no_closed_streams(option, 1)
            # A header block may span this many CONTINUATION frames (nghttp2's default, made
            # explicit: a library without the CVE-2024-28182 fix does not load this module).
            nghttp2_option_set_max_continuations(option, 8)
            if nghttp2_session_server_new2(&self.session, _callbacks, <void *>self,
                                           option) != 0:
                raise MemoryError()
        finally:
            nghttp2_option_del(option)
        self.events = []
        self.outgoing = {}
        self.reset_after_end = {}
        self.block = []
        self.max_concurrent_streams = max_concurrent_streams
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.max_header_list_size = max_header_list_size
        self.broken = -1
        self.fatal = -1
        self.early = bytearray()

    def __dealloc__(self):
        if self.session is not NULL:
            nghttp2_session_del(self.session)
            self.session = NULL

    # --- the connection preface -------------------------------------------------------------

    cdef _submit_settings(self):
        cdef nghttp2_settings_entry iv[4]
        iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        iv[0].value = self.max_concurrent_streams
        iv[1].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
        iv[1].value = <uint32_t>self.stream_window
        iv[2].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        iv[2].value = <uint32_t>self.max_header_list_size
        iv[3].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH
        iv[3].value = 0
        _check(nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, iv, 4))
        if self.connection_window > 65535:
            _check(nghttp2_session_set_local_window_size(self.session, NGHTTP2_FLAG_NONE, 0,
                                                         self.connection_window))

    def start(self):
        self._submit_settings()

    def upgrade(self, bytes settings):
        try:
            payload = urlsafe_b64decode(settings)
        except (_Base64Error, ValueError) as exc:
            raise ValueError(f"invalid HTTP2-Settings: {exc}") from exc
        rv = nghttp2_session_upgrade2(self.session, <const uint8_t *>PyBytes_AS_STRING(payload),
                                      PyBytes_GET_SIZE(payload), 0, NULL)
        if rv != 0:
            raise ValueError("invalid HTTP2-Settings: "
                             + nghttp2_strerror(<int>rv).decode("ascii"))
        self._submit_settings()

    # --- reading ----------------------------------------------------------------------------

    def receive(self, data):
        cdef const uint8_t[::1] view = data
        cdef ssize_t rv
        cdef int code
        self.receiving = True
        try:
            if view.shape[0]:
                rv = nghttp2_session_mem_recv(self.session, &view[0], view.shape[0])
            else:
                rv = 0
        finally:
            self.receiving = False
        events = self.events
        self.events = []
        if rv < 0:
            if self.fatal >= 0:
                code = self.fatal
            elif rv == NGHTTP2_ERR_FLOODED or rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
                code = ENHANCE_YOUR_CALM
            elif rv == NGHTTP2_ERR_CALLBACK_FAILURE:
                code = INTERNAL_ERROR
            else:
                code = PROTOCOL_ERROR
            error = self.callback_error
            self.callback_error = None
            message = nghttp2_strerror(<int>rv).decode("ascii")
            if error is not None:
                raise EngineError(code, f"{message}: {error!r}") from error
            if self.fatal == ENHANCE_YOUR_CALM:
                message = "header list larger than the limit"
            raise EngineError(code, message)
        # A connection error nghttp2 answered on its own queues a GOAWAY and ignores the rest:
        # serialize what is queued now, to tell its GOAWAY from the ones the protocol sends.
        early = self._serialize()
        if early:
            self.early += early
        if self.broken >= 0:
            raise EngineError(<int>self.broken, "connection error (GOAWAY sent by nghttp2)")
        return events

    # --- writing ----------------------------------------------------------------------------

    cdef bytes _serialize(self):
        cdef const uint8_t *data = NULL
        cdef ssize_t n
        pieces = None
        first = b""
        while True:
            n = nghttp2_session_mem_send(self.session, &data)
            if n <= 0:
                break
            piece = PyBytes_FromStringAndSize(<const char *>data, n)
            if pieces is not None:
                pieces.append(piece)
            elif first:
                pieces = [first, piece]
            else:
                first = piece
        if pieces is not None:
            return b"".join(pieces)
        return first

    def data_to_send(self):
        data = self._serialize()
        if self.early:
            data = bytes(self.early) + data
            self.early = bytearray()
        return data

    def send_headers(self, int32_t stream_id, list headers, bint end_stream):
        cdef Py_ssize_t count = len(headers), i
        cdef nghttp2_nv *nva
        cdef bytes name, value
        cdef int32_t rv
        if nghttp2_session_find_stream(self.session, stream_id) is NULL:
            return False
        nva = <nghttp2_nv *>malloc(count * sizeof(nghttp2_nv))
        if nva is NULL:
            raise MemoryError()
        try:
            for i in range(count):
                name, value = headers[i]
                nva[i].name = <uint8_t *>PyBytes_AS_STRING(name)
                nva[i].namelen = PyBytes_GET_SIZE(name)
                nva[i].value = <uint8_t *>PyBytes_AS_STRING(value)
                nva[i].valuelen = PyBytes_GET_SIZE(value)
                nva[i].flags = NGHTTP2_NV_FLAG_NONE
            rv = nghttp2_submit_headers(self.session,
                                        NGHTTP2_FLAG_END_STREAM if end_stream
                                        else NGHTTP2_FLAG_NONE,
                                        stream_id, NULL, nva, count, NULL)
        finally:
            free(nva)
        return rv >= 0

    def send_data(self, int32_t stream_id, data, bint end_stream):
        cdef _Outgoing out = self.outgoing.get(stream_id)
        cdef nghttp2_data_provider provider
        cdef int rv
        if type(data) is not bytes:
            data = bytes(data)
        if out is None:
            out = _Outgoing()
            self._add(out, data, end_stream)
            provider.source.ptr = NULL
            provider.read_callback = _read_body
            rv = nghttp2_submit_data(self.session, NGHTTP2_FLAG_END_STREAM, stream_id,
                                     &provider)
            if rv == 0:
                self.outgoing[stream_id] = out
            else:
                self.queued -= out.size  # the stream is closed: nothing to send
            return
        self._add(out, data, end_stream)
        if out.deferred:
            out.deferred = False
            nghttp2_session_resume_data(self.session, stream_id)

    cdef inline _add(self, _Outgoing out, bytes data, bint end_stream):
        if PyBytes_GET_SIZE(data):
            out.chunks.append(data)
            out.size += PyBytes_GET_SIZE(data)
            self.queued += PyBytes_GET_SIZE(data)
        if end_stream:
            out.end = True

    def window(self, int32_t stream_id):
        cdef int32_t stream = nghttp2_session_get_stream_remote_window_size(
            self.session, stream_id)
        cdef Py_ssize_t connection
        cdef _Outgoing out
        if stream < 0:
            return 0
        connection = nghttp2_session_get_remote_window_size(self.session) - self.queued
        out = self.outgoing.get(stream_id)
        if out is not None:
            stream -= out.size
        return stream if stream < connection else connection

    @property
    def max_frame_size(self):
        return 16384  # what nghttp2 puts in one DATA frame (without a length callback)

    def acknowledge(self, int32_t stream_id, size_t size):
        nghttp2_session_consume(self.session, stream_id, size)

    def reset(self, int32_t stream_id, uint32_t code):
        if nghttp2_session_find_stream(self.session, stream_id) is NULL:
            return
        out = self.outgoing.get(stream_id)
        if out is not None and (<_Outgoing>out).end:
            # nghttp2 sends RST_STREAM before queued DATA: the end of a finished response
            # would be lost. It goes once the last DATA frame is out.
            self.reset_after_end[stream_id] = code
            return
        nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, stream_id, code)

    def goaway(self, int32_t last_stream_id):
        if nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE, last_stream_id, 0, NULL,
                                 0) == 0:
            self.own_goaways += 1

    def close(self, uint32_t code):
        self.own_goaways += 1
        # nghttp2 sends its final GOAWAY before any queued DATA and nothing after it: what
        # the windows let go already is serialized first.
        early = self._serialize()
        if early:
            self.early += early
        nghttp2_session_terminate_session(self.session, code)

    @property
    def last_stream_id(self):
        return nghttp2_session_get_last_proc_stream_id(self.session)


cdef inline int _check(int rv) except -1:
    if rv != 0:
        raise RuntimeError("nghttp2: " + nghttp2_strerror(rv).decode("ascii"))
    return 0


cdef int _make_callbacks() except -1:
    global _callbacks
    if nghttp2_session_callbacks_new(&_callbacks) != 0:
        raise MemoryError()
    nghttp2_session_callbacks_set_on_begin_headers_callback(_callbacks, _on_begin_headers)
    nghttp2_session_callbacks_set_on_header_callback(_callbacks, _on_header)
    nghttp2_session_callbacks_set_on_frame_recv_callback(_callbacks, _on_frame_recv)
    nghttp2_session_callbacks_set_on_frame_send_callback(_callbacks, _on_frame_send)
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(_callbacks, _on_data_chunk)
    nghttp2_session_callbacks_set_on_stream_close_callback(_callbacks, _on_stream_close)
    return 0


# --- callbacks (called inside mem_recv / mem_send, with the GIL) --------------------------------

cdef int _on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame,
                           void *user_data) noexcept:
    cdef Nghttp2Engine engine = <Nghttp2Engine>user_data
    engine.block = []
    engine.cookies = None
    engine.block_size = 0
    return 0


cdef int _on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                    void *user_data) noexcept:
    cdef Nghttp2Engine engine = <Nghttp2Engine>user_data
    # Counted as SETTINGS_MAX_HEADER_LIST_SIZE counts (RFC 9113 6.5.2): a header block that
    # decodes to more (an HPACK bomb) ends the connection before it takes memory.
    engine.block_size += namelen + valuelen + 32
    if engine.block_size > engine.max_header_list_size:
        engine.fatal = ENHANCE_YOUR_CALM
        return NGHTTP2_ERR_CALLBACK_FAILURE
    try:
        if namelen == 6 and memcmp(name, b"cookie", 6) == 0:
            # Split cookie fields become one, "; " between them, as RFC 9113 8.2.3 asks before
            # they leave HTTP/2 (h2 does the same); at the end of the list, as in h2.
            if engine.cookies is None:
                engine.cookies = []
            engine.cookies.append(PyBytes_FromStringAndSize(<const char *>value, valuelen))
            return 0
        engine.block.append((PyBytes_FromStringAndSize(<const char *>name, namelen),
                             PyBytes_FromStringAndSize(<const char *>value, valuelen)))
    except BaseException as exc:
        engine.callback_error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                        void *user_data) noexcept:
    cdef Nghttp2Engine engine = <Nghttp2Engine>user_data
    cdef uint8_t kind = frame.hd.type
    cdef int32_t stream_id = frame.hd.stream_id
    cdef bint ended = frame.hd.flags & NGHTTP2_FLAG_END_STREAM
    try:
        events = engine.events
        if kind == NGHTTP2_DATA:
            if ended:
                events.append((ENDED, stream_id))
            elif frame.hd.length <= frame.data.padlen:
                events.append((EMPTY_DATA, stream_id))
        elif kind == NGHTTP2_HEADERS:
            block = engine.block
            engine.block = []
            if engine.cookies is not None:
                block.append((b"cookie", b"; ".join(engine.cookies)))
                engine.cookies = None
            if frame.headers.cat == NGHTTP2_HCAT_REQUEST:
                events.append((REQUEST, stream_id, block, ended))
            else:
                events.append((TRAILERS, stream_id, block))
            if ended:
                events.append((ENDED, stream_id))
        elif kind == NGHTTP2_RST_STREAM:
            events.append((RESET, stream_id, frame.rst_stream.error_code))
        elif kind == NGHTTP2_SETTINGS or kind == NGHTTP2_PING:
            if not frame.hd.flags & NGHTTP2_FLAG_ACK:
                events.append((CONTROL,))
        elif kind == NGHTTP2_PRIORITY:
            events.append((CONTROL,))
        elif kind == NGHTTP2_GOAWAY:
            events.append((GONE, frame.goaway.error_code))
    except BaseException as exc:
        engine.callback_error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                        const uint8_t *data, size_t length, void *user_data) noexcept:
    cdef Nghttp2Engine engine = <Nghttp2Engine>user_data
    try:
        engine.events.append((DATA, stream_id,
                              PyBytes_FromStringAndSize(<const char *>data, length), length))
    except BaseException as exc:
        engine.callback_error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                          void *user_data) noexcept:
    cdef Nghttp2Engine engine = <Nghttp2Engine>user_data
    cdef _Outgoing out
    try:
        out = engine.outgoing.pop(stream_id, None)
        if out is not None:
            engine.queued -= out.size
            out.chunks = None
        engine.reset_after_end.pop(stream_id, None)
        if engine.receiving:
            engine.events.append((CLOSED, stream_id, error_code))
    except BaseException as exc:
        engine.callback_error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
    return 0


cdef int _on_frame_send(nghttp2_session *session, const nghttp2_frame *frame,
                        void *user_data) noexcept:
    cdef Nghttp2Engine engine = <Nghttp2Engine>user_data
    cdef object code
    cdef int32_t stream_id = frame.hd.stream_id
    if frame.hd.type == NGHTTP2_DATA and frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
        if engine.reset_after_end:
            code = engine.reset_after_end.pop(stream_id, None)
            if code is not None:
                nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, code)
    elif frame.hd.type == NGHTTP2_GOAWAY:
        if engine.own_goaways:
            engine.own_goaways -= 1
        else:
            engine.broken = frame.goaway.error_code
    return 0


cdef ssize_t _read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                        size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                        void *user_data) noexcept:
    cdef Nghttp2Engine engine = <Nghttp2Engine>user_data
    cdef _Outgoing out = engine.outgoing.get(stream_id)
    cdef Py_ssize_t copied = 0, take, left
    cdef bytes chunk
    if out is None:
        data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
        return 0
    chunks = out.chunks
    while chunks and copied < <Py_ssize_t>length:
        chunk = chunks[0]
        left = PyBytes_GET_SIZE(chunk) - out.offset
        take = min(left, <Py_ssize_t>length - copied)
        memcpy(buf + copied, PyBytes_AS_STRING(chunk) + out.offset, take)
        copied += take
        if take == left:
            del chunks[0]
            out.offset = 0
        else:
            out.offset += take
    out.size -= copied
    engine.queued -= copied
    if not out.size:
        if out.end:
            data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
            del engine.outgoing[stream_id]
        elif not copied:
            out.deferred = True
            return NGHTTP2_ERR_DEFERRED
    return copied
