"""
Differential tests (hypothesis): both implementations against werkzeug's own WSGI machinery, and
against each other, byte for byte.

(a) ``to_wsgi_environment`` vs ``werkzeug.test.EnvironBuilder``: the werkzeug ``Request`` built
    on either environ sees the same method, path, arguments, headers, content type and length.
(b) ``get_formatted_response`` vs ``werkzeug.test.run_wsgi_app``: same status, same header list
    in order, same body; ``Content-Length`` added only where werkzeug left the length unknown and
    a body is allowed.
"""
from __future__ import annotations

import io
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Request, Response

from fakes import IMPLEMENTATIONS
from strategies import TCHARS, VISIBLE_LATIN1, environ_key, joined_for_werkzeug, requests

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BOUNDED = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])

# --- request side -----------------------------------------------------------------------------

def _view(request):
    return {
        "method": request.method,
        "path": request.path,
        "args": request.args.to_dict(flat=False),
        "headers": sorted((k.lower(), v) for k, v in request.headers.items()),
        "content_type": request.content_type,
        "content_length": request.content_length,
        "cookies": request.cookies.to_dict(flat=False),
    }


@BOUNDED
@given(requests())
def test_environ_matches_werkzeug(impl, req):
    method, path, query, headers = req
    target = path + ("?" + query if query else "")
    body = io.BytesIO(b"body")
    ours = impl.to_wsgi_environment(headers, method, target, "1.1", body)
    assert type(ours) is dict
    assert ours["wsgi.input"] is body
    joined = joined_for_werkzeug(headers)
    # the builder takes the body's type and length as arguments (it drops a Content-Length
    # header of its own accord)
    length = [int(v) for n, v in joined if environ_key(n) == "CONTENT_LENGTH"]
    kind = [v for n, v in joined if environ_key(n) == "CONTENT_TYPE"]
    reference = EnvironBuilder(
        path=path, method=method, query_string=query,
        headers=[(n, v) for n, v in joined
                 if environ_key(n) not in ("CONTENT_LENGTH", "CONTENT_TYPE")],
        content_length=length[0] if length else None,
        content_type=kind[0] if kind else None,
    ).get_environ()
    assert _view(Request(ours)) == _view(Request(reference))
    for key in ("REQUEST_METHOD", "QUERY_STRING", "SERVER_PROTOCOL", "SCRIPT_NAME"):
        assert ours[key] == reference[key]


@BOUNDED
@given(requests(), st.sampled_from(["1.0", "1.1"]))
def test_environ_identical_across_implementations(req, version):
    compiled, python = (i for i in IMPLEMENTATIONS)
    if not compiled.available:
        pytest.fail(f"compiled implementation missing: {compiled.error}")
    method, path, query, headers = req
    target = quote(path, safe="/%") + ("?" + query if query else "")
    environs = [impl.to_wsgi_environment(headers, method, target, version)
                for impl in (compiled, python)]
    for environ in environs:
        del environ["wsgi.input"], environ["wsgi.errors"]
    assert environs[0] == environs[1]
    assert list(environs[0]) == list(environs[1])  # same key order too


# --- response side ----------------------------------------------------------------------------

class CustomHeadersResponse(Response):
    """A subclass changing the WSGI headers: must go through werkzeug's own machinery."""

    def get_wsgi_headers(self, environ):
        headers = super().get_wsgi_headers(environ)
        headers["X-Custom"] = "from-subclass"
        return headers


status_codes = st.one_of(
    st.sampled_from([100, 101, 103, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 400, 404,
                     405, 418, 500, 503]),
    st.integers(100, 599),
)
reasons = st.text("abcdefghijklmnopqrstuvwxyz ABCXYZ-\xe9", min_size=1, max_size=16).map(
    lambda r: r.strip() or "Reason")
latin1_values = st.text(VISIBLE_LATIN1 + " ", max_size=16).map(str.strip)
response_header_names = st.one_of(st.sampled_from(["X-A", "X-B", "Set-Cookie", "Cache-Control",
                                                   "Vary", "Content-Language"]),
                                  st.text(TCHARS, min_size=1, max_size=10))
chunks = st.lists(st.one_of(st.binary(max_size=30), st.text(max_size=10)), max_size=5)
locations = st.sampled_from(["/relative/path", "http://example.com/a?b=c", "/caf\xe9",
                             "/\u2603/snow", "other", "https://\xfcber.example/x y"])


@st.composite
def responses(draw):
    code = draw(status_codes)
    spec = {
        "status": f"{code} {draw(reasons)}" if draw(st.booleans()) else code,
        "headers": draw(st.lists(st.tuples(response_header_names, latin1_values), max_size=5)),
        "chunks": draw(chunks),
        "generator": draw(st.booleans()),
        "passthrough": draw(st.booleans()) and draw(st.booleans()),
        "subclass": draw(st.booleans()) and draw(st.booleans()),
        "location": draw(st.none() | locations),
        "content_length": draw(st.booleans()) and draw(st.booleans()),
        "method": draw(st.sampled_from(["GET", "GET", "HEAD", "POST"])),
        "version": draw(st.sampled_from(["1.1", "1.1", "1.0"])),
    }
    return spec


def build_response(spec):
    """A fresh response for ``spec`` (generator bodies can be consumed once only)."""
    chunks = spec["chunks"]
    body = (c for c in chunks) if spec["generator"] else list(chunks)
    if spec["passthrough"]:
        # direct_passthrough hands the iterable to the server untouched: bytes only
        encoded = [c.encode() if isinstance(c, str) else c for c in chunks]
        body = (c for c in encoded) if spec["generator"] else encoded
    cls = CustomHeadersResponse if spec["subclass"] else Response
    response = cls(body, status=spec["status"], direct_passthrough=spec["passthrough"])
    for name, value in spec["headers"]:
        response.headers.add(name, value)
    if spec["location"] is not None:
        response.headers["Location"] = spec["location"]
    if spec["content_length"]:
        size = sum(len(c.encode() if isinstance(c, str) else c) for c in chunks)
        response.headers["Content-Length"] = str(size)
    return response


def build_environ(impl, spec):
    return impl.to_wsgi_environment([("Host", "example.com")], spec["method"], "/path?q=1",
                                    spec["version"])


def split_output(data: bytes):
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data[:200]
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers.append((name, value))
    return lines[0], headers, body


@BOUNDED
@given(responses())
def test_formatted_response_matches_werkzeug(impl, spec):
    environ = build_environ(impl, spec)
    app_iter, status, headers = run_wsgi_app(build_response(spec), dict(environ))
    try:
        expected_body = b"".join(app_iter)
    finally:
        getattr(app_iter, "close", lambda: None)()
    ours = impl.get_formatted_response(build_response(spec), dict(environ))
    status_line, our_headers, our_body = split_output(ours)
    assert status_line == f"HTTP/{spec['version']} {status}"
    code = int(status[:3])
    body_allowed = not (100 <= code < 200 or code in (204, 304) or spec["method"] == "HEAD")
    expected_headers = list(headers)
    if body_allowed and not any(k.lower() == "content-length" for k, _ in headers):
        expected_headers.append(("Content-Length", str(len(expected_body))))
    assert our_headers == expected_headers
    assert our_body == expected_body


@BOUNDED
@given(responses())
def test_formatted_response_identical_across_implementations(spec):
    compiled, python = IMPLEMENTATIONS
    if not compiled.available:
        pytest.fail(f"compiled implementation missing: {compiled.error}")
    outputs = [impl.get_formatted_response(build_response(spec), build_environ(impl, spec))
               for impl in (compiled, python)]
    assert outputs[0] == outputs[1]


@BOUNDED
@given(responses(), st.booleans())
def test_render_response_identical_across_implementations(spec, keep_alive):
    """What the protocols write: the same bytes and framing decisions from both twins."""
    compiled, python = IMPLEMENTATIONS
    results = []
    for impl in (compiled, python):
        environ = build_environ(impl, spec)
        data, app_iter, alive, chunked = impl.wsgi_module.render_response(
            build_response(spec), environ, spec["version"], keep_alive)
        rest = b"".join(c.encode() if isinstance(c, str) else c for c in app_iter or ())
        # the Date header changes every second; compare the rest
        lines = [line for line in data.split(b"\r\n") if not line.startswith(b"Date: ")]
        results.append((lines, rest, alive, chunked))
    assert results[0] == results[1]


def test_text_paths_are_utf8(impl):
    """A target given as text is an IRI: non-ASCII characters are their UTF-8 bytes."""
    environ = impl.to_wsgi_environment([("Host", "h")], "GET", "/\u2603/caf\xe9%20x?a=\xe9",
                                       "1.1")
    request = Request(environ)
    assert environ["PATH_INFO"] == "/\xe2\x98\x83/caf\xc3\xa9 x"
    assert request.path == "/\u2603/caf\xe9 x"
    assert request.args["a"] == "\xe9"
