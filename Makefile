# Every target works on a fresh machine with only python3 and make: the virtual environment
# is created in the checkout (.venv) and refreshed when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test lint bench fmt clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev,plots,http,bench]'
	touch $(STAMP)

## demo: set up, run the bundled demo and print its summary
demo: $(STAMP)
	$(PY) -m scitokens_batch demo

## test: set up and run the whole test suite (interop tests need the Debian peers; see .ci/run);
## three workers: the live tests that wait on the wall clock run beside the rest (tests/conftest.py)
test: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist loadgroup --durations=15

## lint: ruff, mypy --strict on the package, and the import-layer contracts
lint: $(STAMP)
	$(VENV)/bin/ruff check scitokens_batch tests benchmarks
	$(VENV)/bin/ruff format --check scitokens_batch tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## bench: performance ratios measured in one run (not a test)
bench: $(STAMP)
	$(PY) -m benchmarks

fmt: $(STAMP)
	$(VENV)/bin/ruff format scitokens_batch tests benchmarks
	$(VENV)/bin/ruff check --fix scitokens_batch tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
