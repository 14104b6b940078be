"""
Several threads, each with its own event loop and several connections: every request reaches its
own connection's handler, and every response goes back on the connection that asked for it.

The Host header is one the protocol has not seen, so its head check runs Python code inside a
parser callback, and the switch interval is very short: another thread may run in the middle of
any callback. Each request names its connection (``X-Conn``) and the handler answers with the
``X-Conn`` it saw.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys
import threading

from werkzeug.wrappers import Response

from fakes import FakeApp, FakeComponent, FakeTransport
from loopback import TIMEOUT, connect, recv_responses
from wire import parse_responses

THREADS = 4
CONNECTIONS = 4
ROUNDS = 40
PIPELINED = 64


@contextlib.contextmanager
def short_switch_interval(seconds=1e-6):
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def echo_conn(request):
    conn = request.headers.get("X-Conn", "")
    return Response("conn " + conn, headers={"X-Conn": conn})


def request_for(name: str, number: int) -> bytes:
    # A Host the protocol has not seen before makes it check the head in Python (and more of
    # them than it remembers as valid, so that it goes on doing so).
    return (f"GET /r{number}?c={name} HTTP/1.1\r\nHost: h{name}-{number}.example\r\n"
            f"X-Conn: {name}\r\nX-Pad: {'p' * (number % 7)}\r\n\r\n").encode()


def run_threads(target, count):
    errors = []

    def guarded(index):
        try:
            target(index)
        except BaseException as exc:  # reported below, with the thread it failed in
            errors.append((index, repr(exc)))

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return errors


def test_in_process_connections_of_several_threads_stay_apart(impl):
    """Each thread feeds its connections request by request, in pieces, interleaved."""
    loop_errors = []

    def worker(index):
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _, context: loop_errors.append(context))
        asyncio.set_event_loop(loop)
        try:
            component = FakeComponent(FakeApp(echo_conn, loop=loop))
            connections = []
            for c in range(CONNECTIONS):
                transport = FakeTransport(peer=("127.0.0.1", 40000 + index * 100 + c))
                protocol = impl.protocol_class(component, None, "127.0.0.1", 8080)
                protocol.connection_made(transport)
                connections.append((f"{index}.{c}", protocol, transport))
            for number in range(ROUNDS):
                for name, protocol, _ in connections:
                    data = request_for(name, number)
                    middle = len(data) // 2  # a head split over two reads
                    protocol.data_received(data[:middle])
                    protocol.data_received(data[middle:])
                loop.run_until_complete(asyncio.sleep(0))
            for name, protocol, transport in connections:
                responses = parse_responses(transport.take(), closed=False)
                assert len(responses) == ROUNDS, (name, len(responses))
                for response in responses:
                    assert response.status == 200, (name, response)
                    assert response.header("X-Conn") == name, (name, response.header("X-Conn"))
                    assert response.body == f"conn {name}".encode()
                protocol.connection_lost(None)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    with short_switch_interval():
        errors = run_threads(worker, THREADS)
    assert errors == []
    assert loop_errors == []


def test_socket_connections_of_server_and_client_threads_stay_apart(impl):
    """Two server threads (one loop each), clients in other threads over 127.0.0.1."""
    ports = {}
    ready = threading.Barrier(3, timeout=TIMEOUT)
    stop = threading.Event()
    loop_errors = []

    def server(index):
        async def main():
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(lambda _, context: loop_errors.append(context))
            component = FakeComponent(FakeApp(echo_conn, loop=loop))
            holder = {}
            srv = await loop.create_server(
                lambda: impl.protocol_class(component, None, "127.0.0.1", holder["port"]),
                "127.0.0.1", 0)
            holder["port"] = ports[index] = srv.sockets[0].getsockname()[1]
            ready.wait()
            while not stop.is_set():
                await asyncio.sleep(0.01)
            srv.close()
            await srv.wait_closed()

        asyncio.run(main())

    def client(index):
        sockets = [connect(ports[(index + c) % 2]) for c in range(CONNECTIONS)]
        try:
            for round_ in range(3):
                # Many pipelined requests a connection: the servers parse without pause, both
                # at once, each read making many rounds of callbacks.
                for c, sock in enumerate(sockets):
                    name = f"{index}.{c}"
                    sock.sendall(b"".join(request_for(name, round_ * PIPELINED + k)
                                          for k in range(PIPELINED)))
                for c, sock in enumerate(sockets):
                    name = f"{index}.{c}"
                    responses = recv_responses(sock, PIPELINED)
                    assert len(responses) == PIPELINED, (name, len(responses))
                    for response in responses:
                        assert response.status == 200, (name, response)
                        assert response.header("X-Conn") == name, (name, response)
        finally:
            for sock in sockets:
                sock.close()

    servers = [threading.Thread(target=server, args=(i,)) for i in range(2)]
    with short_switch_interval():
        for thread in servers:
            thread.start()
        try:
            ready.wait()
            errors = run_threads(client, THREADS)
        finally:
            stop.set()
            for thread in servers:
                thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in servers)
    assert errors == []
    assert loop_errors == []
