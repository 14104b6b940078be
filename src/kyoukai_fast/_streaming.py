"""
:class:`StreamingBody`: how a Kyoukai route sends a body as it is produced.

Kyoukai's ``process_request`` replaces any response body that is not ``bytes``, ``str`` or a
``list`` with its ``str()``, so a generator body never reaches the server as a generator. A
``StreamingBody`` is a ``list`` (Kyoukai lets it through untouched) that holds the iterable
instead of items; the renderers of both implementations recognise it and stream the iterable
exactly like a generator body: chunked on HTTP/1.1, delimited by the close on HTTP/1.0, chunk by
chunk under write flow control, its length never computed by consuming it.
"""
from __future__ import annotations

import asyncio
import logging

# kyoukai_fast's logger (``_errors.logger``), named here: _errors imports this module's users.
logger = logging.getLogger("kyoukai_fast")

__all__ = ("StreamingBody", "stream_body", "wsgi_response_of_stream")


async def stream_body(protocol, req, app_iter, keep_alive: bool, chunked: bool) -> None:
    """Send a streamed body chunk by chunk, waiting while the client reads slowly.

    Shared by both protocols (streaming is not the hot path): the protocol's
    ``_stream_write(data)`` writes one piece and returns ``False`` once the connection is
    closing, or the drain coroutine to await while writing is paused, or ``None``. ``chunked``
    frames every piece with the chunked transfer coding; without it the body is delimited by
    the end of the connection or by the length the app declared. The iterable's ``close()``
    runs whatever happens; a failing iterable cuts the response short and closes.
    """
    send = protocol._stream_write
    try:
        for chunk in app_iter:
            if type(chunk) is not bytes:
                # werkzeug passes bytes-like items (bytearray, memoryview) through as is.
                chunk = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
            if not chunk:
                continue  # an empty chunk would end a chunked body
            waiting = send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if waiting is False:
                return  # the connection is closing: nobody to send the rest to
            if waiting is not None:
                await waiting
        if chunked:
            protocol._raw_write(b"0\r\n\r\n")
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        # The head is already out: all that can be done is to cut the response short.
        logger.exception("Error while streaming the response to %s %s", req.method,
                         req.environ.get("RAW_URI"))
        keep_alive = False
    finally:
        close = getattr(app_iter, "close", None)
        if close is not None:
            close()
    if not keep_alive:
        protocol.close()


class StreamingBody(list):
    """A response body streamed from ``iterable`` (of ``bytes`` or ``str`` chunks).

    Return ``Response(StreamingBody(chunks()))`` (or ``StreamingBody(chunks())`` itself) from a
    route. The iterable is consumed once, while the response is sent; its ``close()`` (a
    generator's ``finally``) runs when the body is done, when sending fails, when the client goes
    away, and without any iteration for a ``HEAD`` request or a status that has no body.

    kyoukai_fast's renderers stream the iterable itself. Anything else that iterates the
    ``StreamingBody`` (werkzeug's own WSGI call, as under Kyoukai's HTTP/2 protocol or another
    WSGI server, which counts a ``list`` body before sending it; ``response.get_data()``) reads
    the iterable whole, once, and keeps the chunks as the list's items, so that every later pass
    sees the same body: it then goes out buffered, with its length, but complete. Until then the
    list is empty.
    """

    __slots__ = ("iterable",)

    def __init__(self, iterable):
        super().__init__()
        if isinstance(iterable, (str, bytes, bytearray, memoryview)):
            raise TypeError("StreamingBody wants an iterable of chunks; give a str or bytes "
                            "body to the Response as it is")
        if not hasattr(iterable, "__iter__"):
            if hasattr(iterable, "__aiter__"):
                # werkzeug iterates a body synchronously, on the event loop's thread.
                raise TypeError("StreamingBody needs a synchronous iterable, not an async one")
            raise TypeError(f"StreamingBody needs an iterable, not {type(iterable).__name__}")
        self.iterable = iterable

    def __iter__(self):
        iterable = self.iterable
        if iterable is not None:
            # werkzeug iterates a list body twice (once to count it, once to send it): keep what
            # the first pass read.
            self.iterable = None
            try:
                list.extend(self, iterable)
            finally:
                close = getattr(iterable, "close", None)
                if close is not None:
                    close()
        return list.__iter__(self)

    def __bool__(self) -> bool:
        # An empty list is false, and Kyoukai answers a false route result with 204.
        return True

    def close(self) -> None:
        """Close the wrapped iterable (werkzeug's ``Response.close()`` calls this)."""
        close = getattr(self.iterable, "close", None)  # None once buffered: closed then
        if close is not None:
            close()

    def __repr__(self) -> str:
        if self.iterable is None:
            return f"StreamingBody(<read: {list.__len__(self)} chunks>)"
        return f"StreamingBody({self.iterable!r})"


class _Stream:
    """The iterable of a :class:`StreamingBody` as a plain iterator (not a sequence) that closes
    it: what werkzeug sees of the body while it builds the WSGI response."""

    __slots__ = ("_iterator", "_body")

    def __init__(self, body: StreamingBody):
        self._body = body
        iterable = body.iterable
        # Already read whole (by response.get_data(), say): its chunks are the list's items.
        self._iterator = iter(iterable) if iterable is not None else list.__iter__(body)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iterator)

    def close(self) -> None:
        self._body.close()


def wsgi_response_of_stream(response, environ: dict):
    """``(app_iter, status, headers)`` of a response whose body is a :class:`StreamingBody`.

    werkzeug counts the bytes of any ``list`` body (it takes every list for a sequence) and would
    consume the iterable doing so; shown a plain iterator for the duration of the call, it frames
    the body like any generator's. The response keeps its ``StreamingBody``, so that closing the
    response (what the app iterator does when it is closed) closes the iterable.
    """
    body = response.response
    try:
        response.response = _Stream(body)
        return response.get_wsgi_response(environ)
    except BaseException:
        body.close()
        raise
    finally:
        response.response = body
