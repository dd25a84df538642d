# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit livekit-server bench bench-peers clean browser page lock docs docs-serve
.PHONY: k8s-tools k8s-render lint-k8s jaeger jaeger-ui

# Virtualenv with the package and its dev tools, installed from the hash-locked
# config/requirements/dev.txt (never resolved afresh), refreshed when pyproject.toml or the lock changes.
# `pip check` catches a dependency added to pyproject.toml without `make lock`.
$(STAMP): pyproject.toml config/requirements/dev.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r config/requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check || { echo "config/requirements/dev.txt does not match pyproject.toml: run make lock" >&2; exit 1; }
	touch $(STAMP)

# The lock files (hashes, every platform, Python 3.11+): config/requirements/dev.txt (make test, CI),
# config/requirements/runtime.txt (the image: runtime + emulator) and config/requirements/build.txt (the build
# backend), all three the same versions; and config/requirements/peer.txt, the benchmark's peer
# (livekit-agents, in .venv-peer/: it pins its own livekit, so it is locked on its own). Run after any change to pyproject.toml's dependencies;
# it keeps existing pins and adds what is new. `make lock LOCK_ARGS=--upgrade` moves every pin to
# the newest release pyproject.toml allows.
UV_VERSION := 0.13.9
UV_COMPILE  = $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 \
              --generate-hashes --custom-compile-command "make lock" $(LOCK_ARGS)
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV_COMPILE) pyproject.toml config/requirements/build.in --extra dev --extra emulator \
		-o config/requirements/dev.txt
	$(UV_COMPILE) pyproject.toml --extra emulator -c config/requirements/dev.txt -o config/requirements/runtime.txt
	$(UV_COMPILE) config/requirements/build.in -c config/requirements/dev.txt -o config/requirements/build.txt
	$(UV_COMPILE) config/requirements/peer.in -o config/requirements/peer.txt

# livekit-server: found on PATH or in .tools/, else built once with `go install`.
livekit-server: $(STAMP)
	$(PY) -c 'from bridge.local.livekit_server import ensure_binary; print("livekit-server:", ensure_binary())'

# Jaeger (traces, `dev --traces`, the trace tests): found on PATH or in the tools cache, else built
# once with Go from config/tools/jaeger/ (pinned go.mod/go.sum; several minutes the first time).
jaeger: $(STAMP)
	$(PY) -c 'from bridge.local.jaeger import ensure_binary; print("jaeger:", ensure_binary())'

# Rebuild Jaeger's UI (config/tools/jaeger/jaeger-ui-v1.75.0.tar.xz, committed: Jaeger's Go module
# has none and no registry serves it) from a checkout of jaegertracing/jaeger-ui at tag v1.75.0:
#   make jaeger-ui JAEGER_UI_SRC=/path/to/jaeger-ui
JAEGER_UI_ARCHIVE := config/tools/jaeger/jaeger-ui-v1.75.0.tar.xz
jaeger-ui:
	@test -n "$(JAEGER_UI_SRC)" || { echo "set JAEGER_UI_SRC to a jaeger-ui v1.75.0 checkout" >&2; exit 1; }
	cd $(JAEGER_UI_SRC) && npm ci --no-audit --no-fund --engine-strict=false
	cd $(JAEGER_UI_SRC)/packages/jaeger-ui && npm run build
	cp $(JAEGER_UI_SRC)/LICENSE $(JAEGER_UI_SRC)/packages/jaeger-ui/build/LICENSE
	tar -C $(JAEGER_UI_SRC)/packages/jaeger-ui/build -cJf $(JAEGER_UI_ARCHIVE) \
		--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner .

# kustomize for tests/k8s (renders k8s/ offline): found on PATH or in .tools/, else built once.
k8s-tools: $(STAMP)
	$(PY) -m tests.k8s.tools kustomize

# Render one k8s/ overlay to stdout with the pinned kustomize, no cluster or kubectl needed:
#   make k8s-render OVERLAY=prod > manifests.yaml      (dev, prod or servicemonitor; default dev)
OVERLAY ?= dev
k8s-render: $(STAMP)
	@"$$($(PY) -m tests.k8s.tools kustomize | sed 's/^kustomize: //')" build k8s/overlays/$(OVERLAY)

# Best-practice lint of every rendered k8s/ overlay with kube-linter (built once into .tools/;
# not in `make test`: the first build takes minutes), and of k8s/Dockerfile when hadolint is there.
lint-k8s: k8s-tools
	$(PY) -m tests.k8s.tools lint

# The whole local stack with a simulated human (Ctrl-C stops it); its last line is the page's
# address: open it to talk to the AI yourself.
demo: livekit-server
	$(PY) -m bridge dev

# Headless Chromium for the page's browser test: Debian's package, installed when missing
# (needs root or sudo). Never a downloaded browser build.
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@chromium --version 2>/dev/null

# Rebuild the page's bundle (bridge/local/page/page.js, committed) from bridge/local/page_src/ with npm + esbuild.
page:
	cd bridge/local/page_src && npm ci --no-audit --no-fund && node build.mjs

lint: $(STAMP)
	$(PY) -m ruff check bridge tests
	$(PY) -m ruff format --check bridge tests

typecheck: $(STAMP)
	$(PY) -m mypy

# The documentation site (mkdocs.yml, docs/) into site/: --strict fails on a broken link or
# anchor, a page missing from the nav, or a snippet whose file is gone. `make docs-serve` serves
# it on http://127.0.0.1:8000/ while you edit.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --dev-addr 127.0.0.1:8000

# The whole suite: lint, types, the docs site, unit and integration tests (real livekit-server +
# emulator).
test: lint typecheck docs livekit-server jaeger k8s-tools browser
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

# On-demand soak and benchmark runs (print JSON).
bench: livekit-server
	$(PY) -m tests.bench.room_bench
	$(PY) -m tests.bench.realtime_bench
	$(PY) -m tests.bench.dispatch_bench
	$(PY) -m tests.bench.latency_bench
	$(PY) -m tests.bench.latency_bench --impair 0.05,0.02 --barge-ins 0 --join-humans ""
	$(PY) -m tests.bench.cost_bench --minutes 10 --one-at-a-time
	$(PY) -m tests.bench.meeting_bench
	$(PY) -m tests.bench.drop_bench
	$(PY) -m tests.bench.storm_bench
	$(PY) -m tests.bench.webhook_bench
	$(PY) -m tests.bench.serve_bench
	$(PY) -m tests.bench.churn_bench

# The benchmark's peer (livekit-agents + livekit-plugins-openai, which pin an older livekit than
# ours) in a virtualenv of its own, from the hash-locked config/requirements/peer.txt.
PEER_VENV  := .venv-peer
PEER_STAMP := $(PEER_VENV)/.installed-stamp
$(PEER_STAMP): config/requirements/peer.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --require-hashes --no-deps -r config/requirements/peer.txt
	$(PEER_VENV)/bin/python -m pip check
	touch $(PEER_STAMP)

# The bridge and livekit-agents side by side on the same livekit-server and emulator (one JSON;
# see tests/bench/peer_bench.py). Run it on a quiet machine.
bench-peers: livekit-server $(PEER_STAMP)
	$(PY) -m tests.bench.peer_bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(PEER_VENV) .pytest_cache .mypy_cache .ruff_cache site
