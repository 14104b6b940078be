"""
Real Kyoukai 2.2.1.post1 apps served by ``KyoukaiComponent(app, ip, port, backend=...)`` with each
implementation as the backend, talked to with ``http.client`` over 127.0.0.1.

The component runs in the test's event loop; the blocking client runs in a worker thread
(``asyncio.to_thread``), always with a socket timeout and a bound on the whole exchange.
"""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import socket
import urllib.parse

import pytest
from kyoukai import Blueprint, Kyoukai
from kyoukai.util import as_json
from werkzeug.exceptions import Forbidden

from fakes import IMPLEMENTATIONS
from loopback import kyoukai_serving

TIMEOUT = 5.0

# Kyoukai's HTTPRequestContext passes its parent to Asphalt explicitly (deprecated there).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Explicitly passing the parent context:DeprecationWarning")


def build_app(loop) -> Kyoukai:
    app = Kyoukai("integration", loop=loop)

    @app.route("/")
    async def index(ctx):
        return "Hello, world!"

    @app.route("/users/<int:user_id>/posts/<slug>")
    async def post(ctx, user_id, slug):
        return as_json({"user_id": user_id, "slug": slug})

    @app.route("/form", methods=["POST"])
    async def form(ctx):
        return as_json({"form": ctx.request.form.to_dict(flat=False)})

    @app.route("/raw", methods=["POST", "PUT"])
    async def raw(ctx):
        return as_json({"method": ctx.request.method,
                        "body": ctx.request.get_data().decode("utf-8"),
                        "type": ctx.request.content_type})

    @app.route("/query")
    async def query(ctx):
        return as_json({"args": ctx.request.args.to_dict(flat=False), "path": ctx.request.path})

    @app.route("/explode")
    async def explode(ctx):
        raise RuntimeError("route exploded")

    @app.route("/forbidden")
    async def forbidden(ctx):
        raise Forbidden()

    @app.errorhandler(403)
    async def handle_403(ctx, exc):
        return as_json({"handled": exc.code}, code=403)

    @app.route("/only-get", methods=["GET"])
    async def only_get(ctx):
        return "got it"

    @app.route("/slow")
    async def slow(ctx):
        await asyncio.sleep(0.01)
        return "slow"

    @app.route("/protocol")
    async def protocol(ctx):
        cls = type(ctx.environ["kyoukai.protocol"])
        return as_json({"module": cls.__module__, "name": cls.__name__})

    api = Blueprint("api", prefix="/api")

    @api.route("/status")
    async def status(ctx):
        return as_json({"ok": True, "path": ctx.request.path})

    v2 = Blueprint("v2", prefix="/v2")

    @v2.route("/items/<int:item_id>")
    async def item(ctx, item_id):
        return as_json({"item": item_id})

    api.add_child(v2)
    app.register_blueprint(api)
    return app


@contextlib.asynccontextmanager
async def serving(backend: str):
    """A started KyoukaiComponent on a free 127.0.0.1 port (retried if it got taken)."""
    async with kyoukai_serving(build_app(asyncio.get_running_loop()), backend) as (port, _):
        yield port


def exchange(port, requests):
    """Send ``(method, path, body, headers)`` requests on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    results = []
    try:
        for method, path, body, headers in requests:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            results.append((response.status, dict(response.getheaders()), response.read()))
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    finally:
        conn.close()
    return results


def run_exchange(backend, requests):
    async def main():
        async with serving(backend) as port:
            return await asyncio.wait_for(asyncio.to_thread(exchange, port, requests), 20)

    return asyncio.run(main())


@pytest.fixture
def backend(impl):
    return impl.protocol_module.__name__


def test_routes_with_params_and_keep_alive(backend):
    [(s1, h1, b1), (s2, _, b2), (s3, _, b3)] = run_exchange(backend, [
        ("GET", "/", None, None),
        ("GET", "/users/42/posts/hello-world", None, None),
        ("GET", "/slow", None, None),
    ])
    assert (s1, b1) == (200, b"Hello, world!")
    assert h1["Content-Length"] == "13"
    assert s2 == 200 and json.loads(b2) == {"user_id": 42, "slug": "hello-world"}
    assert (s3, b3) == (200, b"slow")


def test_post_bodies(backend):
    form = urllib.parse.urlencode([("a", "1"), ("a", "2"), ("name", "caf\xe9")])
    [(s1, _, b1), (s2, _, b2), (s3, _, b3)] = run_exchange(backend, [
        ("POST", "/form", form, {"Content-Type": "application/x-www-form-urlencoded"}),
        ("POST", "/raw", "raw \u2603 body".encode(), {"Content-Type": "text/plain"}),
        ("PUT", "/raw", b"", {"Content-Type": "application/octet-stream"}),
    ])
    assert s1 == 200 and json.loads(b1) == {"form": {"a": ["1", "2"], "name": ["caf\xe9"]}}
    assert s2 == 200 and json.loads(b2) == {"method": "POST", "body": "raw \u2603 body",
                                            "type": "text/plain"}
    assert s3 == 200 and json.loads(b3)["body"] == ""


def test_query_strings_and_escaped_paths(backend):
    [(s1, _, b1), (s2, _, b2)] = run_exchange(backend, [
        ("GET", "/query?x=1&x=2&y=%C3%A9&z=a+b&empty=", None, None),
        ("GET", "/users/7/posts/caf%C3%A9%20au%20lait", None, None),
    ])
    assert s1 == 200
    assert json.loads(b1) == {"args": {"x": ["1", "2"], "y": ["\xe9"], "z": ["a b"],
                                       "empty": [""]}, "path": "/query"}
    assert s2 == 200 and json.loads(b2) == {"user_id": 7, "slug": "caf\xe9 au lait"}


def test_json_response_headers(backend):
    [(status, headers, body)] = run_exchange(backend, [("GET", "/api/status", None, None)])
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")  # stock as_json sets no JSON type
    assert int(headers["Content-Length"]) == len(body)
    assert "Date" in headers and headers["Server"].startswith("Kyoukai")
    assert json.loads(body) == {"ok": True, "path": "/api/status"}


def test_errors(backend, caplog):
    [(s1, _, b1), (s2, _, b2), (s3, h3, _), (s4, _, _), (s5, _, b5)] = run_exchange(backend, [
        ("GET", "/explode", None, None),
        ("GET", "/forbidden", None, None),
        ("POST", "/only-get", b"x", None),
        ("GET", "/no/such/route", None, None),
        ("GET", "/", None, None),  # the server still serves
    ])
    assert s1 == 500
    assert "route exploded" in caplog.text  # Kyoukai logged the route's traceback
    assert s2 == 403 and json.loads(b2) == {"handled": 403}
    assert s3 == 405 and "GET" in h3.get("Allow", "")
    assert s4 == 404
    assert (s5, b5) == (200, b"Hello, world!")


def test_blueprints_with_prefixes(backend):
    [(s1, _, b1), (s2, _, b2), (s3, _, _)] = run_exchange(backend, [
        ("GET", "/api/status", None, None),
        ("GET", "/api/v2/items/9", None, None),
        ("GET", "/status", None, None),
    ])
    assert s1 == 200 and json.loads(b1)["path"] == "/api/status"
    assert s2 == 200 and json.loads(b2) == {"item": 9}
    assert s3 == 404


def test_backend_serving_is_the_chosen_one(impl, backend):
    [(status, _, body)] = run_exchange(backend, [("GET", "/protocol", None, None)])
    assert status == 200
    assert json.loads(body) == {"module": impl.protocol_module.__name__,
                                "name": impl.protocol_class.__name__}


def test_package_backend_serves_the_compiled_protocol():
    """``backend="kyoukai_fast"`` serves with the live class: the compiled one when built, unless
    ``KYOUKAI_FAST_NO_EXTENSIONS`` selects the pure-Python one."""
    import kyoukai_fast

    compiled = IMPLEMENTATIONS[0]
    assert compiled.name == "cython"
    forced_python = bool(os.environ.get("KYOUKAI_FAST_NO_EXTENSIONS"))
    if not forced_python and (os.environ.get("KYOUKAI_FAST_EXPECT_COMPILED") or compiled.available):
        expected = kyoukai_fast.KyoukaiProtocolC
        assert kyoukai_fast.IMPLEMENTATION == "cython"
        assert expected is compiled.protocol_class
    else:
        expected = kyoukai_fast.KyoukaiProtocolPy
        assert kyoukai_fast.IMPLEMENTATION == "python"
    assert kyoukai_fast.KyoukaiProtocol is expected
    [(status, _, body)] = run_exchange("kyoukai_fast", [("GET", "/protocol", None, None)])
    assert status == 200
    assert json.loads(body) == {"module": expected.__module__, "name": expected.__name__}


def h2c_get(port, path):
    """GET ``path`` through an ``Upgrade: h2c`` request; the answer comes on HTTP/2 stream 1."""
    import h2.config
    import h2.connection
    import h2.events

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding="utf-8"))
    settings = client.initiate_upgrade_connection()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n".encode()
                     + b"HTTP2-Settings: " + settings + b"\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, "closed before the 101"
            received += chunk
        head, _, data = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        sock.sendall(client.data_to_send())
        headers, body = None, b""
        while True:
            for event in client.receive_data(data) if data else ():
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                    headers = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                    body += event.data
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                    return headers, body
            pending = client.data_to_send()  # SETTINGS acks, window updates
            if pending:
                sock.sendall(pending)
            data = sock.recv(65536)
            assert data, "closed before stream 1 ended"


def test_h2c_upgrade_reaches_the_kyoukai_app(backend):
    async def main():
        async with serving(backend) as port:
            return await asyncio.wait_for(
                asyncio.to_thread(h2c_get, port, "/users/5/posts/over-h2"), 20)

    headers, body = asyncio.run(main())
    assert headers[":status"] == "200"
    assert json.loads(body) == {"user_id": 5, "slug": "over-h2"}
