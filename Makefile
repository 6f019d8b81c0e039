# actiongate: the two commands are `make dev` and `make test`. Both install what they need.
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(CURDIR)/.venv/bin:$(PATH)

# CI builds once on a clean clone and throws the tree away: incremental state would only cost
# disk (gigabytes of it; a full disk makes the linker die with SIGBUS).
ifeq ($(CI),true)
export CARGO_INCREMENTAL := 0
endif

.PHONY: setup dev test bench lint fmt-check clippy build unit-and-e2e cfn-lint fmt clean-local

setup:
	@scripts/setup.sh

## The whole stack on loopback (gateway http://127.0.0.1:$${ACTIONGATE_PORT:-8080}); Ctrl-C stops it.
dev: setup
	$(CARGO) build --workspace --bins
	exec target/debug/local-stack

## Every check and test: formatting, lints, template lint, unit, adapter and end-to-end tests.
test: setup fmt-check cfn-lint clippy build unit-and-e2e
	@echo "make test: all checks passed"

## Benchmarks of the release functions (cold start, AWS requests and cost, throughput, memory,
## size), measured in one run: prints the tables and rewrites BENCHMARKS.md.
bench: setup
	$(CARGO) build --release -p intake -p approval -p executor -p sweep -p rollback -p hello -p hello-sdk
	$(CARGO) build --release -p actiongate-local --bin bench --bin exec-timed
	target/release/bench

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

cfn-lint:
	.venv/bin/cfn-lint infra/template.yaml

# One build of every binary and test target; cargo lambda and the tests reuse it.
build:
	$(CARGO) build --workspace --all-targets

unit-and-e2e:
	$(CARGO) test --workspace

fmt:
	$(CARGO) fmt --all

clean-local:
	rm -rf .local
