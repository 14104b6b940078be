"""
Request objects: ``new_request(cls, environ)`` must give exactly what ``cls(environ, False)`` gives.

Both implementations build werkzeug's ``Request`` (and subclasses keeping its constructor) without
calling the constructor; these tests hold every attribute the constructor sets, and the properties
apps read, to werkzeug's own result for generated environs (hypothesis), check that the direct
build is really in use under the installed werkzeug, and that every other class is constructed as
usual.
"""
from __future__ import annotations

import asyncio
import io
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import EnvironHeaders, MultiDict
from werkzeug.wrappers import Request, Response

from fakes import FakeApp, FakeComponent, FakeTransport
from strategies import requests

BOUNDED = settings(max_examples=200, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])


class PlainSubclass(Request):
    """A subclass keeping werkzeug's constructor: built directly too."""

    parameter_storage_class = MultiDict


REQUEST_CLASSES = [Request, PlainSubclass]
PROPERTIES = ("path", "full_path", "url", "base_url", "url_root", "host_url", "host", "args",
              "headers", "remote_addr", "method", "scheme", "root_path", "server",
              "query_string", "shallow", "cookies", "content_type", "content_length")


def builder(impl):
    return impl.wsgi_module.build_request


def _outcome(request, name):
    try:
        value = getattr(request, name)
    except Exception as exc:  # the same error both ways counts as the same outcome
        return ("raised", type(exc))
    if isinstance(value, EnvironHeaders):
        return type(value), list(value.items())
    if isinstance(value, MultiDict):
        return type(value), list(value.items(multi=True))
    return type(value), value


def assert_same_request(ours, reference):
    assert type(ours) is type(reference)
    mine, theirs = vars(ours), vars(reference)
    assert list(mine) == list(theirs)  # same attributes, set in the same order
    for name, value in theirs.items():
        if isinstance(value, EnvironHeaders):
            assert type(mine[name]) is type(value)
            assert vars(mine[name]).keys() == vars(value).keys()
            assert mine[name].environ is value.environ
            assert mine[name]._list == value._list
        else:
            assert type(mine[name]) is type(value), name
            assert mine[name] == value, name
    assert ours.environ is reference.environ
    for name in PROPERTIES:
        assert _outcome(ours, name) == _outcome(reference, name), name


# What a server, a gateway or middleware may leave in an environ: keys set to odd values, or
# missing (None here means "remove the key").
latin1_text = st.text(st.characters(max_codepoint=255, blacklist_categories=("Cs",)), max_size=10)
overrides = st.fixed_dictionaries({}, optional={
    "SERVER_NAME": st.one_of(st.none(), st.sampled_from(
        ["127.0.0.1", "example.org", "testserver", "/run/app.sock", "[::1]"])),
    "SERVER_PORT": st.one_of(st.none(), st.sampled_from(["80", "443", "8080", "", "x", " 81 "])),
    "SCRIPT_NAME": st.one_of(st.none(), st.sampled_from(["", "/", "/app", "/app/", "//a//"]),
                             latin1_text),
    "PATH_INFO": st.one_of(st.none(), latin1_text, latin1_text.map(lambda t: "//" + t)),
    "QUERY_STRING": st.one_of(st.none(), latin1_text),
    "REQUEST_METHOD": st.one_of(st.none(), st.sampled_from(["get", "Post", "PURGE", "GET"])),
    "wsgi.url_scheme": st.one_of(st.none(), st.sampled_from(["http", "https", "ws"])),
    "REMOTE_ADDR": st.one_of(st.none(), st.sampled_from(["127.0.0.1", "::1", ""])),
})


@BOUNDED
@given(requests(), st.sampled_from(["1.0", "1.1"]), overrides, st.sampled_from(REQUEST_CLASSES))
def test_built_request_is_werkzeugs(impl, req, version, changes, cls):
    method, path, query, headers = req
    target = quote(path, safe="/%") + ("?" + query if query else "")
    environ = impl.to_wsgi_environment(headers, method, target, version, io.BytesIO(b""))
    environ["SERVER_NAME"], environ["SERVER_PORT"], environ["REMOTE_ADDR"] = (
        "testserver", "8080", "10.1.2.3")
    for key, value in changes.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    before = dict(environ)
    for build in (builder(impl), impl.wsgi_module.new_request):
        ours = build(cls, environ)
        reference = cls(environ, False)
        assert environ == before  # neither way stores anything in the environ
        assert_same_request(ours, reference)


@pytest.mark.parametrize("cls", REQUEST_CLASSES)
def test_direct_build_is_live_under_the_installed_werkzeug(impl, cls):
    # Without this the differential test above could pass by always falling back.
    from kyoukai_fast import _environ

    assert _environ.fast_request_type(cls, builder(impl)) is True


def test_a_builder_that_differs_from_werkzeug_is_refused(impl):
    from kyoukai_fast import _environ

    build = builder(impl)

    def extra_attribute(cls, environ):
        request = build(cls, environ)
        request.extra = 1
        return request

    def other_root_path(cls, environ):
        request = build(cls, environ)
        request.root_path = environ.get("SCRIPT_NAME", "")  # not stripped nor decoded
        return request

    def failing(cls, environ):
        raise AttributeError("no such attribute in this werkzeug")

    for wrong in (extra_attribute, other_root_path, failing):
        assert _environ.fast_request_type(Request, wrong) is False


class OwnInit(Request):
    calls: list = []

    def __init__(self, environ, populate_request=True, shallow=False):
        super().__init__(environ, populate_request, shallow)
        OwnInit.calls.append((environ, populate_request))


class CountingMeta(type):
    calls = 0

    def __call__(cls, *args, **kwargs):
        CountingMeta.calls += 1
        return super().__call__(*args, **kwargs)


class MetaRequest(Request, metaclass=CountingMeta):
    pass


class NotWerkzeug:
    def __init__(self, environ, populate_request):
        self.args = (environ, populate_request)


def test_other_request_classes_are_constructed(impl):
    new_request = impl.wsgi_module.new_request
    environ = impl.to_wsgi_environment([("Host", "example.com")], "GET", "/a?b=c", "1.1")

    OwnInit.calls.clear()
    request = new_request(OwnInit, environ)
    assert OwnInit.calls == [(environ, False)] and request.path == "/a"

    before = CountingMeta.calls
    request = new_request(MetaRequest, environ)
    assert CountingMeta.calls == before + 1 and type(request) is MetaRequest

    request = new_request(NotWerkzeug, environ)
    assert type(request) is NotWerkzeug and request.args == (environ, False)
    # and werkzeug's own class again after them (the compiled twin remembers the last class)
    assert_same_request(new_request(Request, environ), Request(environ, False))


@pytest.mark.parametrize("tls", [False, True])
def test_protocol_hands_the_app_werkzeugs_request(impl, tls):
    seen = []

    def handler(request):
        seen.append((request, Request(request.environ, False)))
        return Response("ok")

    class FakeSSL:
        def selected_alpn_protocol(self):
            return None

    async def main():
        app = FakeApp(handler, loop=asyncio.get_running_loop())
        protocol = impl.protocol_class(FakeComponent(app), None, "127.0.0.1", 8080)
        transport = FakeTransport(peer=("10.1.2.3", 4444), ssl_object=FakeSSL() if tls else None)
        protocol.connection_made(transport)
        protocol.data_received(
            b"GET /caf%C3%A9//x?q=%E9&a=1 HTTP/1.1\r\nHost: example.com\r\nCookie: a=b\r\n\r\n"
            b"POST //p HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi")
        for _ in range(20):
            if len(seen) == 2:
                break
            await asyncio.sleep(0)

    asyncio.run(main())
    assert len(seen) == 2
    for ours, reference in seen:
        assert_same_request(ours, reference)
    assert seen[0][0].path == "/café//x" and seen[0][0].scheme == ("https" if tls else "http")
    assert seen[1][0].path == "/p" and seen[1][0].method == "POST"


TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(TOKEN, min_size=1, max_size=6), min_size=1, max_size=12))
def test_header_names_become_their_environ_keys(impl, names):
    # Short names collide in the compiled twin's table of recent names (same length, first and
    # last bytes); each must still get its own key, request after request.
    names = [n for n in names
             if n.lower() not in ("content-length", "transfer-encoding", "cookie")]
    expected = {}
    for i, name in enumerate(names):
        if "_" in name:
            continue  # dropped by the server (test_underscore_header_names_dropped)
        key = name.upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        expected[key] = expected[key] + ", " + str(i) if key in expected else str(i)
    seen = []

    async def main():
        app = FakeApp(lambda request: seen.append(dict(request.environ)) or Response("ok"),
                      loop=asyncio.get_running_loop())
        protocol = impl.protocol_class(FakeComponent(app), None, "127.0.0.1", 8080)
        protocol.connection_made(FakeTransport())
        head = "".join(f"{name}: {i}\r\n" for i, name in enumerate(names))
        for _ in range(2):
            protocol.data_received(
                f"GET / HTTP/1.1\r\nHost: example.com\r\n{head}\r\n".encode("latin-1"))
        for _ in range(20):
            if len(seen) == 2:
                break
            await asyncio.sleep(0)

    asyncio.run(main())
    assert len(seen) == 2
    for environ in seen:
        got = {k: v for k, v in environ.items()
               if (k.startswith("HTTP_") and k != "HTTP_HOST") or k == "CONTENT_TYPE"}
        expected.pop("HTTP_HOST", None)
        got.pop("HTTP_HOST", None)
        assert got == expected


def test_per_connection_values_are_each_connections_own(impl):
    # The compiled twin remembers recent port strings, methods and valid Host values; every
    # request must still see its own connection's port, its own method, and its own Host checked.
    seen = []

    async def main():
        loop = asyncio.get_running_loop()
        protocols = []
        for port in (4444, 4444 + 256, 4444, 70000 - 65536):
            app = FakeApp(lambda request: seen.append(request) or Response("ok"), loop=loop)
            protocol = impl.protocol_class(FakeComponent(app), None, "127.0.0.1", 8080)
            transport = FakeTransport(peer=("10.1.2.3", port))
            protocol.connection_made(transport)
            protocols.append((protocol, transport))
        requests = [b"GET", b"POST", b"HEAD", b"PUT", b"PROPFIND", b"PATCH", b"MKCOL"]
        for i, method in enumerate(requests):
            protocol, _ = protocols[i % len(protocols)]
            body = b"Content-Length: 0\r\n" if method == b"POST" else b""
            protocol.data_received(method + b" /m HTTP/1.1\r\nHost: a.example\r\n" + body
                                   + b"\r\n")
        protocol, transport = protocols[1]
        protocol.data_received(b"GET /bad HTTP/1.1\r\nHost: a example\r\n\r\n")
        protocols[2][0].data_received(b"GET /again HTTP/1.1\r\nHost: a.example\r\n\r\n")
        for _ in range(20):
            await asyncio.sleep(0)
        return transport

    transport = asyncio.run(main())
    got = [(r.method, r.environ["REMOTE_PORT"], r.path) for r in seen]
    assert got == [("GET", "4444", "/m"), ("POST", "4700", "/m"), ("HEAD", "4444", "/m"),
                   ("PUT", "4464", "/m"), ("PROPFIND", "4444", "/m"), ("PATCH", "4700", "/m"),
                   ("MKCOL", "4444", "/m"), ("GET", "4444", "/again")]
    # the invalid Host after valid ones is refused
    assert bytes(transport.written).count(b"HTTP/1.1 200 OK") == 2
    assert b"HTTP/1.1 400 " in bytes(transport.written)
