"""
Fixtures for the distribution checks: the sdist and wheel under test, and builds from the sdist.

``KYOUKAI_FAST_DIST_DIR`` names a directory holding one sdist and one wheel already built with
``python -m build`` (``scripts/test_wheel.sh`` sets it, so nothing is built twice); without it the
session builds them from this checkout, with ``KYOUKAI_FAST_REQUIRE_EXTENSIONS=1`` as CI does.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from dist_helpers import ROOT, clean_env, only_one, run


@dataclasses.dataclass
class Dist:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Dist:
    given = os.environ.get("KYOUKAI_FAST_DIST_DIR")
    if given:
        out = Path(given)
    else:
        out = tmp_path_factory.mktemp("dist")
        run([sys.executable, "-m", "build", "-o", out, ROOT],
            env=clean_env(KYOUKAI_FAST_REQUIRE_EXTENSIONS="1"))
    return Dist(sdist=only_one(out.glob("*.tar.gz"), "sdist"),
                wheel=only_one(out.glob("*.whl"), "wheel"))
