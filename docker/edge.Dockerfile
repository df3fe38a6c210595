# The reelay edge image: `reelay edge` renders nginx.conf, starts Debian's nginx and supervises
# it (health checks, DNS re-resolution, reloads). nginx runs as the same non-root user and
# listens on the unprivileged port 8080; its pid file, temp files and logs live under work_dir
# (/tmp/reelay-edge), and errors go to stderr (`nginx -e stderr`), so the root filesystem can be
# read-only. The configuration is mounted at /etc/reelay/edge.toml (a ConfigMap in k8s/, a bind
# mount in docker-compose.yml).
#
#   docker build -f docker/edge.Dockerfile -t reelay-edge:0.1.0 .
#
# Base images are build arguments pinned by tag; pin digests in the release pipeline (see
# processor.Dockerfile).

#checkov:skip=CKV_DOCKER_7:FROM names a build argument whose default (the ARG above) is pinned by tag; checkov cannot resolve it
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

############################ builder ############################
# Identical in processor.Dockerfile and edge.Dockerfile: the second image reuses the first's
# layers. No BuildKit-only syntax (cache mounts, COPY --chmod), so the legacy builder, BuildKit
# and docker-compose v1 all build it; dependencies are cached as their own layer instead: the
# manifests and stub sources are built first, so a source-only change recompiles only the
# workspace crates.
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates/protocol/Cargo.toml crates/protocol/
COPY crates/identity/Cargo.toml crates/identity/
COPY crates/media/Cargo.toml crates/media/
COPY crates/jobs/Cargo.toml crates/jobs/
COPY crates/server/Cargo.toml crates/server/
COPY crates/edge/Cargo.toml crates/edge/
COPY crates/dashboard/Cargo.toml crates/dashboard/
COPY crates/cli/Cargo.toml crates/cli/
RUN for c in crates/*/; do mkdir -p "$c/src" && touch "$c/src/lib.rs"; done \
    && rm crates/cli/src/lib.rs && echo 'fn main() {}' > crates/cli/src/main.rs \
    && mkdir -p crates/jobs/examples && echo 'fn main() {}' > crates/jobs/examples/claim_bench.rs \
    && cargo build --release --locked -p reelay \
    && rm -rf crates
COPY crates ./crates
# COPY keeps the files' old modification times; touch them so cargo rebuilds over the stubs.
RUN find crates -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p reelay \
    && install -D -m 0755 target/release/reelay /out/reelay

############################ runtime ############################
FROM ${DEBIAN_IMAGE} AS runtime
# nginx: Debian's (the edge renders a config for it; auth_request is built in).
# curl: HEALTHCHECK only. DL3008: see processor.Dockerfile (security updates replace pins).
# The package's default site and logs are not used: reelay edge passes its own -p/-c/-e.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default

RUN groupadd --system --gid 10001 reelay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin reelay \
    && install -d -o 10001 -g 10001 -m 0750 /etc/reelay

COPY --from=builder /out/reelay /usr/local/bin/reelay

ENV TMPDIR=/tmp
WORKDIR /tmp
EXPOSE 8080
USER 10001:10001

# nginx answers /healthz itself on the listen address of edge.toml (0.0.0.0:8080).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "--max-time", "2", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]

ENTRYPOINT ["reelay"]
CMD ["edge", "--config", "/etc/reelay/edge.toml"]
