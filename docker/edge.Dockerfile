# syntax=docker/dockerfile:1.7
# The reelay edge image: `reelay edge` renders nginx.conf, starts Debian's nginx and supervises
# it (health checks, DNS re-resolution, reloads). nginx runs as the same non-root user and
# listens on the unprivileged port 8080; its pid file, temp files and logs live under work_dir
# (/tmp/reelay-edge), and errors go to stderr (`nginx -e stderr`), so the root filesystem can be
# read-only. The configuration is mounted at /etc/reelay/edge.toml (a ConfigMap in k8s/, a bind
# mount in docker-compose.yml).
#
#   docker build -f docker/edge.Dockerfile -t reelay-edge:0.1.0 .
#
# Base images are pinned by tag; pin digests in the release pipeline (see processor.Dockerfile).

############################ builder ############################
FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# Same cache ids as processor.Dockerfile: building the second image reuses the first's work.
RUN --mount=type=cache,id=reelay-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=reelay-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=reelay-target-release,target=/src/target \
    cargo build --release --locked -p reelay \
    && install -D -m 0755 target/release/reelay /out/reelay

############################ runtime ############################
FROM debian:bookworm-slim AS runtime
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
