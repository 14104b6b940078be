#!/usr/bin/env bash
# Creates .venv with everything the project needs and builds the extension in place.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# curl and h2load (nghttp2-client), the HTTP/2 clients of the tests.
bash scripts/install-clients.sh
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.deps-installed
if [ ! -f "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements-dev.txt
    # Kyoukai's own pins (httptools 0.0.x, werkzeug 0.12) cannot install on Python 3.11+.
    .venv/bin/python -m pip install -q --no-deps "kyoukai==2.2.1.post1"
    touch "$stamp"
fi
# Build the Cython extension in place; fail loudly: the tests expect the compiled implementation.
KYOUKAI_FAST_REQUIRE_EXTENSIONS=1 .venv/bin/python setup.py -q build_ext --inplace 2>&1 \
    | grep -vE "BetaConfiguration|_BetaConfiguration|FutureWarning|bdist_wheel|warnings.warn" || true
.venv/bin/python -c "import sys; sys.path.insert(0, 'src'); import kyoukai_fast._protocol_c, kyoukai_fast._wsgi_c" \
    || { echo "bootstrap: the compiled extension did not build" >&2; exit 1; }
