# reelay: `make up` runs a local cluster, `make test` runs every check CI runs.
CARGO ?= cargo
# Where `cargo install` puts binaries (s3s-fs, installed by scripts/ensure-deps.sh test): on PATH
# for every recipe, also where rustup's ~/.cargo/bin is not (a toolchain elsewhere, Debian's cargo).
export PATH := $(or $(CARGO_INSTALL_ROOT),$(CARGO_HOME),$(HOME)/.cargo)/bin:$(PATH)
DATA_DIR ?= data
LISTEN ?= 127.0.0.1:8080
# Compose v2 where installed, else v1 (Debian's docker-compose); both run docker-compose.yml.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: up serve test test-unit test-rust observability-check browser-test tus-test webhooks-test contract-test build deps test-deps fmt lint bench clean \
	deploy-check images compose-env compose-up compose-test compose-token

deps:
	scripts/ensure-deps.sh runtime

test-deps:
	scripts/ensure-deps.sh test

build: deps
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

## Formatting, lints and the whole test suite: Rust unit + integration tests (real ffmpeg, nginx,
## Postgres, S3), deployment files, /metrics, the browser tests and the docker-compose stack.
## Each part runs alone too: test-unit, test-rust, deploy-check, observability-check,
## browser-test, tus-test, webhooks-test, contract-test, compose-test.
test: test-deps fmt lint
	$(CARGO) test --locked --workspace
	$(MAKE) deploy-check
	# The binary `cargo test` just built (a separate `cargo build` would compile it again).
	REELAY_BIN=target/debug/reelay scripts/check-observability.sh
	REELAY_BIN=target/debug/reelay scripts/browser-test.sh
	REELAY_BIN=target/debug/reelay scripts/tus-test.sh
	REELAY_BIN=target/debug/reelay scripts/webhooks-test.sh
	REELAY_BIN=target/debug/reelay scripts/contract-test.sh
	REELAY_BIN=target/debug/reelay scripts/compose-test.sh

## Pure logic only (unit tests in the crates; no server, no ffmpeg run): seconds once built.
test-unit:
	$(CARGO) test --locked --workspace --lib --bins

## Every Rust test (unit + integration, real ffmpeg/nginx/Postgres/S3).
test-rust: test-deps
	$(CARGO) test --locked --workspace

## Base images (official, or local stand-ins where no registry answers) and the project's
## images: reelay-processor, reelay-edge, reelay-s3s-fs (scripts/images.sh).
images:
	scripts/images.sh

## A .env for docker-compose.yml with random secrets, unless one exists.
compose-env:
	scripts/compose-env.sh .env

## The two-cloud stack as containers, built offline if need be: edge on 127.0.0.1:8080.
compose-up: images compose-env
	$(COMPOSE) up

## The compose stack for real: jobs through the edge, a cloud killed, a cloud cut off, hardening.
compose-test: build
	REELAY_BIN=target/debug/reelay scripts/compose-test.sh

## /metrics of clusters and edge through promtool, Prometheus config/rules/rule tests, Grafana JSON.
observability-check: build
	REELAY_BIN=target/debug/reelay scripts/check-observability.sh

## The dashboard in headless Chromium against `reelay up` (screenshots in target/browser-artifacts/).
browser-test: build
	REELAY_BIN=target/debug/reelay scripts/browser-test.sh

## Resumable uploads with an independent tus client (tuspy) and the CLI, against `reelay serve`.
tus-test: build
	REELAY_BIN=target/debug/reelay scripts/tus-test.sh

## Webhooks: a live cluster's deliveries verified by the standardwebhooks package (PyPI), a
## receiver that is down for a while, redelivery.
webhooks-test: build
	REELAY_BIN=target/debug/reelay scripts/webhooks-test.sh

## The API contract: schemathesis against a live cluster's /openapi.json (bounded: 120 s, then 40 s on the remote-claim routes).
contract-test: build
	REELAY_BIN=target/debug/reelay scripts/contract-test.sh

## Deployment files (docker/, docker-compose.yml, k8s/, terraform/) checked offline; see README "Deploy".
deploy-check:
	scripts/validate-deploy.sh

## Benchmarks against bare ffmpeg (see docs/benchmarks.md).
bench: deps
	$(CARGO) build --locked --release -p reelay
	bench/run.sh

clean:
	$(CARGO) clean

## The compose stack's first admin token (made once per project by its identity-keys service).
compose-token:
	@$(COMPOSE) run --rm --no-deps --entrypoint cat identity-keys /data/admin.token
