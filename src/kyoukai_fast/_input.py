"""
``wsgi.input`` for requests without a body, shared by both implementations.

Most requests have no body; one immutable empty stream serves them all instead of a new
``BytesIO`` per request. It cannot be changed: nothing can be written, and ``close()`` leaves it
usable for the next request.
"""
from __future__ import annotations

import io

__all__ = ("EMPTY_INPUT", "EmptyInput")


class EmptyInput(io.RawIOBase):
    """A readable, seekable, always-empty binary stream."""

    def readable(self):
        return True

    def seekable(self):
        return True

    def read(self, size=-1):
        return b""

    def readall(self):
        return b""

    def readinto(self, buffer):
        return 0

    def readline(self, size=-1):
        return b""

    def readlines(self, hint=-1):
        return []

    def seek(self, offset, whence=io.SEEK_SET):
        return 0

    def tell(self):
        return 0

    def close(self):
        # Shared by every request: a handler closing its input must not close it for others.
        pass

    @property
    def closed(self):
        return False

    def __repr__(self):
        return "<kyoukai_fast empty wsgi.input>"


EMPTY_INPUT = EmptyInput()
