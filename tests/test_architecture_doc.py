"""
docs/architecture.md names every module of the package with its job: a module added without a
line there fails here, so the layout a newcomer reads stays the tree's.
"""
from __future__ import annotations

import pathlib
import re

import kyoukai_fast

SOURCE_SUFFIXES = (".py", ".pyx", ".pxd")


def test_the_layout_names_every_module():
    root = pathlib.Path(__file__).parent.parent
    layout = (root / "docs" / "architecture.md").read_text().split("\n## Layout\n", 1)[1]
    layout = layout.split("\n## ", 1)[0]
    named = set(re.findall(r"(?<![\w.])(_{0,2}[a-z][a-z0-9_]*)(?:\.pyx|\.pxd|\.py)\b", layout))
    package = pathlib.Path(kyoukai_fast.__file__).parent
    modules = {p.stem for p in package.iterdir() if p.suffix in SOURCE_SUFFIXES}
    assert {"_protocol_c", "_protocol_py", "_http2"} <= modules  # the package was found
    assert sorted(modules - named) == []
