"""
Build script: compiles the Cython hot path, or falls back to a pure-Python build.

* ``KYOUKAI_FAST_NO_EXTENSIONS=1`` at build time: nothing is compiled (a ``py3-none-any`` wheel).
* Not CPython (PyPy, ...): nothing is compiled; the selectors would never load the extension.
* No working C compiler (or no Cython): one warning, and a pure-Python install that works.
* ``KYOUKAI_FAST_REQUIRE_EXTENSIONS=1`` (set by CI's wheel builds): a failed compile is an error,
  so a pure wheel is never shipped by accident.

The build always ends by saying which implementation it produced. pip shows a build's output only
with ``pip install -v``; at run time ``kyoukai_fast.IMPLEMENTATION`` tells which one is live.
"""
import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = bool(os.environ.get("KYOUKAI_FAST_NO_EXTENSIONS"))
REQUIRE_EXTENSIONS = bool(os.environ.get("KYOUKAI_FAST_REQUIRE_EXTENSIONS"))
MODULES = ["_wsgi_c", "_protocol_c", "_access_line_c"]
PURE_FALLBACK = "Installing the pure-Python fallback: same behaviour, only slower."


def _say(message):
    print("*" * 75, file=sys.stderr)
    print(message, file=sys.stderr)
    print("*" * 75, file=sys.stderr)


class ExtensionsRequired(RuntimeError):
    """A compile failed while KYOUKAI_FAST_REQUIRE_EXTENSIONS was set."""


class OptionalBuildExt(build_ext):
    """build_ext that degrades to a pure-Python install unless extensions are required."""

    def run(self):
        self.failed = []
        try:
            super().run()
        except ExtensionsRequired:
            raise
        except Exception as exc:  # no compiler at all (e.g. MSVC missing): nothing was built
            self._failed("all", exc)
        if not self.extensions:
            return
        if self.failed:
            names = ", ".join(name for name, _ in self.failed)
            reasons = "\n".join(f"  {name}: {type(exc).__name__}: {exc}"
                                for name, exc in self.failed)
            _say(f"WARNING: kyoukai_fast's C extensions could not be compiled ({names}):\n"
                 f"{reasons}\n{PURE_FALLBACK}\n"
                 "Install a C compiler and the Python headers, then reinstall, to get the "
                 "compiled implementation.")
        else:
            _say("kyoukai_fast: built the compiled (Cython) implementation: "
                 + ", ".join(MODULES))

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._failed(ext.name.rpartition(".")[2], exc)

    def _failed(self, name, exc):
        if REQUIRE_EXTENSIONS:
            raise ExtensionsRequired(
                f"KYOUKAI_FAST_REQUIRE_EXTENSIONS is set and kyoukai_fast.{name} failed to "
                f"compile: {type(exc).__name__}: {exc}"
            ) from exc
        self.failed.append((name, exc))


def extensions():
    if NO_EXTENSIONS:
        _say("kyoukai_fast: KYOUKAI_FAST_NO_EXTENSIONS is set: building the pure-Python "
             "fallback only.")
        return []
    if platform.python_implementation() != "CPython":
        if REQUIRE_EXTENSIONS:
            raise ExtensionsRequired("the compiled implementation needs CPython")
        _say(f"kyoukai_fast: {platform.python_implementation()} uses the pure-Python "
             "implementation; nothing to compile.")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError as exc:
        if REQUIRE_EXTENSIONS:
            raise ExtensionsRequired(
                "KYOUKAI_FAST_REQUIRE_EXTENSIONS is set and Cython is not installed") from exc
        _say(f"WARNING: Cython is not installed: nothing to compile.\n{PURE_FALLBACK}")
        return []
    exts = [
        Extension(f"kyoukai_fast.{name}", [f"src/kyoukai_fast/{name}.pyx"])
        for name in MODULES
    ]
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
        quiet=True,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
