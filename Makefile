# The two README commands are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp

.PHONY: install system-deps test test-fast fault-test check protos config-tables bench demo up clean compose-test

install: system-deps $(STAMP)

# Debian packages the tests need (redis-server, sipp, openssl); installed only when missing.
system-deps:
	@scripts/install-system-deps.sh

# The runtime dependencies at the versions of requirements/lock.txt (the images install that
# set too, and `scripts/lock-deps.py --check` compares it with this environment).
$(STAMP): pyproject.toml setup.py requirements/lock.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]' -c requirements/lock.txt
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q --durations=25

# Quick inner loop: skips the slow reference checks and real-process tests.
test-fast: install
	$(PY) -m pytest -q -m "not slow and not e2e"

# The fault-injection suite: each fault under a steady sipp call load on `sipsec up`
# processes; writes build/fault-report.json. Minutes long, so `make test` skips it.
fault-test: install
	SIPSEC_FAULT_TEST=1 $(PY) -m pytest -q tests/faults

check: install
	$(VENV)/bin/ruff check libs services cli tests bench scripts deploy
	$(VENV)/bin/mypy libs/sipsec/ibc
	$(VENV)/bin/mypy libs/sipsec services cli

# Regenerates the gRPC stubs from protos/ (tests fail when the committed ones are stale).
protos: install
	$(PY) scripts/gen_protos.py

# Regenerates the configuration tables of the service READMEs (tests fail when they are stale).
config-tables: install
	$(PY) -m sipsec.config --readme

bench: install
	@scripts/install-system-deps.sh --bench
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

demo: install
	$(VENV)/bin/sipsec demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The two-domain topology as separate processes (Ctrl-C stops everything).
up: install
	$(VENV)/bin/sipsec up

# The container stage (needs a Docker engine, docker-compose, sipp, tcpdump; root for the
# debootstrap base image): images, the two-domain compose deployment, 50 calls, faults.
# Report: build/compose-report.json. `make test` does not collect tests/compose.
compose-test: install
	SIPSEC_COMPOSE_TEST=1 $(PY) -m pytest -q -s --timeout=1800 tests/compose
