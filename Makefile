# gradmesh: two set-up commands. `make demo` and `make test` install what they need first.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: setup demo test fmt-check clippy unit protocol-deps

setup:
	bash scripts/setup.sh

demo: setup
	$(CARGO) run --release -p gradmesh-node --bin gradmesh -- demo

test: setup fmt-check clippy protocol-deps unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The protocol core must never depend on an async runtime, the network stack or LibTorch.
protocol-deps:
	bash scripts/check-protocol-deps.sh

unit:
	$(CARGO) test --workspace
