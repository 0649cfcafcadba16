#!/usr/bin/env bash
# `make demo`: start a fresh local stack (the same as `make run`: Kafka, the seeded
# commercetools mock, the dev fakes, every service), play InStore against it with the
# simulator (`python -m instore_devfakes simulate`), print a summary, stop everything.
# Exit code 0 when every step worked; otherwise the simulator names the failed step and the
# end of the stack's log is printed.
#
# Always the local mock and dev fakes (CTP_CLIENT_ID and INSTORE_AUTH_BASE_URL are ignored:
# the simulator creates carts and payments, which belongs in no real project). Ports and an
# external broker (KAFKA_BOOTSTRAP_SERVERS) are taken from the environment like `make run`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="$REPO/.venv/bin/python"
if [[ -t 1 ]]; then say() { printf '\033[1m[demo]\033[0m %s\n' "$*"; }; else say() { printf '[demo] %s\n' "$*"; }; fi
die() { printf '[demo] error: %s\n' "$*" >&2; exit 1; }
[[ -x "$PY" ]] || die "no virtual environment: run 'make install' first"

unset CTP_CLIENT_ID CTP_CLIENT_SECRET CTP_PROJECT_KEY CTP_AUTH_URL CTP_API_URL CTP_SCOPES INSTORE_AUTH_BASE_URL
export GATEWAY_HTTP_PORT="${GATEWAY_HTTP_PORT:-8080}" DEVFAKES_HTTP_PORT="${DEVFAKES_HTTP_PORT:-8090}"
export CTP_MOCK_PORT="${CTP_MOCK_PORT:-8989}" KAFKA_PORT="${KAFKA_PORT:-9092}"
export INSTORE_CALLBACK_API_KEY="${INSTORE_CALLBACK_API_KEY:-local-dev-callback-key}"
export INSTORE_WEBHOOK_SECRET="${INSTORE_WEBHOOK_SECRET:-local-dev-webhook-secret}"
export LOG_JSON=true   # the stack's log is for reading back on failure, not for the terminal

mkdir -p .local/run
LOG="$REPO/.local/run/demo-stack.log"
say "starting a fresh local stack (log: .local/run/demo-stack.log)"
started=$SECONDS
bash scripts/run-local.sh >"$LOG" 2>&1 &
STACK=$!
stop_stack() {
  trap - EXIT INT TERM
  if kill -0 "$STACK" 2>/dev/null; then
    say "stopping the stack"
    kill -TERM "$STACK" 2>/dev/null || true
    wait "$STACK" 2>/dev/null || true
  fi
}
trap stop_stack EXIT
trap 'stop_stack; exit 130' INT
trap 'stop_stack; exit 143' TERM

# Ready when run-local prints its banner (every service answered /readyz); 180 s covers a cold JVM.
for _ in $(seq 1 1800); do
  grep -q 'The InStore integration stack is up' "$LOG" 2>/dev/null && break
  kill -0 "$STACK" 2>/dev/null || { tail -20 "$LOG" >&2; die "the stack did not start (see above)"; }
  sleep 0.1
done
grep -q 'The InStore integration stack is up' "$LOG" || { tail -20 "$LOG" >&2; die "the stack was not ready in 180 s"; }
say "stack up in $((SECONDS - started)) s; the simulator plays InStore:"
echo

status=0
CTP_PROJECT_KEY=instore-demo CTP_CLIENT_ID=local-client CTP_CLIENT_SECRET=local-secret \
CTP_AUTH_URL="http://127.0.0.1:$CTP_MOCK_PORT" CTP_API_URL="http://127.0.0.1:$CTP_MOCK_PORT" \
  "$PY" -m instore_devfakes simulate --gateway "http://127.0.0.1:$GATEWAY_HTTP_PORT" \
    --ims "http://127.0.0.1:$DEVFAKES_HTTP_PORT" --kafka "${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$KAFKA_PORT}" \
    ${DEMO_ARGS:-} || status=$?
echo
if [[ $status -ne 0 ]]; then
  echo "[demo] the stack's last log lines (.local/run/demo-stack.log):" >&2
  tail -15 "$LOG" >&2
fi
stop_stack
if [[ $status -eq 0 ]]; then say "OK: sale, Order, return and refund done end to end; everything stopped"
else say "FAILED (exit $status); everything stopped"; fi
exit "$status"
