# reelay: `make up` runs a local cluster, `make test` runs every check CI runs.
CARGO ?= cargo
DATA_DIR ?= data
LISTEN ?= 127.0.0.1:8080

.PHONY: up serve test observability-check browser-test build deps test-deps fmt lint bench clean deploy-check

deps:
	scripts/ensure-deps.sh runtime

test-deps:
	scripts/ensure-deps.sh test

build:
	$(CARGO) build --locked -p reelay

## The local two-cloud stack: clusters `aws` (3 workers, :8081) and `gcp` (1 worker, :8082) and the
## NGINX edge on 127.0.0.1:8080 (deploy/local/topology.toml). Ctrl-C stops everything.
up: deps build
	./target/debug/reelay up --topology deploy/local/topology.toml

## One cluster alone: `reelay serve` on $(LISTEN) with its data in ./$(DATA_DIR).
serve: deps build
	./target/debug/reelay serve --listen $(LISTEN) --data-dir $(DATA_DIR)

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

## Formatting, lints and the whole test suite (unit + integration with real ffmpeg).
test: test-deps fmt lint
	$(CARGO) test --locked --workspace
	$(MAKE) deploy-check
	# The binary `cargo test` just built (a separate `cargo build` would compile it again).
	REELAY_BIN=target/debug/reelay scripts/check-observability.sh
	REELAY_BIN=target/debug/reelay scripts/browser-test.sh

## /metrics of clusters and edge through promtool, Prometheus config/rules/rule tests, Grafana JSON.
observability-check: build
	REELAY_BIN=target/debug/reelay scripts/check-observability.sh

## The dashboard in headless Chromium against `reelay up` (screenshots in target/browser-artifacts/).
browser-test: build
	REELAY_BIN=target/debug/reelay scripts/browser-test.sh

## Deployment files (docker/, docker-compose.yml, k8s/, terraform/) checked offline; see README "Deploy".
deploy-check:
	scripts/validate-deploy.sh

## Benchmarks against bare ffmpeg (see docs/benchmarks.md).
bench: deps
	$(CARGO) build --locked --release -p reelay
	bench/run.sh

clean:
	$(CARGO) clean
