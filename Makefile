# tts-broker: the two commands a newcomer needs.
#
#   make demo   set up .venv, start a broker + 2 Piper workers, speak the seed's example into ./output/, stop
#   make test   set up .venv, lint, run pytest, the Node client's tests and any scripts/test-*.sh suites
#
# Also: `make lint` (ruff + mypy), `make test-unit` (the fast in-process tests, seconds). CONTRIBUTING.md has more.
#
# Override on the command line, e.g. `make demo DEMO_WORKERS=1 DEMO_FRONTEND=tcp://127.0.0.1:6555`.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.tts-installed

DEMO_WORKERS ?= 2
DEMO_ENGINE ?= piper
DEMO_FRONTEND ?= tcp://127.0.0.1:5555
DEMO_BACKEND ?= tcp://127.0.0.1:5556
DEMO_OUTPUT ?= output
DEMO_WAIT_S ?= 180

.PHONY: help install demo lint test test-fast test-unit test-python test-node test-extra clean

help:
	@echo "make demo   - start a local broker + $(DEMO_WORKERS) $(DEMO_ENGINE) workers, speak the seed example into ./$(DEMO_OUTPUT)/, stop"
	@echo "make test   - lint, pytest, then the Node client's tests, then scripts/test-*.sh"
	@echo "make lint   - ruff check . and mypy on the packages, benchmarks and scripts (also for Python 3.10)"
	@echo "make test-fast - lint, pytest and the Node tests, without the heavy scripts/test-*.sh suites"
	@echo "make test-unit - the fast in-process tests only (pytest -m unit)"
	@echo "make clean  - remove output/, caches and the demo state (keeps .venv)"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstalled whenever pyproject.toml changes. `.[piper,gateway,postgres,build,bridges,test]`: the Piper engine
# (GPL-3.0-or-later, optional extra) is what the demo speaks with and what tests/worker/test_engine_piper.py checks;
# gateway is `tts gateway` (gateway/tts_gateway, tests/gateway); postgres the PostgreSQL journal (tests/failover,
# tests/broker/test_journal.py); build `tts build` (studio/tts_studio, tests/studio); bridges `tts bridge`
# (bridge/tts_bridge, tests/bridge).
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -e '.[piper,gateway,postgres,build,bridges,test]'
	touch $@

install: $(STAMP)

# The stack runs in the background with its log in a temporary folder; the trap stops it (broker drains
# first, then the workers) however the demo ends, and shows the log's tail if something failed.
demo: $(STAMP)
	@state="$$(mktemp -d -t tts-demo-XXXXXX)"; up_pid=""; \
	stop() { \
		code=$$?; \
		if [ -n "$$up_pid" ] && kill -0 "$$up_pid" 2>/dev/null; then kill -TERM "$$up_pid"; wait "$$up_pid" || true; fi; \
		if [ "$$code" -ne 0 ]; then echo "--- last lines of the stack's log ($$state/stack.log) ---"; tail -n 30 "$$state/stack.log" || true; \
		else rm -rf "$$state"; fi; \
		exit "$$code"; \
	}; \
	echo "starting: tts up --workers $(DEMO_WORKERS) --engine $(DEMO_ENGINE) (log: $$state/stack.log)"; \
	$(VENV)/bin/tts up --workers $(DEMO_WORKERS) --engine $(DEMO_ENGINE) \
		--frontend $(DEMO_FRONTEND) --backend $(DEMO_BACKEND) \
		--broker-opt state-dir="$$state/broker" --ready-file "$$state/up.json" >"$$state/stack.log" 2>&1 & \
	up_pid=$$!; \
	trap stop EXIT; \
	trap 'exit 130' INT TERM; \
	$(PY) -m tts_client.demo --broker $(DEMO_FRONTEND) --workers $(DEMO_WORKERS) --wait-s $(DEMO_WAIT_S) \
		--output-dir $(DEMO_OUTPUT) --watch-pid "$$up_pid" --stack-ready-file "$$state/up.json"

# Lint first: it takes seconds and fails before the minutes of tests. Settings: [tool.ruff], [tool.mypy].
# mypy twice: at [tool.mypy]'s python_version, and at 3.10, the oldest Python pyproject.toml accepts. The same
# three checks are the hooks of .pre-commit-config.yaml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m mypy
	$(PY) -m mypy --python-version 3.10

test: lint test-python test-node test-extra

# Everything but the heavy suites of scripts/test-*.sh (Chromium for the dashboard, docker-compose for deploy/,
# portaudio and the 2.9 GB Fish Speech venv, the packed Node tarball): lint, pytest and the Node client's tests.
test-fast: lint test-python test-node

test-unit: $(STAMP)
	$(PY) -m pytest -m unit -q

test-python: $(STAMP)
	$(PY) -m pytest

test-node:
	@if [ -f client/node/package.json ]; then \
		if command -v npm >/dev/null; then \
			npm --prefix client/node ci --no-audit --no-fund || npm --prefix client/node install --no-audit --no-fund; \
			npm --prefix client/node test; \
		else echo "npm not found: it is needed for the Node client's tests (client/node)" >&2; exit 1; fi; \
	fi

test-extra: $(STAMP)
	@shopt -s nullglob; for suite in scripts/test-*.sh; do \
		echo "== $$suite"; PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash "$$suite"; \
	done

clean:
	rm -rf $(DEMO_OUTPUT) .pytest_cache .mypy_cache .tts-broker
