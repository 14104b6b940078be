"""
The in-process fuzz harness shared by ``tests/test_fuzz.py`` (hypothesis) and
``fuzz/fuzz_protocol.py`` (atheris): drive one protocol object through an in-memory transport
with a scripted client, then check what it wrote.

* :func:`run_connection` plays a client script (reads of raw bytes, write flow control, a
  disconnect) against one implementation on a fresh event loop, bounded in loop iterations (never
  in wall-clock time), and returns an :class:`Outcome`.
* :func:`check_outcome` asserts the properties every outcome must have (no escaped exception, no
  hang, well-formed responses, errors close the connection).
* :func:`check_same` asserts that the compiled and pure-Python twins behaved identically.
* :func:`check_expected` asserts that valid requests got exactly their responses, in order.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gzip
import logging
import re
import time
import zlib

from werkzeug.wrappers import Request, Response

from fakes import ClosingTransport, FakeComponent
from wire import parse_responses

__all__ = ("SMALL_LIMITS", "Step", "Outcome", "FuzzApp", "run_connection", "check_outcome",
           "check_same", "check_expected", "expected_echo", "split_reads", "normalize",
           "steps_from_bytes")

#: Loop iterations given to the protocol after each client step (handlers here suspend a few
#: times at most, so a handful of iterations settles everything that is ready).
SETTLE_ROUNDS = 8
#: Loop iterations after which a connection that should have moved on counts as hung.
HANG_ROUNDS = 400


class FuzzAppError(Exception):
    """Raised on purpose by the fuzz app (``/raise`` paths): a 500 is the right answer."""


_CHUNK_TYPES = (bytes, bytearray, memoryview, lambda b: b.decode("ascii"))


def _stream_chunks(seed: int):
    # A generator body, of every item type werkzeug lets through (bytes-like or str).
    for i in range(3):
        yield _CHUNK_TYPES[(seed + i) % 4](b"part%d-%d;" % (i, seed))


def expected_echo(method: str, target: bytes, body: bytes) -> bytes:
    """The body the fuzz app answers for a request it saw."""
    return b"%s %d %08x %08x" % (method.encode("latin-1"), len(body), zlib.crc32(body),
                                 zlib.crc32(target))


def _stream_bytes(seed: int) -> bytes:
    return b"".join(bytes(c, "ascii") if isinstance(c, str) else bytes(c)
                    for c in _stream_chunks(seed))


def expected_stream(target: bytes) -> bytes:
    return _stream_bytes(zlib.crc32(target) & 0xFFFF)


class FuzzApp:
    """A Kyoukai-like app whose answer depends on the path's first segment.

    ``/async`` suspends twice, ``/stream`` answers a generator body (``/streamlen`` one with a
    declared ``Content-Length``), ``/raise`` raises, ``/empty`` answers 204, ``/none`` returns
    ``None``; everything else echoes a digest of the request (never its raw bytes, so an answer
    cannot look like a status line).
    """

    request_class = Request

    def __init__(self, loop):
        self.loop = loop
        self.seen = []      # (method, raw target, body) of every request handed to the app

    async def process_request(self, request, parent_context):
        environ = request.environ
        target = environ.get("RAW_URI", "").encode("latin-1")
        body = request.get_data()
        self.seen.append((request.method, target, body))
        path = environ.get("PATH_INFO", "")
        if path.startswith("/async"):
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        elif path.startswith("/streamlen"):
            # A streamed body whose length the app declares: sent as is, not chunked.
            seed = zlib.crc32(target) & 0xFFFF
            return Response(_stream_chunks(seed),
                            headers={"Content-Length": str(len(_stream_bytes(seed)))})
        elif path.startswith("/stream"):
            return Response(_stream_chunks(zlib.crc32(target) & 0xFFFF))
        elif path.startswith("/raise"):
            raise FuzzAppError(path)
        elif path.startswith("/empty"):
            return Response(status=204)
        elif path.startswith("/none"):
            return None
        return Response(expected_echo(request.method, target, body))


#: Limits small enough for fuzzed input to hit them all (414, 431, 413, paused reading).
SMALL_LIMITS = {"max_url_size": 40, "max_header_count": 6, "max_header_size": 100,
                "max_body_size": 1000, "max_pipelined_requests": 3}


@dataclasses.dataclass
class Step:
    """One client action: ``data`` (bytes read by the server, handed to ``data_received``),
    ``buffered`` (the same, read into the protocol's ``get_buffer`` as asyncio's transports
    do), ``pause`` / ``resume`` (the client stops / starts reading: write flow control),
    ``eof`` (the client half-closes; data after it is not sent), ``lose`` (the client
    vanishes), or ``timeout`` (the server's timeout check runs an hour later)."""

    kind: str
    data: bytes = b""


@dataclasses.dataclass
class Outcome:
    written: bytes
    closed: bool
    lost: bool
    handed_over: bool
    errors: list            # exceptions that escaped a protocol callback
    loop_errors: list       # contexts reported to the loop's exception handler
    logs: list              # (level, message, exception type name) from the kyoukai_fast logger
    seen: list              # requests the app saw
    pause_calls: int
    resume_calls: int
    hang: str               # why the connection hung, or ""
    pending_tasks: int      # tasks still not done after the connection was lost
    lost_by_client: bool
    written_at_eof: bytes   # what was written when the client half-closed (None: it did not)


class _LogCollector(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        self.records.append((record.levelname, record.getMessage(), exc_type))


def split_reads(data: bytes, sizes) -> list:
    """``data`` cut into consecutive reads of the given sizes (cycled; the rest in one read)."""
    sizes = [s for s in sizes if s > 0] or [len(data) or 1]
    reads, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        reads.append(data[pos:pos + size])
        pos += size
        i += 1
    return reads


async def _settle(rounds=SETTLE_ROUNDS):
    for _ in range(rounds):
        await asyncio.sleep(0)


async def _wait_for(condition, rounds=HANG_ROUNDS) -> bool:
    for _ in range(rounds):
        if condition():
            return True
        await asyncio.sleep(0)
    return condition()


async def _play(protocol_class, steps, out: dict, cfg):
    loop = asyncio.get_running_loop()
    loop_errors = out["loop_errors"]
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    app = FuzzApp(loop)
    out["app"] = app
    transport = ClosingTransport(loop)
    out["transport"] = transport
    component = FakeComponent(app, server_name="fuzz.test", record_signals=False, **(cfg or {}))
    protocol = protocol_class(component, None, "127.0.0.1", 8080)
    transport.owner = protocol
    errors = out["errors"]

    def call(method, *args):
        try:
            return method(*args)
        except BaseException as exc:  # noqa: BLE001 - anything escaping is a finding
            errors.append(exc)
            return None

    def send_eof():
        # (A response held up by write flow control cannot have closed the connection yet.)
        out["written_at_eof"] = None if writing_paused else bytes(transport.written)
        if not call(protocol.eof_received):
            transport.close()  # what asyncio's transports do when the protocol returns false

    call(protocol.connection_made, transport)
    writing_paused = False
    eof_sent = False
    for step in steps:
        if transport.closed or transport.handed_over or errors:
            break
        if step.kind == "pause":
            if not writing_paused:
                writing_paused = True
                call(protocol.pause_writing)
        elif step.kind == "resume":
            if writing_paused:
                writing_paused = False
                call(protocol.resume_writing)
        elif step.kind == "timeout":
            # The server's timeout check fires as if an hour had passed (keep-alive / header
            # timeouts at an arbitrary point: mid-request, mid-response, while idle).
            check = getattr(protocol, "check_timeouts", None)
            if check is not None:
                call(check, time.monotonic() + 3600.0)
        elif step.kind == "lose":
            transport.closed = True
            out["lost_by_client"] = True
            transport.lose(ConnectionResetError("client vanished"))
            break
        elif not eof_sent:  # "data", "buffered" or "eof"
            if transport.reading_paused and writing_paused:
                # A paused reader may wait for the client to read: as a real client would,
                # read (resume writing) before sending more.
                writing_paused = False
                call(protocol.resume_writing)
            if not await _wait_for(lambda: not transport.reading_paused or transport.closed):
                out["hang"] = "reading stays paused"
                break
            if transport.closed:
                break
            if step.kind == "eof":
                eof_sent = True
                send_eof()
            elif step.kind == "buffered":
                call(deliver_buffered, protocol, step.data)
            else:
                call(protocol.data_received, step.data)
        await _settle()
    if not transport.closed and not transport.handed_over and not errors and not out["hang"]:
        # The client is done sending: it reads everything (resume), then half-closes (EOF).
        if writing_paused:
            writing_paused = False
            call(protocol.resume_writing)
            await _settle()
        if not eof_sent:
            if not await _wait_for(lambda: not transport.reading_paused or transport.closed):
                out["hang"] = "reading stays paused before EOF"
            elif not transport.closed:
                send_eof()
        if not out["hang"] and not await _wait_for(
                lambda: transport.closed or transport.handed_over):
            out["hang"] = "connection stays open after the client's EOF"
    if not out["hang"] and not transport.handed_over:
        await _wait_for(lambda: transport.lost)
    await _settle()
    current = asyncio.current_task()
    out["pending_tasks"] = sum(1 for t in asyncio.all_tasks() if t is not current
                               and not t.done())


def deliver_buffered(protocol, data: bytes) -> None:
    """Deliver ``data`` as asyncio's transports do to a ``BufferedProtocol``: read into
    ``get_buffer()``, then ``buffer_updated(n)``, a buffer's length at a time; the buffer is
    overwritten afterwards, as the next read into it does."""
    start = 0
    while start < len(data):
        buffer = protocol.get_buffer(-1)
        piece = data[start:start + len(buffer)]
        buffer[:len(piece)] = piece
        protocol.buffer_updated(len(piece))
        buffer[:len(piece)] = b"\xff" * len(piece)
        start += len(piece)


def run_connection(protocol_class, steps, cfg=None) -> Outcome:
    """Play ``steps`` against a new ``protocol_class`` connection; see :class:`Step`.

    ``cfg``: the component's settings (limits, see ``ProtocolConfig``), default if ``None``.
    """
    out = {"loop_errors": [], "errors": [], "hang": "", "pending_tasks": 0,
           "lost_by_client": False, "written_at_eof": None}
    logger = logging.getLogger("kyoukai_fast")
    collector = _LogCollector()
    logger.addHandler(collector)
    old_propagate = logger.propagate
    logger.propagate = False  # the fuzz app's own errors would flood the test output
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_play(protocol_class, steps, out, cfg))
        # Whatever is still pending is cancelled, so nothing outlives the example.
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
        logger.removeHandler(collector)
        logger.propagate = old_propagate
    transport = out["transport"]
    return Outcome(
        written=bytes(transport.written),
        closed=transport.closed,
        lost=transport.lost,
        handed_over=transport.handed_over,
        errors=out["errors"],
        loop_errors=out["loop_errors"],
        logs=collector.records,
        seen=out["app"].seen,
        pause_calls=transport.pause_calls,
        resume_calls=transport.resume_calls,
        hang=out["hang"],
        pending_tasks=out["pending_tasks"],
        lost_by_client=out["lost_by_client"],
        written_at_eof=out["written_at_eof"],
    )


# --- checks -----------------------------------------------------------------------------------

_DATE = re.compile(rb"\r\nDate: [^\r\n]*")


def normalize(written: bytes) -> bytes:
    """The written bytes with every ``Date`` value blanked (the only clock-dependent part)."""
    return _DATE.sub(b"\r\nDate: -", written)


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _expected_log(record) -> bool:
    level, message, exc_type = record
    if level not in ("ERROR", "CRITICAL"):
        return True
    if exc_type == "FuzzAppError":
        return True
    return message.startswith("process_request returned no response")


def _parse_written(written: bytes, may_have_head: bool, cut_short: bool, heads=None) -> list:
    """Parse strictly; a connection the client cut may end inside its last response."""
    kwargs = {"maybe_head": may_have_head} if heads is None else {"head_requests": heads}
    try:
        return parse_responses(written, closed=True, **kwargs)
    except AssertionError:
        if not cut_short:
            raise
    starts = [m.start() for m in re.finditer(rb"HTTP/1\.[01] \d{3}", written)]
    for start in reversed(starts):
        try:
            return parse_responses(written[:start], closed=True, **kwargs)
        except AssertionError:
            continue
    raise AssertionError(f"no well-formed responses in {written[:300]!r}")


def check_outcome(outcome: Outcome, may_have_head: bool = True) -> list:
    """Assert every property an outcome must have; return the parsed final responses."""
    assert not outcome.errors, f"exception escaped the protocol: {outcome.errors[0]!r}"
    loop_errors = outcome.loop_errors
    if outcome.handed_over:
        # After an h2c hand-over the connection is Kyoukai's HTTP/2 protocol's: its own errors
        # (stock Kyoukai answers a bad client preface with GOAWAY, then still tries to send the
        # upgraded request's response: h2 ProtocolError in a loop callback) are not ours.
        loop_errors = [e for e in loop_errors if "H2KyoukaiProtocol" not in e.get("message", "")]
    assert not loop_errors, f"error reported to the loop: {loop_errors[0]}"
    assert not outcome.hang, f"hang: {outcome.hang}"
    if not outcome.handed_over:  # HTTP/2's own tasks may outlive the HTTP/1.1 part
        assert outcome.pending_tasks == 0, (
            f"{outcome.pending_tasks} task(s) outlived the connection")
    unexpected = [r for r in outcome.logs if not _expected_log(r)]
    assert not unexpected, f"unexpected error logged: {unexpected[0]}"
    if not outcome.handed_over:
        assert outcome.closed, "connection not closed at the end"
    written = outcome.written
    if outcome.handed_over:
        # HTTP/1.1 ends with the 101; HTTP/2 frames follow (written by the new protocol). The
        # responses before it are parsed on their own: a HEAD answer without a length could
        # otherwise be read as a close-delimited body running over the 101.
        switch = written.find(b"HTTP/1.1 101 ")
        if switch < 0:
            # Handed over on the HTTP/2 preface the connection opened with: everything
            # written is HTTP/2's, starting with the server's SETTINGS frame on stream 0.
            assert written[3:4] == b"\x04" and written[5:9] == bytes(4), \
                f"hand-over without 101 or HTTP/2 SETTINGS: {written[:60]!r}"
            return []
        [switching] = parse_responses(written[switch:written.index(b"\r\n\r\n", switch) + 4],
                                      head_requests=(0,))
        assert switching.status == 101, "hand-over without 101"
        written = written[:switch]
    responses = _parse_written(written, may_have_head, outcome.lost_by_client)
    # An app returning no response gets a 500 page that keeps the connection (its framing is
    # sound); every other error response closes it.
    open_errors = sum(1 for _, message, _ in outcome.logs
                      if message.startswith("process_request returned no response"))
    finals = []
    for index, response in enumerate(responses):
        last = index == len(responses) - 1
        assert response.version in ("1.0", "1.1")
        for name, _ in response.headers:
            assert _TOKEN.match(name), f"invalid header name {name!r}"
        assert response.status == 100 or response.status >= 200, response.status
        if response.status == 100:
            continue
        finals.append(response)
        connection = (response.header("Connection") or "").lower()
        closing = "close" in connection or (response.version == "1.0"
                                            and "keep-alive" not in connection)
        if response.status >= 400:
            if response.status == 500 and "close" not in connection and open_errors:
                open_errors -= 1
            else:
                # Every other error (parser, limit, app failure) ends the connection.
                assert "close" in connection, f"{response.status} without Connection: close"
        if closing:
            assert last, f"a response follows a closing {response.status} response"
            if outcome.written_at_eof is not None:
                # The connection was still open when the client half-closed: a closing
                # response complete by then should have closed it already.
                assert response.end > len(outcome.written_at_eof), (
                    f"connection left open after a closing {response.status} response")
        if response.header("Transfer-Encoding") is not None:
            assert response.header("Content-Length") is None, "both Content-Length and chunked"
    return finals


def check_same(compiled: Outcome, python: Outcome) -> None:
    """The twins wrote the same bytes and closed the same way."""
    assert normalize(compiled.written) == normalize(python.written), (
        "the implementations wrote different bytes:\n"
        f"compiled {normalize(compiled.written)[:2000]!r}\npython   "
        f"{normalize(python.written)[:2000]!r}")
    for field in ("closed", "lost", "handed_over", "seen", "pause_calls", "resume_calls",
                  "hang", "errors"):
        a, b = getattr(compiled, field), getattr(python, field)
        if field == "errors":
            a, b = [repr(e) for e in a], [repr(e) for e in b]
        assert a == b, f"{field} differs: compiled {a!r} python {b!r}"
    levels = lambda logs: [(level, message) for level, message, _ in logs]  # noqa: E731
    assert levels(compiled.logs) == levels(python.logs), "different logs"


@dataclasses.dataclass
class Expected:
    """What one generated request must be answered with."""

    method: str
    target: bytes
    body: bytes             # as the app sees it (decoded)
    version: str
    closes: bool            # the connection ends after this response
    status: int
    response_body: bytes    # the body on the wire (empty for HEAD)


def expectation(method, target: bytes, body: bytes, version: str, keep_alive: bool) -> Expected:
    """The answer of the fuzz app to one valid request."""
    path = target.split(b"?")[0]
    closes = not keep_alive
    if path.startswith(b"/raise"):
        status, payload, closes = 500, None, True
    elif path.startswith(b"/none"):
        # No response from the app: a 500 page, framed like any response (keep-alive kept).
        status, payload = 500, None
    elif path.startswith(b"/empty"):
        status, payload = 204, b""
    elif path.startswith(b"/stream"):
        status, payload = 200, expected_stream(target)
        if version == "1.0" and method != "HEAD" and not path.startswith(b"/streamlen"):
            closes = True  # no chunked coding in HTTP/1.0: the body ends with the connection
    else:
        status, payload = 200, expected_echo(method, target, body)
    if method == "HEAD" and payload is not None:
        payload = b""
    return Expected(method, target, body, version, closes, status, payload)


def check_expected(outcome: Outcome, expected: list) -> None:
    """Valid pipelined requests: exactly one response each, in order, each the right one."""
    heads = [i for i, e in enumerate(expected) if e.method == "HEAD"]
    count = len(expected)
    for i, e in enumerate(expected):
        if e.closes:
            count = i + 1
            break
    expected = expected[:count]
    assert outcome.closed
    # With the request kinds known, HEAD answers are known: parse without guessing.
    written = normalize(outcome.written)
    interim = written.count(b"HTTP/1.1 100 Continue\r\n\r\n")
    written = written.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b"")
    if outcome.lost_by_client:
        responses = _parse_written(written, False, True, heads)
    else:
        responses = parse_responses(written, head_requests=heads, closed=True)
    if outcome.lost_by_client:
        assert len(responses) <= count
    else:
        assert len(responses) == count, (
            f"{len(responses)} responses to {count} requests: {written[:600]!r}")
    for response, e in zip(responses, expected):
        assert response.version == e.version, (response.version, e)
        assert response.status == e.status, (response.status, e, response.body[:300])
        if e.response_body is not None:
            assert response.body == e.response_body, (response.body[:200], e)
    seen = [(m, t, b) for m, t, b in outcome.seen]
    assert seen == [(e.method, e.target, e.body) for e in expected][:len(seen)]
    if not outcome.lost_by_client:
        assert len(seen) == count
    assert interim <= sum(1 for e in expected if e.body)


def gzip_body(body: bytes) -> bytes:
    return gzip.compress(body, mtime=0)


def steps_from_bytes(data: bytes):
    """A client script and settings decoded from one flat byte string (for coverage-guided
    fuzzers): ``(steps, cfg)``.

    Byte 0: how many read sizes follow (1 to 4); then one byte per read size (1 to 256); then a
    byte whose bits toggle write flow control before the first reads; then a byte that, when
    below 32, makes the client vanish before that step; then a byte whose bit 0 selects
    :data:`SMALL_LIMITS`, bit 1 a timeout check and bit 2 an early EOF, both placed by its high
    bits. The rest is what the client sends.
    """
    if len(data) < 4:
        return ([Step("data", data)] if data else []), None
    count = data[0] % 4 + 1
    sizes = [b + 1 for b in data[1:1 + count]]
    rest = data[1 + count:]
    flow = rest[0] if rest else 0
    lose = rest[1] if len(rest) > 1 else 255
    extra = rest[2] if len(rest) > 2 else 0
    payload = rest[3:]
    steps = []
    for i, chunk in enumerate(split_reads(payload, sizes)):
        if i < 8 and flow >> i & 1:
            steps.append(Step("resume" if i % 2 else "pause"))
        steps.append(Step("data", chunk))
    place = extra >> 3
    if extra & 2:
        steps.insert(min(place, len(steps)), Step("timeout"))
    if extra & 4:
        steps.insert(min(place + 1, len(steps)), Step("eof"))
    if lose < 32:
        steps.insert(min(lose, len(steps)), Step("lose"))
    return steps, (SMALL_LIMITS if extra & 1 else None)
