#!/usr/bin/env bash
# The whole test suite: both implementations (compiled and pure-Python) in one run (the fast
# request pipeline on, its default), the Kyoukai integration tests with it off, then the
# import-time switch, then the benchmarks once in quick mode so they cannot rot, then the
# release artefacts: sdist and wheel checks and the suite against the installed wheel
# (scripts/test_wheel.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export KYOUKAI_FAST_EXPECT_COMPILED=1
.venv/bin/python -m pytest tests "$@"
# The Kyoukai apps once more with the fast request pipeline off (the app's own process_request).
KYOUKAI_FAST_NO_PIPELINE=1 .venv/bin/python -m pytest -q tests/test_kyoukai_integration.py
# The switch: with KYOUKAI_FAST_NO_EXTENSIONS set, the pure-Python implementation is live.
KYOUKAI_FAST_NO_EXTENSIONS=1 KYOUKAI_FAST_EXPECT_COMPILED= \
    .venv/bin/python -m pytest -q tests/test_implementation.py
if [ -d bench ] && ls bench/test_*.py >/dev/null 2>&1; then
    .venv/bin/python -m pytest -q bench --benchmark-disable
fi
# Last: the sdist, the wheel, and the suite run against the wheel installed in a fresh venv.
bash scripts/test_wheel.sh
