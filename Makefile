# LogCluster build and test entry points. `make test` is what CI runs (via .ci/run).
#
# Build artefacts live outside the checkout so that a fresh clone reuses them.
export CARGO_TARGET_DIR ?= /var/tmp/logcluster-target
export CARGO_TERM_COLOR ?= never
# Where scripts/k8s-tools.sh caches etcd, kube-apiserver and helm; the k8s test harness reads it.
export LOGCLUSTER_TOOLS_DIR ?= /var/tmp/logcluster-tools
CARGO ?= cargo

.PHONY: test setup fmt-check clippy deny-openssl unit build release fmt help k8s-tools test-k8s crds images dev bench

help: ## Show the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

dev: ## Run a local 3-node cluster on loopback (logctl dev; Ctrl-C stops it)
	$(CARGO) build --release --locked -p logcluster-node -p logctl --bin lognode --bin logctl
	$(CARGO_TARGET_DIR)/release/logctl dev $(DEV_ARGS)

test: setup fmt-check clippy deny-openssl unit ## The whole suite: formatting, lints, dependency checks, every test

setup: ## Install what the tests need (apt packages, Kubernetes test binaries, buildah)
	./scripts/setup.sh
	./images/build.sh setup

k8s-tools: ## Build and cache the Kubernetes test binaries (etcd, kube-apiserver, helm)
	./scripts/k8s-tools.sh build

test-k8s: k8s-tools ## Only the Kubernetes tests (real etcd + kube-apiserver)
	$(CARGO) test --workspace --locked --test e2e -- k8s_

fmt-check: ## Fail when code is not rustfmt-formatted
	$(CARGO) fmt --all -- --check

fmt: ## Format the code
	$(CARGO) fmt --all

clippy: ## Lints, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

deny-openssl: ## Fail if OpenSSL or aws-lc ever enters the dependency tree
	./scripts/check-tls-deps.sh

unit: ## Every test in the workspace
	@# The static binaries the container images copy are built first, on their own: the image
	@# tests would otherwise compile them inside their start-up timers (a cold static build, run
	@# nice'd, took over 15 minutes on a busy 2-core machine and timed the Kubernetes tests out).
	LOGCLUSTER_IMAGE_PROFILE=dev ./images/build.sh binaries
	$(CARGO) test --workspace --locked

crds: ## Regenerate crds/logcluster.yaml from the operator's Rust types and copy it into the chart (tests fail on drift)
	$(CARGO) run --quiet --locked -p logcluster-operator --bin crdgen > crds/logcluster.yaml
	cp crds/logcluster.yaml charts/logcluster-operator/crds/logcluster.yaml

build: ## Debug build of every binary
	$(CARGO) build --workspace --locked

release: ## Release build of every binary
	$(CARGO) build --workspace --release --locked

bench: release ## Benchmarks: the commit log, then logctl bench on 1- and 3-node local clusters
	$(CARGO) bench --locked -p logcluster-node --bench log
	./scripts/bench-cluster.sh 1
	./scripts/bench-cluster.sh 3

images: ## Container images lognode and logcluster-operator (static binaries, buildah, no daemon)
	./images/build.sh images
