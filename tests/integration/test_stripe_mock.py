"""The Stripe adapter against stripe-mock, the official Stripe API mock (built by `make install` from the Go module
proxy). stripe-mock validates every request against Stripe's OpenAPI document and answers fixed objects, so what is
meaningful here: each call is one Stripe accepts (path, method, form fields), carries the Idempotency-Key, and its
answer maps without error; the outcome mapping itself is tested in tests/unit/test_stripe_adapter.py."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from instore_payment_extension.providers.base import Approved, Declined, PaymentInput
from instore_payment_extension.providers.stripe import StripeProvider
from instore_shared.contract.payment_extensions import Money, Tender
from tests.support.processes import REPO_ROOT, free_port, wait_until

pytestmark = pytest.mark.integration

BINARY = Path(REPO_ROOT) / ".local" / "bin" / "stripe-mock"
KEY = "sk_test_123"


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stripe_mock() -> Iterator[str]:
    assert BINARY.exists(), f"{BINARY} is missing: run make install (needs Go)"
    port, https_port = free_port(), free_port()  # both: without -https-addr it also takes the fixed port 12112
    process = subprocess.Popen(
        [str(BINARY), "-http-addr", f"127.0.0.1:{port}", "-https-addr", f"127.0.0.1:{https_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers(port) or process.poll() is not None, 30, "stripe-mock to listen")
        assert process.poll() is None, "stripe-mock exited"
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _provider(url: str, seen: list[httpx.Request]) -> StripeProvider:
    async def record(request: httpx.Request) -> None:
        seen.append(request)

    provider = StripeProvider(KEY, url)
    provider._http.event_hooks["request"].append(record)
    return provider


@pytest.mark.parametrize("capture", [True, False])
async def test_a_payment_intent_stripe_accepts(stripe_mock: str, capture: bool) -> None:
    seen: list[httpx.Request] = []
    provider = _provider(stripe_mock, seen)
    try:
        result = await provider.pay(
            PaymentInput(
                tender=Tender.BANK_CARD,
                amount=Money(centAmount=1949, currencyCode="EUR"),
                capture=capture,
                card_token="pm_card_visa",
                request_id="r-1",
                payment_id="pay-1",
            ),
            "instore-payment-r-1",
        )
    finally:
        await provider.aclose()
    assert isinstance(result, Approved | Declined)  # stripe-mock answers a fixed status; the mapping is unit-tested
    assert result.reference is not None and result.reference.startswith("pi_")
    (request,) = seen
    assert request.headers["idempotency-key"] == "instore-payment-r-1"


async def test_capture_cancel_and_refund_are_calls_stripe_accepts(stripe_mock: str) -> None:
    seen: list[httpx.Request] = []
    provider = _provider(stripe_mock, seen)
    money = Money(centAmount=500, currencyCode="EUR")
    try:
        captured = await provider.capture("pi_123", money, "instore-capture-r-2")
        cancelled = await provider.cancel("pi_123", "instore-cancel-r-3")
        refunded = await provider.refund("pi_123", money, "instore-refund-r-4")
    finally:
        await provider.aclose()
    assert isinstance(captured, Approved | Declined) and captured.reference
    assert isinstance(cancelled, Approved)
    assert isinstance(refunded, Approved) and refunded.reference.startswith("re_")
    assert [r.headers["idempotency-key"] for r in seen] == ["instore-capture-r-2", "instore-cancel-r-3", "instore-refund-r-4"]


async def test_stripe_mock_refuses_a_malformed_call_as_a_refusal(stripe_mock: str) -> None:
    """Guard: stripe-mock does validate — an unknown parameter is a 400, which the adapter maps to a refusal."""
    seen: list[httpx.Request] = []
    provider = _provider(stripe_mock, seen)
    try:
        status, body = await provider._post("/v1/refunds", {"payment_intent": "pi_123", "no_such_field": "x"}, "k")
    finally:
        await provider.aclose()
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
