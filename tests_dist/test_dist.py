"""
What the sdist and the wheel contain, and how builds from the sdist behave on other machines:
with the extensions switched off, with no C compiler, and in CI where extensions are required.
"""
from __future__ import annotations

import re
import shutil
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from dist_helpers import ROOT, clean_env, run, wheel_from_sdist

pytestmark = pytest.mark.timeout(600)

COMPILED = ("_protocol_c", "_wsgi_c", "_access_line_c", "_http2_nghttp2")
# Cython declarations shipped with the sources: the cdef classes' and libnghttp2's.
DECLARATIONS = ("_protocol_c", "_wsgi_c", "_access_line_c", "_nghttp2")
GENERATED = (".c", ".html", ".so", ".pyd", ".pyc", ".o")
SOURCES = [p.name for p in (ROOT / "src" / "kyoukai_fast").iterdir()
           if p.suffix in (".py", ".pyx", ".pxd")]
# A compiler that is not there, as on a machine without build tools.
NO_COMPILER = {"CC": "/nonexistent/cc"}


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_sdist_ships_the_cython_sources_and_no_generated_files(dist):
    with tarfile.open(dist.sdist) as tf:
        names = [n.split("/", 1)[1] for n in tf.getnames() if "/" in n]
    assert {f"src/kyoukai_fast/{name}" for name in SOURCES} <= set(names)
    for module in COMPILED:
        assert f"src/kyoukai_fast/{module}.pyx" in names
    for module in DECLARATIONS:
        assert f"src/kyoukai_fast/{module}.pxd" in names
    top_level = {"setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE",
                 "tests/conftest.py", "fuzz/seeds/get"}
    assert top_level <= set(names)
    assert not [n for n in names if n.endswith(GENERATED)]


def test_generated_files_are_not_tracked_by_git():
    tracked = run(["git", "ls-files"], cwd=ROOT).stdout.split()
    assert "src/kyoukai_fast/_protocol_c.pyx" in tracked
    assert not [n for n in tracked if n.endswith(GENERATED)]


def test_wheel_holds_the_compiled_modules(dist):
    names = wheel_names(dist.wheel)
    tag = sys.implementation.cache_tag.replace("cpython-", "cp")
    assert f"-{tag}-{tag}-" in dist.wheel.name, dist.wheel.name
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for module in COMPILED:
        assert f"kyoukai_fast/{module}{suffix}" in names
    for module in DECLARATIONS:
        # The Cython declarations stay, so other extensions can cimport the cdef classes.
        assert f"kyoukai_fast/{module}.pxd" in names
    assert {f"kyoukai_fast/{name}" for name in SOURCES} <= set(names)
    assert not [n for n in names if n.endswith((".c", ".html", ".o"))]


def test_wheel_carries_the_license_and_the_metadata_an_index_shows(dist):
    names = wheel_names(dist.wheel)
    [license_file] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    [metadata_file] = [n for n in names if n.endswith(".dist-info/METADATA")]
    with zipfile.ZipFile(dist.wheel) as zf:
        assert zf.read(license_file).decode().startswith("MIT License")
        metadata = zf.read(metadata_file).decode()
    assert "License-Expression: MIT" in metadata
    classifiers = set(re.findall(r"^Classifier: (.+)$", metadata, flags=re.M))
    assert {f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)} <= \
        classifiers
    assert {"Operating System :: POSIX :: Linux", "Operating System :: MacOS",
            "Operating System :: Microsoft :: Windows"} <= classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert re.search(r"^Project-URL: Homepage, https://", metadata, flags=re.M)
    assert re.search(r"^Provides-Extra: reload$", metadata, flags=re.M)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auditwheel is Linux-only")
def test_auditwheel_repairs_the_wheel_to_a_manylinux_tag(dist, tmp_path):
    run(["auditwheel", "repair", "--strip", "-w", tmp_path, dist.wheel])
    [repaired] = tmp_path.glob("*.whl")
    assert re.search(r"manylinux_\d+_\d+_" + re.escape(sysconfig.get_platform().split("-")[-1]),
                     repaired.name), repaired.name
    assert [n for n in wheel_names(repaired) if n.endswith(".so")]
    # libnghttp2 (the compiled HTTP/2 engine's) is grafted into the wheel, and nothing else:
    # libc is system-provided.
    grafted = [n for n in wheel_names(repaired) if ".libs/" in n and not n.endswith("/")]
    assert len(grafted) == 1 and re.match(r"kyoukai_fast\.libs/libnghttp2-[0-9a-f]+\.so",
                                          grafted[0]), grafted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auditwheel is Linux-only")
def test_repaired_wheels_http2_engine_loads_its_bundled_libnghttp2(dist, tmp_path):
    run(["auditwheel", "repair", "--strip", "-w", tmp_path / "wheelhouse", dist.wheel])
    [repaired] = (tmp_path / "wheelhouse").glob("*.whl")
    with zipfile.ZipFile(repaired) as zf:
        zf.extractall(tmp_path / "site")
    probe = ("import kyoukai_fast, kyoukai_fast._http2_nghttp2 as m\n"
             "maps = open('/proc/self/maps').read().split()\n"
             "print('ENGINE', kyoukai_fast.HTTP2_ENGINE, m.LIBRARY_VERSION)\n"
             "print('LIBS', *sorted({p for p in maps if 'libnghttp2' in p}))\n")
    lines = run([sys.executable, "-c", probe], cwd=tmp_path / "site",
                env=clean_env(PYTHONPATH=str(tmp_path / "site"))).stdout.splitlines()
    out = {line.split()[0]: line.split()[1:] for line in lines
           if line.split()[:1] in (["ENGINE"], ["LIBS"])}
    engine, version = out["ENGINE"]
    assert engine == "nghttp2" and re.match(r"1\.\d+\.\d+$", version), out
    # the copy inside the wheel, not the system's
    assert out["LIBS"] and all(str(tmp_path / "site" / "kyoukai_fast.libs") in path
                               for path in out["LIBS"]), out


def test_no_extensions_at_build_time_compiles_nothing(dist, tmp_path):
    built = wheel_from_sdist(dist.sdist, tmp_path, KYOUKAI_FAST_NO_EXTENSIONS="1")
    assert built.returncode == 0, built.stdout[-4000:]
    assert "KYOUKAI_FAST_NO_EXTENSIONS is set" in built.stdout
    [wheel] = tmp_path.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert not [n for n in wheel_names(wheel) if n.endswith((".so", ".pyd"))]


def test_required_extensions_fail_the_build_without_a_compiler(dist, tmp_path):
    built = wheel_from_sdist(dist.sdist, tmp_path, KYOUKAI_FAST_REQUIRE_EXTENSIONS="1",
                             **NO_COMPILER)
    assert built.returncode != 0
    assert "KYOUKAI_FAST_REQUIRE_EXTENSIONS is set and kyoukai_fast._wsgi_c failed" in built.stdout
    assert not list(tmp_path.glob("*.whl"))


def test_build_without_libnghttp2_says_so_and_keeps_the_other_modules(dist, tmp_path):
    # a libnghttp2 header that does not compile, found before the system's: the probe fails
    fake = tmp_path / "include" / "nghttp2"
    fake.mkdir(parents=True)
    (fake / "nghttp2.h").write_text("#error no libnghttp2 here\n")
    built = wheel_from_sdist(dist.sdist, tmp_path / "wheel", CFLAGS=f"-I{fake.parent}")
    assert built.returncode == 0, built.stdout[-4000:]
    assert "libnghttp2 (1.52 with its security fixes, or 1.61+) and its header were not " \
        "found: HTTP/2 will use the pure-Python h2 engine" in " ".join(built.stdout.split())
    assert ("built the compiled (Cython) implementation: _wsgi_c, _protocol_c, _access_line_c\n"
            in built.stdout)
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    compiled = [n for n in wheel_names(wheel) if n.endswith(".so")]
    assert len(compiled) == 3 and not [n for n in compiled if "_http2_nghttp2" in n], compiled


def test_build_without_a_compiler_installs_a_working_pure_python_fallback(dist, tmp_path):
    built = wheel_from_sdist(dist.sdist, tmp_path / "wheel", **NO_COMPILER)
    assert built.returncode == 0, built.stdout[-4000:]
    assert "WARNING: kyoukai_fast's C extensions could not be compiled" in built.stdout
    assert "Installing the pure-Python fallback" in built.stdout
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    assert not [n for n in wheel_names(wheel) if n.endswith((".so", ".pyd"))]

    # A fresh virtualenv gets the pure wheel and runs part of the suite against it.
    venv = tmp_path / "venv"
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv])
    python = venv / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    run([python, "-m", "pip", "install", "-q", wheel, "pytest", "pytest-timeout"])
    shutil.copytree(ROOT / "tests", tmp_path / "suite" / "tests")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "suite")
    live = run([python, "-c", "import kyoukai_fast as k; print(k.IMPLEMENTATION)"],
               cwd=tmp_path / "suite").stdout.split()
    assert live == ["python"]
    tested = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not cython",
                  "tests/test_smoke.py", "tests/test_implementation.py"],
                 cwd=tmp_path / "suite", env=clean_env(KYOUKAI_FAST_TEST_INSTALLED="1"),
                 check=False)
    assert tested.returncode == 0, tested.stdout[-4000:]
    assert " passed" in tested.stdout and "skipped" not in tested.stdout


def identifiers(platform: str) -> set[str]:
    out = run(["cibuildwheel", "--print-build-identifiers", "--platform", platform, ROOT]).stdout
    return set(out.split())


def test_cibuildwheel_builds_cpython_3_10_to_3_13_on_linux_macos_and_windows():
    versions = {f"cp3{minor}" for minor in range(10, 14)}
    expected = {
        "linux": {f"{v}-{libc}_{arch}" for v in versions
                  for libc in ("manylinux", "musllinux") for arch in ("x86_64", "aarch64")},
        "macos": {f"{v}-macosx_{arch}" for v in versions for arch in ("x86_64", "arm64")},
        "windows": {f"{v}-win_amd64" for v in versions},
    }
    for platform, wanted in expected.items():
        assert identifiers(platform) == wanted, platform


def test_cibuildwheel_requires_extensions_and_tests_the_installed_wheel():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
    assert config["environment"]["KYOUKAI_FAST_REQUIRE_EXTENSIONS"] == "1"
    assert config["test-environment"]["KYOUKAI_FAST_TEST_INSTALLED"] == "1"
    assert config["test-environment"]["KYOUKAI_FAST_EXPECT_COMPILED"] == "1"
    # The suite replays fuzz/seeds (tests/test_fuzz.py) and runs bench/test_*.py.
    assert {"tests", "fuzz", "bench"} <= set(config["test-sources"])
    assert "pytest" in config["test-command"] and "tests" in config["test-command"]
