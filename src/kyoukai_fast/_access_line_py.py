"""
The default access line of an HTTP/1.x answer, made on the event loop: the pure-Python twin of
``_access_line_c`` (same API, same lines; each HTTP/1.1 protocol twin uses its own).

:class:`AccessLine` is what the protocol calls per request when the access log has the default
format: ``stamp`` once the head is parsed, ``log`` once the response's bytes are written. It
appends the finished line to the access log's list, and wakes the access log (which schedules the
hand-over to its writer thread) only for the first line of a batch or a full one.
"""
from __future__ import annotations

import time

from ._access_log import _STATUS, BATCH_LINES, START_KEY, declared_length, default_line, status_text

__all__ = ("AccessLine",)


class AccessLine:
    __slots__ = ("lines", "wake", "clock")

    def __init__(self, lines: list, wake, clock=time.perf_counter):
        """``lines``: the access log's list of lines not yet handed over; ``wake()``: called
        when ``lines`` got its first line, or :data:`BATCH_LINES` of them; ``clock``: the access
        log's clock, ``time.perf_counter``."""
        self.lines = lines
        self.wake = wake
        self.clock = clock

    def stamp(self, protocol, environ: dict) -> None:
        """The request's start, on the access log's clock."""
        environ[START_KEY] = self.clock()

    def log(self, environ: dict, data: bytes, streamed: bool) -> None:
        """The line of the response whose bytes (head, and body unless ``streamed``) are
        ``data``, to the request of ``environ``."""
        head_end = data.find(b"\r\n\r\n") + 4
        size = declared_length(data, head_end) if streamed else len(data) - head_end
        started = environ.get(START_KEY)
        lines = self.lines
        lines.append(default_line(environ, _STATUS.get(data[9:12]) or status_text(data), size,
                                  self.clock() - started if started is not None else 0.0))
        if len(lines) == 1 or len(lines) >= BATCH_LINES:
            self.wake()
