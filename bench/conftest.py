"""
Fixtures of the micro benchmarks: ``impl_name`` runs a benchmark once per implementation
(compiled ``cython``, pure-Python ``python``, stock Kyoukai ``stock``) on the same input, and each
benchmark is in a ``group`` so pytest-benchmark's table compares the three side by side.

``pytest bench/`` times them; ``pytest bench --benchmark-disable`` runs each body once (CI), so
the benchmarks and their correctness assertions cannot rot.
"""
from __future__ import annotations

import pytest

from _support import EXPECT_COMPILED, IMPLEMENTATION_NAMES, IMPLEMENTATIONS


@pytest.fixture(params=IMPLEMENTATION_NAMES)
def impl_name(request) -> str:
    name = request.param
    if IMPLEMENTATIONS[name] is None:
        if name == "cython" and not EXPECT_COMPILED:
            pytest.skip("compiled implementation not built")
        pytest.fail(f"implementation {name} did not import")
    return name
