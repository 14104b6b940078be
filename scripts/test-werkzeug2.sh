#!/usr/bin/env bash
# The suite against werkzeug 2.x (pyproject allows werkzeug>=2.3), in a throwaway virtualenv so
# that .venv keeps werkzeug 3. Not part of `make test` (it installs a second set of packages).
#   bash scripts/test-werkzeug2.sh [2.3.*]
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-2.3.*}
bash scripts/bootstrap.sh  # builds the extension in place
venv=$(mktemp -d "${TMPDIR:-/tmp}/kyoukai-fast-werkzeug2.XXXXXX")
trap 'rm -rf "$venv"' EXIT
.venv/bin/python -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "werkzeug==$version" \
    "httptools>=0.6" "asphalt>=4,<5" "h2>=4" gunicorn uvloop pytest pytest-timeout hypothesis
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "kyoukai==2.2.1.post1"
"$venv/bin/python" -c "import werkzeug.formparser, importlib.metadata as m; \
print('werkzeug', m.version('werkzeug'))"
# test_install builds a wheel with the default (werkzeug 3) resolution: not what this checks.
PATH="$venv/bin:$PATH" PYTHONPATH="$PWD/src" KYOUKAI_FAST_EXPECT_COMPILED=1 \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests --deselect tests/test_install.py
