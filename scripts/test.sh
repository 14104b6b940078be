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
.venv/bin/python -m pytest tests "$@"
KYOUKAI_FAST_NO_EXTENSIONS=1 .venv/bin/python -m pytest -q tests "$@"
if [ -d bench ] && ls bench/test_*.py >/dev/null 2>&1; then
    .venv/bin/python -m pytest -q bench --benchmark-disable
fi
# Last: the sdist, the wheel, and the suite run against the wheel installed in a fresh venv.
bash scripts/test_wheel.sh
