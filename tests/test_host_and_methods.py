"""
Request targets, ``Host`` and methods (RFC 9112 3.2, RFC 9110 9), in-process on both
implementations: what must be refused with 400 / 501, and what must reach the app unchanged.

A refusal is one error response with ``Connection: close``, the connection closed, nothing logged
at ERROR, and nothing pipelined after it reaching the app (``fakes.refused``).
"""
from __future__ import annotations

import json

import pytest

from fakes import (
    SMUGGLED,
    refused,
    served,
)

# --- RFC 9112 3.2: Host -----------------------------------------------------------------------

@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\n",                                   # no Host in HTTP/1.1
    b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n",  # two Host fields
    b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n",  # two, even if equal
    b"GET / HTTP/1.1\r\nHost: a b\r\n",
    b"GET / HTTP/1.1\r\nHost: a/b\r\n",
    b"GET / HTTP/1.1\r\nHost: user@a.example\r\n",
    b"GET / HTTP/1.1\r\nHost: a.example:80x\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1\r\n",
    b"GET / HTTP/1.1\r\nHost: a%zz\r\n",
    b"GET / HTTP/1.0\r\nHost: a b\r\n",                       # invalid in HTTP/1.0 too
    b"GET http://a.example/ HTTP/1.1\r\n",                    # absolute-form still needs Host
    b"GET http://user@a.example/ HTTP/1.1\r\nHost: a.example\r\n",
    b"GET * HTTP/1.1\r\nHost: a.example\r\n",                 # asterisk-form is for OPTIONS
], ids=lambda head: head.decode().split("\r\n", 1)[1].replace("\r\n", "|") or "no-host")
def test_bad_host_or_target_is_400(impl, head, no_errors_logged):
    paths, [response] = refused(impl, head + b"\r\n" + SMUGGLED, 400)
    assert paths == []


@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "127.0.0.1:1", "[::1]:80",
                                  "[::1]", "xn--caf-dma.example", "a%41b", ""])
def test_valid_hosts_are_served(impl, host):
    [response], [request] = served(impl, f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert response.status == 200
    assert request.environ["HTTP_HOST"] == host


def test_http10_needs_no_host(impl):
    [response], [request] = served(impl, b"GET / HTTP/1.0\r\n\r\n")
    assert response.status == 200 and "HTTP_HOST" not in request.environ


def test_absolute_form_target_wins_over_host(impl):
    [response], [request] = served(
        impl, b"GET http://other.example:81/x?y=1 HTTP/1.1\r\nHost: h.example\r\n\r\n")
    assert response.status == 200
    assert request.environ["HTTP_HOST"] == "other.example:81"
    assert (request.path, request.args["y"]) == ("/x", "1")


def test_options_asterisk_reaches_the_app(impl):
    [response], [request] = served(impl, b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert response.status == 200 and request.method == "OPTIONS"


def test_field_values_lose_trailing_whitespace(impl):
    [response], [request] = served(
        impl, b"POST / HTTP/1.1\r\nHost: h.example  \r\nX-A: a b \t\r\nContent-Length: 3 \r\n"
              b"\r\nabc")
    assert response.status == 200
    assert request.environ["HTTP_HOST"] == "h.example"
    assert request.environ["HTTP_X_A"] == "a b"
    assert request.environ["CONTENT_LENGTH"] == "3"
    assert json.loads(response.body)["body"] == "abc"


# --- methods ----------------------------------------------------------------------------------

def test_connect_is_501(impl, no_errors_logged):
    paths, _ = refused(impl, b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"
                             + SMUGGLED, 501)
    assert paths == []


def test_methods_llhttp_knows_go_to_the_app(impl):
    # the app decides (Kyoukai answers 405 with Allow for a route without that method)
    [response], [request] = served(impl, b"PROPFIND /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert response.status == 200 and request.method == "PROPFIND"
