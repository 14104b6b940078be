# cython: language_level=3
"""
The default access line of an HTTP/1.x answer, made on the event loop: the compiled twin of
``_access_line_py`` (same API, same lines; see there). The status, the size, the duration and
the line are made in C: one call per request, no interpreter frame.
"""
import time

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItemWithError
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeLatin1
from libc.math cimport floor
from libc.stdio cimport snprintf
from libc.string cimport memchr

from ._access_log import BATCH_LINES, START_KEY, declared_length

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL

__all__ = ("AccessLine",)

cdef Py_ssize_t _BATCH_LINES = BATCH_LINES
cdef str _START_KEY = START_KEY
# "100" ... "599", by code: the status of nearly every response without a new string
cdef list _STATUS_TEXT = [str(code) for code in range(600)]


cdef inline object _get(dict environ, str key):
    cdef PyObject* found = PyDict_GetItemWithError(environ, key)
    return <object>found if found != NULL else None


cdef inline Py_ssize_t _head_end(const char* data, Py_ssize_t size):
    """Where the head's blank line ends (just past ``\\r\\n\\r\\n``), or 3 when there is none:
    as ``data.find(b"\\r\\n\\r\\n") + 4``."""
    cdef const char* at = data
    cdef const char* end = data + size
    while True:
        at = <const char*>memchr(at, b'\r', end - at)
        if at == NULL or end - at < 4:
            return 3
        if at[1] == b'\n' and at[2] == b'\r' and at[3] == b'\n':
            return at - data + 4
        at += 1


cdef inline str _status(bytes data):
    cdef const char* p = PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    if (size >= 12 and b'1' <= p[9] <= b'5' and b'0' <= p[10] <= b'9'
            and b'0' <= p[11] <= b'9'):
        return <str>_STATUS_TEXT[(p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)]
    return PyUnicode_DecodeLatin1(p + 9, max(0, min(size, 12) - 9), NULL)


cdef inline int _format_seconds(char* out, Py_ssize_t size, double seconds) noexcept:
    """``"%.6f" % seconds`` into ``out``: in integer arithmetic when the rounding is clear,
    else (a near-tie, a huge or negative duration) by snprintf, which rounds as Python does."""
    cdef double scaled = seconds * 1e6
    cdef double below
    cdef long long micros, whole, bound = 10
    cdef int length = 1, i
    if 0.0 <= seconds < 1e4 and size >= 12:
        below = floor(scaled)
        # scaled is seconds * 10**6 within 2e-6: a fraction this far from .5 rounds one way
        if not 0.49999 < scaled - below < 0.50001:
            micros = <long long>below + (scaled - below > 0.5)
            whole = micros // 1000000
            while whole >= bound:
                length += 1
                bound *= 10
            for i in range(length + 6, -1, -1):  # the digits, last first; the point
                if i == length:
                    out[i] = b'.'
                else:
                    out[i] = <char>(48 + micros % 10)
                    micros //= 10
            out[length + 7] = 0
            return length + 7
    return snprintf(out, size, "%.6f", seconds)


cdef inline bint _shows_port(object port) except -1:
    """``port and port != "0" and port.isdigit()``, for the default line's client."""
    cdef const char* p
    cdef Py_ssize_t length, i
    if type(port) is not str or not PyUnicode_IS_ASCII(port):
        return bool(port and port != "0" and port.isdigit())
    p = PyUnicode_AsUTF8AndSize(port, &length)
    if length == 0 or (length == 1 and p[0] == b'0'):
        return False
    for i in range(length):
        if not b'0' <= p[i] <= b'9':
            return False
    return True


cdef class AccessLine:
    def __init__(self, list lines not None, wake, clock=time.perf_counter):
        """``lines``: the access log's list of lines not yet handed over; ``wake()``: called
        when ``lines`` got its first line, or ``BATCH_LINES`` of them; ``clock``: the access
        log's clock, ``time.perf_counter``."""
        self.lines = lines
        self.wake = wake
        self.clock = clock

    def stamp(self, protocol, dict environ not None):
        """The request's start, on the access log's clock."""
        environ[_START_KEY] = self.clock()

    def log(self, dict environ not None, bytes data not None, bint streamed):
        """The line of the response whose bytes (head, and body unless ``streamed``) are
        ``data``, to the request of ``environ``."""
        cdef Py_ssize_t head_end = _head_end(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        cdef char took[48]
        cdef int took_length
        cdef object size
        cdef double started = 0.0, now = 0.0
        found = _get(environ, _START_KEY)
        if found is not None:
            started = found
            now = self.clock()
        took_length = _format_seconds(took, sizeof(took), now - started)
        if streamed:
            size = declared_length(data, head_end)
            size_text = str(size) if size else "-"
        elif PyBytes_GET_SIZE(data) - head_end:
            size_text = f"{PyBytes_GET_SIZE(data) - head_end}"
        else:
            size_text = "-"
        address = _get(environ, "REMOTE_ADDR")
        port = _get(environ, "REMOTE_PORT") if address else None
        request = (f'"{_get(environ, "REQUEST_METHOD")} {_get(environ, "RAW_URI")} '
                   f'{_get(environ, "SERVER_PROTOCOL")}" {_status(data)} {size_text} '
                   f'{PyUnicode_DecodeASCII(took, took_length, NULL)}s\n')
        if not address:
            line = "- - " + request
        elif _shows_port(port):
            line = f"{address}:{port} - {request}"
        else:
            line = f"{address} - {request}"
        self.lines.append(line)
        if len(self.lines) == 1 or len(self.lines) >= _BATCH_LINES:
            self.wake()
