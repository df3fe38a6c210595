# The reelay cluster image: `reelay serve` by default; `reelay api`, `reelay worker` and
# `reelay migrate` are the same image with another command (see k8s/ and docker-compose.yml).
#
# Build (any builder: BuildKit, the legacy one, docker-compose v1 or v2):
#   docker build -f docker/processor.Dockerfile -t reelay-processor:0.1.0 .
# Run with a read-only root filesystem (only /data and /tmp are written):
#   docker run --read-only --tmpfs /tmp -v reelay-data:/data -p 8080:8080 reelay-processor:0.1.0
#
# Base images are build arguments whose defaults are the official images, pinned by tag. Where no
# registry is reachable, `make images` (scripts/base-images.sh) builds local stand-ins under the
# same names first (docs/operations.md). Digests could not be looked up where this file was written (no
# image registry reachable); pin them with `image@sha256:...` in the release pipeline, e.g.
# `docker buildx imagetools inspect rust:1.95.0-bookworm`, and let a bot bump both together.

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
# ffmpeg/ffprobe run as reelay's subprocesses; curl is here only for HEALTHCHECK (there is no
# `reelay health` subcommand, and bookworm-slim has neither curl nor wget).
# DL3008: exact Debian versions are not pinned because bookworm's security archive replaces
# them (old versions disappear and the build breaks); the base tag fixes the release and the
# image is rebuilt for security updates.
# Debian's ffmpeg drags in Mesa's OpenGL drivers (libgl1-mesa-dri with LLVM and Z3, ~160 MB)
# through SDL and libplacebo; they are only ever dlopen'ed for on-screen or GPU output, which a
# transcoder never does, so they are removed (the ffmpeg run at the end proves ffmpeg still works).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg curl ca-certificates \
    && dpkg --purge --force-depends libgl1-mesa-dri libglx-mesa0 libllvm15 libz3-4 \
    && rm -rf /var/lib/apt/lists/* \
    && ffmpeg -y -hide_banner -loglevel error -f lavfi -i testsrc2=size=64x64:duration=0.2 \
       -f lavfi -i sine=duration=0.2 -c:v libx264 -c:a aac -f mp4 /dev/null

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
