"""
Both implementations behind a real asyncio server on 127.0.0.1 (ephemeral port), talked to with
plain blocking sockets (always with a timeout) from worker threads.
"""
from __future__ import annotations

import asyncio

from werkzeug.wrappers import Response

from loopback import TIMEOUT, connect, echo_path, in_thread, recv_responses, request, serving


def test_keep_alive_reuses_the_connection(impl):
    def client(port):
        with connect(port) as sock:
            bodies = []
            for i in range(5):
                sock.sendall(request(f"/k{i}", "X-N: %d\r\n" % i))
                [response] = recv_responses(sock, 1)
                assert response.status == 200
                assert response.header("Connection") is None
                bodies.append(response.body)
            sock.sendall(request("/last", "Connection: close\r\n"))
            [response] = recv_responses(sock, 1)
            assert response.header("Connection") == "close"
            assert sock.recv(10) == b""  # closed by the server
            return bodies

    async def main():
        async with serving(impl, echo_path) as (port, component):
            bodies = await in_thread(client, port)
            assert bodies == [f"/k{i}?".encode() for i in range(5)]
            assert len(component.connection_made.events) == 1

    asyncio.run(main())


def test_sixteen_deep_pipelining_over_a_socket(impl):
    async def handler(request):
        if int(request.args["i"]) % 3 == 0:
            await asyncio.sleep(0.001)  # some handlers suspend, some do not
        return Response("response %s" % request.args["i"], headers={"X-I": request.args["i"]})

    def client(port):
        with connect(port) as sock:
            for _ in range(3):
                sock.sendall(b"".join(request(f"/p?i={i}") for i in range(16)))
                responses = recv_responses(sock, 16)
                assert len(responses) == 16
                for i, response in enumerate(responses):
                    assert response.status == 200
                    assert response.header("X-I") == str(i)
                    assert response.body == b"response %d" % i
        return True

    async def main():
        async with serving(impl, handler) as (port, component):
            assert await in_thread(client, port)
            assert len(component.app.requests) == 48

    asyncio.run(main())


def test_more_pipelined_requests_than_the_queue_holds(impl):
    def client(port):
        with connect(port) as sock:
            sock.sendall(b"".join(request(f"/q?i={i}") for i in range(40)))
            responses = recv_responses(sock, 40)
            return [r.body for r in responses]

    async def main():
        async with serving(impl, echo_path, max_pipelined_requests=4) as (port, _):
            bodies = await in_thread(client, port)
            assert bodies == [f"/q?i={i}".encode() for i in range(40)]

    asyncio.run(main())


def test_client_disconnecting_mid_request_does_not_disturb_others(impl):
    started = asyncio.Event()

    async def handler(request):
        if request.path == "/hang":
            started.set()
            # Its client leaves meanwhile; EOF may be a half-close, so the answer is still
            # written (into a dead socket) before the connection is dropped.
            await asyncio.sleep(0.2)
        return Response("ok " + request.path)

    def rude_clients(port):
        with connect(port) as sock:  # half a request head, then gone
            sock.sendall(b"GET /partial HTTP/1.1\r\nHost: 127.0")
        with connect(port) as sock:  # half a body, then gone
            sock.sendall(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
        sock = connect(port)  # a full request whose handler is still running
        sock.sendall(request("/hang"))
        return sock

    def polite_client(port, sock):
        with sock:
            for i in range(3):
                sock.sendall(request(f"/polite{i}"))
                [response] = recv_responses(sock, 1)
                assert response.body == f"ok /polite{i}".encode()
        return True

    async def main():
        async with serving(impl, handler) as (port, component):
            polite = await in_thread(connect, port)
            hanging = await in_thread(rude_clients, port)
            await asyncio.wait_for(started.wait(), TIMEOUT)
            hanging.close()
            assert await in_thread(polite_client, port, polite)
            # every rude connection was noticed as lost, the server still accepts new ones
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TIMEOUT
            while len(component.connection_lost.events) < 4 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert len(component.connection_lost.events) == 4
            assert await in_thread(polite_client, port, await in_thread(connect, port))

    asyncio.run(main())


def test_large_streamed_response_under_flow_control(impl):
    piece = bytes(range(256)) * 256  # 64 KiB

    def handler(request):
        return Response((piece for _ in range(32)), mimetype="application/octet-stream")

    def client(port):
        with connect(port) as sock:
            sock.sendall(request("/big") + request("/after"))
            return recv_responses(sock, 2)

    async def main():
        async with serving(impl, handler, write_high_water=16 * 1024) as (port, _):
            big, after = await in_thread(client, port)
            assert big.header("Transfer-Encoding") == "chunked"
            assert big.body == piece * 32
            assert after.body == piece * 32

    asyncio.run(main())
