# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit livekit-server bench clean

# Virtualenv with the package and its dev tools, refreshed when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# livekit-server: found on PATH or in .tools/, else built once with `go install`.
livekit-server: $(STAMP)
	$(PY) -c 'from bridge.livekit_server import ensure_binary; print("livekit-server:", ensure_binary())'

# The whole local stack with a simulated human (Ctrl-C stops it).
demo: livekit-server
	$(PY) -m bridge dev

lint: $(STAMP)
	$(PY) -m ruff check bridge tests
	$(PY) -m ruff format --check bridge tests

typecheck: $(STAMP)
	$(PY) -m mypy

# The whole suite: lint, types, unit and integration tests (real livekit-server + emulator).
test: lint typecheck livekit-server
	$(PY) -m pytest $(PYTEST_ARGS)

# On-demand soak and benchmark runs (print JSON).
bench: livekit-server
	$(PY) -m tests.bench.room_bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
