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
from werkzeug.wrappers import Response

from fakes import FakeApp, FakeComponent, FakeTransport, echo, open_connection, run, settle
from h2_upgrade import collect_stream, fake_reader, h2_client, split_101, upgrade_request
from h2client import H2Client
from kyoukai_fast import ProtocolConfig, SettingError, StreamingBody
from kyoukai_fast._access_log import AccessLog, reopen_files
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
