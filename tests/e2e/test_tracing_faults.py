"""End to end: a tracing backend that fails never slows or breaks the money path.

The gateway and cart-mapping run as processes with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a
socket that accepts connections and never answers (the worst case for an exporter: every export
waits for its timeout). Cart callbacks and a forged, malformed or oversized ``traceparent`` from
the caller must still be answered at once, and the processes must stop within their deadline.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import CtMock, Kafka, Service, free_port, start_service

pytestmark = pytest.mark.e2e

API_KEY = "e2e-tracing-faults-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never reads or answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock, black_hole: int) -> Iterator[tuple[Service, Service]]:
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{black_hole}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
    }
    common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, **otel}
    started: list[Service] = []
    try:
        port = free_port()
        started.append(
            start_service(
                "cart-mapping-otlp-down",
                "instore_cart_mapping",
                {
                    **common,
                    **ct_mock.settings_env(),
                    "CART_MAPPING_HTTP_PORT": str(port),
                    "CART_MAPPING_CONSUMER_GROUP": f"cart-mapping-otlp-down-{uuid.uuid4().hex[:8]}",
                },
                port,
            )
        )
        port = free_port()
        started.append(
            start_service(
                "gateway-otlp-down",
                "instore_gateway",
                {**common, "GATEWAY_HTTP_PORT": str(port), "INSTORE_CALLBACK_API_KEY": API_KEY},
                port,
            )
        )
        yield started[1], started[0]
    finally:
        for service in reversed(started):
            service.stop()


def test_callbacks_are_answered_at_once_while_the_tracing_backend_hangs(stack: tuple[Service, Service], ct_mock: CtMock) -> None:
    gateway, _ = stack
    cart_key = ct_mock.seed["openCartKey"]  # demo-sale-cart may be ordered by an earlier test (then 409)
    forged = [
        "00-" + "f" * 32 + "-" + "1" * 16 + "-01",
        "garbage",
        "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01," * 500,
        "x" * 6000,
    ]
    slowest = 0.0
    with httpx.Client(timeout=10) as http:
        for i in range(40):  # far more spans than one export batch: exports queue up behind the hung one
            headers = {"X-Api-Key": API_KEY, "traceparent": forged[i % len(forged)], "tracestate": "k=v," * 50, "baggage": "a=b"}
            started = time.monotonic()
            response = http.get(f"{gateway.url}/instore/callbacks/carts/{cart_key}", headers=headers)
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 200, response.text
    assert slowest < 2.0, f"a callback took {slowest:.2f} s while the OTLP endpoint hung"


def test_the_processes_stop_in_time_with_spans_they_cannot_export(stack: tuple[Service, Service]) -> None:
    gateway, cart_mapping = stack
    for service in (gateway, cart_mapping):
        started = time.monotonic()
        code = service.stop()
        took = time.monotonic() - started
        assert took < 8, f"{service.process.name} took {took:.1f} s to stop:\n{service.process.describe(10)}"
        assert code in (0, -15), service.process.describe(10)  # -15: uvicorn re-raises the SIGTERM it handled
