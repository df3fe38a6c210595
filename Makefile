# reelay: `make up` runs a local cluster, `make test` runs every check CI runs.
CARGO ?= cargo
DATA_DIR ?= data
LISTEN ?= 127.0.0.1:8080

.PHONY: up test build deps test-deps fmt lint bench clean

deps:
	scripts/ensure-deps.sh runtime

test-deps:
	scripts/ensure-deps.sh test

build:
	$(CARGO) build --locked -p reelay

## Runs `reelay serve` on $(LISTEN) with its data in ./$(DATA_DIR) (Ctrl-C stops it, draining jobs).
up: deps build
	./target/debug/reelay serve --listen $(LISTEN) --data-dir $(DATA_DIR)

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

## Formatting, lints and the whole test suite (unit + integration with real ffmpeg).
test: test-deps fmt lint
	$(CARGO) test --locked --workspace

## Benchmarks against bare ffmpeg (see docs/benchmarks.md).
bench: deps
	$(CARGO) build --locked --release -p reelay
	bench/run.sh

clean:
	$(CARGO) clean
