"""
``kyoukai-fast run`` / ``python -m kyoukai_fast run``: real servers in subprocesses on
127.0.0.1 port 0 (the CLI prints the port it got), talked to with http.client.
"""
from __future__ import annotations

import dataclasses
import signal
import socket
import ssl
import subprocess
import sys
import threading

import pytest

import kyoukai_fast
from kyoukai_fast import cli
from kyoukai_fast._config import ProtocolConfig
from procs import ROOT, Server, env, get_json, posix_only, request, run, source_tree_only

PY = sys.executable
RUN = [PY, "-m", "kyoukai_fast", "run"]


def serve(*args, pure=False, **kwargs) -> Server:
    return Server([*RUN, *args], env=env(pure=pure), **kwargs)


@pytest.fixture
def pure(impl):
    return impl.name == "python"


def expected_protocol(impl) -> str:
    cls = impl.protocol_class
    return f"{cls.__module__}.{cls.__name__}"


def test_serves_a_kyoukai_app_with_the_chosen_implementation(impl, pure):
    with serve("served_app:app", "--port", "0", pure=pure) as server:
        port = server.port()
        assert request(port, "GET", "/")[::2] == (200, b"Hello from served_app")
        info = get_json(port, "/info")
        assert info["protocol"] == expected_protocol(impl)
        assert info["server_port"] == str(port)  # the real port, not the 0 asked for
        assert get_json(port, "/users/12") == {"user_id": 12}
        status, _, body = request(port, "POST", "/echo", body=b"x" * 1000)
        assert status == 200 and b'"length": 1000' in body


def test_error_pages_through_the_cli(pure):
    with serve("served_app:app", "--port", "0", pure=pure) as server:
        port = server.port()
        assert request(port, "GET", "/no/such/page")[0] == 404
        status, headers, _ = request(port, "POST", "/users/1")
        assert status == 405 and "GET" in headers["Allow"]


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_shuts_down_gracefully(pure, signum):
    with serve("served_app:app", "--port", "0", pure=pure) as server:
        port = server.port()
        result = {}
        slow = threading.Thread(target=lambda: result.update(
            answer=request(port, "GET", "/slow?s=0.8")))
        slow.start()
        server.wait_for(r"slow request started")  # in flight
        server.signal(signum)
        slow.join(5)
        assert server.wait() == 0
        status, headers, body = result["answer"]
        assert (status, body) == (200, b"slow done")
        assert headers["Connection"] == "close"
        assert "stopped (0 connection(s) cut)" in server.drain()
        with pytest.raises(OSError):
            request(port, "GET", "/", timeout=2)


@posix_only
def test_second_signal_cuts_what_is_in_flight(pure):
    with serve("served_app:app", "--port", "0", "--shutdown-grace", "30", pure=pure) as server:
        port = server.port()
        result = {}

        def slow():
            try:
                result["answer"] = request(port, "GET", "/slow?s=30", timeout=20)
            except Exception as exc:
                result["error"] = exc

        thread = threading.Thread(target=slow)
        thread.start()
        server.wait_for(r"slow request started")
        server.signal(signal.SIGINT)
        server.wait_for(r"Shutting down gracefully")
        server.signal(signal.SIGINT)  # Ctrl-C again: do not wait 30 s
        assert server.wait(5) == 0
        thread.join(5)
        assert "error" in result
        assert "stopped (1 connection(s) cut)" in server.drain()


def test_limits_are_options(pure):
    with serve("served_app:app", "--port", "0", "--max-body-size", "100", pure=pure) as server:
        port = server.port()
        assert request(port, "POST", "/echo", body=b"x" * 100)[0] == 200
        assert request(port, "POST", "/echo", body=b"x" * 101)[0] == 413


def test_every_protocol_setting_has_an_option():
    """Options are generated from ProtocolConfig's fields: a new field gets an option."""
    parser = cli.build_parser()
    fields = dataclasses.fields(ProtocolConfig)
    argv = ["run", "served_app:app"]
    for number, field in enumerate(fields, start=1):
        value = "true" if isinstance(field.default, bool) else str(number)
        argv += [f"--{field.name.replace('_', '-')}", value]
    args = parser.parse_args(argv)
    settings = cli.protocol_settings(args)
    assert set(settings) == {f.name for f in fields}
    for number, field in enumerate(fields, start=1):
        expected = True if isinstance(field.default, bool) else type(field.default)(number)
        assert settings[field.name] == expected, field.name
    # Settings not given stay out, so the component (or config) defaults apply.
    assert cli.protocol_settings(parser.parse_args(["run", "x:y"])) == {}
    # The help of each option is the field's documentation comment.
    help_text = subprocess.run([*RUN, "--help"], capture_output=True, text=True, timeout=30,
                               env=env()).stdout
    assert "--max-body-size" in help_text and "Largest request body accepted" in help_text


@pytest.mark.parametrize("args, extra_env, expected", [
    ((), {}, "fast pipeline"),
    (("--no-fast-pipeline",), {}, r"stock pipeline \(fast_pipeline is off\)"),
    (("--fast-pipeline", "false"), {}, r"stock pipeline \(fast_pipeline is off\)"),
    ((), {"KYOUKAI_FAST_NO_PIPELINE": "yes"}, r"stock pipeline \(KYOUKAI_FAST_NO_PIPELINE"),
    ((), {"KYOUKAI_FAST_NO_PIPELINE": "0"}, "fast pipeline"),
])
def test_start_line_says_which_pipeline_serves(args, extra_env, expected):
    with Server([*RUN, "served_app:app", "--port", "0", *args],
                env={**env(), **extra_env}) as server:
        port = int(server.wait_for(
            rf"serving served_app:app on http://127\.0\.0\.1:(\d+) .*{expected}").group(1))
        assert request(port, "GET", "/")[::2] == (200, b"Hello from served_app")
        assert request(port, "GET", "/no/such/page")[0] == 404


def test_bad_pipeline_switch_is_a_clean_error():
    result = run([*RUN, "served_app:app", "--port", "0"],
                 env={**env(), "KYOUKAI_FAST_NO_PIPELINE": "perhaps"})
    assert result.returncode == 2
    assert "KYOUKAI_FAST_NO_PIPELINE" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_protocol_setting_is_a_clean_error():
    result = run([*RUN, "served_app:app", "--port", "0", "--keepalive-timeout", "-1"], env=env())
    assert result.returncode == 2
    assert "must not be negative" in result.stderr and "Traceback" not in result.stderr


@posix_only
@pytest.mark.parametrize("loop, module", [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_loop_option(loop, module):
    with serve("served_app:app", "--port", "0", "--loop", loop) as server:
        assert get_json(server.port(), "/info")["loop"].split(".")[0] == module


@pytest.mark.parametrize("target, message", [
    ("no_such_module:app", "cannot import module 'no_such_module'"),
    ("served_app:nope", "module 'served_app' has no attribute 'nope'"),
    ("served_app:asyncio", "not a kyoukai.Kyoukai app"),
    ("served_app", "expected MODULE:APP"),
    ("missing.yml", "cannot read Asphalt config 'missing.yml'"),
])
def test_wrong_target_is_a_one_line_error(target, message):
    result = run([*RUN, target, "--port", "0"], env=env())
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("kyoukai-fast: error: ")
    assert message in result.stderr


def test_port_in_use_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run([*RUN, "served_app:app", "--port", str(port)], env=env())
    assert result.returncode == 2
    assert result.stderr.strip() == (f"kyoukai-fast: error: cannot listen on 127.0.0.1:{port}: "
                                     "address already in use")


def test_missing_kyoukai_is_a_one_line_error():
    # As if Kyoukai were not installed: a None entry in sys.modules makes its import fail.
    code = ("import sys; sys.modules['kyoukai'] = None; from kyoukai_fast.cli import main; "
            "sys.exit(main(['run', 'served_app:app', '--port', '0']))")
    result = run([PY, "-c", code], env=env())
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "kyoukai-fast: error: Kyoukai is not installed" in result.stderr
    assert "pip install --no-deps kyoukai==2.2.1.post1" in result.stderr


def tls_handshake(port, cert, alpn):
    context = ssl.create_default_context(cafile=str(cert))
    context.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.selected_alpn_protocol()


def test_tls_with_alpn(certificate, pure):
    cert, key = certificate
    with serve("served_app:app", "--port", "0", "--ssl-certfile", cert, "--ssl-keyfile", key,
               pure=pure) as server:
        port = server.port(r"https://127\.0\.0\.1:(\d+)")
        assert tls_handshake(port, cert, ["h2", "http/1.1"]) == "h2"
        assert tls_handshake(port, cert, ["http/1.1"]) == "http/1.1"
        import http.client

        context = ssl.create_default_context(cafile=str(cert))
        info = get_json(port, "/info", connection_class=http.client.HTTPSConnection,
                        context=context)
        assert info["scheme"] == "https"


def test_tls_h2_reaches_the_app(certificate):
    """A client that negotiated h2 gets its answer from the app over HTTP/2."""
    import h2.config
    import h2.connection
    import h2.events

    cert, key = certificate
    with serve("served_app:app", "--port", "0", "--ssl-certfile", cert, "--ssl-keyfile",
               key) as server:
        port = server.port(r"https://127\.0\.0\.1:(\d+)")
        context = ssl.create_default_context(cafile=str(cert))
        context.set_alpn_protocols(["h2"])
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                      header_encoding="utf-8"))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            client.initiate_connection()
            client.send_headers(1, [(":method", "GET"), (":path", "/users/7"),
                                    (":scheme", "https"), (":authority", "127.0.0.1")],
                                end_stream=True)
            tls.sendall(client.data_to_send())
            status, body = None, b""
            for _ in range(100):
                data = tls.recv(65536)
                assert data, "closed before the answer"
                for event in client.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[":status"]
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        client.acknowledge_received_data(event.flow_controlled_length,
                                                         event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        assert (status, body) == ("200", b'{"user_id": 7}')
                        return
                tls.sendall(client.data_to_send())
            raise AssertionError("no end of stream 1")


@posix_only
def test_workers_run_under_gunicorn(pure):
    with serve("served_app:app", "--port", "0", "--workers", "2", pure=pure) as server:
        port = server.port()
        assert "kyoukai_fast.workers.Kyoukai" in server.wait_for(r"Using worker:").string
        server.wait_workers(2)
        pids = {get_json(port, "/info")["pid"] for _ in range(6)}
        assert server.proc.pid not in pids  # gunicorn's workers answer, not the CLI process
        result = {}
        slow = threading.Thread(target=lambda: result.update(
            answer=request(port, "GET", "/slow?s=0.8")))
        slow.start()
        server.wait_for(r"slow request started")
        server.signal(signal.SIGINT)  # Ctrl-C: graceful here, like SIGTERM
        slow.join(5)
        assert result["answer"][::2] == (200, b"slow done")
        assert server.wait(15) == 0


def test_asphalt_config_through_the_cli(pure, tmp_path):
    config = tmp_path / "served.yml"
    config.write_text("component:\n  type: kyoukai_fast.asphalt:KyoukaiComponent\n"
                      "  app: served_app:app\n  ip: 127.0.0.1\n  port: 4444\n"
                      "  max_body_size: 10\n")
    with serve(config, "--port", "0", pure=pure) as server:
        port = server.port()
        assert request(port, "GET", "/")[::2] == (200, b"Hello from served_app")
        assert get_json(port, "/info")["server_port"] == str(port)
        assert request(port, "POST", "/echo", body=b"x" * 11)[0] == 413  # the config's limit


@source_tree_only
def test_console_script_is_declared():
    """pyproject's ``kyoukai-fast`` script points at cli.main (run installed in test_install)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(ROOT / "pyproject.toml", "rb") as stream:
        project = tomllib.load(stream)["project"]
    assert project["scripts"]["kyoukai-fast"] == "kyoukai_fast.cli:main"
    assert project["entry-points"]["asphalt.components"]["kyoukai_fast"] == (
        "kyoukai_fast.asphalt:KyoukaiComponent")
    assert kyoukai_fast.__name__ == "kyoukai_fast"


@posix_only
def test_tls_under_gunicorn_workers(certificate):
    cert, key = certificate
    with serve("served_app:app", "--port", "0", "--workers", "2", "--ssl-certfile", cert,
               "--ssl-keyfile", key) as server:
        port = server.port(r"https://127\.0\.0\.1:(\d+)")
        server.wait_workers(2)
        assert tls_handshake(port, cert, ["h2", "http/1.1"]) == "h2"
        import http.client

        context = ssl.create_default_context(cafile=str(cert))
        info = get_json(port, "/info", connection_class=http.client.HTTPSConnection,
                        context=context)
        assert info["scheme"] == "https" and info["pid"] != server.proc.pid


def test_start_up_line_names_the_http2_engine():
    from fakes import EXPECT_COMPILED

    engine = kyoukai_fast.HTTP2_ENGINE
    # the compiled implementation runs HTTP/2 on libnghttp2 (bootstrap builds it), the pure
    # one on h2
    if kyoukai_fast.IMPLEMENTATION == "python":
        assert engine == "h2"
    elif EXPECT_COMPILED:
        assert engine == "nghttp2"
    assert f"HTTP/2 on ({engine})," in cli.startup_line({}, "asyncio")
    assert "HTTP/2 off," in cli.startup_line({"http2": False}, "asyncio")


def test_alpn_offers_h2_only_when_http2_is_available(monkeypatch):
    from kyoukai_fast import _serve, _upgrade

    assert _serve.alpn_protocols() == ["h2", "http/1.1"]  # Kyoukai and h2 are installed here
    assert _serve.alpn_protocols(http2=False) == ["http/1.1"]  # the http2 setting off
    monkeypatch.setattr(_upgrade, "http2_protocol_class", lambda: None)
    assert _serve.alpn_protocols() == ["http/1.1"]


def test_http2_false_offers_only_http11_over_tls(certificate):
    cert, key = certificate
    with serve("served_app:app", "--port", "0", "--ssl-certfile", cert, "--ssl-keyfile", key,
               "--http2", "false") as server:
        port = server.port(r"https://127\.0\.0\.1:(\d+)")
        assert tls_handshake(port, cert, ["h2", "http/1.1"]) == "http/1.1"


@posix_only
def test_sigterm_sends_goaway_and_lets_http2_streams_finish(pure):
    from h2client import H2Client

    with serve("served_app:app", "--port", "0", pure=pure) as server:
        port = server.port()
        with H2Client(port) as h2c:
            stream = h2c.request("/slow?s=0.8")
            server.wait_for(r"slow request started")  # in flight
            server.signal(signal.SIGTERM)
            status, _, body = h2c.response(stream)
            h2c.until_closed()
            assert (status, body) == (200, b"slow done")
            assert h2c.goaway is not None and h2c.goaway.last_stream_id == stream
            assert h2c.goaway.error_code == 0  # NO_ERROR
        assert server.wait() == 0
        assert "stopped (0 connection(s) cut)" in server.drain()
