"""
Proxy headers (kyoukai_fast._proxy): which client and scheme a request gets, checked against
uvicorn's ProxyHeadersMiddleware (the reference for X-Forwarded-For) with hypothesis, and
against RFC 7239's examples for Forwarded. End to end, through the installed command and both
protocol twins: tests/test_deploy.py.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.middleware import proxy_headers as uvicorn_proxy

from kyoukai_fast._proxy import TrustedProxies, apply_proxy_headers, parse_forwarded

ADDRESSES = ["127.0.0.1", "10.0.0.1", "10.0.0.2", "192.0.2.60", "203.0.113.7", "::1",
             "2001:db8::5", "198.51.100.17"]
TRUSTED = st.one_of(
    st.just("*"),
    st.lists(st.sampled_from(ADDRESSES + ["10.0.0.0/8", "2001:db8::/32"]), min_size=1,
             max_size=4, unique=True).map(",".join))


def hop():
    address = st.sampled_from(ADDRESSES)
    with_port = st.tuples(address, st.integers(1, 65535)).map(
        lambda a: f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}")
    return st.one_of(address, with_port)


def environ_after(peer, headers, trusted):
    environ = {"REMOTE_ADDR": peer, "REMOTE_PORT": "5555", "wsgi.url_scheme": "http", **headers}
    apply_proxy_headers(environ, TrustedProxies(trusted))
    return environ["REMOTE_ADDR"], environ["REMOTE_PORT"], environ["wsgi.url_scheme"]


@settings(max_examples=300, deadline=None)
@given(peer=st.sampled_from(ADDRESSES), chain=st.lists(hop(), min_size=1, max_size=5),
       trusted=TRUSTED, proto=st.sampled_from([None, "http", "https", "ws", "wss", "gopher"]))
def test_x_forwarded_for_picks_the_client_uvicorn_picks(peer, chain, trusted, proto):
    reference = uvicorn_proxy._TrustedHosts(trusted)
    headers = {"HTTP_X_FORWARDED_FOR": ", ".join(chain)}
    if proto is not None:
        headers["HTTP_X_FORWARDED_PROTO"] = proto
    if peer in reference:
        host, port = reference.get_trusted_client_address(headers["HTTP_X_FORWARDED_FOR"])
        scheme = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(
            proto, "http")
        expected = (host, str(port), scheme)
    else:
        expected = (peer, "5555", "http")  # an untrusted peer's headers change nothing
    assert environ_after(peer, headers, trusted) == expected


def test_rfc_7239_examples():
    # section 4: a chain of two, and an obfuscated identifier
    assert parse_forwarded('for=192.0.2.43, for="[2001:db8:cafe::17]"') == [
        {"for": "192.0.2.43"}, {"for": "[2001:db8:cafe::17]"}]
    assert parse_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43") == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}]
    assert parse_forwarded('For="[2001:db8:cafe::17]:4711"') == [
        {"for": "[2001:db8:cafe::17]:4711"}]
    # a quoted comma or semicolon is part of the value
    assert parse_forwarded('for="a,b;c";proto=https') == [{"for": "a,b;c", "proto": "https"}]
    assert environ_after("127.0.0.1", {"HTTP_FORWARDED": 'For="[2001:db8:cafe::17]:4711";'
                                                         "proto=https"}, "127.0.0.1") == (
        "2001:db8:cafe::17", "4711", "https")
    # the nearest untrusted hop is the client; its element's proto is the scheme
    assert environ_after("127.0.0.1", {"HTTP_FORWARDED": "for=192.0.2.43;proto=https, "
                                                         "for=10.0.0.1;proto=http"},
                         "127.0.0.1,10.0.0.0/8") == ("192.0.2.43", "0", "https")
    # an obfuscated or unknown client is no address: REMOTE_ADDR stays
    assert environ_after("127.0.0.1", {"HTTP_FORWARDED": "for=_gazonk;proto=https"},
                         "127.0.0.1") == ("127.0.0.1", "5555", "https")
    assert environ_after("127.0.0.1", {"HTTP_FORWARDED": "for=unknown"}, "127.0.0.1") == (
        "127.0.0.1", "5555", "http")


def test_forwarded_wins_over_x_forwarded_for():
    headers = {"HTTP_FORWARDED": "for=192.0.2.60;proto=https",
               "HTTP_X_FORWARDED_FOR": "203.0.113.7", "HTTP_X_FORWARDED_PROTO": "http"}
    assert environ_after("127.0.0.1", headers, "127.0.0.1") == ("192.0.2.60", "0", "https")


def test_untrusted_peer_changes_nothing():
    headers = {"HTTP_FORWARDED": "for=192.0.2.60;proto=https",
               "HTTP_X_FORWARDED_FOR": "203.0.113.7", "HTTP_X_FORWARDED_PROTO": "https"}
    assert environ_after("198.51.100.17", headers, "127.0.0.1") == (
        "198.51.100.17", "5555", "http")


def test_trusted_proxies():
    trusted = TrustedProxies("127.0.0.1, 10.0.0.0/8 ,::1")
    assert "127.0.0.1" in trusted and "10.200.0.3" in trusted and "0:0::1" in trusted
    assert "11.0.0.1" not in trusted and "not-an-ip" not in trusted
    assert None in trusted and "" in trusted  # a Unix socket peer has no address
    assert "203.0.113.7" in TrustedProxies("*")
    with pytest.raises(ValueError, match="'localhost' is not an IP address or network"):
        TrustedProxies("127.0.0.1,localhost")
