# syntax=docker/dockerfile:1
# One image per service, all from this file. Build from the repository root (the uv workspace):
#   docker build --build-arg SERVICE=gateway -t instore-gateway:dev .
#   (podman build … the same; `make images` builds every service, see scripts/images.sh)
# SERVICE is one of: gateway, cart-mapping, order-finalization, refund, payment-extension, dev-fakes.
# PYTHON_IMAGE and UV_IMAGE replace the public base images (CI builds local stand-ins for them,
# since no registry is reachable there: scripts/images.sh).
#
# Every service runs as the numeric user 10001 with a read-only root filesystem possible (the
# bytecode is compiled at build time; only /tmp must be writable, as in deploy/k8s).
# Run, e.g.:  docker run --read-only -p 8080:8080 -e INSTORE_CALLBACK_API_KEY=… -e KAFKA_BOOTSTRAP_SERVERS=… instore-gateway:dev
# Ports: gateway 8080; cart-mapping 8081, order-finalization 8082, refund 8083, payment-extension
# 8084 (health, metrics and documents only: the work arrives over Kafka); dev-fakes 8090
# (DEVELOPMENT ONLY: the local IMS mints a colleague token for anyone who asks; never deploy it).

ARG PYTHON_IMAGE=python:3.11-slim
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
ARG SERVICE

FROM ${UV_IMAGE} AS uv

# --- build: resolve the locked dependencies of this one workspace member into /app/.venv ----
FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
COPY --from=uv /uv /uvx /bin/

# Use the image's interpreter (never download one, so the venv's python symlink points at
# /usr/local/bin, which exists in the runtime stage too), copy instead of hard-linking
# (cache mount on another filesystem), compile bytecode (the root filesystem is read-only
# at run time), and install workspace members as real packages, not editable links.
ENV UV_PYTHON_DOWNLOADS=0 \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_EDITABLE=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# 1) third-party dependencies only, from the lock file and the members' pyproject.toml:
#    this layer is reused until uv.lock or a pyproject.toml changes. uv resolves the
#    workspace with the members that are present; `--frozen` takes uv.lock as it is.
#    The package name (instore-devfakes for dev-fakes) is read from the member's pyproject.toml.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/${SERVICE}/pyproject.toml services/${SERVICE}/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    package=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["name"])' \
              "services/${SERVICE}/pyproject.toml") \
 && uv sync --frozen --no-dev --package "$package" --no-install-workspace

# 2) the workspace members this service needs (instore-shared and the service).
COPY shared/ shared/
COPY services/${SERVICE}/ services/${SERVICE}/
RUN --mount=type=cache,target=/root/.cache/uv \
    package=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["name"])' \
              "services/${SERVICE}/pyproject.toml") \
 && uv sync --frozen --no-dev --package "$package"

# --- runtime: the venv only (no uv, no compilers, no caches), as a non-root user --------------
FROM ${PYTHON_IMAGE} AS runtime

# Numeric uid/gid so Kubernetes `runAsNonRoot: true` can verify it.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app --shell /usr/sbin/nologin app

# Owned by root, run as 10001: the process cannot rewrite its own code, even without a read-only root.
COPY --from=build /app/.venv /app/.venv

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app
USER 10001:10001
STOPSIGNAL SIGTERM

# --- one final stage per service: its port, health check and entry point (`python -m …`) ----
# The health checks use urllib (the slim base has no curl). Docker honours HEALTHCHECK; podman
# keeps it with `--format docker` (scripts/images.sh does so).

# /readyz: 200 once Kafka answers (compose waits on it).
FROM runtime AS service-gateway
ENV GATEWAY_HTTP_HOST=0.0.0.0 GATEWAY_HTTP_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('GATEWAY_HTTP_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["/app/.venv/bin/python", "-m", "instore_gateway"]

FROM runtime AS service-cart-mapping
ENV CART_MAPPING_HTTP_HOST=0.0.0.0 CART_MAPPING_HTTP_PORT=8081
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CART_MAPPING_HTTP_PORT', '8081'), timeout=2)"]
ENTRYPOINT ["/app/.venv/bin/python", "-m", "instore_cart_mapping"]

FROM runtime AS service-order-finalization
ENV ORDER_FINALIZATION_HTTP_HOST=0.0.0.0 ORDER_FINALIZATION_HTTP_PORT=8082
EXPOSE 8082
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ORDER_FINALIZATION_HTTP_PORT', '8082'), timeout=2)"]
ENTRYPOINT ["/app/.venv/bin/python", "-m", "instore_order_finalization"]

FROM runtime AS service-refund
ENV REFUND_HTTP_HOST=0.0.0.0 REFUND_HTTP_PORT=8083
EXPOSE 8083
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('REFUND_HTTP_PORT', '8083'), timeout=2)"]
ENTRYPOINT ["/app/.venv/bin/python", "-m", "instore_refund"]

FROM runtime AS service-payment-extension
ENV PAYMENT_EXTENSION_HTTP_HOST=0.0.0.0 PAYMENT_EXTENSION_HTTP_PORT=8084
EXPOSE 8084
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PAYMENT_EXTENSION_HTTP_PORT', '8084'), timeout=2)"]
ENTRYPOINT ["/app/.venv/bin/python", "-m", "instore_payment_extension"]

# DEVELOPMENT ONLY. /healthz: 200 while the process serves. DEVFAKES_ISSUER must be the URL the
# gateway reaches the fake at (compose sets it).
FROM runtime AS service-dev-fakes
ENV DEVFAKES_HTTP_HOST=0.0.0.0 DEVFAKES_HTTP_PORT=8090
EXPOSE 8090
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
    CMD ["/app/.venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DEVFAKES_HTTP_PORT', '8090'), timeout=2)"]
ENTRYPOINT ["/app/.venv/bin/python", "-m", "instore_devfakes"]

# The image: the stage of the SERVICE build argument.
FROM service-${SERVICE}
