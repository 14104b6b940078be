"""
Where both protocols' transports read into: one buffer per thread (their ``BufferedProtocol`` side).

Why not a plain ``data_received`` protocol: for one of those, asyncio's selector transport
receives every read into a new 256 KiB ``bytes`` and then shrinks it to what arrived. glibc serves
an allocation that large with ``mmap`` unless its dynamic threshold was raised earlier in the
life of the process; when it was not, every read costs ``mmap``, ``mremap`` and ``munmap`` and
freshly zeroed pages. Measured here: servers on the asyncio loop started the same way fell to a
third of their speed in some starts and not in others (``strace -c`` showed one ``mmap`` per
request); ``MALLOC_MMAP_THRESHOLD_=131072`` makes every start pay it. Reading into a buffer that
already exists costs none of that, in any process.

The protocols stay ``asyncio.Protocol`` subclasses too (``data_received`` is public API):
asyncio's transports take the buffered path for any ``BufferedProtocol``, while uvloop keeps
``data_received`` for a protocol that is also a ``Protocol``, which is what it should do there:
it reads into a buffer of its own and allocates only the ``bytes`` of what arrived.

One buffer serves every connection of a thread because nothing runs between a transport's
``get_buffer`` and its ``buffer_updated`` (asyncio's selector and SSL transports call them back
to back around one read; the proactor transport copies its own buffer into ours inside one
call), and ``buffer_updated`` copies what was read into a ``bytes`` before anything else runs.
A thread, not an event loop, is the unit: a loop runs in one thread, and any object can hold a
thread-local where not every loop type can be weakly referenced.
"""
from __future__ import annotations

import threading

__all__ = ("READ_BUFFER_SIZE", "bad_read_size", "read_buffer", "read_bytes")

#: Bytes read at most per read: asyncio's own read size (its selector transports' ``max_size``).
READ_BUFFER_SIZE = 256 * 1024

_local = threading.local()


def read_buffer() -> memoryview:
    """This thread's read buffer: a writable memoryview of :data:`READ_BUFFER_SIZE` bytes."""
    view = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(READ_BUFFER_SIZE))
    return view


def bad_read_size(nbytes) -> ValueError:
    """The error of a ``buffer_updated`` count outside the buffer (both protocols raise it)."""
    return ValueError(f"buffer_updated({nbytes!r}): not a byte count of the read buffer "
                      f"(0 to {READ_BUFFER_SIZE})")


def read_bytes(view: memoryview, nbytes: int) -> bytes:
    """The first ``nbytes`` of ``view`` as ``bytes`` (a copy: the buffer is read into again)."""
    if not 0 <= nbytes <= len(view):
        raise bad_read_size(nbytes)
    return bytes(view[:nbytes])
