# Developer entry points (as in httptools / uvloop).
PYTHON ?= .venv/bin/python

.PHONY: venv build test test-py bench annotate clean

venv:
	bash scripts/bootstrap.sh

build:
	$(PYTHON) setup.py build_ext --inplace

annotate:
	KYOUKAI_FAST_ANNOTATE=1 $(PYTHON) setup.py build_ext --inplace --force
	@echo "annotated HTML: src/kyoukai_fast/*.html"

test:
	bash scripts/test.sh

bench:
	$(PYTHON) -m pytest bench/ --benchmark-only

clean:
	rm -rf build dist src/*.egg-info src/kyoukai_fast/*.c src/kyoukai_fast/*.html \
	       src/kyoukai_fast/*.so
