# Build, try and test timely. Each target says what it does and stops at the
# first failing command.
#
#   make deps    install what is missing: redis-server, redis-tools (the
#                bench's baseline is redis-benchmark), openssl, Graphviz,
#                the virtualenv .venv
#   make build   install timely from source into .venv, and mirror its native
#                module into timely/_native so the source tree imports too
#   make demo    run `python -m timely demo` with the installed package
#   make test    go vet, the Go tests, mypy --strict, then pytest against the
#                installed package
#   make docs    render the diagrams docs/*.dot to docs/*.png with Graphviz
#   make bench   run `python -m timely bench` (arguments in BENCH_ARGS)
#   make clean   remove build outputs (distclean also removes .venv)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

# The interpreter the virtualenv is made from; the native module is built for
# it. It needs a shared libpython and its headers.
PYTHON ?= python3
VENV := .venv
VENV_PY := $(abspath $(VENV))/bin/python
# matplotlib draws `timely bench --plot`, which the tests exercise.
PY_REQS := pybindgen==0.22.1 pytest pytest-asyncio mypy wheel "setuptools>=64" matplotlib
DEPS_STAMP := $(VENV)/.timely-deps

# Programs are run from here so that `import timely` finds the installed
# package, not the source folder of the same name.
RUN_DIR := build/run

GO_TEST_FLAGS ?= -count=1 -timeout 600s
# A hard bound on the whole pytest run, in seconds; SIGINT first, so pytest
# prints where it was stuck and still stops its Redis servers.
PYTEST_TIMEOUT ?= 900
BENCH_ARGS ?=

# Go and Python tests start their own redis-server processes from this binary.
REDIS_ENV = TIMELY_REDIS_SERVER="$${TIMELY_REDIS_SERVER:-$$(command -v redis-server)}"
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# The diagrams of the README: docs/NAME.dot renders to $(DOCS_OUT)/NAME.png.
DOCS_SRC := $(wildcard docs/*.dot)
DOCS_OUT ?= docs

.PHONY: deps system-deps go-deps build demo test bench docs clean distclean

deps: system-deps go-deps $(DEPS_STAMP)

system-deps:
	@if command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
	    && command -v redis-benchmark >/dev/null \
	    && command -v openssl >/dev/null; then \
	  echo "deps: redis-server present: $$(command -v redis-server)"; \
	else \
	  echo "deps: installing redis-server, redis-tools and openssl with apt-get"; \
	  $(SUDO) apt-get update; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y --no-install-recommends redis-server redis-tools openssl; \
	fi
	@if command -v dot >/dev/null; then \
	  echo "deps: Graphviz present: $$(command -v dot)"; \
	else \
	  echo "deps: installing graphviz with apt-get (make docs and its test)"; \
	  $(SUDO) apt-get update; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y --no-install-recommends graphviz; \
	fi
	@command -v go >/dev/null || { echo "deps: Go 1.26 or newer must be on PATH" >&2; exit 1; }
	@command -v $(PYTHON) >/dev/null || { echo "deps: $(PYTHON) not found" >&2; exit 1; }

go-deps:
	@echo "deps: Go modules (go mod download, a no-op when cached)"
	go mod download

$(VENV_PY):
	@echo "deps: creating the virtualenv $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# The stamp records that the packages were installed for this Makefile's list.
$(DEPS_STAMP): Makefile | $(VENV_PY)
	@echo "deps: installing missing build and test packages into $(VENV)"
	$(VENV_PY) -m pip install --quiet $(PY_REQS)
	touch $@

build: deps
	@echo "build: pip install . into $(VENV) (compiles the Go core with gopy)"
	$(VENV_PY) -m pip install --no-build-isolation --no-deps .
	@echo "build: mirroring the installed native module into timely/_native"
	rm -rf timely/_native
	cp -R "$$($(VENV_PY) -c 'import sysconfig; print(sysconfig.get_path("platlib"))')/timely/_native" timely/_native
	find timely/_native -name __pycache__ -prune -exec rm -rf {} +

demo: build
	@echo "demo: python -m timely demo, from $(RUN_DIR)"
	mkdir -p $(RUN_DIR)
	cd $(RUN_DIR) && $(VENV_PY) -m timely demo

test: build
	@echo "test: go vet ./..."
	go vet ./...
	@echo "test: Go tests (core and tests/, real redis-server)"
	$(REDIS_ENV) go test ./core/... ./tests/... $(GO_TEST_FLAGS)
	@echo "test: mypy --strict timely (settings in pyproject.toml)"
	$(VENV_PY) -m mypy --strict timely
	@echo "test: checking that pytest will import the installed timely"
	cd python_tests && origin="$$($(VENV_PY) -c 'import importlib.util as u; print(u.find_spec("timely").origin)')" \
	  && echo "test: timely is $$origin" && [[ $$origin == */site-packages/* ]] \
	  || { echo "test: the source folder shadows the installed timely" >&2; exit 1; }
	@echo "test: pytest python_tests (real redis-server, at most $(PYTEST_TIMEOUT) s)"
	cd python_tests && $(REDIS_ENV) timeout --signal=INT --kill-after=30 $(PYTEST_TIMEOUT) \
	  $(VENV_PY) -m pytest -q .

bench: build
	@echo "bench: python -m timely bench $(BENCH_ARGS), from $(RUN_DIR)"
	mkdir -p $(RUN_DIR)
	cd $(RUN_DIR) && $(REDIS_ENV) $(VENV_PY) -m timely bench $(BENCH_ARGS)

docs: system-deps
	@echo "docs: rendering $(DOCS_SRC) into $(DOCS_OUT)/ with Graphviz"
	mkdir -p $(DOCS_OUT)
	for src in $(DOCS_SRC); do \
	  dot -Tpng -Gdpi=96 -o "$(DOCS_OUT)/$$(basename "$$src" .dot).png" "$$src"; \
	done

clean:
	@echo "clean: removing build outputs and caches (keeps $(VENV))"
	rm -rf build dist *.egg-info timely/_native .pytest_cache .mypy_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	@echo "distclean: removing $(VENV)"
	rm -rf $(VENV)
