"""End to end: InStore's payment-extension requests through the gateway, Kafka and the payment-extension
service (processes) to the dev fakes' simulated provider, InStore's statusUrl/callbackUrl (played by the dev
fakes) and the commercetools mock — every outcome, repeats, outages and a crash: money moves once, the result
arrives once, the Transaction is on the Payment once, one event."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from instore_devfakes.instore_samples import payment_request
from instore_payment_extension.service import CONTAINER, state_key
from instore_shared.kafka.topics import PAYMENT_EXTENSION_RESULTS
from tests.e2e.test_order_flow import _commerce
from tests.support.processes import CtMock, Kafka, Service, free_port, start_service, wait_until

pytestmark = pytest.mark.e2e

SECRET = "e2e-pe-secret-" + uuid.uuid4().hex
GROUP = f"payment-extension-e2e-{uuid.uuid4().hex[:6]}"


@dataclass
class Stack:
    gateway: Service
    fakes: Service
    service: Service
    kafka: Kafka
    mock: CtMock


def _service(stack_kafka: Kafka, mock: CtMock, fakes_url: str, name: str, **extra: str) -> Service:
    port = free_port()
    return start_service(
        name,
        "instore_payment_extension",
        {
            "KAFKA_BOOTSTRAP_SERVERS": stack_kafka.bootstrap_servers,
            **mock.settings_env(),
            "PAYMENT_EXTENSION_HTTP_PORT": str(port),
            "PAYMENT_EXTENSION_CONSUMER_GROUP": GROUP,
            "PAYMENT_EXTENSION_ALLOWED_URLS": fakes_url,
            "PAYMENT_EXTENSION_SIMULATOR_URL": f"{fakes_url}/provider",
            "INSTORE_WEBHOOK_SECRET": SECRET,
            "PAYMENT_EXTENSION_PROVIDER_TIMEOUT_SECONDS": "2",
            "PAYMENT_EXTENSION_RETRY_SECONDS": "60",
            **extra,
        },
        port,
    )


@pytest.fixture(scope="module")
def stack(kafka: Kafka, ct_mock: CtMock) -> Iterator[Stack]:
    fakes_port, gateway_port = free_port(), free_port()
    fakes_url = f"http://127.0.0.1:{fakes_port}"
    fakes = start_service(
        "pe-dev-fakes", "instore_devfakes", {"DEVFAKES_HTTP_PORT": str(fakes_port)}, fakes_port, ready_path="/healthz"
    )
    services = [fakes]
    holder: Stack | None = None
    try:
        services.append(
            start_service(
                "pe-gateway",
                "instore_gateway",
                {
                    "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                    "GATEWAY_HTTP_PORT": str(gateway_port),
                    "INSTORE_CALLBACK_API_KEY": "e2e-pe-key-" + uuid.uuid4().hex,
                    "INSTORE_WEBHOOK_SECRET": SECRET,
                    "PAYMENT_EXTENSION_ALLOWED_URLS": fakes_url,
                },
                gateway_port,
            )
        )
        services.append(_service(kafka, ct_mock, fakes_url, "pe-service"))
        holder = Stack(services[1], fakes, services[2], kafka, ct_mock)
        yield holder
    finally:
        for service in (*services, *([holder.service] if holder else [])):
            service.stop()


# -- helpers ---------------------------------------------------------------------------------
async def _payment(mock: CtMock, cents: int) -> str:
    """A Payment as InStore creates it with delegated payment creation: amountPlanned only."""
    async with _commerce(mock) as c:
        return str(
            (await c.request("POST", "/payments", json={"amountPlanned": {"centAmount": cents, "currencyCode": "EUR"}})).json()[
                "id"
            ]
        )


async def _payment_of(mock: CtMock, payment_id: str) -> dict[str, Any]:
    async with _commerce(mock) as c:
        return dict((await c.request("GET", f"/payments/{payment_id}")).json())


async def _stage(mock: CtMock, request_id: str) -> str | None:
    async with _commerce(mock) as c:
        try:
            return str((await c.get_custom_object(CONTAINER, state_key(request_id))).json()["value"]["stage"])
        except Exception:
            return None


def _body(stack: Stack, rid: str, payment_id: str, cents: int = 1949, token: str = "tok_approve", **extra: Any) -> bytes:
    fields: dict[str, Any] = {
        "status_url": f"{stack.fakes.url}/instore-sim/status/{rid}",
        "callback_url": f"{stack.fakes.url}/instore-sim/callback/{rid}",
        "payment_id": payment_id,
        "cent_amount": cents,
        "card": {"token": token},
    }
    fields.update(extra)
    return payment_request(rid, **fields)


def _post(stack: Stack, path: str, body: bytes, secret: str = SECRET) -> httpx.Response:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(
        f"{stack.gateway.url}{path}",
        content=body,
        timeout=10,
        headers={"X-Signature": signature, "Content-Type": "application/json"},
    )


def _send(stack: Stack, body: bytes, tender: str = "bank-card", action: str = "payment") -> None:
    response = _post(stack, f"/instore/payment-extensions/{tender}/{action}", body)
    assert response.status_code == 200, response.text


def _control(stack: Stack, path: str, body: dict[str, Any]) -> None:
    httpx.post(f"{stack.fakes.url}{path}", json=body, timeout=5).raise_for_status()


def _seen(stack: Stack, rid: str) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.fakes.url}/instore-sim/requests/{rid}", timeout=5).json())


def _callbacks(stack: Stack, rid: str) -> list[dict[str, Any]]:
    wait_until(lambda: bool(_seen(stack, rid)["callbacks"]), 60, f"the result of {rid} at callbackUrl")
    return list(_seen(stack, rid)["callbacks"])


def _stats(stack: Stack) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.fakes.url}/provider/stats", timeout=5).json())


def _handled(service: Service, rid: str) -> int:
    return sum(1 for line in service.process.output().splitlines() if "payment_extension.handled" in line and rid in line)


async def _events(kafka: Kafka, rid: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        PAYMENT_EXTENSION_RESULTS.name,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found: list[dict[str, Any]] = []
        for _ in range(10):
            batches = await consumer.getmany(timeout_ms=300)
            found += [json.loads(r.value) for records in batches.values() for r in records]
        return [e for e in found if e["requestId"] == rid]
    finally:
        await consumer.stop()


async def _done(stack: Stack, rid: str) -> None:
    """Wait until the request is announced (its whole state machine ran)."""
    for _ in range(600):
        if await _stage(stack.mock, rid) == "announced":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{rid} was not announced: {stack.service.process.describe()}")


# -- tests -------------------------------------------------------------------------------------
async def test_an_approved_card_payment_is_charged_recorded_and_delivered_once(stack: Stack) -> None:
    rid, pid = "pe-" + uuid.uuid4().hex, await _payment(stack.mock, 1949)
    _send(stack, _body(stack, rid, pid))
    (callback,) = _callbacks(stack, rid)
    result = callback["body"]
    assert result["status"] == "succeeded" and result["paymentId"] == pid and result["card"]["last4"] == "4242"
    assert callback["idempotencyKey"] == rid
    assert (
        callback["signature"]
        == hmac.new(SECRET.encode(), json.dumps(result, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()
    )
    await _done(stack, rid)
    payment = await _payment_of(stack.mock, pid)
    (transaction,) = payment["transactions"]
    assert (transaction["type"], transaction["state"], transaction["interactionId"]) == ("Charge", "Success", result["reference"])
    assert transaction["amount"]["centAmount"] == 1949
    assert payment["paymentStatus"]["interfaceCode"] == "Success"
    assert payment["paymentMethodInfo"]["paymentInterface"] == "simulator"
    assert _seen(stack, rid)["statuses"][0]["type"] == "progress"
    (event,) = await _events(stack.kafka, rid)
    assert event["status"] == "succeeded" and event["paymentId"] == pid and event["reference"] == result["reference"]
    assert _stats(stack)["moneyMovements"][f"instore-payment-{rid}"] == 1


async def test_a_declined_card_is_a_declined_result_and_a_failed_transaction(stack: Stack) -> None:
    rid, pid = "pe-" + uuid.uuid4().hex, await _payment(stack.mock, 500)
    _send(stack, _body(stack, rid, pid, 500, "tok_decline"))
    (callback,) = _callbacks(stack, rid)
    assert (callback["body"]["status"], callback["body"]["reason"]) == ("declined", "insufficient_funds")
    await _done(stack, rid)
    payment = await _payment_of(stack.mock, pid)
    assert [t["state"] for t in payment["transactions"]] == ["Failure"]
    assert payment["paymentStatus"]["interfaceCode"] == "insufficient_funds"
    assert f"instore-payment-{rid}" not in _stats(stack)["moneyMovements"]


@pytest.mark.parametrize(("response", "status"), [("approve", "succeeded"), ("cancel", "cancelled")])
async def test_a_prompt_answered_through_the_gateway(stack: Stack, response: str, status: str) -> None:
    rid, pid = "pe-" + uuid.uuid4().hex, await _payment(stack.mock, 2500)
    _send(stack, _body(stack, rid, pid, 2500, "tok_prompt"))
    wait_until(lambda: any(s.get("type") == "prompt" for s in _seen(stack, rid)["statuses"]), 30, "the prompt")
    prompt = next(s for s in _seen(stack, rid)["statuses"] if s.get("type") == "prompt")
    assert prompt["requestId"] == f"{rid}:prompt:1" and prompt["keepAlive"] == 60000
    answer = json.dumps({"requestId": prompt["requestId"], "response": response}).encode()
    assert _post(stack, "/instore/payment-extensions/prompt-answers", answer).status_code == 200
    (callback,) = _callbacks(stack, rid)
    assert callback["body"]["status"] == status
    await _done(stack, rid)
    payment = await _payment_of(stack.mock, pid)
    movements = _stats(stack)["moneyMovements"]
    if status == "succeeded":
        assert [(t["type"], t["state"]) for t in payment["transactions"]] == [("Charge", "Success")]
        assert movements[f"instore-payment-{rid}-resume-1"] == 1
    else:
        assert payment["transactions"] == [] and callback["body"]["reason"] == "cancelled-by-colleague"
        assert f"instore-payment-{rid}-resume-1" not in movements and movements[f"instore-cancel-{rid}"] == 1


async def test_a_provider_slower_than_the_timeout_is_timed_out_and_nothing_recorded(stack: Stack) -> None:
    _control(stack, "/provider/_control", {"mode": "ok", "slowSeconds": 5})
    rid, pid = "pe-" + uuid.uuid4().hex, await _payment(stack.mock, 700)
    _send(stack, _body(stack, rid, pid, 700, "tok_slow"))
    (callback,) = _callbacks(stack, rid)
    assert (callback["body"]["status"], callback["body"]["reason"]) == ("timed-out", "provider-timeout")
    await _done(stack, rid)
    payment = await _payment_of(stack.mock, pid)
    assert payment["transactions"] == [] and payment["paymentStatus"]["interfaceCode"] == "provider-timeout"


async def test_the_callback_endpoint_down_then_up_gets_the_result_once(stack: Stack) -> None:
    _control(stack, "/instore-sim/_control", {"callbackDown": True})
    try:
        rid, pid = "pe-" + uuid.uuid4().hex, await _payment(stack.mock, 900)
        _send(stack, _body(stack, rid, pid, 900))
        for _ in range(300):  # decided and saved while InStore's callback answers 503
            if await _stage(stack.mock, rid) == "decided":
                break
            await asyncio.sleep(0.1)
        assert await _stage(stack.mock, rid) == "decided"
        assert _seen(stack, rid)["callbacks"] == []
    finally:
        _control(stack, "/instore-sim/_control", {"callbackDown": False})
    (callback,) = _callbacks(stack, rid)
    assert callback["body"]["status"] == "succeeded"
    await _done(stack, rid)
    assert len(_seen(stack, rid)["callbacks"]) == 1
    assert len((await _payment_of(stack.mock, pid))["transactions"]) == 1
    assert len(await _events(stack.kafka, rid)) == 1


async def test_the_same_request_twice_is_one_charge_one_transaction_one_callback_one_event(stack: Stack) -> None:
    rid, pid = "pe-" + uuid.uuid4().hex, await _payment(stack.mock, 1200)
    body = _body(stack, rid, pid, 1200)
    _send(stack, body)
    _send(stack, body)  # InStore repeating after a connection problem
    wait_until(lambda: _handled(stack.service, rid) == 2, 60, "both deliveries handled")
    assert _stats(stack)["moneyMovements"][f"instore-payment-{rid}"] == 1
    assert len((await _payment_of(stack.mock, pid))["transactions"]) == 1
    assert len(_seen(stack, rid)["callbacks"]) == 1
    assert len(await _events(stack.kafka, rid)) == 1


async def test_a_url_off_the_allow_list_is_refused_and_nothing_is_sent(stack: Stack) -> None:
    calls = _stats(stack)["calls"]
    rid, pid = "pe-" + uuid.uuid4().hex, await _payment(stack.mock, 100)
    body = _body(stack, rid, pid, 100, callback_url="http://169.254.169.254/latest/meta-data/")
    response = _post(stack, "/instore/payment-extensions/bank-card/payment", body)
    assert response.status_code == 422 and response.json()["type"].endswith("url-not-allowed")
    forged = _post(stack, "/instore/payment-extensions/bank-card/payment", _body(stack, rid, pid, 100), "wrong")
    assert forged.status_code == 401 and forged.json()["type"].endswith("invalid-signature")
    assert _stats(stack)["calls"] == calls and _seen(stack, rid) == {"statuses": [], "callbacks": []}


async def test_killed_mid_payment_then_restarted_charges_once_and_still_delivers(stack: Stack) -> None:
    """Last on purpose: replaces the module's service by one that dies once the decision is saved."""
    stack.service.stop(signal.SIGTERM)
    fakes_url = stack.fakes.url
    crashing = _service(stack.kafka, stack.mock, fakes_url, "pe-crashing", PAYMENT_EXTENSION_CRASH_AFTER_DECIDED="true")
    rid, pid = "pe-" + uuid.uuid4().hex, await _payment(stack.mock, 3100)
    _send(stack, _body(stack, rid, pid, 3100))
    wait_until(lambda: not crashing.process.alive(), 60, "the service to die after deciding")
    assert crashing.process.proc.returncode == 3
    assert _seen(stack, rid)["callbacks"] == [] and await _stage(stack.mock, rid) == "decided"
    stack.service = _service(stack.kafka, stack.mock, fakes_url, "pe-restarted")
    (callback,) = _callbacks(stack, rid)
    assert callback["body"]["status"] == "succeeded"
    await _done(stack, rid)
    assert _stats(stack)["moneyMovements"][f"instore-payment-{rid}"] == 1
    assert len((await _payment_of(stack.mock, pid))["transactions"]) == 1
    assert len(await _events(stack.kafka, rid)) == 1
