#!/usr/bin/env bash
# docker-compose.yml with docker compose, or podman-compose where no Docker engine answers.
#
#   scripts/compose.sh up [SERVICE...]    start the stack in the background (make compose-up)
#   scripts/compose.sh wait [SECONDS]     wait until every started container is healthy (default 240 s)
#   scripts/compose.sh down               stop it and remove its containers and volumes (make compose-down)
#   scripts/compose.sh ARGS...            anything else goes to the compose tool (ps, logs, config, …)
#
# Environment:
#   COMPOSE_IMAGES   local — the images `make images` built (localhost/instore-*:$IMAGE_TAG, the
#                    services and the stand-ins for Kafka, Redis and the mock; Prometheus is left
#                    out unless PROMETHEUS_IMAGE is set, it cannot be built here);
#                    registry — compose builds the services (Dockerfile) and pulls the rest.
#                    Default: local when localhost/instore-kafka:$IMAGE_TAG exists, else registry.
#                    An image variable already set (GATEWAY_IMAGE, KAFKA_IMAGE, …) is kept.
#   IMAGE_TAG        tag of the local images (default ci)
#   COMPOSE_PROJECT_NAME  compose project (default instore-integration, the file's name:)
#   TOKEN_VAULT_ENCRYPTION_KEYS  the gateway's Fernet key(s); unset: a key kept in
#                    .local/compose/token-vault-key (made once, never committed)
#   CONTAINER_ENGINE docker or podman (default: docker when a Docker engine answers)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/container-engine.sh
source scripts/container-engine.sh
container_engine_setup "$REPO"

log() { echo "compose.sh: $*" >&2; }
TAG="${IMAGE_TAG:-ci}"
PROJECT="${COMPOSE_PROJECT_NAME:-instore-integration}"
SERVICES=(kafka redis ct-mock dev-fakes cart-mapping order-finalization refund payment-extension gateway)

if [[ "$ENGINE" == docker ]]; then
  COMPOSE=(docker compose -p "$PROJECT" -f docker-compose.yml)
else
  if [[ -x .venv/bin/podman-compose ]]; then podman_compose=.venv/bin/podman-compose
  elif command -v podman-compose >/dev/null 2>&1; then podman_compose=podman-compose
  else log "podman-compose is missing: make install (it is in the dev dependencies)"; exit 1; fi
  COMPOSE=("$podman_compose" -p "$PROJECT" -f docker-compose.yml)
fi

# The images: the locally built ones when there are.
local_images=0
case "${COMPOSE_IMAGES:-auto}" in
  local) local_images=1 ;;
  registry) ;;
  auto) "$ENGINE" image inspect "localhost/instore-kafka:$TAG" >/dev/null 2>&1 && local_images=1 ;;
  *) log "COMPOSE_IMAGES must be local, registry or auto"; exit 2 ;;
esac
if (( local_images )); then
  for service in gateway cart-mapping order-finalization refund payment-extension dev-fakes kafka redis ct-mock; do
    var="$(tr 'a-z-' 'A-Z_' <<<"$service")_IMAGE"
    export "$var=${!var:-localhost/instore-$service:$TAG}"
  done
  [[ -n "${PROMETHEUS_IMAGE:-}" ]] && SERVICES+=(prometheus)
else
  SERVICES+=(prometheus)
fi

# The gateway refuses to start without a token-vault key; keep one per checkout.
if [[ -z "${TOKEN_VAULT_ENCRYPTION_KEYS:-}" ]]; then
  keyfile=.local/compose/token-vault-key
  if [[ ! -s "$keyfile" ]]; then
    mkdir -p "${keyfile%/*}"
    (umask 077 && python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())' >"$keyfile")
  fi
  TOKEN_VAULT_ENCRYPTION_KEYS="$(cat "$keyfile")"
  export TOKEN_VAULT_ENCRYPTION_KEYS
fi

# Containers of this project (ids), by the labels both compose tools set.
containers() {
  "$ENGINE" ps -a -q --filter "label=com.docker.compose.project=$PROJECT" "$@"
}

healthy() { # healthy ID — the container's health check passes now (or it has none and runs)
  local id="$1" status
  if [[ "$ENGINE" == podman ]]; then
    # podman runs health checks from systemd timers, absent in containers and CI: run it here.
    status="$(podman inspect --format '{{if .Config.Healthcheck}}check{{else}}{{.State.Status}}{{end}}' "$id")"
    if [[ "$status" == check ]]; then podman healthcheck run "$id" >/dev/null 2>&1; else [[ "$status" == running ]]; fi
  else
    status="$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")"
    [[ "$status" == healthy || "$status" == running ]]
  fi
}

wait_healthy() {
  local seconds="${1:-240}" deadline id pending name
  deadline=$((SECONDS + seconds))
  while :; do
    pending=()
    for id in $(containers); do
      healthy "$id" || pending+=("$id")
    done
    [[ ${#pending[@]} -eq 0 ]] && { log "every container is healthy"; return 0; }
    if (( SECONDS >= deadline )); then
      for id in "${pending[@]}"; do
        name="$("$ENGINE" inspect --format '{{.Name}}' "$id")"
        log "not healthy after ${seconds} s: $name; its last log lines:"
        "$ENGINE" logs --tail 30 "$id" 2>&1 | sed 's/^/    /' >&2
      done
      return 1
    fi
    sleep 2
  done
}

case "${1:-}" in
  up)
    shift
    [[ $# -gt 0 ]] || set -- "${SERVICES[@]}"
    log "$ENGINE, project $PROJECT, $([[ $local_images == 1 ]] && echo "local images (tag $TAG)" || echo "registry images")"
    "${COMPOSE[@]}" up -d "$@"
    ;;
  wait) wait_healthy "${2:-240}" ;;
  down)
    "${COMPOSE[@]}" down -v --remove-orphans 2>/dev/null || "${COMPOSE[@]}" down -v
    # podman-compose leaves containers it did not start from this file's services list behind
    leftover="$(containers)"
    [[ -z "$leftover" ]] || "$ENGINE" rm -f -v $leftover >/dev/null
    ;;
  "") sed -n '2,21p' "$0"; exit 2 ;;
  *) "${COMPOSE[@]}" "$@" ;;
esac
