"""
``gunicorn -k kyoukai_fast.workers.KyoukaiWorker served_app:app``: real gunicorn on 127.0.0.1
port 0 with two workers, checking requests, max-requests recycling, the timeout heartbeat and
graceful shutdown with a request in flight.
"""
from __future__ import annotations

import http.client
import signal
import sys
import threading
import time

import pytest

from procs import VENV_BIN, Server, env, get_json, request

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gunicorn is POSIX only")

GUNICORN = [str(VENV_BIN / "gunicorn")]


def gunicorn(*args, worker="kyoukai_fast.workers.KyoukaiWorker", pure=False, **environ) -> Server:
    extra = ["--no-control-socket"] if _has_control_socket() else []
    return Server([*GUNICORN, "-k", worker, "-b", "127.0.0.1:0", "-w", "2", *extra, *args],
                  env=env(pure=pure, **environ))


def _has_control_socket() -> bool:
    from gunicorn.config import Config

    return "control_socket_disable" in Config().settings


def listening_port(server: Server) -> int:
    return server.port(r"Listening at: http://127\.0\.0\.1:(\d+)")


def test_workers_serve_the_fast_protocol(impl):
    with gunicorn("served_app:app", pure=impl.name == "python") as server:
        port = listening_port(server)
        info = get_json(port, "/info")
        cls = impl.protocol_class
        assert info["protocol"] == f"{cls.__module__}.{cls.__name__}"
        assert info["loop"].startswith("asyncio")
        assert info["pipeline"] == "fast"
        assert info["pid"] != server.proc.pid
        assert request(port, "GET", "/")[::2] == (200, b"Hello from served_app")
        assert request(port, "GET", "/missing")[0] == 404
        assert request(port, "GET", "/explode")[0] == 500
        server.wait_for("served_app exploded on purpose")  # Kyoukai's log reaches gunicorn's
        # keep-alive: several requests on one connection
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for user in range(3):
                conn.request("GET", f"/users/{user}")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b'{"user_id": %d}' % user)
        finally:
            conn.close()


def test_uvloop_worker():
    with gunicorn("served_app:app", worker="kyoukai_fast.workers.KyoukaiUVLoopWorker") as server:
        assert get_json(listening_port(server), "/info")["loop"].startswith("uvloop")


@pytest.mark.parametrize("pipeline", ["fast", "stock"])
def test_max_requests_recycles_workers(impl, pipeline):
    """Workers restart after max_requests, and counting requests leaves the fast pipeline live
    (the stock case shows the probe in /info tells the two apart)."""
    extra = {"KYOUKAI_FAST_NO_PIPELINE": "1"} if pipeline == "stock" else {}
    with gunicorn("served_app:app", "--max-requests", "2", "--max-requests-jitter", "0",
                  pure=impl.name == "python", **extra) as server:
        port = listening_port(server)
        infos = [get_json(port, "/info") for _ in range(8)]
        cls = impl.protocol_class
        assert {info["protocol"] for info in infos} == {f"{cls.__module__}.{cls.__name__}"}
        served = [info["pid"] for info in infos]
        # Each worker answers at most 2 requests, then gunicorn replaces it.
        assert max(served.count(pid) for pid in served) <= 2
        assert len(set(served)) >= 4
        assert {info["pipeline"] for info in infos} == {pipeline}
        server.wait_for(r"Autorestarting worker after current request")


def test_timeout_restarts_a_worker_whose_loop_is_blocked():
    """The heartbeat comes from the event loop: a loop blocked past --timeout gets replaced."""
    with gunicorn("served_app:app", "--timeout", "2", "-w", "1") as server:
        port = listening_port(server)
        first = get_json(port, "/info")["pid"]
        with pytest.raises((OSError, http.client.HTTPException)):
            request(port, "GET", "/block?s=30", timeout=15)  # killed mid-request
        server.wait_for(rf"WORKER TIMEOUT \(pid:{first}\)", timeout=15)
        assert get_json(port, "/info", timeout=15)["pid"] != first


def test_sigterm_is_graceful_with_a_request_in_flight():
    with gunicorn("served_app:app", "--graceful-timeout", "10") as server:
        port = listening_port(server)
        server.wait_workers(2)
        result = {}
        slow = threading.Thread(target=lambda: result.update(
            answer=request(port, "GET", "/slow?s=1")))
        slow.start()
        server.wait_for(r"slow request started")  # in flight in a worker
        server.signal(signal.SIGTERM)
        slow.join(10)
        status, headers, body = result["answer"]
        assert (status, body) == (200, b"slow done")
        assert headers["Connection"] == "close"
        assert server.wait(15) == 0
        output = server.drain()
        assert "was sent SIGKILL" not in output and "cut at the graceful timeout" not in output


def test_graceful_timeout_cuts_what_is_left():
    with gunicorn("served_app:app", "--graceful-timeout", "1") as server:
        port = listening_port(server)
        server.wait_workers(2)
        result = {}

        def slow():
            try:
                result["answer"] = request(port, "GET", "/slow?s=20", timeout=15)
            except Exception as exc:  # the connection is cut
                result["error"] = exc

        thread = threading.Thread(target=slow)
        thread.start()
        server.wait_for(r"slow request started")
        server.signal(signal.SIGTERM)
        thread.join(15)
        assert "error" in result and "answer" not in result
        assert server.wait(15) == 0
        assert "1 connection(s) cut at the graceful timeout" in server.drain()


def test_gunicorn_limits_map_to_the_protocol():
    """gunicorn's own --limit-request-line (non-default) becomes kyoukai_fast's max_url_size."""
    with gunicorn("served_app:app", "--limit-request-line", "64") as server:
        port = listening_port(server)
        assert request(port, "GET", "/users/1")[0] == 200
        assert request(port, "GET", "/users/1?" + "x" * 100)[0] == 414


def test_gunicorn_access_logfile_is_the_access_log(tmp_path):
    """gunicorn's own --access-logfile PATH (and --access-logformat) reach the access log."""
    log = tmp_path / "access.log"
    with gunicorn("served_app:app", "--access-logfile", str(log), "--access-logformat",
                  "%(m)s %(U)s %(s)s") as server:
        port = listening_port(server)
        assert request(port, "GET", "/users/1")[0] == 200
        assert request(port, "GET", "/" + "u" * 9000)[0] == 414  # refused before the app
        deadline = time.monotonic() + 10
        while len(log.read_text().splitlines()) < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    assert log.read_text().splitlines() == ["GET /users/1 200", "- - 414"]


def test_bad_app_halts_gunicorn_with_the_reason():
    server = gunicorn("served_app:nope")
    try:
        assert server.wait(30) != 0
        assert "module 'served_app' has no attribute 'nope'" in server.drain()
    finally:
        server.stop()


def test_asphalt_config_under_gunicorn(tmp_path):
    config = tmp_path / "served.yml"
    config.write_text("component:\n  type: kyoukai_fast.asphalt:KyoukaiComponent\n"
                      "  app: served_app:app\n  max_body_size: 10\n")
    with gunicorn(str(config)) as server:
        port = listening_port(server)
        assert request(port, "GET", "/")[::2] == (200, b"Hello from served_app")
        assert request(port, "POST", "/echo", body=b"x" * 11)[0] == 413  # the config's limit
