"""A first in-process round trip through each implementation."""
import asyncio

from fakes import FakeComponent, FakeTransport
from wire import parse_responses


def test_hello_round_trip(impl):
    async def main():
        component = FakeComponent()
        protocol = impl.protocol_class(component, None, "testserver", 8080)
        assert isinstance(protocol, asyncio.Protocol)
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n")
        [response] = parse_responses(transport.take(), closed=False)
        assert response.status == 200
        assert response.body == b"Hello, world!"
        assert component.app.requests[0].path == "/a"
        assert component.app.requests[0].args["b"] == "c"
        protocol.connection_lost(None)
        assert component.connection_made.events == [{"protocol": protocol}]
        assert component.connection_lost.events == [{"protocol": protocol}]

    asyncio.run(main())


def test_unsupported_http_versions_get_505(impl):
    async def main():
        for version in (b"2.0", b"0.9"):
            protocol = impl.protocol_class(FakeComponent(), None, "testserver", 8080)
            transport = FakeTransport()
            protocol.connection_made(transport)
            protocol.data_received(b"GET / HTTP/" + version + b"\r\nHost: x\r\n\r\n")
            [response] = parse_responses(transport.take())
            assert response.status == 505
            assert transport.closed

    asyncio.run(main())
