#!/usr/bin/env bash
# `make run`: the whole stack on this machine, no Docker.
#
# Starts, unless told otherwise by the environment:
#   - Apache Kafka 4 (one KRaft node on 127.0.0.1:$KAFKA_PORT)       — skipped when KAFKA_BOOTSTRAP_SERVERS is set
#   - the commercetools mock, seeded (127.0.0.1:$CTP_MOCK_PORT)       — skipped when CTP_CLIENT_ID is set (real project)
#   - the dev fakes: a local IMS and a fake InStore auth API (127.0.0.1:$DEVFAKES_HTTP_PORT)
#                                                                     — skipped when INSTORE_AUTH_BASE_URL is set
#   - cart-mapping (health on $CART_MAPPING_HTTP_PORT), order-finalization ($ORDER_FINALIZATION_HTTP_PORT),
#     refund ($REFUND_HTTP_PORT), payment-extension ($PAYMENT_EXTENSION_HTTP_PORT) and the gateway ($GATEWAY_HTTP_PORT)
#   - the reconciler, a run every $RECONCILER_INTERVAL_SECONDS s (10) with a grace of $RECONCILER_GRACE_SECONDS s (5)
# then prints a curl for each callback. Ctrl-C stops every process it started.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
RUN_DIR="$REPO/.local/run"
PY="$REPO/.venv/bin/python"

export GATEWAY_HTTP_PORT="${GATEWAY_HTTP_PORT:-8080}"
export CART_MAPPING_HTTP_PORT="${CART_MAPPING_HTTP_PORT:-8081}"
export ORDER_FINALIZATION_HTTP_PORT="${ORDER_FINALIZATION_HTTP_PORT:-8082}"
export REFUND_HTTP_PORT="${REFUND_HTTP_PORT:-8083}"
export PAYMENT_EXTENSION_HTTP_PORT="${PAYMENT_EXTENSION_HTTP_PORT:-8084}"
export INSTORE_CALLBACK_API_KEY="${INSTORE_CALLBACK_API_KEY:-local-dev-callback-key}"
export INSTORE_WEBHOOK_SECRET="${INSTORE_WEBHOOK_SECRET:-local-dev-webhook-secret}"
export KAFKA_PORT="${KAFKA_PORT:-9092}"
export KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
export CTP_MOCK_PORT="${CTP_MOCK_PORT:-8989}"
export DEVFAKES_HTTP_PORT="${DEVFAKES_HTTP_PORT:-8090}"
export LOG_JSON="${LOG_JSON:-false}"
export GATEWAY_ACCESS_LOG="${GATEWAY_ACCESS_LOG:-all}"  # a line per request while developing (default: errors only)
export RECONCILER_INTERVAL_SECONDS="${RECONCILER_INTERVAL_SECONDS:-10}"  # production: a CronJob, one run each
export RECONCILER_GRACE_SECONDS="${RECONCILER_GRACE_SECONDS:-5}"         # production default: 600

if [[ -t 1 ]]; then say() { printf '\033[1m[run]\033[0m %s\n' "$*"; }; else say() { printf '[run] %s\n' "$*"; }; fi
die() { printf '[run] error: %s\n' "$*" >&2; exit 1; }

[[ -x "$PY" ]] || die "no virtual environment: run 'make install' first"
mkdir -p "$RUN_DIR"
# One stack per checkout: it keeps its Kafka data, logs and pid files in .local/run.
LOCK="$RUN_DIR/stack.pid"
if [[ -f "$LOCK" ]] && grep -qs run-local "/proc/$(cat "$LOCK")/cmdline"; then
  die "another 'make run' or 'make demo' of this checkout is running (pid $(cat "$LOCK")) and uses .local/run; stop it, or run a second stack from a separate clone"
fi
# Free = bindable on 127.0.0.1 the way the servers bind (SO_REUSEADDR): a port another
# program listens on, or uses for an open connection, is not.
port_free() {
  "$PY" -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError: sys.exit(1)' "$1"
}
need_port() { port_free "$1" || die "port $1 ($2) is taken; stop what uses it or set $3=<another port>"; }

need_port "$GATEWAY_HTTP_PORT" gateway GATEWAY_HTTP_PORT
need_port "$CART_MAPPING_HTTP_PORT" "cart-mapping health" CART_MAPPING_HTTP_PORT
need_port "$ORDER_FINALIZATION_HTTP_PORT" "order-finalization health" ORDER_FINALIZATION_HTTP_PORT
need_port "$REFUND_HTTP_PORT" "refund health" REFUND_HTTP_PORT
need_port "$PAYMENT_EXTENSION_HTTP_PORT" "payment-extension health" PAYMENT_EXTENSION_HTTP_PORT
[[ -n "${INSTORE_AUTH_BASE_URL:-}" ]] \
  || need_port "$DEVFAKES_HTTP_PORT" "dev fakes: local IMS, fake InStore auth" DEVFAKES_HTTP_PORT

PIDS=()
KAFKA_STARTED=0
cleanup() {
  trap - INT TERM EXIT
  if [[ -f "${LOCK:-}" && "$(cat "$LOCK" 2>/dev/null)" == "$$" ]]; then rm -f "$LOCK"; fi
  [[ ${#PIDS[@]} -gt 0 || $KAFKA_STARTED == 1 ]] || return 0
  say "stopping…"
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $KAFKA_STARTED == 1 ]]; then
    KAFKA_HOME="$RUN_DIR/kafka" KAFKA_LIBS="$REPO/.local/kafka/libs" bash scripts/kafka.sh stop >/dev/null 2>&1 || true
  fi
  say "stopped"
}
trap 'cleanup; exit 0' INT      # Ctrl-C is how this is meant to end
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

echo $$ >"$LOCK"   # ours now (see the check above)

# -- Kafka ------------------------------------------------------------------------------
if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
  say "Kafka: using KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS"
else
  need_port "$KAFKA_PORT" Kafka KAFKA_PORT
  need_port "$KAFKA_CONTROLLER_PORT" "Kafka controller" KAFKA_CONTROLLER_PORT
  say "Kafka: starting a local KRaft node on 127.0.0.1:$KAFKA_PORT (log: .local/run/kafka/kafka.log)"
  rm -rf "$RUN_DIR/kafka/data"
  KAFKA_STARTED=1
  KAFKA_HOME="$RUN_DIR/kafka" KAFKA_LIBS="$REPO/.local/kafka/libs" bash scripts/kafka.sh start
  export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
fi

# -- Composable Commerce ----------------------------------------------------------------
SALE_PAYMENT_ID="<the id of the sale's card Payment>"   # the mock's seed names it below
if [[ -n "${CTP_CLIENT_ID:-}" ]]; then
  for var in CTP_CLIENT_SECRET CTP_PROJECT_KEY CTP_AUTH_URL CTP_API_URL; do
    [[ -n "${!var:-}" ]] || die "CTP_CLIENT_ID is set, so a real Composable Commerce project is used: set $var too (or unset CTP_CLIENT_ID for the local mock)"
  done
  say "Composable Commerce: project $CTP_PROJECT_KEY at $CTP_API_URL"
else
  need_port "$CTP_MOCK_PORT" "commercetools mock" CTP_MOCK_PORT
  say "Composable Commerce: starting the seeded commercetools mock on 127.0.0.1:$CTP_MOCK_PORT"
  node tools/ct-mock/server.mjs --port "$CTP_MOCK_PORT" --seed >"$RUN_DIR/ct-mock.out" 2>"$RUN_DIR/ct-mock.err" &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    grep -q '^ct-mock ready' "$RUN_DIR/ct-mock.out" 2>/dev/null && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || die "the commercetools mock exited: $(tail -5 "$RUN_DIR/ct-mock.err")"
    sleep 0.1
  done
  grep -q '^ct-mock ready' "$RUN_DIR/ct-mock.out" || die "the commercetools mock did not start in 30 s"
  # The seed's ids (the `SEED {json}` line): the sale's card Payment, for the refund example below.
  SALE_PAYMENT_ID="$(sed -n 's/^SEED //p' "$RUN_DIR/ct-mock.out" \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["salePaymentId"])')" \
    || die "the commercetools mock printed no seed with salePaymentId"
  export CTP_PROJECT_KEY="${CTP_PROJECT_KEY:-instore-demo}"
  export CTP_CLIENT_ID="local-client" CTP_CLIENT_SECRET="local-secret"
  export CTP_AUTH_URL="http://127.0.0.1:$CTP_MOCK_PORT" CTP_API_URL="http://127.0.0.1:$CTP_MOCK_PORT"
fi

# -- dev fakes: local IMS + fake InStore auth API ---------------------------------------
if [[ -n "${INSTORE_AUTH_BASE_URL:-}" ]]; then
  for var in INSTORE_TENANT_ID INSTORE_CONNECTION_KEY IMS_JWKS_URL IMS_ISSUER; do
    [[ -n "${!var:-}" ]] || die "INSTORE_AUTH_BASE_URL is set, so real InStore auth and a real IMS are used: set $var too (or unset INSTORE_AUTH_BASE_URL for the dev fakes)"
  done
  say "InStore auth: using INSTORE_AUTH_BASE_URL=$INSTORE_AUTH_BASE_URL (no dev fakes)"
else
  say "dev fakes: starting the local IMS and the fake InStore auth API on 127.0.0.1:$DEVFAKES_HTTP_PORT"
  FAKES="http://127.0.0.1:$DEVFAKES_HTTP_PORT"
  export DEVFAKES_ISSUER="${DEVFAKES_ISSUER:-$FAKES/ims}"
  export IMS_ISSUER="${IMS_ISSUER:-$DEVFAKES_ISSUER}" IMS_JWKS_URL="${IMS_JWKS_URL:-$FAKES/ims/.well-known/jwks.json}"
  export INSTORE_AUTH_BASE_URL="$FAKES/instore-auth"
  # The reference host page (/host): its stand-in InStore posts webhooks to the gateway; browsers on it may call the gateway
  export DEVFAKES_GATEWAY_URL="http://127.0.0.1:$GATEWAY_HTTP_PORT"
  export GATEWAY_CORS_ALLOW_ORIGINS="${GATEWAY_CORS_ALLOW_ORIGINS:+$GATEWAY_CORS_ALLOW_ORIGINS,}$FAKES"
  # Payment extensions: the simulated provider, and InStore's statusUrl/callbackUrl played by the fakes
  export PAYMENT_EXTENSION_SIMULATOR_URL="${PAYMENT_EXTENSION_SIMULATOR_URL:-$FAKES/provider}"
  export PAYMENT_EXTENSION_ALLOWED_URLS="${PAYMENT_EXTENSION_ALLOWED_URLS:-https://*.commercetools.com},$FAKES"
  # Traces of every service go to the dev fakes' OTLP receiver (browse $FAKES/otlp), unless an
  # OpenTelemetry endpoint of your own is set (OTEL_EXPORTER_OTLP_ENDPOINT=, i.e. empty, turns tracing off).
  if [[ -z "${OTEL_EXPORTER_OTLP_ENDPOINT+set}" ]]; then
    export OTEL_EXPORTER_OTLP_ENDPOINT="$FAKES" OTEL_BSP_SCHEDULE_DELAY="${OTEL_BSP_SCHEDULE_DELAY:-500}"
  fi
  "$PY" -m instore_devfakes &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DEVFAKES_HTTP_PORT/healthz")" == 200 ]] && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || die "the dev fakes exited (see their lines above)"
    sleep 0.1
  done
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DEVFAKES_HTTP_PORT/healthz")" == 200 ]] \
    || die "the dev fakes did not start in 30 s"
fi

# -- our services ---------------------------------------------------------------------
say "cart-mapping: starting (health on 127.0.0.1:$CART_MAPPING_HTTP_PORT)"
"$PY" -m instore_cart_mapping &
PIDS+=($!)
say "order-finalization: starting (health on 127.0.0.1:$ORDER_FINALIZATION_HTTP_PORT)"
"$PY" -m instore_order_finalization &
PIDS+=($!)
say "refund: starting (health on 127.0.0.1:$REFUND_HTTP_PORT)"
"$PY" -m instore_refund &
PIDS+=($!)
say "payment-extension: starting (health on 127.0.0.1:$PAYMENT_EXTENSION_HTTP_PORT)"
"$PY" -m instore_payment_extension &
PIDS+=($!)
say "gateway: starting on 127.0.0.1:$GATEWAY_HTTP_PORT"
"$PY" -m instore_gateway &
PIDS+=($!)

ready() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" == 200 ]]; }
for _ in $(seq 1 600); do
  ready "$GATEWAY_HTTP_PORT" && ready "$CART_MAPPING_HTTP_PORT" && ready "$ORDER_FINALIZATION_HTTP_PORT" \
    && ready "$REFUND_HTTP_PORT" && ready "$PAYMENT_EXTENSION_HTTP_PORT" && break
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "a process exited during start-up (see its lines above)"; done
  sleep 0.1
done
ready "$GATEWAY_HTTP_PORT" && ready "$CART_MAPPING_HTTP_PORT" && ready "$ORDER_FINALIZATION_HTTP_PORT" \
  && ready "$REFUND_HTTP_PORT" && ready "$PAYMENT_EXTENSION_HTTP_PORT" || die "the services did not become ready in 60 s"

# The safety net for lost webhooks, every RECONCILER_INTERVAL_SECONDS (production: a CronJob), started once
# the services (and so their topics) are up. Its findings go to stdout: a sale paid without its webhook
# becomes an Order within grace + interval.
say "reconciler: a run every ${RECONCILER_INTERVAL_SECONDS}s, grace ${RECONCILER_GRACE_SECONDS}s"
"$PY" -m instore_order_finalization.reconciler &
PIDS+=($!)

GW="http://127.0.0.1:$GATEWAY_HTTP_PORT"
# The development default key is printed so the curls paste as they are; a key of your own is not.
if [[ "$INSTORE_CALLBACK_API_KEY" == local-dev-callback-key ]]; then KEY_SHOWN="$INSTORE_CALLBACK_API_KEY"
else KEY_SHOWN='$INSTORE_CALLBACK_API_KEY'; fi
if [[ "$INSTORE_WEBHOOK_SECRET" == local-dev-webhook-secret ]]; then WEBHOOK_SECRET_SHOWN="$INSTORE_WEBHOOK_SECRET"
else WEBHOOK_SECRET_SHOWN='$INSTORE_WEBHOOK_SECRET'; fi
# (computed here, not inside the here-document: bash cannot parse quotes within \${…} there)
if [[ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]]; then TRACES_SHOWN="off (OTEL_EXPORTER_OTLP_ENDPOINT is empty)"
elif [[ -n "${FAKES:-}" && "$OTEL_EXPORTER_OTLP_ENDPOINT" == "$FAKES" ]]; then
  TRACES_SHOWN="to the dev fakes: browse $FAKES/otlp (JSON: $FAKES/otlp/traces)"
else TRACES_SHOWN="to $OTEL_EXPORTER_OTLP_ENDPOINT"; fi
if [[ -n "${FAKES:-}" ]]; then HOST_PAGE_SHOWN="Reference host page (sign in, pay, see InStore's events): $FAKES/host"
else HOST_PAGE_SHOWN="Reference host page: only with the dev fakes (INSTORE_AUTH_BASE_URL unset)"; fi
cat <<MSG

  The InStore integration stack is up.  Ctrl-C stops everything.

  Sale cart callback (demo-open-cart: a sale in progress, never paid):
    curl -s -H "X-Api-Key: $KEY_SHOWN" $GW/instore/callbacks/carts/demo-open-cart

  Return cart callback:
    curl -s -H "X-Api-Key: $KEY_SHOWN" $GW/instore/callbacks/return-carts/demo-return-cart

  A colleague session (host app → gateway), then InStore's token callback:
    TOKEN=\$(make -s token USER_ID=colleague-42 DEVFAKES_HTTP_PORT=$DEVFAKES_HTTP_PORT)
    USER_KEY=\$(curl -s -X POST -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
      -d '{"locationId":"store-berlin-01","workstationId":"pos-3"}' $GW/sessions \\
      | python3 -c 'import json,sys; b=json.load(sys.stdin); print(b.get("userKey") or sys.exit(json.dumps(b)))')
    curl -s -H "X-Api-Key: $KEY_SHOWN" $GW/instore/callbacks/tokens/\$USER_KEY

  A signed payment webhook: the seeded sale cart (charged by card) becomes Order store-berlin-01-000002
  and one event on commerce.payments.completed.v1 (unless the reconciler got there first, ~15 s after
  the start: then the webhook finds that Order and its event and changes nothing):
    BODY='{"id":"evt-1","type":"payment.completed","cartId":"demo-sale-cart"}'
    SIG=\$(printf %s "\$BODY" | python3 -c 'import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())' "$WEBHOOK_SECRET_SHOWN")
    curl -s -X POST -H "X-Signature: \$SIG" -H 'Content-Type: application/json' --data-binary "\$BODY" $GW/instore/webhooks

  Then the return of the cap (demo-sale-return-cart, its line pointing at Order store-berlin-01-000002):
  InStore fetches the return cart (200 once that Order exists), then a signed refund webhook (the
  card Payment refunded 15.00 EUR) records the return item and the Refund on the Order and its Payment
  and makes one event on commerce.refunds.completed.v1:
    curl -s -H "X-Api-Key: $KEY_SHOWN" $GW/instore/callbacks/return-carts/demo-sale-return-cart
    BODY='{"id":"evt-2","type":"refund.completed","returnCartId":"demo-sale-return-cart","data":{"refunds":[{"refundId":"rf-demo-1","paymentId":"$SALE_PAYMENT_ID","amount":{"centAmount":1500,"currencyCode":"EUR"}}]}}'
    SIG=\$(printf %s "\$BODY" | python3 -c 'import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())' "$WEBHOOK_SECRET_SHOWN")
    curl -s -X POST -H "X-Signature: \$SIG" -H 'Content-Type: application/json' --data-binary "\$BODY" $GW/instore/webhooks

  Health, readiness, API documents:
    curl -s $GW/healthz;  curl -s $GW/readyz
    OpenAPI: $GW/schema/openapi.json (browse: $GW/schema)
    AsyncAPI of every topic: $GW/asyncapi.json (committed as docs/api/asyncapi.json)
    each service's own (FastStream): cart-mapping http://127.0.0.1:$CART_MAPPING_HTTP_PORT/asyncapi, order-finalization
    http://127.0.0.1:$ORDER_FINALIZATION_HTTP_PORT/asyncapi, refund http://127.0.0.1:$REFUND_HTTP_PORT/asyncapi,
    payment-extension http://127.0.0.1:$PAYMENT_EXTENSION_HTTP_PORT/asyncapi (.json: the document)

  Metrics (Prometheus text format; docs/operations.md):
    gateway $GW/metrics   cart-mapping http://127.0.0.1:$CART_MAPPING_HTTP_PORT/metrics
    order-finalization http://127.0.0.1:$ORDER_FINALIZATION_HTTP_PORT/metrics   refund http://127.0.0.1:$REFUND_HTTP_PORT/metrics
    payment-extension http://127.0.0.1:$PAYMENT_EXTENSION_HTTP_PORT/metrics
    e.g. curl -s $GW/metrics | grep ^instore_webhooks
  Traces (OpenTelemetry, OTLP/HTTP): $TRACES_SHOWN
  $HOST_PAGE_SHOWN

  The reconciler runs every ${RECONCILER_INTERVAL_SECONDS}s (grace ${RECONCILER_GRACE_SECONDS}s): a sale paid in Composable Commerce whose
  webhook never came is handed to order-finalization and printed as a line "instore-reconciler: handed  unordered-cart
  cart=<id> ..." (columns padded: grep -E 'handed +unordered-cart'). The seeded Order store-berlin-01-000001, whose
  event was never announced, is handed the same way ("unannounced-order").
  The seeded demo-sale-cart is such a sale until you send its webhook: left alone, it becomes its Order this way
  (with ORDER_CREATION=instore the reconciler only reports it: InStore creates the Order).

  A simulated InStore day (sale, split tender, Order, return, refund) against this stack,
  from another terminal with the same environment:  make simulate

  In use (override by environment): GATEWAY_HTTP_PORT=$GATEWAY_HTTP_PORT
  INSTORE_CALLBACK_API_KEY=$KEY_SHOWN KAFKA_PORT=$KAFKA_PORT KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT
  CTP_MOCK_PORT=$CTP_MOCK_PORT CART_MAPPING_HTTP_PORT=$CART_MAPPING_HTTP_PORT DEVFAKES_HTTP_PORT=$DEVFAKES_HTTP_PORT
  ORDER_FINALIZATION_HTTP_PORT=$ORDER_FINALIZATION_HTTP_PORT REFUND_HTTP_PORT=$REFUND_HTTP_PORT
  PAYMENT_EXTENSION_HTTP_PORT=$PAYMENT_EXTENSION_HTTP_PORT

MSG

# Wait for any child to exit (or Ctrl-C); then the trap stops the rest.
set +e
wait -n "${PIDS[@]}"
say "a process exited; stopping the stack"
