# Developer entry points (as in httptools / uvloop).
PYTHON ?= .venv/bin/python

.PHONY: venv build test test-py bench bench-micro bench-load bench-quick bench-memory annotate clean

venv:
	bash scripts/bootstrap.sh

build:
	$(PYTHON) setup.py build_ext --inplace

annotate:
	KYOUKAI_FAST_ANNOTATE=1 $(PYTHON) setup.py build_ext --inplace --force
	@echo "annotated HTML: src/kyoukai_fast/*.html"

test:
	bash scripts/test.sh

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
	rm -rf build dist src/*.egg-info src/kyoukai_fast/*.c src/kyoukai_fast/*.html \
	       src/kyoukai_fast/*.so
