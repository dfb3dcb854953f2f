# LogCluster build and test entry points. `make test` is what CI runs (via .ci/run).
#
# Build artefacts live outside the checkout so that a fresh clone reuses them.
export CARGO_TARGET_DIR ?= /var/tmp/logcluster-target
export CARGO_TERM_COLOR ?= never
CARGO ?= cargo

.PHONY: test setup fmt-check clippy deny-openssl unit build release fmt help

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

test: setup fmt-check clippy deny-openssl unit ## The whole suite: formatting, lints, dependency checks, every test

setup: ## Install what the tests need (apt packages, Kubernetes test binaries)
	./scripts/setup.sh

fmt-check: ## Fail when code is not rustfmt-formatted
	$(CARGO) fmt --all -- --check

fmt: ## Format the code
	$(CARGO) fmt --all

clippy: ## Lints, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

deny-openssl: ## Fail if OpenSSL or aws-lc ever enters the dependency tree
	./scripts/check-tls-deps.sh

unit: ## Every test in the workspace
	$(CARGO) test --workspace --locked

build: ## Debug build of every binary
	$(CARGO) build --workspace --locked

release: ## Release build of every binary
	$(CARGO) build --workspace --release --locked
