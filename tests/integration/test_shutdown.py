"""A service told to stop stops, even when its Kafka broker is gone.

Stopping a consumer whose broker vanished can wait for it without end (aiokafka retries the
group's last commit and leave); the services' server gives the whole shutdown a deadline
(``instore_shared.service._Server``) and then exits anyway, saying so.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.processes import (
    CtMock,
    free_port,
    start_kafka,
    start_service,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("module", "port_var"),
    [
        ("instore_cart_mapping", "CART_MAPPING_HTTP_PORT"),
        ("instore_refund", "REFUND_HTTP_PORT"),
    ],
)
def test_sigterm_stops_the_service_with_its_broker_gone(ct_mock: CtMock, module: str, port_var: str) -> None:
    kafka = start_kafka(free_port(), free_port())  # a broker of its own, to take away
    port = free_port()
    service = start_service(
        f"shutdown-{module}",
        module,
        {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, **ct_mock.settings_env(), port_var: str(port)},
        port,
    )
    try:
        kafka.stop()
        wait_until(
            lambda: "Connection refused" in service.process.output() or "NodeNotReady" in service.process.output(),
            60,
            "the service to notice the broker is gone",
        )
        service.process.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        wait_until(lambda: not service.process.alive(), 45, "the service to exit after SIGTERM")
        took = time.monotonic() - started
    finally:
        service.stop(signal.SIGKILL)
        kafka.stop()
    assert took < 30, f"took {took:.1f} s"
    assert service.process.proc.returncode in (0, 1, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
