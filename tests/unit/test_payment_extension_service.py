"""The payment-extension service function, with the dev fakes' simulated provider and InStore side in-process
(httpx over ASGI) and an in-memory Composable Commerce: money moves once, the result is delivered once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar

from instore_devfakes.instore_samples import payment_request
from instore_devfakes.payments import InStoreSideState, ProviderState, instore_side_router, provider_router
from instore_payment_extension.instore import InStoreClient
from instore_payment_extension.providers.simulator import SimulatorProvider
from instore_payment_extension.service import CONTAINER, handle_payment_request, state_key
from instore_payment_extension.settings import PaymentExtensionSettings
from instore_shared.commercetools.client import ApiResponse
from instore_shared.commercetools.errors import ConcurrentModification, NotFound
from instore_shared.kafka.consumer import Unprocessable
from instore_shared.url_allowlist import UrlAllowList

BASE = "http://instore.test"
SECRET = b"webhook-secret"


class Clock:
    def now(self) -> float:
        return 1_780_000_000.0

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(seconds, 0.01))


@dataclass
class Commerce:
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    updates: list[list[dict[str, Any]]] = field(default_factory=list)

    async def request(self, method: str, path: str, *, params: Any = None, json: Any = None) -> ApiResponse:
        assert method == "GET" and path.startswith("/payments/")
        payment = self.payments.get(path.rsplit("/", 1)[1])
        if payment is None:
            raise NotFound(404, "ResourceNotFound", "no payment")
        return ApiResponse(200, msgspec.json.encode(payment))

    async def update(self, resource: str, resource_id: str, version: int, actions: list[dict[str, Any]]) -> ApiResponse:
        payment = self.payments[resource_id]
        if payment["version"] != version:
            raise ConcurrentModification(409, "ConcurrentModification", "version")
        self.updates.append(actions)
        for action in actions:
            if action["action"] == "addTransaction":
                payment["transactions"].append(action["transaction"])
            elif action["action"] == "setStatusInterfaceCode":
                payment["paymentStatus"]["interfaceCode"] = action["interfaceCode"]
        payment["version"] += 1
        return ApiResponse(200, msgspec.json.encode(payment))

    async def get_custom_object(self, container: str, key: str) -> ApiResponse:
        found = self.objects.get(f"{container}/{key}")
        if found is None:
            raise NotFound(404, "ResourceNotFound", "none")
        return ApiResponse(200, msgspec.json.encode(found))

    async def put_custom_object(self, container: str, key: str, value: Any, version: int | None = None) -> ApiResponse:
        current = self.objects.get(f"{container}/{key}")
        if version is not None and (current["version"] if current else 0) != version:
            raise ConcurrentModification(409, "ConcurrentModification", "version")
        stored = {"container": container, "key": key, "value": value, "version": (current["version"] if current else 0) + 1}
        self.objects[f"{container}/{key}"] = stored
        return ApiResponse(200, msgspec.json.encode(stored))


class Publisher:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def publish(self, body: bytes, topic: str, *, key: bytes, correlation_id: str | None, headers: dict[str, str]) -> None:
        self.events.append({"topic": topic, "key": key, "body": json.loads(body), "headers": headers})

    async def published_since(self, topic: str, event_id: str, since: float) -> bool:
        return False


class Prompts:
    """Answers prompts with ``answers`` in turn, one per registration (None, or none left: never)."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def expect(self, prompt_id: str) -> asyncio.Future[str]:
        self.asked.append(prompt_id)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            asyncio.get_running_loop().call_later(0.01, future.set_result, answer)
        return future

    def forget(self, prompt_id: str) -> None:
        pass


@dataclass
class World:
    provider_state: ProviderState
    instore_state: InStoreSideState
    commerce: Commerce
    publisher: Publisher
    provider: SimulatorProvider
    instore: InStoreClient
    settings: PaymentExtensionSettings

    async def handle(self, body: bytes, action: str = "payment", prompts: Prompts | None = None, **kwargs: Any) -> Any:
        return await handle_payment_request(
            body,
            {"tender": "bank-card", "action": action, "received-at": "2026-06-01T00:00:00.000Z"},
            provider=self.provider,
            commerce=self.commerce,
            instore=self.instore,
            prompts=prompts or Prompts(None),
            publisher=self.publisher,
            clock=Clock(),
            settings=self.settings,
            **kwargs,
        )

    def seen(self, request_id: str) -> tuple[list[Any], list[dict[str, Any]]]:
        return self.instore_state.statuses.get(request_id, []), self.instore_state.callbacks.get(request_id, [])


@pytest.fixture
async def world() -> AsyncIterator[World]:
    provider_state, instore_state = ProviderState(slow_seconds=1.0), InStoreSideState()
    app = Litestar(route_handlers=[provider_router(provider_state), instore_side_router(instore_state)])
    transport = httpx.ASGITransport(app=app)
    provider = SimulatorProvider(f"{BASE}/provider", transport=transport)
    instore = InStoreClient(UrlAllowList(BASE), SECRET, transport=transport)
    settings = PaymentExtensionSettings(
        payment_extension_retry_seconds=0.3, payment_extension_provider_timeout_seconds=0.3, payment_extension_allowed_urls=BASE
    )
    commerce = Commerce(
        payments={
            "pay-1": {
                "id": "pay-1",
                "version": 1,
                "transactions": [],
                "paymentStatus": {},
                "amountPlanned": {"centAmount": 1949, "currencyCode": "EUR"},
            }
        }
    )
    yield World(provider_state, instore_state, commerce, Publisher(), provider, instore, settings)
    await provider.aclose()
    await instore.aclose()


def body(request_id: str = "r-1", token: str = "tok_approve", **extra: Any) -> bytes:
    fields: dict[str, Any] = {
        "payment_id": "pay-1",
        "cent_amount": 1949,
        "card": {"token": token},
        "status_url": f"{BASE}/instore-sim/status/{request_id}",
        "callback_url": f"{BASE}/instore-sim/callback/{request_id}",
    }
    fields.update(extra)
    return payment_request(request_id, **fields)


async def test_an_approved_payment_is_charged_recorded_delivered_and_announced_once(world: World) -> None:
    handled = await world.handle(body())
    assert handled.result.status == "succeeded" and handled.first_time
    statuses, callbacks = world.seen("r-1")
    assert statuses[0]["type"] == "progress"
    (callback,) = callbacks
    assert callback["body"]["status"] == "succeeded" and callback["body"]["card"] == {"last4": "4242", "brand": "visa"}
    assert callback["idempotencyKey"] == "r-1" and callback["signature"]
    (transaction,) = world.commerce.payments["pay-1"]["transactions"]
    assert transaction["type"] == "Charge" and transaction["state"] == "Success"
    assert transaction["interactionId"] == callback["body"]["reference"]
    assert transaction["amount"] == {"centAmount": 1949, "currencyCode": "EUR"}
    assert world.commerce.payments["pay-1"]["paymentStatus"]["interfaceCode"] == "Success"
    (event,) = world.publisher.events
    assert event["topic"] == "commerce.payment-extension-results.v1" and event["key"] == b"pay-1"
    assert event["body"]["status"] == "succeeded" and event["headers"]["event-id"] == event["body"]["eventId"]
    assert world.provider_state.movements == {"instore-payment-r-1": 1}
    assert world.commerce.objects[f"{CONTAINER}/{state_key('r-1')}"]["value"]["stage"] == "announced"


async def test_the_same_request_twice_charges_records_delivers_and_announces_once(world: World) -> None:
    await world.handle(body())
    again = await world.handle(body())
    assert not again.first_time and again.result.status == "succeeded"
    assert sum(world.provider_state.movements.values()) == 1
    assert len(world.commerce.payments["pay-1"]["transactions"]) == 1
    assert len(world.seen("r-1")[1]) == 1 and len(world.publisher.events) == 1
    assert len(world.seen("r-1")[0]) == 1  # the repeat did not even show progress again


async def test_a_crash_after_the_decision_resumes_without_a_second_charge(world: World) -> None:
    def crash() -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        await world.handle(body(), after_decided=crash)
    assert world.seen("r-1")[1] == [] and world.publisher.events == []
    await world.handle(body())
    assert sum(world.provider_state.movements.values()) == 1
    assert len(world.commerce.payments["pay-1"]["transactions"]) == 1
    assert len(world.seen("r-1")[1]) == 1 and len(world.publisher.events) == 1


async def test_a_crash_before_the_decision_was_saved_asks_the_provider_again_with_the_same_key(world: World) -> None:
    original = world.commerce.put_custom_object

    async def dies_on_the_decision(container: str, key: str, value: Any, version: int | None = None) -> ApiResponse:
        if value["stage"] == "decided":
            raise RuntimeError("process died here")
        return await original(container, key, value, version)

    world.commerce.put_custom_object = dies_on_the_decision  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await world.handle(body())
    assert world.provider_state.movements == {"instore-payment-r-1": 1}  # charged and recorded, decision not saved
    assert len(world.commerce.payments["pay-1"]["transactions"]) == 1
    world.commerce.put_custom_object = original  # type: ignore[method-assign]
    handled = await world.handle(body())
    assert handled.result.status == "succeeded"  # its own Charge is not mistaken for another request's
    assert world.provider_state.movements == {"instore-payment-r-1": 1}
    assert len(world.commerce.payments["pay-1"]["transactions"]) == 1  # found by interactionId, not added again
    assert len(world.seen("r-1")[1]) == 1


async def test_a_decline_is_a_result_with_its_reason_and_a_failed_transaction(world: World) -> None:
    handled = await world.handle(body(token="tok_decline"))
    assert handled.result.status == "declined" and handled.result.reason == "insufficient_funds"
    (transaction,) = world.commerce.payments["pay-1"]["transactions"]
    assert transaction["state"] == "Failure"
    assert world.commerce.payments["pay-1"]["paymentStatus"]["interfaceCode"] == "insufficient_funds"
    assert world.seen("r-1")[1][0]["body"]["status"] == "declined"
    assert world.provider_state.movements == {}


async def test_a_prompt_answered_approve_is_charged(world: World) -> None:
    prompts = Prompts("approve")
    handled = await world.handle(body(token="tok_prompt"), prompts=prompts)
    assert handled.result.status == "succeeded"
    assert prompts.asked == ["r-1:prompt:1"]
    assert world.provider_state.movements == {"instore-payment-r-1-resume-1": 1}
    prompt = next(s for s in world.seen("r-1")[0] if s["type"] == "prompt")
    assert prompt["requestId"] == "r-1:prompt:1" and {o["response"] for o in prompt["options"]} == {"approve", "cancel"}
    assert sum(world.provider_state.movements.values()) == 1


@pytest.mark.parametrize(("answer", "reason"), [("cancel", "cancelled-by-colleague")])
async def test_a_prompt_answered_cancel_cancels_and_charges_nothing(world: World, answer: str, reason: str) -> None:
    handled = await world.handle(body(token="tok_prompt"), prompts=Prompts(answer))
    assert handled.result.status == "cancelled" and handled.result.reason == reason
    assert world.commerce.payments["pay-1"]["transactions"] == []
    assert world.seen("r-1")[1][0]["body"]["status"] == "cancelled"
    assert "instore-payment-r-1" not in world.provider_state.movements


async def test_a_provider_slower_than_the_timeout_is_timed_out(world: World) -> None:
    handled = await world.handle(body(token="tok_slow"))
    assert handled.result.status == "timed-out" and handled.result.reason == "provider-timeout"
    assert world.commerce.payments["pay-1"]["transactions"] == []
    assert world.seen("r-1")[1][0]["body"]["status"] == "timed-out"


async def test_a_provider_down_past_the_budget_fails_without_a_transaction(world: World) -> None:
    world.provider_state.down = True
    handled = await world.handle(body())
    assert handled.result.status == "failed" and handled.result.reason == "provider-unavailable"
    assert world.provider_state.calls > 1  # retried with the same key
    assert world.commerce.payments["pay-1"]["transactions"] == []


async def test_a_callback_down_is_dead_lettered_then_delivered_once_on_replay(world: World) -> None:
    world.instore_state.callback_down = True
    with pytest.raises(Unprocessable) as refused:
        await world.handle(body())
    assert refused.value.reason == "callback-undelivered"
    world.instore_state.callback_down = False
    await world.handle(body())
    assert len(world.seen("r-1")[1]) == 1 and len(world.publisher.events) == 1
    assert sum(world.provider_state.movements.values()) == 1


@pytest.mark.parametrize("field", ["status_url", "callback_url"])
async def test_a_url_off_the_allow_list_is_refused_and_nothing_is_sent(world: World, field: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        await world.handle(body(**{field: "http://169.254.169.254/latest"}))
    assert refused.value.reason == "url-not-allowed"
    assert world.provider_state.calls == 0 and world.instore_state.statuses == {}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"payment_id": "pay-unknown"}, "payment-not-found"),
        ({"currency": "USD"}, "currency-mismatch"),
        ({"cent_amount": 1950}, "amount-exceeds-payment"),  # amountPlanned 1949
    ],
)
async def test_a_request_its_payment_cannot_take_fails_at_once_and_nothing_moves(
    world: World, fields: dict[str, Any], reason: str
) -> None:
    """InStore's till gets the refusal as a result at once (not a dead letter it would wait on until its timeout)."""
    handled = await world.handle(body(**fields))
    assert (handled.result.status, handled.result.reason) == ("failed", reason)
    assert world.provider_state.calls == 0
    assert world.commerce.payments["pay-1"]["transactions"] == []
    (callback,) = world.seen("r-1")[1]
    assert (callback["body"]["status"], callback["body"]["reason"]) == ("failed", reason)
    (event,) = world.publisher.events
    assert event["body"]["status"] == "failed"


async def test_a_refund_records_a_refund_transaction(world: World) -> None:
    await world.handle(body())
    reference = world.seen("r-1")[1][0]["body"]["reference"]
    handled = await world.handle(body("r-2", cent_amount=500, reference=reference), action="refund")
    assert handled.result.status == "succeeded"
    kinds = [(t["type"], t["amount"]["centAmount"]) for t in world.commerce.payments["pay-1"]["transactions"]]
    assert kinds == [("Charge", 1949), ("Refund", 500)]


async def test_an_answer_that_is_no_option_of_the_prompt_is_ignored(world: World) -> None:
    prompts = Prompts("steal-it", "approve")
    handled = await world.handle(body(token="tok_prompt"), prompts=prompts)
    assert handled.result.status == "succeeded"
    assert prompts.asked == ["r-1:prompt:1", "r-1:prompt:1"]  # waited again after the bogus answer


async def test_an_unanswered_prompt_cancels_after_the_capped_keep_alive(world: World) -> None:
    settings = world.settings.model_copy(update={"payment_extension_prompt_max_seconds": 0.2})
    world.settings = settings
    started = asyncio.get_running_loop().time()
    handled = await world.handle(body(token="tok_prompt"), prompts=Prompts(None))
    assert asyncio.get_running_loop().time() - started < 5  # the provider asked keepAlive 60 s
    assert (handled.result.status, handled.result.reason) == ("cancelled", "prompt-unanswered")
    prompt = next(s for s in world.seen("r-1")[0] if s["type"] == "prompt")
    assert prompt["keepAlive"] == 200
    assert world.commerce.payments["pay-1"]["transactions"] == []


async def test_a_used_request_id_for_another_payment_is_refused(world: World) -> None:
    await world.handle(body())
    with pytest.raises(Unprocessable) as refused:
        await world.handle(body(cent_amount=1))
    assert refused.value.reason == "request-id-reused"
    assert sum(world.provider_state.movements.values()) == 1 and len(world.seen("r-1")[1]) == 1


async def test_a_payment_charged_by_another_request_is_not_charged_again(world: World) -> None:
    """InStore repeating a tender under a new requestId: the Payment already holds a successful Charge."""
    await world.handle(body("r-1"))
    handled = await world.handle(body("r-2"))
    assert (handled.result.status, handled.result.reason) == ("declined", "payment-already-charged")
    assert sum(world.provider_state.movements.values()) == 1 and world.provider_state.calls == 1
    assert len(world.commerce.payments["pay-1"]["transactions"]) == 1
    assert world.seen("r-2")[1][0]["body"]["reason"] == "payment-already-charged"


async def test_a_resumed_request_whose_payment_vanished_is_a_dead_letter_not_a_failed_result(world: World) -> None:
    """Found 'processing' (money may have moved): an operator must look, InStore must not be told 'failed'."""
    original = world.commerce.put_custom_object

    async def dies_on_the_decision(container: str, key: str, value: Any, version: int | None = None) -> ApiResponse:
        if value["stage"] == "decided":
            raise RuntimeError("process died here")
        return await original(container, key, value, version)

    world.commerce.put_custom_object = dies_on_the_decision  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await world.handle(body())
    world.commerce.put_custom_object = original  # type: ignore[method-assign]
    del world.commerce.payments["pay-1"]
    with pytest.raises(Unprocessable) as refused:
        await world.handle(body())
    assert refused.value.reason == "payment-not-found"
    assert world.seen("r-1")[1] == []
