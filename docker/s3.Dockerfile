# An S3-compatible object store for docker-compose.yml only: s3s-fs (the server reelay's own
# storage tests run against; it checks SigV4 signatures), built from crates.io at a pinned
# version. Never used in k8s/ (the clouds' S3 and GCS are used there).
#
# Why not minio/minio: its community images stopped being published as maintained releases;
# building the one small server the tests already trust avoids an unmaintained image.
# Base images are build arguments (official by default; see processor.Dockerfile).
#checkov:skip=CKV_DOCKER_7:FROM names a build argument whose default (the ARG above) is pinned by tag; checkov cannot resolve it
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
RUN cargo install s3s-fs --version 0.14.1 --locked --features binary --root /out

FROM ${DEBIAN_IMAGE} AS runtime
RUN groupadd --system --gid 10001 s3 \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin s3 \
    && install -d -o 10001 -g 10001 -m 0750 /srv/s3
COPY --from=builder /out/bin/s3s-fs /usr/local/bin/s3s-fs
# Mode 0755 in git; COPY keeps it (--chmod would need BuildKit).
COPY docker/s3-entrypoint.sh /usr/local/bin/s3-entrypoint
USER 10001:10001
EXPOSE 9000
VOLUME ["/srv/s3"]
# No curl here: a TCP connect from bash is enough to know the server listens.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=10 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9000"]
ENTRYPOINT ["/usr/local/bin/s3-entrypoint"]
