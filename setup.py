"""
Build script: compiles the Cython hot path, or falls back to a pure-Python build.

* ``KYOUKAI_FAST_NO_EXTENSIONS=1`` at build time: nothing is compiled (a ``py3-none-any`` wheel).
* Not CPython (PyPy, ...): nothing is compiled; the selectors would never load the extension.
* No working C compiler (or no Cython): one warning, and a pure-Python install that works.
* ``KYOUKAI_FAST_REQUIRE_EXTENSIONS=1`` (set by CI's wheel builds): a failed compile is an error,
  so a pure wheel is never shipped by accident.

* The HTTP/2 engine on libnghttp2 (``_http2_nghttp2``) is built when libnghttp2's header and
  library are found (pkg-config ``libnghttp2``, else a compile probe); without them the build
  says so and HTTP/2 runs on the pure-Python h2 engine (``KYOUKAI_FAST_REQUIRE_EXTENSIONS=1``:
  an error). Debian/Ubuntu: ``apt-get install libnghttp2-dev`` (scripts/install-clients.sh).

The build always ends by saying which implementation it produced. pip shows a build's output only
with ``pip install -v``; at run time ``kyoukai_fast.IMPLEMENTATION`` tells which one is live.
"""
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = bool(os.environ.get("KYOUKAI_FAST_NO_EXTENSIONS"))
REQUIRE_EXTENSIONS = bool(os.environ.get("KYOUKAI_FAST_REQUIRE_EXTENSIONS"))
MODULES = ["_wsgi_c", "_protocol_c", "_access_line_c"]
NGHTTP2_MODULE = "_http2_nghttp2"
# Every libnghttp2 function the engine calls that older releases lack: a library without them
# (the CONTINUATION-flood fix arrived with nghttp2_option_set_max_continuations) is not used.
NGHTTP2_PROBE = r"""
#include <nghttp2/nghttp2.h>
int main(void) {
    nghttp2_option *option;
    nghttp2_option_new(&option);
    nghttp2_option_set_max_continuations(option, 8);
    nghttp2_option_set_no_closed_streams(option, 1);
    nghttp2_option_del(option);
    return 0;
}
"""
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
        self.skipped = []
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
            built = [ext.name.rpartition(".")[2] for ext in self.extensions
                     if ext.name not in self.skipped]
            _say("kyoukai_fast: built the compiled (Cython) implementation: "
                 + ", ".join(built))

    def build_extension(self, ext):
        if ext.name.endswith(NGHTTP2_MODULE) and not self.failed:
            # Optional: built only against a libnghttp2 that has every function it calls.
            if not links(self.compiler, NGHTTP2_PROBE, ext):
                if REQUIRE_EXTENSIONS:
                    raise ExtensionsRequired(
                        "KYOUKAI_FAST_REQUIRE_EXTENSIONS is set and " + NGHTTP2_MISSING)
                _say("WARNING: " + NGHTTP2_MISSING)
                self.skipped.append(ext.name)
                return
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._failed(ext.name.rpartition(".")[2], exc)

    def copy_extensions_to_source(self):
        # --inplace: only what was built (one failed module must not undo the others)
        failed = {f"kyoukai_fast.{name}" for name, _ in self.failed} | set(self.skipped)
        everything = self.extensions
        self.extensions = [ext for ext in everything if ext.name not in failed]
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = everything

    def _failed(self, name, exc):
        if REQUIRE_EXTENSIONS:
            raise ExtensionsRequired(
                f"KYOUKAI_FAST_REQUIRE_EXTENSIONS is set and kyoukai_fast.{name} failed to "
                f"compile: {type(exc).__name__}: {exc}"
            ) from exc
        self.failed.append((name, exc))


def nghttp2_flags():
    """``(include_dirs, library_dirs, libraries)`` of libnghttp2: pkg-config's, else the
    compiler's default paths."""
    if shutil.which("pkg-config"):
        try:
            cflags = subprocess.run(["pkg-config", "--cflags", "libnghttp2"], check=True,
                                    capture_output=True, text=True).stdout.split()
            libs = subprocess.run(["pkg-config", "--libs", "libnghttp2"], check=True,
                                  capture_output=True, text=True).stdout.split()
        except (OSError, subprocess.CalledProcessError):
            pass
        else:
            return ([flag[2:] for flag in cflags if flag.startswith("-I")],
                    [flag[2:] for flag in libs if flag.startswith("-L")],
                    [flag[2:] for flag in libs if flag.startswith("-l")] or ["nghttp2"])
    return [], [], ["nghttp2"]


def links(compiler, source, ext) -> bool:
    """Whether ``source`` compiles and links with ``ext``'s paths and libraries."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([path], output_dir=tmp, include_dirs=ext.include_dirs)
            compiler.link_executable(objects, os.path.join(tmp, "probe"),
                                     library_dirs=ext.library_dirs, libraries=ext.libraries)
        except Exception:
            return False
    return True


NGHTTP2_MISSING = (
    "libnghttp2 (1.52 with its security fixes, or 1.61+) and its header were not found: "
    "HTTP/2 will use the pure-Python h2 engine. Install libnghttp2-dev (Debian/Ubuntu) or "
    "libnghttp2-devel (Fedora), then rebuild, for the compiled one.")


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
    include_dirs, library_dirs, libraries = nghttp2_flags()
    exts.append(Extension(f"kyoukai_fast.{NGHTTP2_MODULE}",
                          [f"src/kyoukai_fast/{NGHTTP2_MODULE}.pyx"], include_dirs=include_dirs,
                          library_dirs=library_dirs, libraries=libraries))
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
