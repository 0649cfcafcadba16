#!/usr/bin/env bash
# Build the container images: every service from the one Dockerfile, and — where no registry
# can be pulled from (CI) — local stand-ins for the registry images docker-compose.yml uses.
#
#   scripts/images.sh                 everything (make images)
#   scripts/images.sh NAME...         only these: gateway cart-mapping order-finalization refund
#                                     payment-extension dev-fakes (services); kafka redis ct-mock
#                                     (stand-ins); bases (Debian, Python and uv base images)
#
# Images (TAG = $IMAGE_TAG, default ci):
#   localhost/instore-<service>:TAG   the services (Dockerfile, --build-arg SERVICE=<service>)
#   localhost/instore-kafka:TAG       Apache Kafka from the jars `make install` put in .local/kafka
#                                     (tools/kafka/pom.xml: the same version) on Debian's JRE 17
#   localhost/instore-redis:TAG       Debian's redis-server
#   localhost/instore-ct-mock:TAG     the commercetools mock (tools/ct-mock) on Debian with this
#                                     machine's Node.js (20+; Debian bookworm's is 18)
#   localhost/debian:bookworm-minbase, localhost/python:3.11-debian, localhost/uv:<version>
#                                     the bases: Debian from debootstrap, Python 3.11 from Debian's
#                                     packages (stands in for python:3.11-slim), uv from
#                                     .local/uv (stands in for ghcr.io/astral-sh/uv)
#
# Environment:
#   IMAGE_TAG        tag of the built images (default ci)
#   IMAGES_BASES     local  — build the bases and stand-ins above (needs root and debootstrap);
#                    registry — services FROM python:3.11-slim and ghcr.io/astral-sh/uv (pulled),
#                    no stand-ins (compose then pulls apache/kafka, redis, node).
#                    Default: local when the engine is podman, we are root and debootstrap exists.
#   IMAGES_REFRESH=1 rebuild the bases even when they exist (they are kept across runs otherwise;
#                    the stand-ins and services always go through the build, whose layer cache
#                    makes an unchanged image a few seconds)
#   IMAGES_JOBS      service images built at once (default 2)
#   CONTAINER_ENGINE docker or podman (default: docker when a Docker engine answers, else podman)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/container-engine.sh
source scripts/container-engine.sh
container_engine_setup "$REPO"

TAG="${IMAGE_TAG:-ci}"
SERVICES=(gateway cart-mapping order-finalization refund payment-extension dev-fakes)
STANDINS=(kafka redis ct-mock)
UV_VERSION="$(sed -n 's/^UV_VERSION := *//p' Makefile)"
DEBIAN_IMAGE=localhost/debian:bookworm-minbase
STAGE="$REPO/.local/images"

if [[ -z "${IMAGES_BASES:-}" ]]; then
  if [[ "$ENGINE" == podman && "$(id -u)" == 0 ]] && command -v debootstrap >/dev/null 2>&1; then
    IMAGES_BASES=local
  else
    IMAGES_BASES=registry
  fi
fi
case "$IMAGES_BASES" in
  local) PYTHON_IMAGE=localhost/python:3.11-debian UV_IMAGE="localhost/uv:$UV_VERSION" ;;
  registry) PYTHON_IMAGE=python:3.11-slim UV_IMAGE="ghcr.io/astral-sh/uv:$UV_VERSION" ;;
  *) echo "images.sh: IMAGES_BASES must be local or registry, not '$IMAGES_BASES'" >&2; exit 2 ;;
esac

BUILD=("$ENGINE" build --network=host)
# podman writes OCI images by default, which drop HEALTHCHECK; the Docker format keeps it
[[ "$ENGINE" == podman ]] && BUILD+=(--format docker)

log() { echo "images.sh: $*" >&2; }
die() { log "$*"; exit 1; }
exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
timed() { # timed LABEL CMD... — run CMD with its output in $STAGE/LABEL.log, report seconds
  local label="$1" t0=$SECONDS; shift
  mkdir -p "$STAGE"
  if "$@" >"$STAGE/$label.log" 2>&1; then
    log "$label: $((SECONDS - t0)) s"
  else
    tail -n 30 "$STAGE/$label.log" >&2
    die "$label failed after $((SECONDS - t0)) s (full output: $STAGE/$label.log)"
  fi
}

# ------------------------------------------------------------------ bases
debian_base() {
  if exists "$DEBIAN_IMAGE" && [[ "${IMAGES_REFRESH:-}" != 1 ]]; then return 0; fi
  command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap; make install does)"
  [[ "$(id -u)" == 0 ]] || die "debootstrap needs root (or use IMAGES_BASES=registry where images can be pulled)"
  # The machine's own Debian mirror (deb822 or one-line sources), else deb.debian.org.
  local mirror root="$STAGE/debian-rootfs"
  mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  [[ -n "$mirror" ]] || mirror="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rm -rf "$root"
  timed debootstrap debootstrap --variant=minbase bookworm "$root" "$mirror"
  # Security and point-release updates for what the images install later.
  {
    echo "deb $mirror bookworm main"
    echo "deb $mirror bookworm-updates main"
    [[ "$mirror" == */debian ]] && echo "deb ${mirror}-security bookworm-security main"
  } >"$root/etc/apt/sources.list"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # Downloads from here may go through a proxy whose CA only this machine's bundle holds.
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  timed debian-import bash -c "tar -C '$root' -c . | $ENGINE import --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' - $DEBIAN_IMAGE"
  rm -rf "$root"
}

python_base() {
  if exists "$PYTHON_IMAGE" && [[ "${IMAGES_REFRESH:-}" != 1 ]]; then return 0; fi
  local ctx="$STAGE/python"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp tools/images/python/Containerfile "$ctx/"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
  timed python-base "${BUILD[@]}" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$PYTHON_IMAGE" "$ctx"
}

uv_base() {
  if exists "$UV_IMAGE" && [[ "${IMAGES_REFRESH:-}" != 1 ]]; then return 0; fi
  local uv ctx="$STAGE/uv"
  uv="$(command -v uv 2>/dev/null || echo "$REPO/.local/uv/bin/uv")"
  [[ -x "$uv" && -x "${uv%/*}/uvx" ]] || die "no uv (and uvx) next to '$uv': run make install"
  [[ "$("$uv" --version)" == "uv $UV_VERSION "* ]] || die "$uv is not uv $UV_VERSION (the Makefile's UV_VERSION)"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "$uv" "${uv%/*}/uvx" "$ctx/"
  printf '# uv %s for COPY --from (stands in for ghcr.io/astral-sh/uv)\nFROM scratch\nCOPY uv uvx /\n' "$UV_VERSION" >"$ctx/Containerfile"
  timed uv-base "${BUILD[@]}" -t "$UV_IMAGE" "$ctx"
}

# ------------------------------------------------------------------ stand-ins
standin_kafka() {
  local libs="$REPO/.local/kafka/libs" ctx="$STAGE/kafka"
  compgen -G "$libs/kafka_2.13-*.jar" >/dev/null || die "no Kafka jars in $libs: run make install (scripts/kafka.sh install)"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp tools/images/kafka/Containerfile tools/images/kafka/run.sh tools/images/kafka/kafka-broker-api-versions.sh "$ctx/"
  cp -a "$libs" "$ctx/libs"
  rm -f "$ctx/libs/.installed"
  timed kafka "${BUILD[@]}" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "localhost/instore-kafka:$TAG" "$ctx"
}

standin_redis() {
  local ctx="$STAGE/redis"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp tools/images/redis/Containerfile "$ctx/"
  timed redis "${BUILD[@]}" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "localhost/instore-redis:$TAG" "$ctx"
}

standin_ct_mock() {
  local node ctx="$STAGE/ct-mock"
  node="$(command -v node)" || die "node is missing (Node.js 20+)"
  node="$(readlink -f "$node")"
  [[ "$("$node" -p 'process.versions.node.split(".")[0]')" -ge 20 ]] || die "$node is older than Node.js 20 (the mock needs 20+)"
  rm -rf "$ctx" && mkdir -p "$ctx/app"
  cp tools/images/ct-mock/Containerfile "$ctx/"
  cp "$node" "$ctx/node"
  cp tools/ct-mock/package.json tools/ct-mock/package-lock.json tools/ct-mock/server.mjs "$ctx/app/"
  if [[ -d tools/ct-mock/node_modules ]]; then
    cp -a tools/ct-mock/node_modules "$ctx/app/"      # installed by make install (npm ci)
  else
    npm ci --prefix "$ctx/app" --omit=dev --no-audit --no-fund --loglevel=error
  fi
  timed ct-mock "${BUILD[@]}" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "localhost/instore-ct-mock:$TAG" "$ctx"
}

# ------------------------------------------------------------------ services
service_image() {
  timed "$1" "${BUILD[@]}" -f Dockerfile --build-arg SERVICE="$1" \
    --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" --build-arg UV_IMAGE="$UV_IMAGE" \
    -t "localhost/instore-$1:$TAG" .
}

services() { # at most IMAGES_JOBS builds at once; fails when any failed
  local jobs="${IMAGES_JOBS:-2}" pids=() failed=0 s pid
  for s in "$@"; do
    service_image "$s" &
    pids+=($!)
    if (( ${#pids[@]} >= jobs )); then
      wait "${pids[0]}" || failed=1
      pids=("${pids[@]:1}")
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  (( failed == 0 )) || die "a service image failed to build (logs in $STAGE)"
}

# ------------------------------------------------------------------ main
wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=(bases "${STANDINS[@]}" "${SERVICES[@]}")
want_services=()
started=$SECONDS
log "engine $ENGINE, bases $IMAGES_BASES (python $PYTHON_IMAGE, uv $UV_IMAGE), tag $TAG"
for name in "${wanted[@]}"; do
  case "$name" in
    bases|kafka|redis|ct-mock)
      [[ "$IMAGES_BASES" == local ]] || { log "$name: skipped (IMAGES_BASES=registry: registry images are used)"; continue; }
      debian_base ;;&
    bases) python_base; uv_base ;;
    kafka) standin_kafka ;;
    redis) standin_redis ;;
    ct-mock) standin_ct_mock ;;
    gateway|cart-mapping|order-finalization|refund|payment-extension|dev-fakes) want_services+=("$name") ;;
    *) die "unknown image '$name' (services: ${SERVICES[*]}; stand-ins: ${STANDINS[*]}; bases)" ;;
  esac
done
if [[ ${#want_services[@]} -gt 0 ]]; then
  if [[ "$IMAGES_BASES" == local ]]; then debian_base; python_base; uv_base; fi
  services "${want_services[@]}"
fi
log "done in $((SECONDS - started)) s"
