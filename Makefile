# InStore integration server — developer entry points. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# uv from PATH when there is one, else a pinned copy in .local/uv (installed by `make install`)
UV ?= $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.local/uv/bin/uv)
UV_VERSION := 0.13.9

.PHONY: help install run test test-unit test-integration test-e2e test-contract bench lint clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

install: ## set up everything on a fresh machine: uv, Python deps, the commercetools mock, Kafka jars
	@command -v java >/dev/null || { echo "install: Java 17+ is needed for the local Kafka (e.g. apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "install: Node.js 20+ and npm are needed for the commercetools mock"; exit 1; }
	@command -v mvn >/dev/null || { echo "install: Maven is needed to fetch the Kafka jars (e.g. apt-get install maven)"; exit 1; }
	@test -x "$(UV)" || { python3 -m venv .local/uv && .local/uv/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; }
	$(UV) sync --frozen --all-packages
	npm ci --prefix tools/ct-mock --no-audit --no-fund --loglevel=error
	bash scripts/kafka.sh install
	@echo "install: done"

run: ## start Kafka, the seeded commercetools mock, cart-mapping and the gateway; Ctrl-C stops all
	bash scripts/run-local.sh

test: ## every test tier: unit, contract, integration (real Kafka + mock), end-to-end
	$(UV) run --frozen pytest -ra

test-unit: ## unit tests only (no network)
	$(UV) run --frozen pytest -ra tests/unit

test-integration: ## integration and contract tests (real Kafka, commercetools mock)
	$(UV) run --frozen pytest -ra tests/integration tests/contract

test-e2e: ## end-to-end tests (all services as processes)
	$(UV) run --frozen pytest -ra tests/e2e

bench: ## cart-callback latency and throughput against a direct GET of the mock
	$(UV) run --frozen python -m bench.cart_callback

clean: ## remove local state (Kafka data, logs, caches); keeps installed jars and packages
	rm -rf .local/run .local/openapi-cache .pytest_cache
