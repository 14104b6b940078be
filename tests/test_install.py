"""
The README's install, for real: a fresh virtualenv, ``pip install ".[kyoukai]"`` (from a copy of
this source tree, as the README says while the package is not on PyPI) and
``pip install --no-deps kyoukai==2.2.1.post1``; then the installed ``kyoukai-fast`` command
serves the example app, and ``asphalt run`` finds the ``type: kyoukai_fast`` entry point.
Nothing from the source tree is on the path: this is the installed package.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from procs import ROOT, Server, get_json, posix_only, request, run, source_tree_only

EXTRA_INSTALL = 'pip install ".[kyoukai]"'
KYOUKAI_INSTALL = "pip install --no-deps kyoukai==2.2.1.post1"
INSTALL_TIMEOUT = 600
# The first test also builds the package (compiles the extension) in its fixture.
pytestmark = [pytest.mark.timeout(2 * INSTALL_TIMEOUT + 120), source_tree_only, posix_only]


def clean_env(**extra) -> dict:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("PYTHONPATH", "KYOUKAI_FAST_NO_EXTENSIONS", "VIRTUAL_ENV")}
    environment.update(PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return environment


def source_copy(target):
    """The files git would ship (tracked, or new and not ignored): no build leftovers."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True,
                            timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("install")
    source = source_copy(base / "source")
    venv = base / "venv"
    environment = clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120,
                   env=environment)
    pip = str(venv / "bin" / "pip")
    # The README's two commands, with this source tree in place of the PyPI name.
    for argv in (EXTRA_INSTALL.replace('".[', f'"{source}[').split(),
                 KYOUKAI_INSTALL.split()):
        argv = [pip, *[a.strip('"') for a in argv[1:]], "-q"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                                env=environment, cwd=str(base))
        assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"
    return venv, source


def test_installed_package_reports_its_implementation(installed):
    venv, _ = installed
    result = run([venv / "bin" / "python", "-c",
                  "import kyoukai_fast, os; print(kyoukai_fast.IMPLEMENTATION, "
                  "os.path.dirname(kyoukai_fast.__file__))"], env=clean_env(), cwd=venv)
    assert result.returncode == 0, result.stderr
    implementation, location = result.stdout.split()
    assert implementation == "cython"  # this machine has a C compiler: the build compiled it
    assert location.startswith(str(venv))


def test_installed_cli_serves_the_example_app(installed):
    venv, source = installed
    with Server([venv / "bin" / "kyoukai-fast", "run", "hello_app:app", "--port", "0"],
                env=clean_env(), cwd=source / "examples") as server:
        port = server.port(r"serving hello_app:app on http://127\.0\.0\.1:(\d+)")
        assert request(port, "GET", "/")[::2] == (200, b"Hello, world!")
        assert get_json(port, "/api/status") == {"backend": "kyoukai_fast._protocol_c"}
        assert request(port, "GET", "/missing")[0] == 404


def test_installed_asphalt_entry_point(installed, tmp_path):
    venv, source = installed
    config = tmp_path / "config.yml"
    config.write_text("component:\n  type: kyoukai_fast\n  app: hello_app:app\n"
                      "  ip: 127.0.0.1\n  port: 0\n")
    environment = clean_env(PYTHONPATH=str(source / "examples"))
    with Server([venv / "bin" / "asphalt", "run", config], env=environment,
                cwd=source / "examples") as server:
        port = server.port(r"kyoukai_fast serving on 127\.0\.0\.1:(\d+)")
        assert request(port, "GET", "/")[::2] == (200, b"Hello, world!")
