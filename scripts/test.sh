#!/usr/bin/env bash
# The whole test suite: lint, then every test with the compiled implementation selected (each
# protocol test runs on both twins either way), then every test again with the pure-Python one
# selected by KYOUKAI_FAST_NO_EXTENSIONS (the CLI, gunicorn, Kyoukai's backend lookup and the
# README's commands then serve the pure twin), then the benchmarks once in quick mode so they
# cannot rot, then the release artefacts: sdist and wheel checks and the suite against the
# installed wheel (scripts/test_wheel.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
make -s lint
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# The compiled twin must load in both runs: its tests fail instead of skipping.
export KYOUKAI_FAST_EXPECT_COMPILED=1
# On two worker processes (pytest-xdist): every test asks the OS for its ports and keeps its
# files in its own temporary directory, so tests run side by side. KYOUKAI_FAST_TEST_WORKERS=0
# runs them one by one in this process.
workers=(-n "${KYOUKAI_FAST_TEST_WORKERS:-2}")
.venv/bin/python -m pytest "${workers[@]}" tests "$@"
KYOUKAI_FAST_NO_EXTENSIONS=1 .venv/bin/python -m pytest -q "${workers[@]}" tests "$@"
# The Kyoukai apps once more with the fast request pipeline off (the app's own process_request;
# the runs above serve them through the fast pipeline, its default).
KYOUKAI_FAST_NO_PIPELINE=1 .venv/bin/python -m pytest -q "${workers[@]}" \
    tests/test_kyoukai_integration.py
if [ -d bench ] && ls bench/test_*.py >/dev/null 2>&1; then
    .venv/bin/python -m pytest -q bench --benchmark-disable
fi
# Last: the sdist, the wheel, and the suite run against the wheel installed in a fresh venv.
bash scripts/test_wheel.sh
