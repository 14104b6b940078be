"""
Real sockets on 127.0.0.1: a protocol served by an asyncio server on a port the OS picked, and
blocking client sockets (always with a timeout) run from worker threads.

* :func:`free_port`: a port nothing listens on, for servers that must be told theirs up front.
* :func:`serving`: ``impl``'s protocol (or a subclass) served with a :class:`fakes.FakeApp`;
  :func:`kyoukai_serving`: a real Kyoukai app served by a started ``KyoukaiComponent``.
* :func:`connect`, :func:`recv_responses`, :func:`read_until`, :func:`read_until_closed`,
  :func:`closed_by_server`: the client side.
* :func:`make_certificate`, :func:`tls_contexts`: a self-signed certificate for 127.0.0.1 and
  the server / client contexts that use it.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import subprocess

from werkzeug.wrappers import Response

from fakes import FakeApp, FakeComponent
from wire import parse_responses

__all__ = ("TIMEOUT", "free_port", "serving", "kyoukai_serving", "connect", "recv_responses",
           "read_until", "read_until_closed", "closed_by_server", "request", "echo_path",
           "in_thread", "make_certificate", "tls_contexts")

#: Seconds any client socket waits for the server.
TIMEOUT = 5.0


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (retry if it got taken before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(impl, handler=None, protocol_class=None, ssl=None, **cfg):
    """Serve ``impl``'s protocol (or ``protocol_class``, a subclass of it) on 127.0.0.1, with
    TLS when ``ssl`` is a server context; yields ``(port, component)``."""
    loop = asyncio.get_running_loop()
    component = FakeComponent(FakeApp(handler, loop=loop), **cfg)
    protocol_class = protocol_class or impl.protocol_class
    holder = {}
    server = await loop.create_server(
        lambda: protocol_class(component, None, "127.0.0.1", holder["port"]),
        "127.0.0.1", 0, ssl=ssl)
    holder["port"] = server.sockets[0].getsockname()[1]
    try:
        yield holder["port"], component
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def kyoukai_serving(app, backend: str, **cfg):
    """``app`` served by a started ``KyoukaiComponent(app, "127.0.0.1", port, backend=backend,
    **cfg)`` on a free port (picked again if it got taken first); yields ``(port, component)``."""
    from asphalt.core import Context
    from kyoukai import KyoukaiComponent

    async with Context() as ctx:
        for attempt in range(5):
            port = free_port()
            component = KyoukaiComponent(app, "127.0.0.1", port, backend=backend, **cfg)
            try:
                await component.start(ctx)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == 4:
                    raise
        try:
            yield port, component
        finally:
            component.server.close()
            await component.server.wait_closed()


def connect(port, wrap=None) -> socket.socket:
    """A client socket with a timeout; ``wrap``: e.g. an SSL context's ``wrap_socket``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    if wrap is not None:
        sock = wrap(sock)
    sock.settimeout(TIMEOUT)
    return sock


def recv_responses(sock, count, head_requests=()):
    """Read until ``count`` complete responses arrived (or the server closed)."""
    data = b""
    while True:
        try:
            responses = parse_responses(data, head_requests, closed=False)
        except (AssertionError, ValueError):
            responses = []  # incomplete so far
        if len(responses) >= count:
            return responses
        chunk = sock.recv(65536)
        if not chunk:
            return parse_responses(data, head_requests, closed=True)
        data += chunk


def read_until(sock, done, limit=64 * 1024 * 1024) -> bytes:
    """Read until ``done(data)`` or the server closes (a reset after its answer counts)."""
    data = b""
    while not done(data) and len(data) <= limit:
        try:
            chunk = sock.recv(1024 * 1024)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def read_until_closed(sock, limit=64 * 1024 * 1024) -> bytes:
    """Everything the server sends until it closes."""
    return read_until(sock, lambda data: False, limit)


def closed_by_server(sock) -> bool:
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


def request(path, extra=""):
    """A GET for ``path`` as a socket client sends it; ``extra``: header lines, CRLF-ended."""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def echo_path(request):
    return Response(f"{request.path}?{request.query_string.decode()}")


async def in_thread(func, *args):
    """Run a blocking client in a worker thread, bounded."""
    return await asyncio.wait_for(asyncio.to_thread(func, *args), timeout=20)


def make_certificate(folder):
    """A self-signed certificate for 127.0.0.1 in ``folder``: ``(cert.pem, key.pem)``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def tls_contexts(certificate):
    """``(server context, wrap)`` for ``certificate``; ``wrap(sock)`` is the client's side,
    checking the server's name (127.0.0.1) against the certificate."""
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(str(cert), str(key))
    client_context = ssl.create_default_context(cafile=str(cert))
    return server_context, lambda sock: client_context.wrap_socket(
        sock, server_hostname="127.0.0.1")
