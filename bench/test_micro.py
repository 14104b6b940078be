"""
Micro benchmarks: compiled vs pure-Python vs stock Kyoukai on the same input.

* ``environ``: ``to_wsgi_environment`` for a typical browser GET.
* ``request_object``: ``Request(environ, False)`` on that environ and the lookups an app makes
  (the stock backend hands werkzeug a ``MultiDict``, kyoukai_fast a plain ``dict``).
* ``format``: ``get_formatted_response`` of ``Response("Hello, world!")``.
* ``request_x32``: 32 requests, one after the other on one keep-alive connection, through the
  whole protocol (bytes in -> parser -> environ -> Request -> app -> response bytes out) against
  an in-memory transport. The stock backend runs each request in a task, so the driver gives the
  loop one turn per request; the kyoukai_fast protocols answer a handler that does not suspend
  inside ``data_received``.
* ``app_own_work``: the app's own work per request (the minimal app, a real Kyoukai app), the
  part of every request no backend can remove.

Every benchmark asserts its output, so a broken fast path fails here, not only in a table.
"""
from __future__ import annotations

import asyncio

import pytest
from werkzeug.wrappers import Request, Response

from _support import (
    HELLO,
    IMPLEMENTATIONS,
    REQUEST_BYTES,
    REQUEST_HEADERS,
    REQUEST_TARGET,
    HelloApp,
    app_own_work,
    bench_component,
    memory_transport,
    split_response,
    split_responses,
)


def _wsgi(name):
    return IMPLEMENTATIONS[name][1]


def _check_environ(environ):
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["PATH_INFO"] == "/hello/world"
    assert environ["QUERY_STRING"] == "name=kyoukai&page=2"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["HTTP_HOST"] == "127.0.0.1:8080"
    assert environ["HTTP_COOKIE"] == "session=abc123; theme=dark"
    assert environ["HTTP_ACCEPT_ENCODING"] == "gzip, deflate, br"
    assert environ["wsgi.url_scheme"] == "http"


@pytest.mark.benchmark(group="environ")
def test_environ(benchmark, impl_name):
    to_wsgi_environment = _wsgi(impl_name).to_wsgi_environment
    environ = benchmark(to_wsgi_environment, REQUEST_HEADERS, "GET", REQUEST_TARGET, "1.1", None)
    _check_environ(environ)


@pytest.mark.benchmark(group="request_object")
def test_request_object(benchmark, impl_name):
    environ = _wsgi(impl_name).to_wsgi_environment(REQUEST_HEADERS, "GET", REQUEST_TARGET, "1.1")
    environ["SERVER_NAME"] = "127.0.0.1"
    environ["SERVER_PORT"] = "8080"

    def build():
        request = Request(environ, False)
        return request, request.args["name"], request.headers["Host"], request.cookies["theme"]

    request, name, host, theme = benchmark(build)
    assert (name, host, theme) == ("kyoukai", "127.0.0.1:8080", "dark")
    assert request.path == "/hello/world" and request.method == "GET"


EXPECTED_HEADERS = {"content-type": "text/plain; charset=utf-8", "content-length": "13"}


@pytest.mark.benchmark(group="format")
def test_format(benchmark, impl_name):
    get_formatted_response = _wsgi(impl_name).get_formatted_response
    environ = IMPLEMENTATIONS["python"][1].to_wsgi_environment(
        REQUEST_HEADERS, "GET", REQUEST_TARGET, "1.1")
    response = Response("Hello, world!")
    data = benchmark(get_formatted_response, response, environ)
    status, headers, body, rest = split_response(data)
    assert status == "HTTP/1.1 200 OK"
    assert headers == EXPECTED_HEADERS
    assert body == HELLO and rest == b""


REQUESTS_PER_ROUND = 32


@pytest.mark.benchmark(group="request_x32")
def test_request_x32(benchmark, impl_name):
    protocol_module = IMPLEMENTATIONS[impl_name][0]
    loop = asyncio.new_event_loop()
    try:
        app = HelloApp(loop)
        component = bench_component(app)
        protocol = protocol_module.KyoukaiProtocol(component, None, "127.0.0.1", 8080)
        transport = memory_transport()
        protocol.connection_made(transport)
        data_received = protocol.data_received
        stock = impl_name == "stock"

        async def requests():
            for _ in range(REQUESTS_PER_ROUND):
                data_received(REQUEST_BYTES)
                if stock:
                    await asyncio.sleep(0)  # the loop turn that runs the stock request task

        def one_round():
            loop.run_until_complete(requests())
            return transport.take()

        data = benchmark(one_round)
        responses = split_responses(data)
        assert len(responses) == REQUESTS_PER_ROUND
        for status, headers, body in responses:
            assert status == "HTTP/1.1 200 OK"
            assert body == HELLO
            assert headers["content-type"] == "text/plain; charset=utf-8"
        assert not transport.closed
    finally:
        loop.close()


# --- The app's own work: what no backend can take away -------------------------------------
# Per request every backend runs the app. Measured here in a hot loop, a lower bound: in a
# server the caches are colder between requests (bench/load.py splits a request's server CPU
# into floor, backend and app from the same run, with its fast-c-prebuilt server).


@pytest.mark.benchmark(group="app_own_work")
@pytest.mark.parametrize("app_kind", ["minimal", "kyoukai"])
def test_app_own_work(benchmark, app_kind):
    with app_own_work(app_kind) as one_request:
        response = benchmark(one_request)
    assert response.status_code == 200 and response.get_data() == HELLO
