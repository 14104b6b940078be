"""
Which implementation is live: the one import-time switch of the package.

``KYOUKAI_FAST_NO_EXTENSIONS`` set to any non-empty value selects the pure-Python fallback;
otherwise the compiled modules are used when they were built, and the fallback when they were not.
Type checkers and non-CPython interpreters always see the pure-Python modules.
"""
import os
import platform
from typing import TYPE_CHECKING

__all__ = ("USE_EXTENSIONS", "NO_EXTENSIONS_ENV")

NO_EXTENSIONS_ENV = "KYOUKAI_FAST_NO_EXTENSIONS"

USE_EXTENSIONS = not (
    TYPE_CHECKING
    or bool(os.environ.get(NO_EXTENSIONS_ENV))
    or platform.python_implementation() != "CPython"
)
