# The README's commands. `make run` serves on the embedded defaults;
# `make test` runs the whole test suite against the local services.
CARGO ?= cargo

.PHONY: run test fuzz check fmt clippy lint ci services build release

## Run the service with no configuration (SQLite in ./data, 127.0.0.1:8080).
run:
	$(CARGO) run --release -- serve

## Run every test (unit, property and integration; SQLite and PostgreSQL).
test:
	$(CARGO) test --all-targets

## Fuzz the whole API from its OpenAPI document (schemathesis; seeded, at most 3 minutes).
fuzz:
	bash scripts/fuzz-api.sh

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release

check:
	$(CARGO) check --workspace --all-targets

fmt:
	$(CARGO) fmt --all

clippy lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Start the local services the tests use, when installed but not running.
services:
	bash .ci/services.sh

## What CI runs.
ci:
	bash .ci/run
