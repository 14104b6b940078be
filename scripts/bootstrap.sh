#!/usr/bin/env bash
# Creates .venv with everything the project needs, builds the extension in place and installs
# the checkout into .venv in editable mode: `.venv/bin/kyoukai-fast` and
# `.venv/bin/python -m kyoukai_fast` then run this tree (src/), rebuilt in place by `make build`.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# curl and h2load (nghttp2-client), the HTTP/2 clients of the tests; libnghttp2-dev.
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
.venv/bin/python -c "import sys; sys.path.insert(0, 'src'); import kyoukai_fast._protocol_c, kyoukai_fast._wsgi_c, kyoukai_fast._access_line_c, kyoukai_fast._http2_nghttp2" \
    || { echo "bootstrap: the compiled extension did not build" >&2; exit 1; }
# The console script and the package on .venv's path, pointing at src/ (editable): made once,
# since the in-place build above is what later changes need. (Checked through the installed
# metadata: importing the package would cost a second on every run.)
if [ ! -x .venv/bin/kyoukai-fast ] || ! .venv/bin/python -c \
        "import importlib.metadata as m; m.distribution('kyoukai-fast')" 2>/dev/null; then
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 \
        | grep -vE "BetaConfiguration|FutureWarning|bdist_wheel|warnings.warn" || true
    .venv/bin/kyoukai-fast --version >/dev/null \
        || { echo "bootstrap: the kyoukai-fast command is not installed in .venv" >&2; exit 1; }
fi
