"""
Proxy headers: the client address and scheme a trusted reverse proxy reports.

As uvicorn and gunicorn do, only a peer listed in ``forwarded_allow_ips`` (addresses or networks,
``*`` for every peer; a Unix socket peer is always trusted, as in gunicorn) may set them. From such
a peer, RFC 7239 ``Forwarded`` (when present) or ``X-Forwarded-For`` / ``X-Forwarded-Proto`` set
``REMOTE_ADDR``, ``REMOTE_PORT`` (``0`` when no port is given) and ``wsgi.url_scheme``. The client
is the nearest address in the chain that is not itself a trusted proxy (read from the right), so a
client cannot pose as another by prepending addresses of its own. From any other peer the headers
are left as they are, and the environ keeps the socket's address.

Both protocol twins call :func:`apply_proxy_headers` only for a request that carries one of the
headers (:data:`PROXY_HEADER_KEYS`), so a request without them pays three dict look-ups.
"""
from __future__ import annotations

import ipaddress

__all__ = ("TrustedProxies", "apply_proxy_headers", "PROXY_HEADER_KEYS", "parse_forwarded")

PROXY_HEADER_KEYS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO")
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


class TrustedProxies:
    """The peers ``forwarded_allow_ips`` trusts: ``"127.0.0.1"``, ``"10.0.0.0/8,::1"``, ``"*"``."""

    __slots__ = ("spec", "everyone", "addresses", "networks")

    def __init__(self, spec: str):
        self.spec = spec
        self.everyone = False
        self.addresses: set = set()
        self.networks: list = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            if item == "*":
                self.everyone = True
            elif "/" in item:
                try:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise ValueError(f"kyoukai_fast setting forwarded_allow_ips: {item!r} is "
                                     "not an IP address or network") from None
            else:
                try:
                    self.addresses.add(str(ipaddress.ip_address(item)))
                except ValueError:
                    raise ValueError(f"kyoukai_fast setting forwarded_allow_ips: {item!r} is "
                                     "not an IP address or network") from None

    def __contains__(self, host) -> bool:
        if self.everyone or not host:  # no address: a Unix socket peer
            return True
        if host in self.addresses:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        # another spelling of a listed address (0:0::1 for ::1), or in a listed network
        return str(address) in self.addresses or any(address in net for net in self.networks)


def _split_host_port(value: str):
    """``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1`` -> (host, port or None)."""
    value = value.strip().strip('"')
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return host, port
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, port
    return value, None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_forwarded(value: str) -> list:
    """RFC 7239 ``Forwarded``: one dict of lower-cased parameters per element, in order."""
    elements = []
    for element in _split_outside_quotes(value, ","):
        params = {}
        for pair in _split_outside_quotes(element, ";"):
            name, sep, val = pair.partition("=")
            if sep:
                val = val.strip()
                if len(val) >= 2 and val[0] == val[-1] == '"':
                    val = val[1:-1].replace('\\"', '"')
                params[name.strip().lower()] = val
        elements.append(params)
    return elements


def _split_outside_quotes(text: str, separator: str) -> list:
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def _client_index(hosts: list, trusted: TrustedProxies) -> int:
    """The nearest hop not itself a trusted proxy, from the right; all trusted: the first."""
    for index in range(len(hosts) - 1, -1, -1):
        if hosts[index] not in trusted:
            return index
    return 0


def apply_proxy_headers(environ: dict, trusted: TrustedProxies) -> None:
    """Rewrite ``REMOTE_ADDR`` / ``REMOTE_PORT`` / ``wsgi.url_scheme`` for a trusted peer."""
    if environ.get("REMOTE_ADDR") not in trusted:
        return
    forwarded = environ.get("HTTP_FORWARDED")
    if forwarded is not None:
        elements = [e for e in parse_forwarded(forwarded) if "for" in e or "proto" in e]
        if not elements:
            return
        hops = [_split_host_port(e.get("for", "")) for e in elements]
        index = _client_index([host for host, _ in hops], trusted)
        host, port = hops[index]
        scheme = elements[index].get("proto")
    else:
        scheme = environ.get("HTTP_X_FORWARDED_PROTO")
        if scheme is not None:
            scheme = scheme.rsplit(",", 1)[-1]  # what the nearest proxy saw
        host = port = None
        chain = environ.get("HTTP_X_FORWARDED_FOR")
        if chain is not None:
            hops = [_split_host_port(part) for part in chain.split(",") if part.strip()]
            if hops:
                host, port = hops[_client_index([h for h, _ in hops], trusted)]
    if host and _is_ip(host):
        environ["REMOTE_ADDR"] = host
        # the socket's port is the proxy's: "0" when the header names none, as uvicorn does
        environ["REMOTE_PORT"] = port if port and port.isdigit() else "0"
    if scheme is not None:
        scheme = _SCHEMES.get(scheme.strip().lower())
        if scheme is not None:
            environ["wsgi.url_scheme"] = scheme
