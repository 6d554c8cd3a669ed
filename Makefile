# The README's commands. `make run` serves on the embedded defaults;
# `make test` runs the whole test suite against the local services. Both fetch
# the local models first (`make models`).
CARGO ?= cargo

.PHONY: models test-deps run test fuzz check fmt clippy lint ci services build release

## Fetch the local models into ./models (once; verified by sha256, see docs/MODELS.md).
models:
	bash scripts/fetch-models.sh

## What the tests need from PyPI (the official openai client, for tests/api/inference/sdk.rs).
test-deps:
	bash scripts/test-python.sh

## Run the service with no configuration (SQLite in ./data, 127.0.0.1:8080).
run: models
	$(CARGO) run --release -- serve

## Run every test (unit, property and integration; SQLite and PostgreSQL).
test: models test-deps
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
