#!/usr/bin/env bash
# Builds the project's images (`make images`): first the base images (scripts/base-images.sh:
# official where present or pullable, local stand-ins otherwise), then, from docker/:
#   reelay-processor:$REELAY_VERSION   api, worker, migrate (docker/processor.Dockerfile)
#   reelay-edge:$REELAY_VERSION        the NGINX edge       (docker/edge.Dockerfile)
#   reelay-s3s-fs:0.14.1               compose's S3 store   (docker/s3.Dockerfile)
# The names and tags are the ones docker-compose.yml uses and k8s/ names (reelay-processor,
# reelay-edge), so `docker compose up` starts exactly these. Prints the time and the sizes.
# Works with any builder: the Dockerfiles use no BuildKit-only syntax, and the layer cache makes
# a rebuild after a source-only change recompile only reelay's own crates.
set -euo pipefail
cd "$(dirname "$0")/.."
docker=${DOCKER:-docker}
version=${REELAY_VERSION:-dev}
t0=$(date +%s)
scripts/base-images.sh

# Each build's whole output goes to target/images/<name>.log; a cold build of the processor
# compiles reelay in release mode (several minutes on 2 cores), so say so and where to look.
build() {
  local tag=$1 file=$2 t log
  t=$(date +%s)
  log=target/images/$(basename "$file" .Dockerfile).log
  echo "images: building $tag from $file (a cold build takes minutes; follow it in $log)" >&2
  if ! $docker build -f "$file" -t "$tag" . >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "images: building $tag failed (whole log: $log)" >&2
    return 1
  fi
  echo "images: $tag built in $(($(date +%s) - t)) s" >&2
}
mkdir -p target/images
# The legacy builder prints a deprecation notice where buildx is missing; it builds the same.
build "reelay-processor:$version" docker/processor.Dockerfile
build "reelay-edge:$version" docker/edge.Dockerfile
build "reelay-s3s-fs:0.14.1" docker/s3.Dockerfile
echo "images: done in $(($(date +%s) - t0)) s"
# docker trims leading blanks from --format output: match first, indent after.
$docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' |
  grep -E '^(reelay-|debian:|rust:|postgres:)' | sed 's/^/  /' || true
