# InStore integration server — developer entry points. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# uv from PATH when there is one, else a pinned copy in .local/uv (installed by `make install`)
UV ?= $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.local/uv/bin/uv)
UV_VERSION := 0.13.9
# kustomize renders deploy/k8s in the unit tests (tests/support/k8s.py names the same version)
KUSTOMIZE_VERSION := v5.8.2

.PHONY: help install run demo simulate token test lint test-unit test-contract test-integration test-e2e images compose-up compose-down compose-smoke kube-play bench bench-webhooks bench-orders bench-refunds bench-payment-extensions bench-reconciler faults replay-dlq events settings-doc api-docs clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

install: ## set up everything on a fresh machine: uv, Python deps, the commercetools mock, Kafka jars, redis-server
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "install: Node.js 20+ and npm are needed for the commercetools mock"; exit 1; }
	@test -x "$(UV)" || { python3 -m venv .local/uv && .local/uv/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; } \
	  || { echo "install: could not install uv (on Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
	$(UV) sync --frozen --all-packages
	@# npm ci only when the lock file changed since the last install
	@test tools/ct-mock/node_modules/.package-lock.json -nt tools/ct-mock/package-lock.json \
	  || npm ci --prefix tools/ct-mock --no-audit --no-fund --loglevel=error
	@# the Kafka jars (needs Java 17+ and Maven); skipped with an external broker in KAFKA_BOOTSTRAP_SERVERS
	@if [ -n "$$KAFKA_BOOTSTRAP_SERVERS" ]; then echo "install: KAFKA_BOOTSTRAP_SERVERS is set: no local Kafka jars"; \
	else bash scripts/kafka.sh install; fi
	@# playwright-core for the host page's browser tests (it drives Debian's chromium; no browser is downloaded)
	@test tools/browser/node_modules/.package-lock.json -nt tools/browser/package-lock.json \
	  || npm ci --prefix tools/browser --no-audit --no-fund --loglevel=error
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "install: installing chromium (apt-get) for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	  || echo "install: apt-get could not install chromium (the browser tests need /usr/bin/chromium)"; \
	else echo "install: chromium is missing (the browser tests need it): sudo apt-get install chromium"; fi
	@# stripe-mock (the official Stripe API mock) for the Stripe provider's tests, built with Go from the module proxy
	@test -x .local/bin/stripe-mock || { command -v go >/dev/null \
	  && GOBIN=$(CURDIR)/.local/bin GOFLAGS=-mod=mod go install github.com/stripe/stripe-mock@v0.203.0; } \
	  || echo "install: could not build stripe-mock (needs Go 1.24+); the Stripe provider's tests need it"
	@# kustomize (Go module proxy) renders every overlay of deploy/k8s in tests/unit/test_k8s_overlays.py
	@test "$$(.local/bin/kustomize version 2>/dev/null)" = "$(KUSTOMIZE_VERSION)" || { command -v go >/dev/null \
	  && GOBIN=$(CURDIR)/.local/bin GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); } \
	  || echo "install: could not build kustomize $(KUSTOMIZE_VERSION) (needs Go); the Kubernetes manifest tests need it"
	@# compose-validate (tools/compose-validate): docker compose's own loader (compose-go) for the compose file's test
	@test .local/bin/compose-validate -nt tools/compose-validate/go.sum -a .local/bin/compose-validate -nt tools/compose-validate/main.go \
	  || { command -v go >/dev/null && cd tools/compose-validate && go build -o $(CURDIR)/.local/bin/compose-validate .; } \
	  || echo "install: could not build compose-validate (needs Go 1.24+); the compose file's test needs it"
	@# redis-server for the token-vault tests (Debian/Ubuntu package); skipped with an external Redis in REDIS_URL
	@if [ -n "$$REDIS_URL" ] || command -v redis-server >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "install: installing redis-server (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
	  || echo "install: apt-get could not install redis-server (the token-vault tests need it)"; \
	else echo "install: redis-server is missing (the token-vault tests need it): sudo apt-get install redis-server, or set REDIS_URL"; fi
	@# podman (runc) and debootstrap for the container images (make images) where no Docker engine answers
	@if command -v docker >/dev/null && docker info >/dev/null 2>&1; then :; \
	elif command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "install: installing podman, runc and debootstrap (apt-get) for make images"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null \
	  || echo "install: apt-get could not install podman, runc and debootstrap (make images needs them, or Docker)"; \
	else echo "install: no container engine (make images needs one): sudo apt-get install podman runc debootstrap, or Docker"; fi
	@echo "install: done"

run: ## start Kafka, the seeded commercetools mock, the dev fakes, cart-mapping, order-finalization, refund, payment-extension and the gateway; Ctrl-C stops all
	bash scripts/run-local.sh

demo: ## a fresh local stack, a simulated InStore sale → Order → return → refund, a summary; stops everything
	bash scripts/demo.sh

simulate: ## play InStore once against a running stack (make run in another terminal); ARGS="--help"
	@INSTORE_CALLBACK_API_KEY=$${INSTORE_CALLBACK_API_KEY:-local-dev-callback-key} \
	INSTORE_WEBHOOK_SECRET=$${INSTORE_WEBHOOK_SECRET:-local-dev-webhook-secret} \
	CTP_CLIENT_ID=$${CTP_CLIENT_ID:-local-client} CTP_CLIENT_SECRET=$${CTP_CLIENT_SECRET:-local-secret} \
	CTP_PROJECT_KEY=$${CTP_PROJECT_KEY:-instore-demo} \
	CTP_AUTH_URL=$${CTP_AUTH_URL:-http://127.0.0.1:$${CTP_MOCK_PORT:-8989}} \
	CTP_API_URL=$${CTP_API_URL:-http://127.0.0.1:$${CTP_MOCK_PORT:-8989}} \
	$(UV) run --frozen instore-integration simulate $(ARGS)

token: ## mint a colleague token from the local IMS (make -s token USER_ID=colleague-42 ARGS="--ttl -120")
	@$(UV) run --frozen python -m instore_devfakes token --user $(or $(USER_ID),colleague-42) $(ARGS)

test: ## every test tier: unit, contract, integration (real Kafka + mock), end-to-end
	$(UV) run --frozen pytest -ra

lint: ## ruff (lint and format) and mypy --strict over the workspace (all must be clean); `ruff format .` fixes the format
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

test-unit: ## unit tests only (no network)
	$(UV) run --frozen pytest -ra tests/unit

test-contract: ## contract tests: what we send to Composable Commerce against its OpenAPI file
	$(UV) run --frozen pytest -ra tests/contract

test-integration: ## integration tests (real Kafka, commercetools mock)
	$(UV) run --frozen pytest -ra tests/integration

test-e2e: ## end-to-end tests (all services as processes)
	$(UV) run --frozen pytest -ra tests/e2e

images: ## build every service image (one Dockerfile) and, without a registry, the stand-ins compose needs (scripts/images.sh)
	bash scripts/images.sh

compose-up: ## start docker-compose.yml (docker compose, or podman-compose) and wait until healthy; the images of make images when built
	bash scripts/compose.sh up
	bash scripts/compose.sh wait

compose-down: ## stop the compose stack and remove its containers and volumes
	bash scripts/compose.sh down

compose-smoke: ## the compose stack from the built images, one signed sale → one Order, one event, torn down (after make images)
	bash scripts/compose-smoke.sh

kube-play: ## the Kubernetes Deployments of OVERLAY (default deploy/k8s/overlays/test) under podman kube play, checked, then one run of each CronJob's pod (after make images)
	bash scripts/kube-play.sh $(or $(OVERLAY),deploy/k8s/overlays/test)

bench: ## cart-callback latency and throughput against a direct GET of the mock (ARGS="--help")
	$(UV) run --frozen python -m bench.cart_callback $(ARGS)

bench-webhooks: ## webhook intake throughput and latency at 64 senders (ARGS="--help")
	$(UV) run --frozen python -m bench.webhook_intake $(ARGS)

bench-orders: ## webhook-to-Order latency through the whole pipeline (ARGS="--help")
	$(UV) run --frozen python -m bench.webhook_to_order $(ARGS)

bench-payment-extensions: ## payment-extension acknowledgement and request-to-callback latency at 32 senders (ARGS="--help")
	$(UV) run --frozen python -m bench.payment_extension $(ARGS)

bench-refunds: ## refund-webhook-to-event latency: return items, Refunds, event (ARGS="--help")
	$(UV) run --frozen python -m bench.refund_flow $(ARGS)

bench-reconciler: ## one reconciliation run over many carts and Orders: seconds, queries, records/s (ARGS="--help")
	$(UV) run --frozen python -m bench.reconciler $(ARGS)

faults: ## the fault suite: crashes, broker outages, duplicates, a faulty Composable Commerce (ARGS="--n 25", ARGS=--short)
	$(UV) run --frozen python -m faults $(ARGS)

replay-dlq: ## re-publish dead letters to their source topic (make replay-dlq TOPIC=instore.webhooks.v1.dlq ARGS=--dry-run); KAFKA_PORT or KAFKA_BOOTSTRAP_SERVERS
	@KAFKA_BOOTSTRAP_SERVERS=$${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$${KAFKA_PORT:-9092}} \
	$(UV) run --frozen instore-integration replay-dlq --topic $(or $(TOPIC),instore.webhooks.v1.dlq) $(ARGS)

events: ## print a topic's messages (make events TOPIC=commerce.refunds.completed.v1); KAFKA_PORT or KAFKA_BOOTSTRAP_SERVERS
	@KAFKA_BOOTSTRAP_SERVERS=$${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$${KAFKA_PORT:-9092}} \
	$(UV) run --frozen instore-integration events --topic $(or $(TOPIC),commerce.payments.completed.v1) $(ARGS)

api-docs: ## regenerate docs/api/openapi.json and docs/api/asyncapi.json from the code (a unit test fails when they are stale)
	$(UV) run --frozen python -m instore_gateway.api_docs

settings-doc: ## print the settings table docs/configuration.md holds
	@$(UV) run --frozen python -m instore_shared.settings_doc

clean: ## remove local state (Kafka data, logs, caches); keeps installed jars and packages
	rm -rf .local/run .local/openapi-cache .pytest_cache
