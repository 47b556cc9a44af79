# Understudy: Kubernetes components in Rust, proven against a real control plane.
#
#   make up      local cluster (etcd, kube-apiserver, kube-controller-manager,
#                kube-scheduler, kwok nodes, one real node) with every understudy
#                running as pods from the Helm chart
#   make test    everything CI runs: lint, unit tests, e2e on a local control plane
#   make down    stop the local cluster and remove its state
#
# Each target installs what it needs (Debian packages, the Go-built upstream
# binaries, cargo builds); the upstream binaries are cached outside the repo.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

CARGO ?= cargo
LAB := target/debug/understudy-lab
NAME ?= understudy
NODES ?= 3
REAL_NODES ?= 1
## How the understudies run: chart (pods on the real nodes, installed by helm) or processes.
BACKEND ?= chart
UNDERSTUDIES ?= all
LAB_ARGS ?=

.PHONY: help deps toolchain build images up down status test lint unit e2e bench clean-cache

help:
	@sed -n '3,10p' Makefile

## Debian packages for the lab and the proxy's data-path tests.
deps:
	@bash e2e/scripts/install-packages.sh

## Upstream binaries built from the pinned Go modules (cached; warm runs take seconds).
toolchain:
	@bash e2e/controlplane/build.sh

build:
	$(CARGO) build --workspace --bins

## The images as archives from the release binaries, without a container engine
## (target/images/*.tar: `ctr -n k8s.io images import` or `docker load -i`).
images:
	$(CARGO) build --release --workspace --bins
	target/release/understudy-lab images --bin-dir target/release --out-dir target/images

up: deps toolchain build
	$(LAB) up --name $(NAME) --nodes $(NODES) --real-nodes $(REAL_NODES) --backend $(BACKEND) --understudies $(UNDERSTUDIES) $(LAB_ARGS)

down:
	$(LAB) down --name $(NAME)

status:
	$(LAB) status --name $(NAME)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --lib --bins

## The whole suite: lint, unit tests, then the e2e tests, each test binary on
## its own local control plane.
test: deps toolchain lint build
	$(CARGO) test --workspace --no-fail-fast

## The same e2e suite against an existing cluster (e.g. kind) named by KUBECONFIG.
e2e: build
	@test -n "$$KUBECONFIG" || { echo "make e2e: set KUBECONFIG to the cluster to test (e.g. a kind cluster)"; exit 2; }
	@echo "make e2e: the Helm chart is installed by the suite's fixtures once the components are implemented;"
	@echo "          today the suite runs its cluster-level tests against $$KUBECONFIG."
	UNDERSTUDY_E2E_KUBECONFIG="$$KUBECONFIG" $(CARGO) test -p understudy-e2e --no-fail-fast

## Benchmarks, understudy vs upstream on one local control plane (not part of
## `make test`). BENCH_ARGS scales the scheduler part down, e.g. BENCH_ARGS="--nodes 500
## --pods 2000"; BENCH_PREEMPTION_ARGS and BENCH_CONTROLLERS_ARGS the other parts
## (see `understudy-bench <part> --help`); BENCH_WRITE_COSTS_ARGS the control plane's cost of
## a pod create, a bind and a Scheduled Event, which bounds every scheduler's pace.
BENCH_ARGS ?=
BENCH_PREEMPTION_ARGS ?=
BENCH_CONTROLLERS_ARGS ?=
BENCH_WRITE_COSTS_ARGS ?=
bench: deps toolchain
	$(CARGO) build --release --workspace --bins
	target/release/understudy-bench scheduler $(BENCH_ARGS)
	target/release/understudy-bench preemption $(BENCH_PREEMPTION_ARGS)
	target/release/understudy-bench controllers $(BENCH_CONTROLLERS_ARGS)
	target/release/understudy-bench write-costs $(BENCH_WRITE_COSTS_ARGS)
	@echo "make bench: the proxy benchmark is not implemented yet."

clean-cache:
	rm -rf "$${XDG_CACHE_HOME:-$$HOME/.cache}/understudy"
