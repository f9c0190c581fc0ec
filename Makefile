# Two commands for a fresh machine: `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= $(HOME)/.local/share/dockyard/registry
LISTEN ?= 127.0.0.1:5443
USER_NAME ?= admin

.PHONY: setup setup-tools run test test-unit lint crds bench

setup:
	bash hack/setup.sh

setup-tools:
	bash hack/setup.sh --tools

## Start a local registry with TLS and a first user (prints how to push to it).
run: setup
	bash hack/run.sh "$(DATA)" "$(LISTEN)" "$(USER_NAME)"

## Every test: unit, contract, conformance, real clients, real kube-apiserver.
test: setup-tools
	DOCKYARD_TOOLS_BIN="$$(bash hack/tools.sh)" $(PY) -m pytest -q -ra

test-unit: setup
	$(PY) -m pytest -q -ra tests/registry tests/operator

lint: setup
	$(VENV)/bin/ruff check registry_image operator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

crds: setup
	$(PY) -m dockyard_operator.crd > crds/privateregistries.dockyard.dev.yaml

## Dockyard against CNCF Distribution (2.8.2 from Debian, v3 from the Go tools cache) behind the same nginx.
bench: setup-tools
	bash hack/tools.sh distribution >/dev/null
	DOCKYARD_TOOLS_BIN="$$(bash hack/tools.sh)" $(PY) -m bench
