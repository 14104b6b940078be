"""
The access log: one line per request, in gunicorn's format language.

The format takes gunicorn's ``access_log_format`` atoms, so a gunicorn format string works as it
is: ``h`` client address, ``l`` ``-``, ``u`` user (``-``), ``t`` time ``[01/Dec/2026:10:00:00
+0000]``, ``r`` request line, ``m`` method, ``U`` path, ``q`` query, ``H`` protocol, ``s`` status,
``B`` body bytes, ``b`` body bytes or ``-``, ``f`` referer, ``a`` user agent, ``T`` seconds,
``M`` milliseconds, ``D`` microseconds, ``L`` decimal seconds, ``p`` pid, ``{name}i`` a request
header, ``{name}e`` an environ value. The default,
:data:`DEFAULT_FORMAT`, is uvicorn's line with gunicorn's size and a duration::

    127.0.0.1:50312 - "GET /users/7 HTTP/1.1" 200 14 0.000213s

The format is compiled once into a ``%`` template and a tuple of the atoms it uses, so a request
formats only what the line shows. The default line of an HTTP/1.x answer is made by the protocol
twin's own ``AccessLine`` (``_access_line_c``, compiled, or ``_access_line_py``), in one call per
request; HTTP/2 streams, custom formats and refusals go through :meth:`AccessLog.record`, which
makes the same lines. Lines are collected in a list on the event loop and handed, a
batch at a time (every :data:`FLUSH_INTERVAL` seconds, or at :data:`BATCH_LINES` lines), to one
writer thread that does the blocking write: a slow terminal or a full pipe never stalls the loop.
If the writer falls :data:`MAX_PENDING_BATCHES` batches behind, lines are dropped (and counted)
rather than held without bound.

The destination is standard output, or a file (``access_log_file``, gunicorn's and hypercorn's
``--access-logfile``; ``-`` is standard output), opened for appending by the writer thread: each
batch is one ``write``, so several worker processes may share one file. :func:`reopen_files`
(SIGUSR1 in the CLI and, as gunicorn's own logs, in its workers) has the writers close and open
the file again, after ``logrotate`` moved it.

A request refused before its head was complete (400, 408, 414, 431, ...) is logged too, with
``-`` for what was not known yet (:func:`refused_environ`).
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import re
import sys
import threading
import time
import weakref

__all__ = ("AccessLog", "DEFAULT_FORMAT", "STDOUT", "compile_format", "check_destination",
           "refused_environ", "reopen_files", "default_line", "status_text", "declared_length")

DEFAULT_FORMAT = '%(h)s - "%(r)s" %(s)s %(b)s %(L)ss'
#: The ``access_log_file`` that means standard output.
STDOUT = "-"
FLUSH_INTERVAL = 0.05
BATCH_LINES = 256
MAX_PENDING_BATCHES = 1024

_ATOM = re.compile(r"%\(([^)]+)\)s")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_KNOWN = set("hlutrmUqHsBbfaTMDLp")
_STATUS = {str(code).encode(): str(code) for code in range(100, 600)}
#: The environ key holding ``time.perf_counter()`` at the end of the request head.
START_KEY = "kyoukai_fast.request_start"
_logger = logging.getLogger("kyoukai_fast")
#: Queued to a writer instead of a batch: close the file and open it again.
_REOPEN = object()


def compile_format(fmt: str):
    """``(template, atoms)``: ``fmt`` with each ``%(x)s`` as ``%s``, and the atoms in order."""
    atoms, pieces, last = [], [], 0

    def literal(text):  # gunicorn's "%%" is a "%"; any "%" is doubled for the template
        return text.replace("%%", "%").replace("%", "%%")

    for match in _ATOM.finditer(fmt):
        atom = match.group(1)
        if atom not in _KNOWN and not re.fullmatch(r"\{[\w-]+\}[ie]", atom):
            raise ValueError(f"kyoukai_fast setting access_log_format: unknown atom %({atom})s")
        pieces.append(literal(fmt[last:match.start()]))
        pieces.append("%s")
        atoms.append(atom)
        last = match.end()
    pieces.append(literal(fmt[last:]))
    return "".join(pieces) + "\n", tuple(atoms)


def _clock_time(cache=[0, ""]):  # noqa: B006  (a one-second cache of the formatted time)
    now = int(time.time())
    if cache[0] != now:
        t = time.gmtime(now)
        cache[0] = now
        cache[1] = (f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                    f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000]")
    return cache[1]


def check_destination(path: str) -> None:
    """Refuse an ``access_log_file`` that cannot be written (one line, before serving).

    Nothing is created here: the writer thread opens the file when the first lines come.
    """
    if path == STDOUT:
        return
    reason = None
    if not path:
        reason = "expected a file path, or - for standard output"
    elif os.path.isdir(path):
        reason = "is a directory"
    elif os.path.exists(path):
        if not os.access(path, os.W_OK):
            reason = "is not writable"
    else:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            reason = f"directory {directory} does not exist"
        elif not os.access(directory, os.W_OK | os.X_OK):
            reason = f"directory {directory} is not writable"
    if reason is not None:
        from ._settings import SettingError

        raise SettingError(f"invalid kyoukai_fast setting access_log_file={path!r}: {reason}")


class _Writer(threading.Thread):
    """Writes batches of lines to a stream, or a file it opens, off the event loop."""

    def __init__(self, stream, path=None):
        super().__init__(name="kyoukai_fast access log", daemon=True)
        self.stream = stream
        self.path = path
        self.batches: queue.SimpleQueue = queue.SimpleQueue()  # str, _REOPEN or None
        self.pending = 0  # batches queued and not yet written (read racily: a bound only)

    def _open(self):
        try:
            # Latin-1 header values (a user agent) are written as they came, never refused.
            return open(self.path, "a", encoding="utf-8", errors="backslashreplace")
        except OSError as exc:
            _logger.error("access log: cannot open %s (%s); its lines are dropped", self.path,
                          exc)
            return None

    def run(self):
        stream = self.stream if self.path is None else self._open()
        try:
            while True:
                batch = self.batches.get()
                if batch is None:
                    return
                if batch is _REOPEN:
                    if stream is not None:
                        stream.close()
                    stream = self._open()
                    continue
                if stream is not None:
                    try:
                        stream.write(batch)
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                self.pending -= 1
        finally:
            if self.path is not None and stream is not None:
                stream.close()


class AccessLog:
    """One server's access log: :meth:`log` on the event loop, writes in a thread."""

    def __init__(self, fmt: str = DEFAULT_FORMAT, stream=None, path: str = STDOUT):
        """``stream``: where lines go (default ``sys.stdout``), unless ``path`` names a file."""
        self.template, self.atoms = compile_format(fmt)
        self.default = self.template == compile_format(DEFAULT_FORMAT)[0]
        self.stream = stream
        self.path = None if path == STDOUT else path
        self.lines: list = []  # the same list object for the whole life of the log
        self._access_lines: dict = {}
        self.dropped = 0
        self._flush_handle = None
        self._writer = None
        self._pid = str(os.getpid())
        _live_logs.add(self)

    def log(self, environ: dict, data: bytes, streamed: bool) -> None:
        """One line for the HTTP/1.x response whose bytes (head, and body unless ``streamed``)
        are ``data``, to the request of ``environ``."""
        head_end = data.find(b"\r\n\r\n") + 4
        size = declared_length(data, head_end) if streamed else len(data) - head_end
        self.record(environ, status_text(data), size)

    def access_line(self, line_class):
        """The ``line_class`` (a twin's ``AccessLine``) that appends this log's default lines:
        ``None`` for a custom format. One per class, all sharing :attr:`lines`."""
        if not self.default:
            return None
        line = self._access_lines.get(line_class)
        if line is None:
            line = self._access_lines[line_class] = line_class(self.lines, self._wake)
        return line

    def record(self, environ: dict, status: str, size, now=time.perf_counter) -> None:
        """One line: ``status`` (``"200"``) and ``size`` (body bytes, ``None`` when not known)
        answered to the request of ``environ`` (any protocol)."""
        started = environ.get(START_KEY)
        took = now() - started if started is not None else 0.0
        if self.default:
            self.lines.append(default_line(environ, status, size, took))
        else:
            self.lines.append(self.template % tuple(
                [_value(atom, environ, status, size, took, self._pid) for atom in self.atoms]))
        self._wake()

    def _wake(self):
        """A line came: hand the batch over if it is full, else make sure it will be soon."""
        if len(self.lines) >= BATCH_LINES:
            self.flush()
        elif self._flush_handle is None:
            self._schedule()

    def _schedule(self):
        try:
            import asyncio

            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_handle = loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        """Hand the lines collected so far to the writer thread."""
        handle, self._flush_handle = self._flush_handle, None
        if handle is not None:
            handle.cancel()
        if not self.lines:
            return
        lines = self.lines[:]  # the list itself stays: the twins' AccessLine append to it
        self.lines.clear()
        writer = self._writer
        if writer is None or not writer.is_alive():
            writer = self._writer = _Writer(self.stream if self.stream is not None
                                            else sys.stdout, self.path)
            writer.start()
        if writer.pending >= MAX_PENDING_BATCHES:
            self.dropped += len(lines)
            return
        writer.pending += 1
        writer.batches.put("".join(lines))

    def reopen(self) -> None:
        """Have the writer close its file and open it again (the lines not yet written go to
        the new one). Safe in a signal handler: it only queues a request."""
        writer = self._writer
        if self.path is not None and writer is not None and writer.is_alive():
            writer.batches.put(_REOPEN)

    def close(self, timeout: float = 1.0) -> None:
        """Flush, and wait (up to ``timeout``) for the writer to write everything."""
        self.flush()
        writer = self._writer
        if writer is not None and writer.is_alive():
            writer.batches.put(None)
            writer.join(timeout)
        self._writer = None


_live_logs: weakref.WeakSet[AccessLog] = weakref.WeakSet()


@atexit.register
def _close_all():
    for access_log in list(_live_logs):
        access_log.close()


def reopen_files() -> None:
    """Every access log of this process opens its file again (see :meth:`AccessLog.reopen`)."""
    for access_log in list(_live_logs):
        access_log.reopen()


def refused_environ(environ, address, port, started: float) -> dict:
    """What the access log reads for a request refused before the app saw it: ``environ`` as
    far as it was parsed (``None``: nothing was), completed with the peer's ``address`` and
    ``port``, ``-`` for the method, target and protocol of a head not complete, and
    ``started`` (``time.perf_counter()`` when its first byte came) unless the head set it."""
    environ = dict(environ) if environ is not None else {}
    if "REQUEST_METHOD" not in environ:
        environ.update(REQUEST_METHOD="-", RAW_URI="-", PATH_INFO="-", QUERY_STRING="",
                       SERVER_PROTOCOL="-")
    if environ.get("REMOTE_ADDR") is None:
        environ["REMOTE_ADDR"] = address
        environ["REMOTE_PORT"] = str(port) if port is not None else None
    environ.setdefault(START_KEY, started)
    return environ


def default_line(environ: dict, status: str, size, took: float) -> str:
    """The default format's line (:data:`DEFAULT_FORMAT`): ``status`` (``"200"``) and ``size``
    (body bytes; ``None`` or 0 is ``-``) answered in ``took`` seconds to ``environ``'s request.
    ``_access_line_c`` makes the same line in C."""
    address = environ.get("REMOTE_ADDR")
    port = environ.get("REMOTE_PORT")
    client = (address + ":" + port if port and port != "0" and port.isdigit()
              else address) if address else "-"
    return (f'{client} - "{environ.get("REQUEST_METHOD")} {environ.get("RAW_URI")} '
            f'{environ.get("SERVER_PROTOCOL")}" {status} {size or "-"} {took:.6f}s\n')


def status_text(data: bytes) -> str:
    """The status code of the HTTP/1.x response head ``data``, as text (``"200"``)."""
    return _STATUS.get(data[9:12]) or data[9:12].decode("latin-1")


def declared_length(data: bytes, head_end: int):
    """The Content-Length of the head ``data[:head_end]``; ``None`` without one."""
    head = data[:head_end].lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return None
    return int(head[at + 17:head.find(b"\r\n", at + 2)].strip() or 0)


def _client(environ) -> str:
    """``address:port``, or ``-`` for a Unix socket peer no proxy header named."""
    address = environ.get("REMOTE_ADDR")
    if not address:
        return "-"
    port = environ.get("REMOTE_PORT")
    return f"{address}:{port}" if port and port.isdigit() and port != "0" else address


def _value(atom, environ, status, size, took, pid):
    if atom == "h":
        return _client(environ)
    if atom == "r":
        return (f"{environ.get('REQUEST_METHOD')} {environ.get('RAW_URI')} "
                f"{environ.get('SERVER_PROTOCOL')}")
    if atom == "s":
        return status
    if atom == "b":
        return str(size) if size else "-"
    if atom == "B":
        return str(size or 0)
    if atom == "L":
        return f"{took:.6f}"
    if atom == "D":
        return str(int(took * 1_000_000))
    if atom == "M":
        return str(int(took * 1000))
    if atom == "T":
        return str(int(took))
    if atom == "m":
        return environ.get("REQUEST_METHOD")
    if atom == "U":
        return environ.get("PATH_INFO")
    if atom == "q":
        return environ.get("QUERY_STRING")
    if atom == "H":
        return environ.get("SERVER_PROTOCOL")
    if atom == "t":
        return _clock_time()
    if atom == "f":
        return environ.get("HTTP_REFERER", "-")
    if atom == "a":
        return environ.get("HTTP_USER_AGENT", "-")
    if atom == "p":
        return f"<{pid}>"
    if atom in ("l", "u"):
        return "-"
    name, kind = atom[1:-2], atom[-1]  # {header}i / {header}o / {variable}e
    if kind == "i":
        return environ.get("HTTP_" + name.upper().replace("-", "_"), "-")
    if kind == "e":
        return str(environ.get(name, "-"))
    return "-"
