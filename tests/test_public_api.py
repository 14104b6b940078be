"""
The public namespace of ``kyoukai_fast`` (the seed's module namespace), on both
implementations, and that it imports without the optional Asphalt / Kyoukai / h2.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap

import werkzeug.exceptions
import werkzeug.wrappers

import kyoukai_fast
from fakes import FakeComponent
from procs import TESTS, env
from wire import parse_responses

PROTOCOL_METHODS = (
    "connection_made", "connection_lost", "data_received", "eof_received", "pause_writing",
    "resume_writing", "on_message_begin", "on_url", "on_header", "on_headers_complete",
    "on_body", "on_message_complete", "handle_parser_exception", "write_response", "write",
    "raw_write", "_raw_write", "close",
)


def test_reexported_names_are_the_seeds():
    assert kyoukai_fast.PROTOCOL_CLASS == "KyoukaiProtocol"
    assert kyoukai_fast.BytesIO is io.BytesIO
    assert kyoukai_fast.Request is werkzeug.wrappers.Request
    assert kyoukai_fast.Response is werkzeug.wrappers.Response
    assert kyoukai_fast.BadRequest is werkzeug.exceptions.BadRequest
    assert kyoukai_fast.InternalServerError is werkzeug.exceptions.InternalServerError
    assert kyoukai_fast.MethodNotAllowed is werkzeug.exceptions.MethodNotAllowed
    # Installed here: the real classes.
    from asphalt.core import Context
    from kyoukai.backends.http2 import H2KyoukaiProtocol

    assert kyoukai_fast.Context is Context
    assert kyoukai_fast.H2KyoukaiProtocol is H2KyoukaiProtocol
    for name in kyoukai_fast.__all__:
        assert hasattr(kyoukai_fast, name), name


def test_protocol_has_the_seeds_interface(impl):
    cls = impl.protocol_class
    assert issubclass(cls, asyncio.Protocol)
    protocol = cls(FakeComponent(), None, "127.0.0.1", 8080)
    assert isinstance(protocol, asyncio.Protocol)
    missing = [name for name in PROTOCOL_METHODS if not callable(getattr(protocol, name, None))]
    assert missing == []
    assert callable(impl.to_wsgi_environment) and callable(impl.get_formatted_response)


# Run in a fresh interpreter in which asphalt, kyoukai and h2 cannot be imported.
WITHOUT_OPTIONAL = textwrap.dedent("""
    import asyncio, json, sys
    for name in ("asphalt", "asphalt.core", "kyoukai", "kyoukai.backends",
                 "kyoukai.backends.http2", "h2", "h2.connection"):
        sys.modules[name] = None  # import fails with ImportError
    import kyoukai_fast
    from kyoukai_fast import *  # noqa: every name in __all__ resolves
    from fakes import IMPLEMENTATIONS, FakeComponent, FakeTransport

    async def serve(impl, data):
        protocol = impl.protocol_class(FakeComponent(), None, "127.0.0.1", 8080)
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(data)
        for _ in range(50):
            await asyncio.sleep(0)
        return bytes(transport.written).decode("latin-1"), transport.closed

    async def main():
        out = {"context": repr(kyoukai_fast.Context), "h2": repr(kyoukai_fast.H2KyoukaiProtocol),
               "implementation": kyoukai_fast.IMPLEMENTATION,
               "http2_engine": kyoukai_fast.HTTP2_ENGINE}
        for impl in IMPLEMENTATIONS:
            if impl.available:
                out[impl.name] = [
                    await serve(impl, b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"),
                    await serve(impl, b"GET / HTTP/1.1\\r\\nHost: x\\r\\n"
                                      b"Connection: Upgrade, HTTP2-Settings\\r\\nUpgrade: h2c\\r\\n"
                                      b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\\r\\n\\r\\n"),
                ]
        print(json.dumps(out))

    asyncio.run(main())
""")


def test_imports_and_serves_without_asphalt_kyoukai_or_h2():
    pure = bool(os.environ.get("KYOUKAI_FAST_NO_EXTENSIONS"))
    result = subprocess.run([sys.executable, "-c", WITHOUT_OPTIONAL], cwd=TESTS, env=env(pure),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["context"] == "None" and out["h2"] == "None"
    assert out["implementation"] == kyoukai_fast.IMPLEMENTATION
    served = [name for name in ("cython", "python") if name in out]
    assert "python" in served and (kyoukai_fast.IMPLEMENTATION != "cython" or "cython" in served)
    for name in served:
        (plain, plain_closed), (h2c, h2c_closed) = out[name]
        [response] = parse_responses(plain.encode("latin-1"), closed=False)
        assert (response.status, response.body, plain_closed) == (200, b"Hello, world!", False)
        if out["http2_engine"] == "nghttp2":
            # HTTP/2 without h2: the compiled engine takes the upgrade
            assert h2c.startswith("HTTP/1.1 101 "), h2c[:200]
            assert kyoukai_fast.IMPLEMENTATION == "cython"
            continue
        # No HTTP/2 to hand over to: the h2c upgrade is ignored, the request answered in
        # HTTP/1.1, and the connection closed after it.
        assert out["http2_engine"] is None
        [response] = parse_responses(h2c.encode("latin-1"))
        assert (response.status, response.body, h2c_closed) == (200, b"Hello, world!", True)
        assert response.header("Connection") == "close"
