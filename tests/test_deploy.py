"""
Deploying with the installed ``kyoukai-fast`` command, as a user does: the console script from the
virtualenv (not ``python -m``), run from a directory outside the checkout holding the user's app
(a copy of tests/deploy_app.py) and config, with no PYTHONPATH.

Covers what uvicorn and gunicorn users expect: Asphalt configs and gunicorn workers from the
app's directory, ``--version`` and the start-up lines, proxy headers (and spoofing from an
untrusted peer), Unix sockets, inherited sockets (``--fd``, systemd's LISTEN_FDS), the listen
backlog, the access log (stdout or a file), ``--root-path``, the concurrency and request-count
limits, ``--reload``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

import kyoukai_fast
from procs import TESTS, TIMEOUT, VENV_BIN, Server, get_json, posix_only, request, run

pytestmark = posix_only

KYOUKAI_FAST = VENV_BIN / "kyoukai-fast"
LISTENING = r"on http://127\.0\.0\.1:(\d+)"
CONFIG = """\
component:
  type: kyoukai_fast.asphalt:KyoukaiComponent
  app: deploy_app:app
  ip: 127.0.0.1
  port: 4444
{extra}"""


@pytest.fixture(scope="module")
def command():
    if not KYOUKAI_FAST.exists():
        pytest.fail(f"{KYOUKAI_FAST} is not installed: scripts/bootstrap.sh installs the checkout "
                    "into .venv (make venv)")
    return KYOUKAI_FAST


@pytest.fixture
def site(tmp_path):
    """The user's project: their app (and configs written by the test), outside the checkout."""
    shutil.copy(TESTS / "deploy_app.py", tmp_path / "deploy_app.py")
    return tmp_path


@pytest.fixture
def pure(impl):
    return impl.name == "python"


def user_env(pure=False, **extra) -> dict:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("PYTHONPATH", "KYOUKAI_FAST_NO_EXTENSIONS", "LISTEN_FDS",
                                "LISTEN_PID")}
    if pure:
        environment["KYOUKAI_FAST_NO_EXTENSIONS"] = "1"
    environment["PYTHONUNBUFFERED"] = "1"
    environment.update(extra)
    return environment


def serve(command, site, *args, pure=False, **kwargs) -> Server:
    return Server([command, "run", *args], env=kwargs.pop("env", None) or user_env(pure),
                  cwd=site, **kwargs)


def write_config(site, extra="") -> str:
    (site / "deploy.yml").write_text(CONFIG.format(extra=extra))
    return "deploy.yml"


def raw_exchange(connect, data: bytes) -> bytes:
    """Send ``data`` on a new connection, read until the server closes it."""
    with connect() as sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk


def get(path="/", host="127.0.0.1", headers=b"") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n".encode() + headers
            + b"\r\n")


# --- the command itself ---------------------------------------------------------------------

def test_version(command, site):
    result = run([command, "--version"], env=user_env(), cwd=site)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"kyoukai-fast {kyoukai_fast.__version__} ("), line
    # the command's environment leaves the switch unset: compiled wherever it was built
    built = importlib.util.find_spec("kyoukai_fast._protocol_c") is not None
    assert f"({'cython' if built else 'python'}, " in line and "Python" in line


def test_start_up_lines_say_where_and_how(command, site, impl, pure):
    with serve(command, site, "deploy_app:app", "--port", "0", "--loop", "asyncio",
               pure=pure) as server:
        port = server.port(r"serving deploy_app:app on http://127\.0\.0\.1:(\d+)")
        line = server.wait_for(r"kyoukai-fast: implementation ").string
        assert f"implementation {impl.name}" in line
        assert "loop asyncio" in line
        # h2 is installed here, and the compiled twin has libnghttp2's engine
        assert f"HTTP/2 on ({'nghttp2' if impl.name == 'cython' else 'h2'})" in line, line
        assert "access_log on" in line and "proxy_headers on" in line
        assert request(port)[0] == 200


# --- targets from the app's own directory ---------------------------------------------------

def test_asphalt_config_from_its_directory(command, site, pure):
    target = write_config(site, "  max_body_size: 10\n")
    with serve(command, site, target, "--port", "0", pure=pure) as server:
        port = server.port(LISTENING)
        assert request(port)[::2] == (200, b"version one")
        assert request(port, "POST", "/users/1", body=b"x" * 11)[0] == 413  # the config's limit


def test_asphalt_config_under_gunicorn_workers(command, site):
    target = write_config(site)
    with serve(command, site, target, "--port", "0", "--workers", "2") as server:
        port = server.port(LISTENING)
        workers = set(server.wait_workers(2))
        pids = {get_json(port, "/env")["pid"] for _ in range(8)}
        assert pids <= workers and server.proc.pid not in pids
    assert server.drain().count("Booting worker") == 2  # no crash-and-restart loop


def test_config_whose_app_cannot_be_imported_halts_gunicorn(command, site):
    (site / "deploy.yml").write_text(CONFIG.format(extra="").replace("deploy_app:app",
                                                                     "no_such_app:app"))
    with serve(command, site, "deploy.yml", "--port", "0", "--workers", "2") as server:
        code = server.wait(TIMEOUT)
    output = server.drain()
    assert code != 0
    assert "no_such_app" in output
    assert output.count("Booting worker") <= 2  # halted, not restarted forever


def test_config_whose_app_cannot_be_imported_is_a_one_line_error(command, site):
    (site / "deploy.yml").write_text(CONFIG.format(extra="").replace("deploy_app:app",
                                                                     "no_such_app:app"))
    result = run([command, "run", "deploy.yml", "--port", "0"], env=user_env(), cwd=site)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("kyoukai-fast: error: ")
    assert "no_such_app" in result.stderr


def test_workers_without_gunicorn_is_a_one_line_error_before_anything(command, site):
    # gunicorn made unimportable, as if not installed
    fake = site / "no_gunicorn" / "gunicorn"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'gunicorn'\", name='gunicorn')\n")
    with socket.socket() as taken:  # if it bound the port, it would say "address in use"
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # an app that does not exist: importing it first would fail with that instead
        result = run([command, "run", "not_an_app:app", "--port", port, "--workers", "2"],
                     env=user_env(PYTHONPATH=str(site / "no_gunicorn")), cwd=site)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kyoukai-fast: error: --workers needs gunicorn, which is not installed; install it "
        "with: pip install 'kyoukai-fast[gunicorn]'")


# --- proxy headers --------------------------------------------------------------------------

FORWARDED_FOR = b"X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\nX-Forwarded-Proto: https\r\n"


def env_of(response: bytes) -> dict:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    return json.loads(body)


def tcp(port):
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def test_proxy_headers_from_a_trusted_peer(command, site, pure):
    with serve(command, site, "deploy_app:app", "--port", "0", pure=pure) as server:
        connect = tcp(server.port(LISTENING))
        seen = env_of(raw_exchange(connect, get("/env", headers=FORWARDED_FOR)))
        # the nearest untrusted hop is the client; the proxy said https
        assert seen["REMOTE_ADDR"] == "203.0.113.7" and seen["wsgi.url_scheme"] == "https"
        seen = env_of(raw_exchange(connect, get("/env", headers=(
            b'Forwarded: for="[2001:db8::5]:4711";proto=https, for=127.0.0.1;proto=http\r\n'))))
        assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("2001:db8::5", "4711")
        assert seen["wsgi.url_scheme"] == "https"
        plain = env_of(raw_exchange(connect, get("/env")))
        assert plain["REMOTE_ADDR"] == "127.0.0.1" and plain["wsgi.url_scheme"] == "http"


def test_proxy_headers_from_an_untrusted_peer_are_ignored(command, site, pure):
    """A client talking to the server directly cannot pose as another address or as TLS."""
    with serve(command, site, "deploy_app:app", "--port", "0", "--forwarded-allow-ips",
               "10.1.2.3,192.168.0.0/16", pure=pure) as server:
        connect = tcp(server.port(LISTENING))
        for spoof in (FORWARDED_FOR, b"Forwarded: for=198.51.100.1;proto=https\r\n"):
            seen = env_of(raw_exchange(connect, get("/env", headers=spoof)))
            assert seen["REMOTE_ADDR"] == "127.0.0.1" and seen["wsgi.url_scheme"] == "http"


def test_proxy_headers_trust_everyone_and_can_be_switched_off(command, site):
    with serve(command, site, "deploy_app:app", "--port", "0", "--forwarded-allow-ips", "*",
               ) as server:
        seen = env_of(raw_exchange(tcp(server.port(LISTENING)), get("/env", headers=(
            b"X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n"))))
        assert seen["REMOTE_ADDR"] == "203.0.113.7"  # every hop trusted: the first
    with serve(command, site, "deploy_app:app", "--port", "0", "--no-proxy-headers") as server:
        seen = env_of(raw_exchange(tcp(server.port(LISTENING)), get("/env",
                                                                    headers=FORWARDED_FOR)))
        assert seen["REMOTE_ADDR"] == "127.0.0.1" and seen["wsgi.url_scheme"] == "http"


def test_bad_forwarded_allow_ips_is_a_one_line_error(command, site):
    result = run([command, "run", "deploy_app:app", "--port", "0", "--forwarded-allow-ips",
                  "localhost-ish"], env=user_env(), cwd=site)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "forwarded_allow_ips: 'localhost-ish' is not an IP address" in result.stderr


# --- root path ------------------------------------------------------------------------------

def test_root_path(command, site, pure):
    with serve(command, site, "deploy_app:app", "--port", "0", "--root-path", "/api/",
               pure=pure) as server:
        port = server.port(LISTENING)
        seen = get_json(port, "/api/env")
        assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/api", "/env")
        assert get_json(port, "/api/users/3") == {"user_id": 3}
        # a path outside the prefix is the app's own (a proxy that does not strip it)
        assert get_json(port, "/env")["SCRIPT_NAME"] == "/api"


# --- sockets --------------------------------------------------------------------------------

def unix(path):
    def connect():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        return sock
    return connect


def test_unix_socket(command, site, pure):
    path = site / "app.sock"
    path.write_text("")  # not a socket: refused, never deleted
    result = run([command, "run", "deploy_app:app", "--uds", path], env=user_env(), cwd=site)
    assert result.returncode == 2 and "is not a socket" in result.stderr and path.exists()
    path.unlink()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # left behind by a server that died: nobody listens on it
    stale.close()
    with serve(command, site, "deploy_app:app", "--uds", path, pure=pure) as server:
        server.wait_for(rf"serving deploy_app:app on unix:{re.escape(str(path))}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        response = raw_exchange(unix(path), get("/"))
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"version one")
        # a peer on a Unix socket is the local proxy: trusted with proxy headers
        assert env_of(raw_exchange(unix(path), get("/env", headers=FORWARDED_FOR)))[
            "REMOTE_ADDR"] == "203.0.113.7"
        # a second server on the same path while the first one listens: refused
        result = run([command, "run", "deploy_app:app", "--uds", path], env=user_env(),
                     cwd=site)
        assert result.returncode == 2 and "in use" in result.stderr
    assert not path.exists()  # removed on shutdown


def listening_socket(backlog=16):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def test_inherited_socket_fd(command, site):
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        fd = sock.fileno()
        server = Server([command, "run", "deploy_app:app", "--fd", fd], env=user_env(),
                        cwd=site, pass_fds=(fd,))
        with server:
            server.wait_for(rf"serving deploy_app:app on http://127\.0\.0\.1:{port} \(fd {fd}\)")
            assert request(port)[::2] == (200, b"version one")


def test_systemd_socket_activation(command, site):
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        fd = sock.fileno()
        # As systemd does: the socket as fd 3 (SD_LISTEN_FDS_START), LISTEN_PID the pid of the
        # process it execs
        script = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
                  "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
                  "os.execv(sys.argv[2], sys.argv[2:])")
        server = Server([sys.executable, "-c", script, fd, command, "run", "deploy_app:app"],
                        env=user_env(), cwd=site, pass_fds=(fd,))
        with server:
            server.wait_for(rf"serving deploy_app:app on http://127\.0\.0\.1:{port} "
                            r"\(systemd fd 3\)")
            assert request(port)[::2] == (200, b"version one")


def test_listen_backlog(command, site):
    with serve(command, site, "deploy_app:app", "--port", "0", "--backlog", "37") as server:
        port = server.port(LISTENING)
        listed = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                                text=True, timeout=TIMEOUT).stdout.split()
        assert listed[2] == "37", listed  # a listening socket's Send-Q is its backlog


# --- access log -----------------------------------------------------------------------------

ACCESS_LINE = (r'^127\.0\.0\.1:\d+ - "GET /users/7\?x=1 HTTP/1\.1" 200 14 '
               r"(\d+\.\d{6})s$")


def test_access_log_is_on_by_default_instead_of_kyoukais_route_line(command, site, pure):
    with serve(command, site, "deploy_app:app", "--port", "0", pure=pure) as server:
        port = server.port(LISTENING)
        assert request(port, "GET", "/users/7?x=1")[0] == 200
        took = float(server.wait_for(ACCESS_LINE).group(1))
        assert 0 <= took < TIMEOUT
        assert request(port, "GET", "/missing")[0] == 404
        server.wait_for(r'"GET /missing HTTP/1\.1" 404 \d+ ')
    assert "Kyoukai: GET" not in server.drain()  # one line per request, not two


def test_kyoukais_own_route_line_when_its_logger_is_on(command, site):
    with serve(command, site, "deploy_app:app", "--port", "0", "--no-access-log",
               "--kyoukai-log-level", "info") as server:
        port = server.port(LISTENING)
        assert request(port, "GET", "/users/7?x=1")[0] == 200
        # stock Kyoukai's log_route line, as it writes it
        server.wait_for(r"INFO Kyoukai: GET /users/7 - 200$")
        assert request(port)[0] == 200
        server.wait_for(r"INFO Kyoukai: GET / - 200$")
    assert not re.search(r'"GET / HTTP/1\.1" 200', server.drain())


def test_access_log_format(command, site):
    with serve(command, site, "deploy_app:app", "--port", "0", "--access-log-format",
               '%(m)s %(U)s %(q)s %(s)s %(B)s %({user-agent}i)s 100%%') as server:
        port = server.port(LISTENING)
        request(port, "GET", "/users/7?x=1", headers={"User-Agent": "probe/1"})
        server.wait_for(r"^GET /users/7 x=1 200 14 probe/1 100%$")


def test_access_log_as_an_asphalt_key(command, site):
    target = write_config(site, "  access_log: true\n  access_log_format: '%(s)s %(U)s'\n"
                                "  root_path: /api\n  forwarded_allow_ips: '*'\n")
    with serve(command, site, target, "--port", "0") as server:
        port = server.port(LISTENING)
        assert get_json(port, "/api/env")["SCRIPT_NAME"] == "/api"
        server.wait_for(r"^200 /env$")


def logged_lines(path, count, timeout=TIMEOUT) -> list:
    """The first ``count`` lines of the log file at ``path``, once written (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_access_log_file(command, site, pure):
    log = site / "logs" / "access.log"
    log.parent.mkdir()
    log.write_text("an older line\n")
    with serve(command, site, "deploy_app:app", "--port", "0", "--access-logfile",
               "logs/access.log", pure=pure) as server:
        port = server.port(LISTENING)
        assert request(port, "GET", "/users/7?x=1")[0] == 200
        status = raw_exchange(tcp(port), b"GET /x HTTP/1.1\r\nHost x\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 400 ")
        lines = logged_lines(log, 3)  # appended
        assert lines[0] == "an older line" and len(lines) == 3, lines
        assert re.match(ACCESS_LINE, lines[1])
        assert re.match(r'^127\.0\.0\.1:\d+ - "- - -" 400 \d+ \d+\.\d{6}s$', lines[2])
        # logrotate moves the file, then SIGUSR1 (as for gunicorn): a new file is opened
        rotated = log.with_name("access.log.1")
        log.rename(rotated)
        server.signal(signal.SIGUSR1)
        deadline = time.monotonic() + TIMEOUT
        while not (log.exists() and log.read_text()):
            assert time.monotonic() < deadline, "no new access log file after SIGUSR1"
            assert request(port, "GET", "/")[0] == 200
            time.sleep(0.1)
        assert rotated.read_text().splitlines()[:3] == lines
    assert re.search(r'"GET / HTTP/1\.1" 200 ', log.read_text())
    assert not re.search(r'"GET /users/7', server.drain())  # not on stdout as well


def test_access_log_file_under_gunicorn_workers_and_as_a_yaml_key(command, site):
    target = write_config(site, "  access_log_file: workers.log\n")
    with serve(command, site, target, "--port", "0", "--workers", "2") as server:
        port = server.port(LISTENING)
        server.wait_workers(2)
        for user in range(6):
            get_json(port, f"/users/{user}")
        lines = logged_lines(site / "workers.log", 6)
    assert sorted(re.search(r'"GET (/users/\d) ', line).group(1) for line in lines) == [
        f"/users/{user}" for user in range(6)]


def test_bad_access_log_file_is_a_one_line_error_before_binding(command, site):
    result = run([command, "run", "deploy_app:app", "--port", "0", "--access-log-file",
                  "no/such/dir/access.log"], env=user_env(), cwd=site)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"kyoukai-fast: error: invalid kyoukai_fast setting access_log_file="
        f"'no/such/dir/access.log': directory {site / 'no/such/dir'} does not exist"]


# --- limits ---------------------------------------------------------------------------------

def test_limit_concurrency(command, site, pure):
    with serve(command, site, "deploy_app:app", "--port", "0", "--limit-concurrency", "1",
               pure=pure) as server:
        port = server.port(LISTENING)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as held:
            held.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held.recv(65536).startswith(b"HTTP/1.1 200")  # kept alive: one connection
            assert request(port)[0] == 503
        deadline = time.monotonic() + TIMEOUT
        while request(port)[0] != 200:  # the held connection's close reached the server
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_limit_max_requests_stops_a_single_process(command, site):
    with serve(command, site, "deploy_app:app", "--port", "0", "--limit-max-requests",
               "3") as server:
        port = server.port(LISTENING)
        for _ in range(3):
            assert request(port)[0] == 200
        assert server.wait(TIMEOUT) == 0
    assert "stopping after 3 requests (--limit-max-requests)" in server.drain()


def test_limit_max_requests_restarts_gunicorn_workers(command, site):
    with serve(command, site, "deploy_app:app", "--port", "0", "--workers", "2",
               "--limit-max-requests", "3", "--max-requests-jitter", "0") as server:
        port = server.port(LISTENING)
        first = set(server.wait_workers(2))
        for _ in range(7):  # one of the two workers answers 4 or more
            get_json(port, "/env")
        server.wait_for(r"Autorestarting worker after current request")
        [fresh] = server.wait_workers(1)
        assert fresh not in first
        deadline = time.monotonic() + TIMEOUT
        while fresh not in {get_json(port, "/env")["pid"] for _ in range(4)}:
            assert time.monotonic() < deadline


def test_max_requests_jitter_reaches_gunicorn(monkeypatch):
    from kyoukai_fast import workers

    options = workers.gunicorn_options("x:y", [], workers=2, max_requests=1000)
    assert (options["max_requests"], options["max_requests_jitter"]) == (1000, 100)
    options = workers.gunicorn_options("x:y", [], workers=2, max_requests=1000,
                                       max_requests_jitter=7)
    assert options["max_requests_jitter"] == 7
    assert "max_requests" not in workers.gunicorn_options("x:y", [], workers=2)


# --- reload ---------------------------------------------------------------------------------

def test_reload_serves_changed_code(command, site):
    with serve(command, site, "deploy_app:app", "--port", "0", "--reload") as server:
        server.wait_for(rf"watching for changes in {re.escape(str(site))}$")
        port = server.port(LISTENING)
        assert request(port)[::2] == (200, b"version one")
        app = site / "deploy_app.py"
        app.write_text(app.read_text().replace('VERSION = "one"', 'VERSION = "two"'))
        server.wait_for(r"reloading: deploy_app\.py changed")
        assert server.port(LISTENING) == port  # the same socket, kept by the supervisor
        assert request(port)[::2] == (200, b"version two")
        (site / "notes.txt").write_text("not python: no reload")
        time.sleep(0.5)
        assert "notes.txt" not in server.drain()


def test_reload_dir(command, site):
    other = site / "templates"
    other.mkdir()
    with serve(command, site, "deploy_app:app", "--port", "0", "--reload-dir", other) as server:
        server.wait_for(rf"watching for changes in {re.escape(str(other))}$")
        server.port(LISTENING)
        (other / "page.py").write_text("# changed\n")
        server.wait_for(r"reloading: .*page\.py changed")
        server.wait_for(LISTENING)


def test_reload_needs_watchfiles(command, site):
    fake = site / "no_watchfiles" / "watchfiles"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'watchfiles'\", name='watchfiles')\n")
    result = run([command, "run", "deploy_app:app", "--reload"],
                 env=user_env(PYTHONPATH=str(site / "no_watchfiles")), cwd=site)
    assert result.returncode == 2
    assert result.stderr.strip() == ("kyoukai-fast: error: --reload needs watchfiles, which is "
                                      "not installed; install it with: "
                                      "pip install 'kyoukai-fast[reload]'")
