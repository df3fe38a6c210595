#!/usr/bin/env bash
# Makes sure the base images that docker/*.Dockerfile and docker-compose.yml name are present,
# building a local stand-in only for an official image that is neither present nor pullable.
#
#   scripts/base-images.sh          (run by `make images` before the project's own images)
#
# For each base image, in order:
#   1. present and official                 -> used as is;
#   2. pullable from its registry           -> pulled (this replaces an earlier stand-in too, so a
#                                              stand-in is never used where the registry answers);
#   3. otherwise                            -> a stand-in is built here, tagged with the same name
#                                              and labelled org.reelay.stand-in=true.
# The stand-ins (docker/standins/):
#   debian:bookworm-slim   a Debian bookworm root filesystem made by
#                          `debootstrap --variant=minbase bookworm`, imported with `docker import`;
#   rust:<ver>-bookworm    that root filesystem + gcc/libc6-dev + this machine's own Rust toolchain
#                          of exactly <ver> (the version the Dockerfiles name; no download) and
#                          the machine's extra CAs (/usr/local/share/ca-certificates), if any;
#   postgres:15-bookworm   Debian's postgresql-15 with an entrypoint that honours the official
#                          image's POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB and runs as the
#                          postgres user (uid 999, as in the official image).
# Cached: an image that is present is not built again, so a second run takes seconds.
#
# Environment: DEBIAN_IMAGE, RUST_IMAGE, POSTGRES_IMAGE override the names (defaults are read
# from the Dockerfiles and docker-compose.yml); DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
docker=${DOCKER:-docker}
label=org.reelay.stand-in

# The defaults live in one place each: the Dockerfiles' ARGs and the compose file.
arg_default() { sed -n "s/^ARG $1=\(.*\)$/\1/p" docker/processor.Dockerfile | head -1; }
DEBIAN_IMAGE=${DEBIAN_IMAGE:-$(arg_default DEBIAN_IMAGE)}
RUST_IMAGE=${RUST_IMAGE:-$(arg_default RUST_IMAGE)}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-$(sed -n 's/.*\${POSTGRES_IMAGE:-\([^}]*\)}.*/\1/p' docker-compose.yml | head -1)}
: "${DEBIAN_IMAGE:?no ARG DEBIAN_IMAGE in docker/processor.Dockerfile}"
: "${RUST_IMAGE:?no ARG RUST_IMAGE in docker/processor.Dockerfile}"
: "${POSTGRES_IMAGE:?no POSTGRES_IMAGE default in docker-compose.yml}"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
report=()

is_standin() { [ "$($docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null)" = true ]; }
present() { $docker image inspect "$1" >/dev/null 2>&1; }

# ensure NAME BUILDER: official if present or pullable, else BUILDER makes the stand-in.
ensure() {
  local name=$1 builder=$2 t0
  if present "$name" && ! is_standin "$name"; then
    report+=("official   $name (present)")
    return
  fi
  if $docker pull -q "$name" >/dev/null 2>&1; then
    report+=("official   $name (pulled$(present "$name" && echo ', replacing the stand-in' || true))")
    return
  fi
  if present "$name"; then
    report+=("STAND-IN   $name (built earlier; registry unreachable)")
    return
  fi
  echo "base-images: $name is not present and cannot be pulled: building a local stand-in" >&2
  t0=$(date +%s)
  "$builder" "$name"
  report+=("STAND-IN   $name (built now in $(($(date +%s) - t0)) s; registry unreachable)")
}

build_debian() (
  local name=$1 suite=${1##*:} dir
  suite=${suite%%-*}
  command -v debootstrap >/dev/null 2>&1 || {
    echo "base-images: installing debootstrap" >&2
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  dir=$(mktemp -d /var/tmp/reelay-rootfs.XXXXXX)
  # shellcheck disable=SC2064
  trap "$sudo rm -rf '$dir' '$dir.log'" EXIT
  $sudo debootstrap --variant=minbase "$suite" "$dir" "$MIRROR" >"$dir.log" 2>&1 || {
    tail -20 "$dir.log" >&2
    return 1
  }
  # As the official image: updates and security archives, no package lists or caches kept.
  $sudo tee "$dir/etc/apt/sources.list" >/dev/null <<SOURCES
deb $MIRROR $suite main
deb $MIRROR $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SOURCES
  # The official image's apt and dpkg settings for containers: no .deb or package caches kept
  # after an install, no translations, no docs, man pages or locales (what makes it "slim").
  $sudo tee "$dir/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  echo 'Acquire::Languages "none";' | $sudo tee "$dir/etc/apt/apt.conf.d/docker-no-languages" >/dev/null
  echo 'Acquire::GzipIndexes "true";' | $sudo tee "$dir/etc/apt/apt.conf.d/docker-gzip-indexes" >/dev/null
  $sudo tee "$dir/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
  $sudo rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/var/log/*.log "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
    "$dir"/usr/share/locale/*
  $sudo tar -C "$dir" --numeric-owner -c . |
    $docker import \
      --change "LABEL $label=true" \
      --change "LABEL org.opencontainers.image.description=\"stand-in for $name: debootstrap --variant=minbase $suite\"" \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      - "$name" >/dev/null
)

build_rust() (
  local name=$1 version ctx toolchain
  version=${name#*:}
  version=${version%%-*}
  toolchain=$(rustc "+$version" --print sysroot 2>/dev/null) || {
    echo "base-images: this machine has no Rust $version toolchain (rustup toolchain list); the Dockerfiles name $name" >&2
    return 1
  }
  [ "$(rustc "+$version" --version | awk '{print $2}')" = "$version" ] || {
    echo "base-images: rustc +$version reports $(rustc "+$version" --version), not $version" >&2
    return 1
  }
  ctx=$(mktemp -d /var/tmp/reelay-rust.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$ctx'" EXIT
  # Only what a build needs: the binaries and the standard library (not the 800 MB of docs).
  mkdir -p "$ctx/toolchain"
  cp -a "$toolchain/bin" "$toolchain/lib" "$ctx/toolchain/"
  # The machine's own extra CAs (an egress proxy's, say), so cargo inside the build reaches
  # crates.io the way cargo on this machine does. Only the builder trusts them, never a runtime image.
  mkdir -p "$ctx/local-ca"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/local-ca/" 2>/dev/null || true
  cp docker/standins/rust.Dockerfile "$ctx/Dockerfile"
  $docker build -q --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" --build-arg "RUST_VERSION=$version" \
    --label "$label=true" -t "$name" "$ctx" >/dev/null
)

build_postgres() {
  local name=$1 major
  major=${name#*:}
  major=${major%%[.-]*}
  $docker build -q --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" --build-arg "PG_MAJOR=$major" \
    --label "$label=true" -t "$name" -f docker/standins/postgres.Dockerfile docker/standins >/dev/null
}

ensure "$DEBIAN_IMAGE" build_debian
ensure "$RUST_IMAGE" build_rust
ensure "$POSTGRES_IMAGE" build_postgres

echo "base images:"
printf '  %s\n' "${report[@]}"
if printf '%s\n' "${report[@]}" | grep -q '^STAND-IN'; then
  echo "  (STAND-IN: built on this machine because the registry is unreachable; see docs/operations.md)"
fi
