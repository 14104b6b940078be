#!/usr/bin/env bash
# Serve the example Kyoukai app with the compiled kyoukai_fast backend (Ctrl-C to stop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python examples/hello_app.py "$@"
