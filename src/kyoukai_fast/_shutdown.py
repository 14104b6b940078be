"""
Graceful shutdown of a Kyoukai server running on kyoukai_fast, shared by both implementations.
"""
from __future__ import annotations

import asyncio

from ._config import existing_server_state

__all__ = ("graceful_shutdown",)


async def graceful_shutdown(component, timeout: float | None = None) -> int:
    """Stop a component's server gracefully.

    Stops accepting connections, closes idle keep-alive connections at once, lets in-flight
    requests finish (their responses carry ``Connection: close``) for up to ``timeout`` seconds
    (default: the ``shutdown_grace`` setting), then closes what is left, cancelling its handlers.

    :return: the number of connections that had to be cut at the deadline.
    """
    server = getattr(component, "server", None)
    if server is not None:
        server.close()
    state = existing_server_state(component)
    if state is None:
        return 0
    state.closing = True
    if timeout is None:
        timeout = state.config.shutdown_grace
    for connection in list(state.connections):
        connection.shutdown()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while state.connections and loop.time() < deadline:
        await asyncio.sleep(0.02)
    left = list(state.connections)
    for connection in left:
        transport = connection.transport
        if transport is not None:
            transport.abort()
    if left:
        await asyncio.sleep(0)  # let connection_lost run and cancel the handlers
    if server is not None:
        await server.wait_closed()
    return len(left)
