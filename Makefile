# Understudy: Kubernetes components in Rust, proven against a real control plane.
#
#   make up      local cluster (etcd, kube-apiserver, kube-controller-manager,
#                kube-scheduler, kwok nodes, one real node) with every understudy
#                running as pods from the Helm chart
#   make test    everything CI runs: lint, unit tests, e2e on a local control plane
#   make down    stop the local cluster and remove its state
#   make images  the components' image: archives in target/images, and the
#                Dockerfile's build where a container engine runs
#   make kind-e2e  the e2e suite on a kind cluster (needs kind and docker or podman)
#   make chaos   faults under churn on a lab of its own, invariants checked
#                (CHAOS_ARGS="--duration 10m --seed 42"; docs/CHAOS.md)
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

.PHONY: help deps toolchain build images up down status test lint lint-workflows unit e2e kind-e2e bench chaos clean-cache

help:
	@sed -n '3,15p' Makefile

## Debian packages for the lab and the proxy's data-path tests.
deps:
	@bash e2e/scripts/install-packages.sh

## Upstream binaries built from the pinned Go modules (cached; warm runs take seconds).
toolchain:
	@bash e2e/controlplane/build.sh

build:
	$(CARGO) build --workspace --bins

## The images as archives from the release binaries, without a container engine
## (target/images/*.tar: `ctr -n k8s.io images import` or `docker load -i`); and,
## where a container engine answers (docker, else podman), the same components'
## image built from the Dockerfile as localhost/understudy:dev. A docker CLI whose
## daemon does not answer counts as no engine.
images:
	$(CARGO) build --release --workspace --bins
	target/release/understudy-lab images --bin-dir target/release --out-dir target/images
	@engine=""; \
	for e in docker podman; do \
	  if command -v $$e >/dev/null 2>&1 && timeout 30 $$e info >/dev/null 2>&1; then engine=$$e; break; fi; \
	done; \
	if [ -n "$$engine" ]; then \
	  echo "$$engine build -t localhost/understudy:dev ."; \
	  $$engine build -t localhost/understudy:dev .; \
	else \
	  echo "make images: Dockerfile build skipped: no container engine (docker or podman) answers on this machine; the archives are in target/images"; \
	fi

up: deps toolchain build
	$(LAB) up --name $(NAME) --nodes $(NODES) --real-nodes $(REAL_NODES) --backend $(BACKEND) --understudies $(UNDERSTUDIES) $(LAB_ARGS)

down:
	$(LAB) down --name $(NAME)

status:
	$(LAB) status --name $(NAME)

lint: lint-workflows
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## .github/workflows checked by actionlint, built from its pinned Go module into
## a cache directory of its own (seconds when warm; the Kubernetes toolchain is
## not needed for it).
lint-workflows:
	bash e2e/controlplane/build.sh --actionlint >/dev/null
	"$$(bash e2e/controlplane/build.sh --print-actionlint)" .github/workflows/*.yaml

unit:
	$(CARGO) test --workspace --lib --bins

## The whole suite: lint, unit tests, then the e2e tests, each test binary on
## its own local control plane.
test: deps toolchain lint build
	$(CARGO) test --workspace --no-fail-fast

## The same e2e suite against an existing cluster (e.g. kind) named by KUBECONFIG: the chart
## is installed with IMAGE (loaded into the nodes beforehand, or pullable) and the values files
## in CHART_VALUES on top of the generated ones (e.g. tolerations), E2E_HANDOVER (a
## command) then runs, e.g. to switch the replaced controllers off in kube-controller-manager,
## then the suite (with kwok on this host as the kubelet of the fake nodes the tests create:
## `understudy-lab fake-nodes`), then `helm uninstall` and a check that nothing of the release
## is left.
IMAGE ?= localhost/understudy:dev
IMAGE_PULL_POLICY ?= IfNotPresent
E2E_HANDOVER ?=
CHART_VALUES ?=
e2e: build toolchain
	@test -n "$$KUBECONFIG" || { echo "make e2e: set KUBECONFIG to the cluster to test (e.g. a kind cluster)"; exit 2; }
	$(LAB) chart install --kubeconfig "$$KUBECONFIG" --image $(IMAGE) --pull-policy $(IMAGE_PULL_POLICY) $(addprefix --values=,$(CHART_VALUES))
	$(E2E_HANDOVER)
	$(LAB) fake-nodes --kubeconfig "$$KUBECONFIG" & kwok=$$!; \
	trap 'kill $$kwok 2>/dev/null; exit 1' INT TERM; \
	status=0; UNDERSTUDY_E2E_KUBECONFIG="$$KUBECONFIG" $(CARGO) test -p understudy-e2e --no-fail-fast || status=$$?; \
	kill $$kwok; wait $$kwok || status=$$?; \
	$(LAB) chart uninstall --kubeconfig "$$KUBECONFIG" || status=$$?; \
	exit $$status

## `make e2e` on a kind cluster made from e2e/kind.yaml, with the Dockerfile's image
## loaded into its nodes; the cluster is deleted afterwards, whatever the result
## (KIND_E2E_KEEP=1 keeps it). Needs kind and docker or podman: without them it
## says what is missing and fails.
kind-e2e:
	@bash e2e/scripts/kind-e2e.sh

## Benchmarks, understudy vs upstream on one local control plane (not part of
## `make test`). BENCH_ARGS scales the scheduler part down, e.g. BENCH_ARGS="--nodes 500
## --pods 2000"; BENCH_PREEMPTION_ARGS and BENCH_CONTROLLERS_ARGS the other parts
## (see `understudy-bench <part> --help`); BENCH_WRITE_COSTS_ARGS the control plane's cost of
## a pod create, a bind and a Scheduled Event, which bounds every scheduler's pace;
## BENCH_PROXY_ARGS the proxy part, kube-proxy vs understudy-proxy each in a network
## namespace of its own (needs root), e.g. BENCH_PROXY_ARGS="--services 1000" or
## "--mode nftables" (its default, 10000 Services in iptables mode, takes over an hour here:
## docs/BENCHMARKS.md); BENCH_BINDER_ARGS the PV binder part, 1000 volumes + 1000 claims to
## Bound with kube-controller-manager's binder, ours and a null binder, e.g. "--pairs 200".
BENCH_ARGS ?=
BENCH_PREEMPTION_ARGS ?=
BENCH_CONTROLLERS_ARGS ?=
BENCH_WRITE_COSTS_ARGS ?=
BENCH_PROXY_ARGS ?=
BENCH_BINDER_ARGS ?=
## BENCH_SCALE_ARGS: the scheduler's scale run (10000 kwok nodes, 100000 pods, understudy
## only), whose CPU per pod by tenth of the pods shows whether its cost grows with the cluster.
BENCH_SCALE_ARGS ?=
bench: deps toolchain
	$(CARGO) build --release --workspace --bins
	target/release/understudy-bench scheduler $(BENCH_ARGS)
	target/release/understudy-bench scheduler --nodes 10000 --existing 0 --pods 100000 --only understudy $(BENCH_SCALE_ARGS)
	target/release/understudy-bench preemption $(BENCH_PREEMPTION_ARGS)
	target/release/understudy-bench controllers $(BENCH_CONTROLLERS_ARGS)
	target/release/understudy-bench binder $(BENCH_BINDER_ARGS)
	target/release/understudy-bench write-costs $(BENCH_WRITE_COSTS_ARGS)
	target/release/understudy-bench proxy $(BENCH_PROXY_ARGS)

## A chaos run on a lab of its own (docs/CHAOS.md): a seeded churn while the
## understudies' replicas are killed and frozen, the apiserver restarted, etcd
## compacted and kube-controller-manager switched in and out for our controllers;
## exit 1 on any invariant violation. Default 10 minutes; CHAOS_ARGS passes
## options, e.g. CHAOS_ARGS="--duration 3m --seed 17" to replay a run,
## "--real-nodes 1" to cut a real node's network too, "--upstream" for
## upstream's components in ours' places.
CHAOS_ARGS ?=
chaos: deps toolchain build
	$(LAB) chaos --name chaos $(CHAOS_ARGS)

clean-cache:
	rm -rf "$${XDG_CACHE_HOME:-$$HOME/.cache}/understudy"
