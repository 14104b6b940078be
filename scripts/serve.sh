#!/usr/bin/env bash
# Serve the example Kyoukai app (examples/hello_app.py) with the compiled kyoukai_fast backend,
# through the kyoukai-fast command line: bash scripts/serve.sh [--port 4444] [any `run` option].
# Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
cd examples
exec ../.venv/bin/python -m kyoukai_fast run hello_app:app "$@"
