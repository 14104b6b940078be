"""
Build script: compiles the Cython hot path, or falls back to a pure-Python build.

* ``KYOUKAI_FAST_NO_EXTENSIONS=1`` at build time: nothing is compiled.
* No working C compiler (or no Cython): a warning, and a pure-Python install that works.
* ``KYOUKAI_FAST_REQUIRE_EXTENSIONS=1`` (set by CI's wheel builds): a failed compile is an error,
  so a pure wheel is never shipped by accident.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = bool(os.environ.get("KYOUKAI_FAST_NO_EXTENSIONS"))
REQUIRE_EXTENSIONS = bool(os.environ.get("KYOUKAI_FAST_REQUIRE_EXTENSIONS"))
MODULES = ["_wsgi_c", "_protocol_c"]


def _say(message):
    print("*" * 75, file=sys.stderr)
    print(message, file=sys.stderr)
    print("*" * 75, file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that degrades to a pure-Python install unless extensions are required."""

    def run(self):
        try:
            super().run()
        except Exception as exc:
            self._fail(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc):
        if REQUIRE_EXTENSIONS:
            raise
        _say(
            "WARNING: kyoukai_fast's C extensions could not be compiled "
            f"({type(exc).__name__}: {exc}).\n"
            "Installing the pure-Python fallback: it works the same, only slower."
        )


def extensions():
    if NO_EXTENSIONS:
        _say("KYOUKAI_FAST_NO_EXTENSIONS is set: building the pure-Python fallback only.")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        _say("WARNING: Cython is not available: building the pure-Python fallback only.")
        return []
    exts = [
        Extension(f"kyoukai_fast.{name}", [f"src/kyoukai_fast/{name}.pyx"])
        for name in MODULES
    ]
    _say("Building kyoukai_fast's compiled (Cython) implementation.")
    return cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        annotate=bool(os.environ.get("KYOUKAI_FAST_ANNOTATE")),
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
