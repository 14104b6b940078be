"""
Kyoukai's own test suite, run with kyoukai_fast's fast request pipeline forced on.

The scenarios are those of ``test_kyoukai.py`` in Kyoukai's repository (Fuyukai/Kyoukai, at
the 2.2.x line): adding and matching a route on a testing blueprint, a basic GET, a POST echoing
its body reversed, ``wrap_response`` of 1/2/3-tuples, and the formatted bytes of a response
(with the ``Server`` and ``X-Powered-By`` headers). Requests are injected as
``kyoukai.testing.TestKyoukai.inject_request`` injects them (its WSGI environ, an empty
``SERVER_NAME``/``SERVER_PORT``, the app finalized, the testing blueprint swapped in as the root
at run time), but served by ``kyoukai_fast._pipeline.request_handler``, which must take its fast
path for these apps. The formatted response is checked with stock Kyoukai's formatter and with
both of kyoukai_fast's twins.
"""
from __future__ import annotations

import asyncio
from io import BytesIO

import pytest
from kyoukai import __version__, testing
from kyoukai.asphalt import HTTPRequestContext
from kyoukai.util import wrap_response
from kyoukai.wsgi import get_formatted_response, to_wsgi_environment
from werkzeug.wrappers import Request, Response

from kyoukai_fast._pipeline import request_handler


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def app(loop):
    app = testing.TestKyoukai("kyoukai_test", loop=loop)
    app.finalize()
    return app


def inject(app, loop, headers: dict, url: str, method: str = "GET", body: str = None):
    """``TestKyoukai.inject_request``, served by the fast pipeline."""
    handler = request_handler(app)
    assert handler.fast
    environ = to_wsgi_environment(headers, method, url, http_version="1.1",
                                  body=None if body is None else BytesIO(body.encode()))
    environ["SERVER_NAME"] = ""
    environ["SERVER_PORT"] = ""
    app.finalize()
    return loop.run_until_complete(handler(Request(environ), app.base_context))


def test_route_adding(app):
    with app.testing_bp() as bp:
        def _inner(ctx: HTTPRequestContext):
            pass

        rtt = bp.wrap_route(_inner)
        assert rtt.get_endpoint_name(bp) == bp.name + "._inner"
        rtt = bp.add_route(rtt, "/")
        bp.finalize()
        assert bp.finalized
        assert len(bp.routes) == 1
        environ = to_wsgi_environment({}, "GET", "/", "1.1")
        environ["SERVER_NAME"] = ""
        environ["SERVER_PORT"] = "4444"
        assert bp.match(environ)[0] == rtt
    assert len(app.root.routes) == 0


def test_basic_request(app, loop):
    with app.testing_bp() as bp:
        @bp.route("/")
        def root(ctx: HTTPRequestContext):
            return Response("Hello, world!")

        r = inject(app, loop, {}, "/")
        assert r.data == b"Hello, world!"


def test_basic_post(app, loop):
    with app.testing_bp() as bp:
        @bp.route("/", methods=["POST"])
        def root_body(ctx: HTTPRequestContext):
            return Response(ctx.request.data[::-1])

        r = inject(app, loop, {}, "/", body="!dlrow ,olleH", method="POST")
        assert r.data == b"Hello, world!"


def test_testing_blueprints_are_isolated(app, loop):
    """Each testing blueprint is a new root: the fast path's remembered routes follow it."""
    for text in ("first", "second"):
        with app.testing_bp() as bp:
            bp.route("/")(_answering(text))
            assert inject(app, loop, {}, "/").data == text.encode()
    assert inject(app, loop, {}, "/").status_code == 404


def _answering(text):
    def answer(ctx):
        return text
    return answer


def test_wrap_response():
    r1 = wrap_response(("Hello, world!",))
    assert r1.data == b"Hello, world!" and r1.status_code == 200
    r2 = wrap_response(("a", 204))
    assert r2.data == b"a" and r2.status_code == 204
    r3 = wrap_response(("a", 401, {"Content-Type": "application/json"}))
    assert r3.data == b"a" and r3.status_code == 401
    assert r3.headers["Content-Type"] == "application/json"


def test_get_formatted_response(app, loop, impl):
    with app.testing_bp() as bp:
        @bp.route("/")
        def root(ctx: HTTPRequestContext):
            return Response("Hello, world!")

        r = inject(app, loop, {}, "/")
    environ = to_wsgi_environment({}, "GET", "/", "1.1")
    expected = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: 13\r\nServer: Kyoukai/%s\r\nX-Powered-By: Kyoukai/%s\r\n\r\n"
                b"Hello, world!" % (__version__.encode(), __version__.encode()))
    assert get_formatted_response(r, environ) == expected
    assert impl.get_formatted_response(r, environ) == expected
