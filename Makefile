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
TEST_EXTRAS := $(RUN_EXTRAS),dev,hf,trackio,otel,postgres
# The CPU build of torch (the transformers backend's tests use it).
TORCH_SPEC ?= torch==2.13.0
QUESTION ?= What is summation?
# llama-cpp-python compiles llama.cpp from source. A -march=native build crashed in
# batched decode on this project's AVX-512/AMX machines, so it is built for AVX2 (which
# every x86-64 machine of the last decade has), once, into a wheelhouse outside the repo
# that later installs (and CI on the same machine) reuse.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
WHEELHOUSE ?= $(HOME)/.cache/mimir/wheels/llama-cpp-$(LLAMA_CPP_VERSION)-avx2

.PHONY: run ask test bench install install-test browser-deps postgres-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel

$(VENV)/.llama-installed: | $(PY)
	@ls $(WHEELHOUSE)/llama_cpp_python-*.whl >/dev/null 2>&1 || { \
	  echo "Building llama-cpp-python $(LLAMA_CPP_VERSION) (about 5 minutes, once)"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(PIP) wheel --quiet --no-deps --no-cache-dir -w $(WHEELHOUSE) 'llama-cpp-python==$(LLAMA_CPP_VERSION)'; }
	$(PIP) install --quiet --find-links $(WHEELHOUSE) 'llama-cpp-python==$(LLAMA_CPP_VERSION)'
	touch $@

# Stamps record what was installed; they are redone when pyproject.toml changes.
$(VENV)/.run-installed: pyproject.toml $(VENV)/.llama-installed | $(PY)
	$(PIP) install --quiet -e '.[$(RUN_EXTRAS)]'
	touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/.llama-installed | $(PY)
	$(PIP) install --quiet '$(TORCH_SPEC)'
	$(PIP) install --quiet -e '.[$(TEST_EXTRAS)]'
	touch $@

install: $(VENV)/.run-installed
install-test: $(VENV)/.test-installed

# The web app on http://127.0.0.1:7860/ (PORT=... to change it; Ctrl-C stops it).
PORT ?= 7860
run: install
	$(VENV)/bin/mimir serve --port $(PORT)

ask: install
	$(VENV)/bin/mimir ask "$(QUESTION)"

# The browser test drives Debian's Chromium; installed here when missing and we are root.
# Without it that test skips and says why.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	      || echo "could not install chromium: the browser test will skip"; \
	  else echo "chromium missing (as root: apt-get install chromium chromium-driver): the browser test will skip"; fi; }

# The PostgreSQL tests start their own throwaway server (initdb, pg_ctl, postgres as a non-root
# user); Debian's postgresql package is installed here when the binaries are missing and we are
# root. Without it those tests skip and say why.
PG_BIN_GLOB := /usr/lib/postgresql/*/bin/initdb
postgres-deps:
	@{ command -v initdb >/dev/null 2>&1 || ls $(PG_BIN_GLOB) >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
	      || echo "could not install postgresql: the PostgreSQL tests will skip"; \
	  else echo "PostgreSQL missing (as root: apt-get install postgresql): the PostgreSQL tests will skip"; fi; }

test: install-test browser-deps postgres-deps
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest $(PYTEST_ARGS)

# Every benchmark prints its own table; run them on a quiet machine.
BENCHES ?= bench_manager bench_turn bench_telemetry bench_cache bench_transformers_estimate
bench: install-test
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
