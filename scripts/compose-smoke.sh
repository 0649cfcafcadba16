#!/usr/bin/env bash
# The compose stack from the built images, one sale through it, torn down again (.ci/run runs it
# after scripts/images.sh; by hand: make images && bash scripts/compose-smoke.sh).
#
# Brings docker-compose.yml up (scripts/compose.sh: podman-compose where no Docker engine answers)
# as its own project, with the host ports moved to free ones (20000-31999) so it runs next to a
# developer's stack and the tests; waits until every container is healthy (the services' /readyz:
# Kafka reached); then scripts/compose_smoke.py sends one signed payment webhook through the
# gateway and checks exactly one Order in the mock and one commerce.payments.completed.v1 event.
# The containers talk over compose's own network by service name (kafka:9092, ct-mock:8989), as
# anywhere else; the host reaches them through the published ports only.
# Exit code 0 on success; on failure the containers' last log lines are printed.
#
# Environment: IMAGE_TAG (default ci), COMPOSE_SMOKE_KEEP=1 leaves the stack running,
# COMPOSE_SMOKE_WAIT seconds for the containers to become healthy (default 240).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
log() { echo "compose-smoke.sh: $*" >&2; }

free_port() {
  python3 -c '
import random, socket
for _ in range(200):
    port = random.randrange(20000, 32000)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
else:
    raise SystemExit("no free port in 20000-31999")'
}

export COMPOSE_PROJECT_NAME="instore-smoke-$$"
GATEWAY_HOST_PORT=$(free_port) CT_MOCK_HOST_PORT=$(free_port) KAFKA_HOST_PORT=$(free_port) DEVFAKES_HOST_PORT=$(free_port)
export GATEWAY_HOST_PORT CT_MOCK_HOST_PORT KAFKA_HOST_PORT DEVFAKES_HOST_PORT
INSTORE_WEBHOOK_SECRET="smoke-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export INSTORE_WEBHOOK_SECRET INSTORE_CALLBACK_API_KEY="smoke-callback-key-$$"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"

started=$SECONDS
teardown() {
  local rc=$?
  if [[ "${COMPOSE_SMOKE_KEEP:-}" == 1 ]]; then
    log "left running (project $COMPOSE_PROJECT_NAME): COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME bash scripts/compose.sh down"
  else
    bash scripts/compose.sh down >/dev/null 2>&1 || log "teardown failed: COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME bash scripts/compose.sh down"
  fi
  log "$([[ $rc == 0 ]] && echo OK || echo FAILED) in $((SECONDS - started)) s"
}
trap teardown EXIT

log "project $COMPOSE_PROJECT_NAME: gateway 127.0.0.1:$GATEWAY_HOST_PORT, mock :$CT_MOCK_HOST_PORT, Kafka :$KAFKA_HOST_PORT"
# podman-compose prints one line per container and a warning per ignored depends_on condition
# (podman < 4.6 cannot wait for health); the wait below does that job.
mkdir -p "$REPO/.local"
bash scripts/compose.sh up > "$REPO/.local/compose-smoke-up.log" 2>&1 \
  || { cat "$REPO/.local/compose-smoke-up.log" >&2; exit 1; }
bash scripts/compose.sh wait "${COMPOSE_SMOKE_WAIT:-240}"
log "stack healthy after $((SECONDS - started)) s"
"$PYTHON" scripts/compose_smoke.py --gateway "http://127.0.0.1:$GATEWAY_HOST_PORT" \
  --mock "http://127.0.0.1:$CT_MOCK_HOST_PORT" --kafka "127.0.0.1:$KAFKA_HOST_PORT" \
  || { bash scripts/compose.sh logs --tail 30 >&2 2>&1 || true; exit 1; }
