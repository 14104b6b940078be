"""
``asphalt run examples/asphalt.yml``: the real Asphalt runner serving a Kyoukai app through
kyoukai_fast on 127.0.0.1 (port 0 via ``--set``; the component logs the port it got).
"""
from __future__ import annotations

import signal
import threading

from procs import (
    ROOT,
    VENV_BIN,
    Server,
    env,
    get_json,
    posix_only,
    request,
    source_tree_only,
    status_of_announced_body,
)

pytestmark = [source_tree_only, posix_only]

EXAMPLES = ROOT / "examples"
ASPHALT = [str(VENV_BIN / "asphalt"), "run", "asphalt.yml", "--set", "component.port=0"]


def asphalt(*args, pure=False) -> Server:
    environment = env(pure=pure)
    environment["PYTHONPATH"] = f"{EXAMPLES}:{environment['PYTHONPATH']}"
    return Server([*ASPHALT, *args], env=environment, cwd=EXAMPLES)


def asphalt_port(server: Server) -> int:
    return server.port(r"kyoukai_fast serving on 127\.0\.0\.1:(\d+)")


def test_example_config_serves_the_example_app(impl):
    with asphalt(pure=impl.name == "python") as server:
        port = asphalt_port(server)
        assert request(port, "GET", "/")[::2] == (200, b"Hello, world!")
        assert get_json(port, "/api/status") == {"backend": impl.protocol_module.__name__}
        assert request(port, "GET", "/nope")[0] == 404
        status, _, body = request(port, "POST", "/echo?a=1", body=b"payload")
        assert status == 200 and b'"body": "payload"' in body


def test_config_limits_reach_the_protocol():
    # examples/asphalt.yml sets max_body_size: 1048576
    with asphalt() as server:
        port = asphalt_port(server)
        assert request(port, "POST", "/echo", body=b"x" * 1048576)[0] == 200
        assert status_of_announced_body(port, "/echo", 1048577) == 413


def test_sigterm_under_asphalt_run_is_graceful():
    with asphalt("--set", "component.app=served_app:app") as server:
        port = asphalt_port(server)
        result = {}
        slow = threading.Thread(target=lambda: result.update(
            answer=request(port, "GET", "/slow?s=0.8")))
        slow.start()
        server.wait_for(r"slow request started")
        server.signal(signal.SIGTERM)
        slow.join(10)
        status, headers, body = result["answer"]
        assert (status, body) == (200, b"slow done")
        assert headers["Connection"] == "close"
        assert server.wait(15) == 0
