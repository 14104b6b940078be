"""
The access log in process, on both HTTP/1.1 twins and on HTTP/2: one line per answer, also for
requests refused before or outside the app (as uvicorn and gunicorn log them), written to the
file ``access_log_file`` names. Through the installed command: tests/test_deploy.py.
"""
from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.wrappers import Response

from fakes import FakeApp, FakeComponent, FakeTransport, echo, open_connection, run, settle
from h2_upgrade import collect_stream, fake_reader, h2_client, split_101, upgrade_request
from h2client import H2Client
from kyoukai_fast import ProtocolConfig, SettingError, StreamingBody
from kyoukai_fast._access_log import (
    BATCH_LINES,
    DEFAULT_FORMAT,
    START_KEY,
    AccessLog,
    _value,
    compile_format,
    reopen_files,
)
from kyoukai_fast._config import existing_server_state
from loopback import in_thread, serving
from wire import parse_responses

#: The default line: ``client - "request line" status size seconds``.
LINE = re.compile(r'^(\S+) - "(.*)" (\d{3}) (\S+) (\d+\.\d{6})s$')


def written_lines(component) -> list:
    """The component's access log lines, once its writer wrote them all (``close``)."""
    access_log = existing_server_state(component).hooks.access_log
    access_log.close()
    with open(access_log.path, encoding="utf-8") as stream:
        return stream.read().splitlines()


def parsed(lines) -> list:
    """``(client, request line, status, size)`` of each default-format line."""
    out = []
    for line in lines:
        match = LINE.match(line)
        assert match, line
        out.append(match.groups()[:4])
    return out


@pytest.fixture
def log_file(tmp_path):
    return str(tmp_path / "access.log")


async def feed(impl, data, log_file, **cfg):
    protocol, transport, component = await open_connection(
        impl, echo, access_log=True, access_log_file=log_file, **cfg)
    protocol.data_received(data)
    await settle()
    return protocol, transport, component


CLIENT = "10.1.2.3:4444"  # the fake transport's peer

# (request bytes, status, the request line the log shows: "-" for what was not parsed yet)
REFUSALS = [
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /a HTTP/1.1\r\nHost h\r\n\r\n", "400", "- - -"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "400", "- - -"),  # TLS on a cleartext port
    (b"GET /" + b"u" * 300 + b" HTTP/1.1\r\nHost: h\r\n\r\n", "414", "- - -"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 300 + b"\r\n\r\n", "431", "- - -"),
    (b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n", "413",
     "POST /up HTTP/1.1"),
    (b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n", "501", "- - -"),
    (b"GET /v HTTP/2.0\r\nHost: h\r\n\r\n", "505", "- - -"),
    (b"GET /nohost HTTP/1.1\r\n\r\n", "400", "GET /nohost HTTP/1.1"),
]


@pytest.mark.parametrize("data, status, request_line", REFUSALS,
                         ids=["bad-header", "tls-bytes", "414", "431", "413", "501", "505",
                              "no-host"])
def test_refusals_get_one_line_each(impl, log_file, data, status, request_line):
    async def main():
        protocol, transport, component = await feed(
            impl, data, log_file, max_url_size=200, max_header_size=200, max_body_size=1000)
        assert [r.status for r in parse_responses(transport.take())][-1] == int(status)
        assert transport.closed
        return written_lines(component)

    lines = run(main())
    expected = [(CLIENT, request_line, status)]
    if data.startswith(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET"):  # answered, then refused
        expected.insert(0, (CLIENT, "GET / HTTP/1.1", "200"))
    assert [entry[:3] for entry in parsed(lines)] == expected
    sizes = [entry[3] for entry in parsed(lines)]
    assert all(size.isdigit() and int(size) > 0 for size in sizes)  # the error page's bytes


def test_timeout_408_is_logged_with_its_wait(impl, clock, log_file):
    async def main():
        protocol, transport, component = await feed(
            impl, b"GET /slow HTTP/1.1\r\nHost: h\r\n", log_file, header_timeout=5.0)
        clock.expire(protocol, 6.0)
        assert transport.take().startswith(b"HTTP/1.1 408 ")
        return written_lines(component)

    [line] = run(main())
    client, request_line, status, size, took = LINE.match(line).groups()
    assert (client, request_line, status) == (CLIENT, "- - -", "408")
    assert float(took) >= 6.0  # since the request began, on the test's clock


def test_503_at_the_concurrency_limit_is_logged(impl, log_file):
    async def main():
        component = FakeComponent(FakeApp(echo, loop=asyncio.get_running_loop()),
                                  access_log=True, access_log_file=log_file,
                                  limit_concurrency=1)
        first, second = (impl.protocol_class(component, None, "127.0.0.1", 8080)
                         for _ in range(2))
        first.connection_made(FakeTransport(peer=("10.0.0.1", 1111)))
        over = FakeTransport(peer=("10.0.0.2", 2222))
        second.connection_made(over)
        second.data_received(b"GET /busy?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        assert over.take().startswith(b"HTTP/1.1 503 ")
        return written_lines(component)

    [entry] = parsed(run(main()))
    assert entry[:3] == ("10.0.0.2:2222", "GET /busy?q=1 HTTP/1.1", "503")


def test_each_line_names_its_own_client(impl, log_file):
    """Clients interleaved on one server, one of them behind a trusted proxy: no line shows
    another request's client."""
    async def main():
        component = FakeComponent(FakeApp(echo, loop=asyncio.get_running_loop()),
                                  access_log=True, access_log_file=log_file,
                                  forwarded_allow_ips="10.0.0.1")
        peers = [("10.0.0.1", 1111), ("10.0.0.2", 2222)]
        protocols = []
        for peer in peers:
            protocol = impl.protocol_class(component, None, "127.0.0.1", 8080)
            protocol.connection_made(FakeTransport(peer=peer))
            protocols.append(protocol)
        proxied = b"GET /p HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"
        plain = b"GET /d HTTP/1.1\r\nHost: h\r\n\r\n"
        for index, data in [(0, plain), (1, plain), (0, proxied), (0, plain), (1, proxied)]:
            protocols[index].data_received(data)
            await settle()
        return written_lines(component)

    assert [entry[:2] for entry in parsed(run(main()))] == [
        ("10.0.0.1:1111", "GET /d HTTP/1.1"), ("10.0.0.2:2222", "GET /d HTTP/1.1"),
        ("203.0.113.9", "GET /p HTTP/1.1"), ("10.0.0.1:1111", "GET /d HTTP/1.1"),
        ("10.0.0.2:2222", "GET /p HTTP/1.1")]  # 10.0.0.2 is not trusted


def test_app_error_and_refusal_after_answers_keep_their_order(impl, log_file):
    def handler(request):
        if request.path == "/fail":
            raise RuntimeError("boom")
        return Response("ok")

    async def main():
        protocol, transport, component = await open_connection(
            impl, handler, access_log=True, access_log_file=log_file)
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                               b"GET /fail HTTP/1.1\r\nHost: h\r\n\r\n")
        await settle()
        return written_lines(component)

    assert [entry[1:3] for entry in parsed(run(main()))] == [("GET /a HTTP/1.1", "200"),
                                                             ("GET /fail HTTP/1.1", "500")]


def test_refusal_lines_in_a_custom_format(impl, log_file):
    async def main():
        protocol, transport, component = await feed(
            impl, b"GET /" + b"u" * 300 + b" HTTP/1.1\r\nUser-Agent: probe\r\n", log_file,
            max_url_size=200, access_log_format="%(h)s %(m)s %(U)s %(H)s %(s)s %(a)s")
        return written_lines(component)

    # the user agent is not known yet: the head stopped at the URL
    assert run(main()) == ["10.1.2.3:4444 - - - 414 -"]


@pytest.mark.parametrize("head, status, request_line", [
    (b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
     400, "GET /ws HTTP/1.1"),
    (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501, "CONNECT h:443 HTTP/1.1"),
    (b"GET /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 5000\r\n\r\n",
     413, "GET /up HTTP/1.1"),
], ids=["websocket", "connect", "h2c-body-too-large"])
def test_refused_upgrades_keep_their_request_line(impl, log_file, head, status, request_line):
    async def main():
        protocol, transport, component = await feed(impl, head, log_file, max_body_size=1000)
        assert [r.status for r in parse_responses(transport.take())] == [status]
        return written_lines(component)

    assert [entry[:3] for entry in parsed(run(main()))] == [(CLIENT, request_line, str(status))]


# --- the file destination ----------------------------------------------------------------------

def test_lines_are_appended_to_the_file(impl, log_file):
    with open(log_file, "w") as stream:
        stream.write("kept\n")

    async def main():
        protocol, transport, component = await feed(
            impl, b"GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /two HTTP/1.1\r\nHost: h\r\n\r\n",
            log_file)
        return written_lines(component)

    lines = run(main())
    assert lines[0] == "kept"
    assert [entry[1] for entry in parsed(lines[1:])] == ["GET /one HTTP/1.1", "GET /two HTTP/1.1"]


def test_bad_access_log_file_is_a_one_line_setting_error(tmp_path):
    for path, reason in [(tmp_path / "missing" / "a.log", "does not exist"),
                         (tmp_path, "is a directory"), ("", "expected a file path")]:
        with pytest.raises(SettingError) as caught:
            ProtocolConfig.from_mapping({"access_log_file": str(path)})
        message = str(caught.value)
        assert message.startswith(f"invalid kyoukai_fast setting access_log_file={str(path)!r}")
        assert reason in message and "\n" not in message
    assert not (tmp_path / "missing").exists()
    assert ProtocolConfig.from_mapping({"access_log_file": str(tmp_path / "new.log")})
    assert not (tmp_path / "new.log").exists()  # checked, not created, before serving


def test_reopen_after_the_file_was_moved(tmp_path):
    path = tmp_path / "access.log"
    access_log = AccessLog("%(s)s", path=str(path))
    access_log.record({}, "200", 1)
    access_log.flush()
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text()):  # the writer opened it and wrote
        assert time.monotonic() < deadline
        time.sleep(0.01)
    path.rename(tmp_path / "access.log.1")
    reopen_files()
    access_log.record({}, "404", 1)
    access_log.close()
    assert (tmp_path / "access.log.1").read_text() == "200\n"
    assert path.read_text() == "404\n"


def test_a_file_switches_the_access_log_on_unless_told_otherwise(tmp_path):
    path = str(tmp_path / "a.log")
    assert ProtocolConfig.from_mapping({"access_log_file": path}).access_log is True
    assert ProtocolConfig.from_mapping({"access_log_file": path,
                                        "access_log": False}).access_log is False
    assert ProtocolConfig.from_mapping({"access_log_file": "-"}).access_log is False


def test_a_file_that_cannot_be_opened_drops_lines_and_says_so(tmp_path, caplog):
    access_log = AccessLog(path=str(tmp_path / "gone" / "a.log"))
    access_log.record({"REQUEST_METHOD": "GET"}, "200", 2)
    access_log.close()
    assert any("cannot open" in record.getMessage() for record in caplog.records)


# --- HTTP/2 ------------------------------------------------------------------------------------

async def h2_app(request):
    environ = request.environ
    if request.path == "/stream":
        return Response(StreamingBody(iter([b"ab", b"cd"])), headers={"Content-Length": "4"})
    return Response(f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']} "
                    f"{environ['SCRIPT_NAME']} {environ['PATH_INFO']}")


def h2_exchange(port, requests):
    with H2Client(port) as h2c:
        return [h2c.get(path, headers=headers)[::2] for path, headers in requests]


SPOOF = [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")]


def test_http2_proxy_headers_from_a_trusted_peer_and_access_log(impl, log_file):
    async def main():
        async with serving(impl, h2_app, access_log=True, access_log_file=log_file,
                           root_path="/api", max_header_count=10) as (port, component):
            answers = await in_thread(h2_exchange, port, [
                ("/api/who", SPOOF), ("/api/who", []), ("/api/stream", []),
                ("/many", [(f"x-h{i}", "v") for i in range(20)])])
            return answers, written_lines(component)

    answers, lines = run(main())
    assert answers[:3] == [(200, b"203.0.113.7 https /api /who"),
                           (200, b"127.0.0.1 http /api /who"), (200, b"abcd")]
    assert answers[3][0] == 431
    entries = parsed(lines)
    assert [entry[1:] for entry in entries] == [
        ("GET /api/who HTTP/2", "200", str(len(answers[0][1]))),
        ("GET /api/who HTTP/2", "200", str(len(answers[1][1]))),
        ("GET /api/stream HTTP/2", "200", "4"),
        ("GET /many HTTP/2", "431", entries[3][3])]
    assert entries[0][0] == "203.0.113.7"  # the client the trusted proxy named (no port)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", entries[1][0])


def test_http2_proxy_headers_from_an_untrusted_peer_are_ignored(impl, log_file):
    async def main():
        async with serving(impl, h2_app, access_log=True, access_log_file=log_file,
                           forwarded_allow_ips="10.9.9.9") as (port, component):
            answers = await in_thread(h2_exchange, port, [
                ("/who", SPOOF), ("/who", [("forwarded", "for=198.51.100.1;proto=https")])])
            return answers, written_lines(component)

    answers, lines = run(main())
    assert answers == [(200, b"127.0.0.1 http  /who")] * 2
    assert all(entry[0].startswith("127.0.0.1:") for entry in parsed(lines))


def test_http2_503_at_the_concurrency_limit(impl, log_file):
    def client(port):
        with H2Client(port) as held:
            assert held.get("/who")[0] == 200
            with H2Client(port) as over:  # opened while the first one is held open
                return over.get("/over")[0]

    async def main():
        async with serving(impl, h2_app, access_log=True, access_log_file=log_file,
                           limit_concurrency=1) as (port, component):
            status = await in_thread(client, port)
            return status, written_lines(component)

    status, lines = run(main())
    assert status == 503
    assert [entry[1:3] for entry in parsed(lines)] == [("GET /who HTTP/2", "200"),
                                                       ("GET /over HTTP/2", "503")]


def test_h2c_upgrade_is_logged_once_as_http2_with_its_hooks_run_once(impl, log_file):
    async def main():
        protocol, transport, component = await open_connection(
            impl, echo, access_log=True, access_log_file=log_file, root_path="/api",
            limit_concurrency=1)
        client = h2_client()
        settings = client.initiate_upgrade_connection()
        protocol.data_received(upgrade_request(settings, path="/api/up?x=1") +
                               client.data_to_send())
        head, rest = split_101(transport.take())
        assert head.startswith(b"HTTP/1.1 101 ")
        headers, body, _ = await collect_stream(client, fake_reader(transport, rest))
        assert headers[":status"] == "200"
        assert json.loads(body)["path"] == "/up"  # the prefix taken off once
        # a second stream on the upgraded connection: the connection is counted once
        stream = client.get_next_available_stream_id()
        client.send_headers(stream, [(":method", "GET"), (":path", "/api/two"),
                                     (":scheme", "http"), (":authority", "h")], end_stream=True)
        transport.protocol.data_received(client.data_to_send())
        headers, _, _ = await collect_stream(client, fake_reader(transport), stream)
        assert headers[":status"] == "200"
        return written_lines(component)

    assert [entry[:3] for entry in parsed(run(main()))] == [
        (CLIENT, "GET /api/up?x=1 HTTP/2", "200"), (CLIENT, "GET /api/two HTTP/2", "200")]


# --- the default line, made by each twin's AccessLine ---------------------------------------

def reference_line(environ, data, streamed, took):
    """The line through the gunicorn-atoms path (``%(h)s``, ``%(r)s``, ... one by one), with the
    status and size read off ``data`` here: what each twin's one-call line must equal."""
    template, atoms = compile_format(DEFAULT_FORMAT)
    head, _, body = data.partition(b"\r\n\r\n")
    if streamed:
        found = re.search(rb"(?i)\r\ncontent-length:[ \t]*(\d+)", head)
        size = int(found.group(1)) if found else None
    else:
        size = len(body)
    status = data[9:12].decode("latin-1")
    return template % tuple(_value(atom, environ, status, size, took, 0) for atom in atoms)


ENVIRON_TEXT = st.one_of(st.none(), st.text(max_size=12),
                         st.text(st.characters(codec="latin-1"), max_size=12))
PORTS = st.one_of(ENVIRON_TEXT, st.sampled_from(["0", "", "8080", "00", "\u0661\u0662", "1x"]),
                  st.integers(0, 65535).map(str))


@st.composite
def answers(draw):
    environ = {}
    for key in ("REQUEST_METHOD", "RAW_URI", "SERVER_PROTOCOL"):
        value = draw(st.one_of(st.just(KeyError), ENVIRON_TEXT))
        if value is not KeyError:  # KeyError: the key is missing
            environ[key] = value
    if draw(st.booleans()):
        environ["REMOTE_ADDR"] = draw(st.one_of(st.none(), st.text(max_size=15)))
        environ["REMOTE_PORT"] = draw(PORTS)
    status = draw(st.one_of(
        st.integers(100, 599).map(str),
        st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), min_size=3,
                max_size=3)))
    length = draw(st.one_of(st.none(), st.integers(0, 10**12)))
    head = f"HTTP/1.1 {status} Reason\r\nServer: x\r\n".encode("latin-1")
    if length is not None:
        head += b"Content-Length: %d\r\n" % length
    body = draw(st.binary(max_size=40))
    return environ, head + b"\r\n" + body, draw(st.booleans())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=answers(), started=st.one_of(st.none(), st.floats(0, 1e7)),
       took=st.floats(0, 1e4))
def test_the_twins_line_is_the_format_atoms_line(impl, answer, started, took):
    environ, data, streamed = answer
    now = (started or 0.0) + took
    if started is not None:
        environ[START_KEY] = started
    lines = []
    impl.access_line_class(lines, lambda: None, clock=lambda: now).log(environ, data, streamed)
    took = now - started if started is not None else 0.0
    assert lines == [reference_line(environ, data, streamed, took)]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(took=st.one_of(
    st.floats(0, 1e6), st.integers(0, 10**9).map(lambda n: n / 2**20),  # ties: k / 2**7 ...
    st.sampled_from([0.0, 5e-7, 0.0078125, 9.9999995, 9999.9999995, 1e4, 123456.5])))
def test_the_twins_duration_is_pythons_rounding(impl, took):
    lines = []
    line = impl.access_line_class(lines, lambda: None, clock=lambda: took)
    line.log({START_KEY: 0.0}, b"HTTP/1.1 200 OK\r\n\r\n", False)
    assert lines[0].endswith(f" {took:.6f}s\n")


def test_the_twins_stamp_on_the_clock_and_wake_per_batch(impl):
    lines, wakes, batches = [], [], []

    def wake():  # as AccessLog._wake: a full batch is handed over
        wakes.append(len(lines))
        if len(lines) >= BATCH_LINES:
            batches.append(lines[:])
            lines.clear()

    line = impl.access_line_class(lines, wake, clock=lambda: 2.5)
    environ = {"REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "80", "REQUEST_METHOD": "GET",
               "RAW_URI": "/", "SERVER_PROTOCOL": "HTTP/1.1"}
    line.stamp(None, environ)
    assert environ[START_KEY] == 2.5
    for _ in range(BATCH_LINES + 1):
        line.log(environ, b"HTTP/1.1 204 No Content\r\n\r\n", False)
    # woken for the first line of a batch (to schedule its hand-over) and for a full batch
    assert wakes == [1, BATCH_LINES, 1]
    assert len(batches[0]) == BATCH_LINES and lines == batches[0][:1]
    assert lines[0] == '10.0.0.1:80 - "GET / HTTP/1.1" 204 - 0.000000s\n'


@pytest.mark.parametrize("cfg, stamps", [({}, True), ({"root_path": "/api"}, False),
                                         ({"limit_concurrency": 5}, False)])
def test_each_twin_logs_through_its_own_access_line(impl, log_file, cfg, stamps):
    async def main():
        protocol, transport, component = await feed(
            impl, b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n", log_file, **cfg)
        hooks = existing_server_state(component).hooks
        on_request, on_response = hooks.for_twin(impl.access_line_class)
        assert type(on_response.__self__) is impl.access_line_class
        assert (getattr(on_request, "__self__", None) is on_response.__self__) is stamps
        return written_lines(component)

    assert [entry[:3] for entry in parsed(run(main()))] == [
        (CLIENT, "GET /api/x HTTP/1.1", "200")]


def test_a_custom_format_keeps_the_generic_hooks(impl, log_file):
    async def main():
        protocol, transport, component = await feed(
            impl, b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n", log_file,
            access_log_format="%(s)s %(U)s")
        hooks = existing_server_state(component).hooks
        assert hooks.for_twin(impl.access_line_class) == (hooks.on_request, hooks.on_response)
        return written_lines(component)

    assert run(main()) == ["200 /c"]
