# Stand-in for the official rust:<ver>-bookworm image, built by scripts/base-images.sh only when
# that image can be neither found nor pulled: the Debian stand-in plus a C toolchain and this
# machine's own Rust toolchain of the same version (copied into the build context). The layout
# and environment are the official image's (RUSTUP_HOME, CARGO_HOME, PATH), so the project's
# Dockerfiles run unchanged on it.
#checkov:skip=CKV_DOCKER_7:FROM names a build argument whose default (the ARG above) is pinned by tag; checkov cannot resolve it
#checkov:skip=CKV_DOCKER_2:a build-stage image (like the official rust image it stands in for); nothing runs it as a service
#checkov:skip=CKV_DOCKER_3:a build-stage image (like the official rust image it stands in for); builds run as root inside it
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
ARG RUST_VERSION
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUST_VERSION=${RUST_VERSION}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make pkg-config git \
    && rm -rf /var/lib/apt/lists/*
# The build machine's extra CAs (an egress proxy's), so cargo reaches crates.io from here too.
COPY local-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
COPY toolchain /usr/local/rustup/toolchains/${RUST_VERSION}-x86_64-unknown-linux-gnu
RUN mkdir -p /usr/local/cargo/bin \
    && for b in cargo rustc rustdoc; do \
         ln -s "/usr/local/rustup/toolchains/${RUST_VERSION}-x86_64-unknown-linux-gnu/bin/$b" /usr/local/cargo/bin/$b; \
       done \
    && cargo --version && rustc --version
CMD ["bash"]
