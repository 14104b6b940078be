"""
Flow control of one transport, the one piece every protocol uses (modelled on uvicorn's
``FlowControl``): what ``pause_writing`` / ``resume_writing`` mean to the code that writes, and
reading paused and resumed at most once each way.

asyncio calls ``pause_writing`` once the transport's buffer passes its high-water mark and
``resume_writing`` once it drained below the low one. Writers that produce more than one piece
(a streamed body, an HTTP/2 connection sending for many streams) check :attr:`writing_paused`
before writing more, or ``await drain()``; a closed or lost connection wakes every waiter with
``ConnectionResetError`` so that nothing waits for a client that is gone.

HTTP/2 makes one per connection; HTTP/1.1 makes one on a connection's first pause only, in its
cold state (``_connection.ColdState``), so that an idle connection does not pay for it.
"""
from __future__ import annotations

import asyncio

__all__ = ("FlowControl",)


class FlowControl:
    """Pause state of one transport, and the writers waiting for it to resume."""

    __slots__ = ("_transport", "writing_paused", "reading_paused", "_waiters", "_lost")

    def __init__(self, transport):
        self._transport = transport
        self.writing_paused = False
        self.reading_paused = False
        self._waiters = None  # futures of writers waiting in drain()
        self._lost = False

    # --- the transport's side -----------------------------------------------------------------

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake(None)

    def connection_lost(self) -> None:
        """The connection is gone: waiting writers get ``ConnectionResetError``."""
        self.close()

    def close(self) -> None:
        """Nothing more is written (the protocol closes the connection): waiting writers, and
        any that would wait from now on, get ``ConnectionResetError``; reading stays as it is."""
        self._lost = True
        self.writing_paused = False
        self._wake(ConnectionResetError("connection lost"))

    # --- the writer's side --------------------------------------------------------------------

    async def drain(self) -> None:
        """Return once the transport takes more writes; raise once the connection is lost."""
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self.writing_paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        await waiter

    def pause_reading(self) -> None:
        if not self.reading_paused and not self._lost:
            self.reading_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self._lost:
            self.reading_paused = False
            self._transport.resume_reading()

    def _wake(self, exc) -> None:
        waiters = self._waiters
        if not waiters:
            return
        self._waiters = None
        for waiter in waiters:
            if waiter.done():
                continue
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)
                waiter.exception()  # retrieved: a cancelled writer may not be waiting any more
