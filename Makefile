# The two commands a newcomer runs:
#   make run    set up .venv and start Mimir
#   make test   set up .venv with test extras and run the test suite
# Both create or update .venv themselves, so they work on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Extras the app needs at run time, and the extra ones the tests need.
RUN_EXTRAS := ui,charts,cache
TEST_EXTRAS := $(RUN_EXTRAS),dev,hf
# The CPU build of torch (the transformers backend's tests use it).
TORCH_SPEC ?= torch==2.13.0
QUESTION ?= What is summation?

.PHONY: run test bench install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel

# Stamps record what was installed; they are redone when pyproject.toml changes.
$(VENV)/.run-installed: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[$(RUN_EXTRAS)]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PIP) install --quiet '$(TORCH_SPEC)'
	$(PIP) install --quiet -e '.[$(TEST_EXTRAS)]'
	touch $@

install: $(VENV)/.run-installed
install-test: $(VENV)/.test-installed

run: install
	$(VENV)/bin/mimir ask "$(QUESTION)"

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install-test
	$(PY) bench/bench_manager.py

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
