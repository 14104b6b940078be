"""
Which implementation is live: the one import-time switch of the package.

``KYOUKAI_FAST_NO_EXTENSIONS`` set to ``1``, ``true`` or ``yes`` selects the pure-Python
fallback; unset, empty, ``0``, ``false`` or ``no``: the compiled modules are used when they were
built, and the fallback when they were not. Any other value fails the import with one line.
Type checkers and non-CPython interpreters always see the pure-Python modules.
"""
import platform
from typing import TYPE_CHECKING

from ._settings import env_flag

__all__ = ("USE_EXTENSIONS", "NO_EXTENSIONS_ENV")

NO_EXTENSIONS_ENV = "KYOUKAI_FAST_NO_EXTENSIONS"

USE_EXTENSIONS = not (
    TYPE_CHECKING
    or env_flag(NO_EXTENSIONS_ENV)  # a value other than 1/true/yes, 0/false/no, empty: refused
    or platform.python_implementation() != "CPython"
)
