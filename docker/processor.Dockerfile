# syntax=docker/dockerfile:1.7
# The reelay cluster image: `reelay serve` by default; `reelay api`, `reelay worker` and
# `reelay migrate` are the same image with another command (see k8s/ and docker-compose.yml).
#
# Build (BuildKit is required for the cache mounts):
#   docker build -f docker/processor.Dockerfile -t reelay-processor:0.1.0 .
# Run with a read-only root filesystem (only /data and /tmp are written):
#   docker run --read-only --tmpfs /tmp -v reelay-data:/data -p 8080:8080 reelay-processor:0.1.0
#
# Base images are pinned by tag. Digests could not be looked up where this file was written (no
# image registry reachable); pin them with `image@sha256:...` in the release pipeline, e.g.
# `docker buildx imagetools inspect rust:1.95.0-bookworm`, and let a bot bump both together.

############################ builder ############################
FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
# Dependencies stay cached between builds: the cargo registry and the target directory live in
# BuildKit cache mounts, so a source-only change recompiles only the workspace crates.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,id=reelay-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=reelay-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=reelay-target-release,target=/src/target \
    cargo build --release --locked -p reelay \
    && install -D -m 0755 target/release/reelay /out/reelay

############################ runtime ############################
FROM debian:bookworm-slim AS runtime
# ffmpeg/ffprobe run as reelay's subprocesses; curl is here only for HEALTHCHECK (there is no
# `reelay health` subcommand, and bookworm-slim has neither curl nor wget).
# DL3008: exact Debian versions are not pinned because bookworm's security archive replaces
# them (old versions disappear and the build breaks); the base tag fixes the release and the
# image is rebuilt for security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed, high UID/GID that matches runAsUser/runAsGroup in k8s/ and never collides with
# a host account.
RUN groupadd --system --gid 10001 reelay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin reelay \
    && install -d -o 10001 -g 10001 -m 0750 /data

COPY --from=builder /out/reelay /usr/local/bin/reelay

ENV REELAY_LISTEN=0.0.0.0:8080 \
    REELAY_DATA_DIR=/data \
    TMPDIR=/tmp
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
USER 10001:10001

# /healthz answers in every role (serve, api, worker) on REELAY_LISTEN.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "--max-time", "2", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]

ENTRYPOINT ["reelay"]
CMD ["serve"]
