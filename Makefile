# Two commands for a fresh machine: `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= $(HOME)/.local/share/dockyard/registry
LISTEN ?= 127.0.0.1:5443
USER_NAME ?= admin
# Optional pull-through mirrors file (docs/mirrors.md): `make run MIRRORS=mirrors.yaml`.
MIRRORS ?=

.PHONY: setup setup-tools run test test-unit lint crds install-manifest images kind-up bench cluster-up cluster-down

setup:
	bash hack/setup.sh

setup-tools:
	bash hack/setup.sh --tools

## Start a local registry with TLS and a first user (prints how to push to it).
run: setup
	bash hack/run.sh "$(DATA)" "$(LISTEN)" "$(USER_NAME)" "$(MIRRORS)"

## Every test: unit, contract, conformance, real clients, real kube-apiserver.
test: setup-tools
	DOCKYARD_TOOLS_BIN="$$(bash hack/tools.sh)" $(PY) -m pytest -q -ra

test-unit: setup
	$(PY) -m pytest -q -ra tests/registry tests/operator tests/common

lint: setup
	$(VENV)/bin/ruff check registry_image operator common tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

crds: setup
	$(PY) -m dockyard_operator.crd > crds/privateregistries.dockyard.dev.yaml

## The chart's CRD copy and deploy/ (the chart rendered with default values), from crds/ and the chart.
install-manifest: crds
	DOCKYARD_TOOLS_BIN="$$(bash hack/tools.sh helm)" bash hack/install-manifest.sh

IMAGE_TAG ?= dev
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
## Container images: docker build where a Docker engine runs; otherwise hack/images.sh (podman and mmdebstrap,
## no outside registry: a local Debian python base as PYTHON_IMAGE, plus nginx, pause and busybox images and an
## archive of each for `ctr images import`, see docs/images.md).
images:
	@if docker info >/dev/null 2>&1; then \
	  set -e; \
	  docker build -f operator/Dockerfile --build-arg REVISION=$(REVISION) -t ghcr.io/dockyard-dev/dockyard-operator:$(IMAGE_TAG) .; \
	  docker build -f registry_image/Dockerfile --build-arg REVISION=$(REVISION) -t ghcr.io/dockyard-dev/dockyard-registry:$(IMAGE_TAG) .; \
	else \
	  echo "make images: no Docker engine; building with podman (hack/images.sh)" >&2; \
	  IMAGE_TAG=$(IMAGE_TAG) REVISION=$(REVISION) bash hack/images.sh; \
	fi

## A kind cluster with the images loaded and the chart installed (needs a Docker engine).
kind-up:
	IMAGE_TAG=$(IMAGE_TAG) bash hack/kind-up.sh

## Dockyard against CNCF Distribution (2.8.2 from Debian, v3 from the Go tools cache) behind the same nginx.
bench: setup-tools
	bash hack/tools.sh distribution >/dev/null
	DOCKYARD_TOOLS_BIN="$$(bash hack/tools.sh)" $(PY) -m bench

## A real single-node cluster on this machine (kubelet, containerd, CoreDNS; no Docker); prints its kubeconfig.
cluster-up: setup-tools
	DOCKYARD_TOOLS_BIN="$$(bash hack/tools.sh)" $(PY) -m tests.support.cluster up

## Stop that cluster and remove everything it left on the machine.
cluster-down: setup
	$(PY) -m tests.support.cluster down
