# mailgate: the two commands a newcomer needs.
#   make run    run mailgate on the embedded PostgreSQL and Redis (nothing to configure)
#   make test   ruff + mypy (strict) + the test suite against real servers
# Both create .venv and install what they need; `make test` as root on Debian/Ubuntu also
# installs the Debian packages the tests use (Dovecot, Postfix, Chromium for the dashboard,
# Redis with Sentinel, systemd-analyze, promtool).

SHELL := /bin/bash
# pgserver (the embedded PostgreSQL wheel) exists for Python <= 3.12: prefer those.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := dovecot-imapd dovecot-lmtpd dovecot-sieve postfix \
  chromium redis-server redis-sentinel systemd prometheus
PYTEST_ARGS ?=

.PHONY: run test lint typecheck pytest venv deps clean bench lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Everything is installed from the lock files, with hashes (`make lock` refreshes them):
# requirements.lock is what the daemon runs on (the Docker image installs it);
# requirements-dev.lock adds the test tools, at the same versions.
$(VENV)/.installed: requirements-dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements-dev.lock
	@# A stale mailgate.egg-info in the checkout would shadow the entry points installed here.
	rm -rf mailgate.egg-info
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@# flanker writes its parse tables on first import: do it now, before anything runs
	@# concurrently (see gateway/flankerlib.py).
	$(BIN)/python -m gateway.flankerlib
	touch $@

venv: $(VENV)/.installed

# Refresh both lock files from pyproject.toml (uv resolves for every Python >= 3.11;
# the dev lock is constrained to the runtime lock's versions). tests/test_lock.py fails
# when pyproject.toml and the locks disagree.
UV_VERSION := 0.13.9
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet
lock: $(BIN)/python
	$(BIN)/pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra embedded $(LOCK_FLAGS) -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra embedded --extra test $(LOCK_FLAGS) \
	  -c requirements.lock -o requirements-dev.lock

run: venv
	$(BIN)/mailgate run

# Debian packages for the real-server tests (only as root on a Debian-like system).
deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (install them as root: apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway

typecheck: venv
	$(BIN)/mypy

pytest: venv deps
	$(BIN)/pytest $(PYTEST_ARGS)

test: deps venv lint typecheck pytest

bench: venv deps
	$(BIN)/python bench/jobs.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
