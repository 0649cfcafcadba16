"""A simulated InStore (and host app) that drives a running stack end to end — ``make demo``.

It plays, against the gateway, Kafka and Composable Commerce, what InStore and the host app
do in a store (shapes assumed where the InStore docs are silent — see
../shared/reference/instore-contract.md):

1. mint a colleague token with the local IMS (the retailer's identity system);
2. open a session (``POST /sessions``) and fetch the user access token through InStore's
   token callback with the user key;
3. create a sale cart in Composable Commerce (as InStore does) and fetch it through the
   sale cart callback;
4. pay it in two tenders — the card through the payment extension (a minimal Payment as with
   delegated payment creation, the signed request, a prompt at statusUrl answered "approve",
   the result once at callbackUrl, the Charge on the Payment), then cash (a Payment) — each
   followed by a signed payment webhook; wait for the Order and its
   ``commerce.payments.completed.v1`` event;
5. create a return cart for one line of that Order and fetch it through the return cart
   callback; send a signed refund webhook (split over both tenders); wait for
   ``commerce.refunds.completed.v1`` and check the return and the Refund transactions
   on the Order and its Payments.

Each step prints one line: what was sent, what came back, how long it took. A failed step
raises :class:`StepFailed` naming it (the CLI exits 1 with that name).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from instore_devfakes.__main__ import mint_token
from instore_devfakes.instore_samples import payment_request, payment_webhook, refund_webhook
from instore_shared import announcements
from instore_shared.commercetools import CommercetoolsClient
from instore_shared.kafka.topics import PAYMENT_EXTENSION_RESULTS, PAYMENTS_COMPLETED, REFUNDS_COMPLETED, TopicNames
from instore_shared.settings import CommercetoolsSettings

EXPAND_PAYMENTS = ("paymentInfo.payments[*]",)


class StepFailed(Exception):
    """Step ``step`` went wrong; ``reason`` says what came back instead."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"step {step!r} failed: {reason}")
        self.step = step
        self.reason = reason


@dataclass(frozen=True)
class SimulatorConfig:
    """Where the stack is and the secrets InStore shares with it.

    ``topics``: the stack's topic names (``KAFKA_TOPIC_PREFIX``); ``kafka_client_options``: aiokafka keyword
    arguments for Kafka's security (``BaseServiceSettings.kafka_client_options()``).
    """

    gateway_url: str
    ims_url: str
    callback_api_key: str
    webhook_secret: str
    kafka_bootstrap_servers: str
    commerce: CommercetoolsSettings
    colleague: str = "colleague-42"
    location_id: str = "store-berlin-01"
    workstation_id: str = "pos-3"
    currency: str = "EUR"
    timeout_seconds: float = 30.0
    signature_header: str = "X-Signature"
    topics: TopicNames = field(default_factory=TopicNames)
    kafka_client_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Summary:
    """What the run produced: the Order, the return, and the events seen downstream."""

    order_id: str = ""
    order_number: str = ""
    total_cents: int = 0
    currency: str = ""
    tenders: list[tuple[str, int]] = field(default_factory=list)
    returned: list[tuple[str, int, str]] = field(default_factory=list)
    """(SKU, quantity, return payment state) per return item."""
    refunds: list[tuple[str, int]] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The summary as printable lines (money as minor units and ISO 4217 code)."""

        def money(cents: int) -> str:
            return f"{cents / 100:.2f} {self.currency}"

        return [
            f"Order       {self.order_number} ({self.order_id}), total {money(self.total_cents)}, paid "
            + " + ".join(f"{method} {money(cents)}" for method, cents in self.tenders),
            "Return      "
            + ", ".join(f"{qty} × {sku} ({state})" for sku, qty, state in self.returned)
            + ", refunded "
            + " + ".join(f"{rid} {money(cents)}" for rid, cents in self.refunds),
            "Events      " + ", ".join(f"{topic}: {count}" for topic, count in self.events.items()),
            f"Took        {self.seconds:.1f} s",
        ]


class _Run:
    def __init__(self, config: SimulatorConfig, out: TextIO) -> None:
        self.config = config
        self.out = out
        self.number = 0
        self.http = httpx.AsyncClient(timeout=config.timeout_seconds, trust_env=False)
        scopes = config.commerce.scopes or " ".join(
            f"{scope}:{config.commerce.project_key}" for scope in ("manage_orders", "manage_payments", "view_key_value_documents")
        )
        self.commerce = CommercetoolsClient(config.commerce.model_copy(update={"scopes": scopes}))
        self.consumer: AIOKafkaConsumer | None = None
        self.seen: dict[str, list[dict[str, Any]]] = {
            config.topics.name(PAYMENTS_COMPLETED): [],
            config.topics.name(REFUNDS_COMPLETED): [],
            config.topics.name(PAYMENT_EXTENSION_RESULTS): [],
        }

    async def close(self) -> None:
        await self.http.aclose()
        await self.commerce.aclose()
        if self.consumer is not None:
            await self.consumer.stop()

    async def step(self, name: str, sent: str, action: Callable[[], Awaitable[str]]) -> None:
        """Run one step, print ``n. name  → sent  ← got  (ms)``; a failure becomes :class:`StepFailed`."""
        self.number += 1
        started = time.perf_counter()
        try:
            got = await action()
        except StepFailed:
            raise
        except Exception as exc:
            raise StepFailed(name, f"{type(exc).__name__}: {exc}") from exc
        ms = (time.perf_counter() - started) * 1000
        print(f"{self.number:>2}. {name:<18} → {sent}\n    {'':<18} ← {got}  ({ms:.0f} ms)", file=self.out, flush=True)

    # -- helpers ------------------------------------------------------------------------
    def expect(self, step: str, response: httpx.Response, status: int) -> Any:
        if response.status_code != status:
            raise StepFailed(step, f"HTTP {response.status_code} (wanted {status}): {response.text[:300]}")
        return response.json() if response.content else None

    async def signed_webhook(self, step: str, body: bytes) -> str:
        signature = hmac.new(self.config.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        response = await self.http.post(
            f"{self.config.gateway_url}/instore/webhooks",
            content=body,
            headers={self.config.signature_header: signature, "Content-Type": "application/json"},
        )
        accepted = self.expect(step, response, 202)
        return f"202 webhookId={accepted['webhookId']}"

    async def start_listening(self) -> None:
        """Read the downstream topics from their current end, so only this run's events count."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.config.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            **self.config.kafka_client_options,
        )
        await consumer.start()
        partitions = []
        for topic in self.seen:
            ids = consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
            partitions += [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve "end" now, before anything is sent
        self.consumer = consumer

    async def wait_for_event(self, step: str, topic: str, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        assert self.consumer is not None
        deadline = time.monotonic() + self.config.timeout_seconds
        while True:
            for event in self.seen[topic]:
                if matches(event):
                    return event
            if time.monotonic() > deadline:
                raise StepFailed(
                    step,
                    f"no event on {topic} within {self.config.timeout_seconds:.0f} s "
                    "(are order-finalization and refund running? see their logs)",
                )
            for tp, records in (await self.consumer.getmany(timeout_ms=250)).items():
                self.seen[tp.topic] += [json.loads(r.value) for r in records]

    async def drain(self, seconds: float) -> None:
        """Keep reading the downstream topics for ``seconds``."""
        assert self.consumer is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for tp, records in (await self.consumer.getmany(timeout_ms=200)).items():
                self.seen[tp.topic] += [json.loads(r.value) for r in records]

    async def add_payment(self, cart: dict[str, Any], method: str, cents: int) -> dict[str, Any]:
        money = {"currencyCode": self.config.currency, "centAmount": cents}
        payment = (
            await self.commerce.request(
                "POST",
                "/payments",
                json={
                    "key": f"sim-{uuid.uuid4().hex[:12]}",
                    "amountPlanned": money,
                    "interfaceId": f"psp-{uuid.uuid4().hex[:8]}",
                    "paymentMethodInfo": {"method": method, "paymentInterface": "instore-simulator"},
                    "transactions": [
                        {"type": "Charge", "state": "Success", "amount": money, "interactionId": f"psp-{uuid.uuid4().hex[:8]}"}
                    ],
                },
            )
        ).json()
        updated = await self.commerce.update(
            "carts",
            cart["id"],
            cart["version"],
            [{"action": "addPayment", "payment": {"typeId": "payment", "id": payment["id"]}}],
        )
        return msgspec.json.decode(updated.content, type=dict[str, Any])

    async def signed_post(self, path: str, body: bytes) -> httpx.Response:
        signature = hmac.new(self.config.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        return await self.http.post(
            f"{self.config.gateway_url}{path}",
            content=body,
            headers={self.config.signature_header: signature, "Content-Type": "application/json"},
        )

    async def poll(self, step: str, url: str, done: Callable[[dict[str, Any]], Any]) -> Any:
        """GET ``url`` until ``done(json)`` is truthy (its value is returned), within the step's deadline."""
        deadline = time.monotonic() + self.config.timeout_seconds
        while True:
            found = done(self.expect(step, await self.http.get(url), 200))
            if found:
                return found
            if time.monotonic() > deadline:
                raise StepFailed(
                    step,
                    f"nothing arrived at {url} within {self.config.timeout_seconds:.0f} s "
                    "(is the payment-extension service running? see its log)",
                )
            await asyncio.sleep(0.1)

    async def pay_by_extension(self, state: dict[str, Any], cents: int) -> None:
        """The card tender as InStore pays it through a Custom payment processor (payment extension), delegated
        payment creation: a minimal Payment (amountPlanned only) on the cart, the signed request to the gateway,
        the prompt shown at statusUrl and answered, the result once at callbackUrl, the Charge on the Payment."""
        fakes, rid = self.config.ims_url.rstrip("/"), f"sim-pe-{uuid.uuid4().hex[:16]}"
        seen_url = f"{fakes}/instore-sim/requests/{rid}"

        async def request() -> str:
            money = {"currencyCode": self.config.currency, "centAmount": cents}
            payment = (await self.commerce.request("POST", "/payments", json={"amountPlanned": money})).json()
            state["cart"] = (
                await self.commerce.update(
                    "carts",
                    state["cart"]["id"],
                    state["cart"]["version"],
                    [{"action": "addPayment", "payment": {"typeId": "payment", "id": payment["id"]}}],
                )
            ).json()
            state["extension_payment"] = payment["id"]
            body = payment_request(
                rid,
                status_url=f"{fakes}/instore-sim/status/{rid}",
                callback_url=f"{fakes}/instore-sim/callback/{rid}",
                payment_id=payment["id"],
                cent_amount=cents,
                currency=self.config.currency,
                cartId=state["cart"]["id"],
                card={"token": "tok_prompt"},
            )
            answer = self.expect(
                "card-extension", await self.signed_post("/instore/payment-extensions/bank-card/payment", body), 200
            )
            return f"200 {answer['status']} (Payment {payment['id'][:8]}… with amountPlanned only)"

        await self.step(
            "card-extension",
            f"POST {self.config.gateway_url}/instore/payment-extensions/bank-card/payment {cents} {self.config.currency}",
            request,
        )

        async def prompt() -> str:
            shown = await self.poll(
                "card-prompt", seen_url, lambda seen: next((s for s in seen["statuses"] if s.get("type") == "prompt"), None)
            )
            answer = json.dumps({"requestId": shown["requestId"], "response": "approve"}).encode()
            self.expect("card-prompt", await self.signed_post("/instore/payment-extensions/prompt-answers", answer), 200)
            return f'prompt "{shown["message"]}" shown at statusUrl; the colleague chose approve'

        await self.step("card-prompt", "wait for the prompt, answer it", prompt)

        async def result() -> str:
            callback = await self.poll("card-result", seen_url, lambda seen: seen["callbacks"][0] if seen["callbacks"] else None)
            body = callback["body"]
            if body.get("status") != "succeeded":
                raise StepFailed("card-result", f"the result was {body.get('status')} ({body.get('reason')})")
            payment = (await self.commerce.request("GET", f"/payments/{state['extension_payment']}")).json()
            charges = [t for t in payment.get("transactions", []) if t.get("interactionId") == body.get("reference")]
            if not charges or charges[0]["state"] != "Success":
                raise StepFailed("card-result", f"no successful Charge {body.get('reference')} on the Payment")
            count = len((await self.http.get(seen_url)).json()["callbacks"])
            if count != 1:
                raise StepFailed("card-result", f"{count} results arrived at callbackUrl, not 1")
            state["cart"] = (await self.commerce.get_cart(state["cart"]["id"])).json()
            return (
                f"result {body['status']} once at callbackUrl (card {body['card']['brand']} "
                f"…{body['card']['last4']}), Charge {body['reference']} Success on the Payment, "
                f"interfaceCode {payment['paymentStatus'].get('interfaceCode')}"
            )

        await self.step("card-result", "wait for the result at callbackUrl, check the Payment", result)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    ids = consumer.partitions_for_topic(topic)
    if not ids:
        raise StepFailed("listen", f"topic {topic} does not exist (start the services first: they create it)")
    return set(ids)


async def simulate(config: SimulatorConfig, out: TextIO) -> Summary:
    """Play InStore and the host app once against the running stack; print a line per step.

    Returns the :class:`Summary`; raises :class:`StepFailed` naming the step that went wrong.
    """
    run = _Run(config, out)
    summary = Summary(currency=config.currency)
    started = time.perf_counter()
    gw, key = config.gateway_url, {"X-Api-Key": config.callback_api_key}
    state: dict[str, Any] = {}
    try:

        async def listen() -> str:
            await run.start_listening()
            return f"reading {', '.join(run.seen)} from their end"

        await run.step("listen", f"Kafka {config.kafka_bootstrap_servers}", listen)

        async def ims_token() -> str:
            state["id_token"] = await asyncio.to_thread(mint_token, config.ims_url, config.colleague, 900)
            return f"an IMS JWT ({len(state['id_token'])} characters)"

        await run.step("ims-token", f"POST {config.ims_url}/ims/token user={config.colleague}", ims_token)

        async def session() -> str:
            response = await run.http.post(
                f"{gw}/sessions",
                headers={"Authorization": f"Bearer {state['id_token']}"},
                json={"locationId": config.location_id, "workstationId": config.workstation_id},
            )
            body = run.expect("session", response, 201)
            state["user_key"], state["access_token"] = body["userKey"], body["userAccessToken"]
            return f"201 userKey={body['userKey'][:6]}… expiresAt={body['expiresAt']}"

        await run.step("session", f"POST {gw}/sessions", session)

        async def token_callback() -> str:
            response = await run.http.get(f"{gw}/instore/callbacks/tokens/{state['user_key']}", headers=key)
            body = run.expect("token-callback", response, 200)
            if body.get("access_token") != state["access_token"]:
                raise StepFailed("token-callback", "the callback's access_token is not the session's token")
            return f"200 the session's token, expires_in={body.get('expires_in')}"

        await run.step("token-callback", f"GET {gw}/instore/callbacks/tokens/<userKey>", token_callback)

        async def sale_cart() -> str:
            cart_key = f"sim-sale-{uuid.uuid4().hex[:10]}"
            # InStore numbers orders itself, the location id part of the number (contract §7)
            order_number = f"{config.location_id}-{uuid.uuid4().int % 10**8:08d}"
            state["cart"] = (
                await run.commerce.request(
                    "POST",
                    "/carts",
                    json={
                        "key": cart_key,
                        "currency": config.currency,
                        "country": "DE",
                        "lineItems": [{"sku": "SKU-TSHIRT-M", "quantity": 1}, {"sku": "SKU-MUG", "quantity": 1}],
                        "custom": {
                            "type": {"typeId": "type", "key": "instore-order"},
                            "fields": {
                                "locationId": config.location_id,
                                "workstationId": config.workstation_id,
                                "userId": config.colleague,
                                "orderType": "sale",
                                "orderNumber": order_number,
                            },
                        },
                    },
                )
            ).json()
            response = await run.http.get(f"{gw}/instore/callbacks/carts/{cart_key}", headers=key)
            body = run.expect("sale-cart", response, 200)
            if body.get("id") != state["cart"]["id"]:
                raise StepFailed("sale-cart", "the callback answered another cart")
            total = body["totalPrice"]
            summary.total_cents = total["centAmount"]
            return f"200 cart {body['id'][:8]}…, {len(body['lineItems'])} lines, {total['centAmount']} {total['currencyCode']}"

        await run.step("sale-cart", f"create a cart, GET {gw}/instore/callbacks/carts/<key>", sale_cart)

        card = summary.total_cents * 6 // 10
        cash = summary.total_cents - card
        await run.pay_by_extension(state, card)
        for method, cents in (("CREDIT_CARD", card), ("CASH", cash)):

            async def pay(method: str = method, cents: int = cents) -> str:
                if method != "CREDIT_CARD":  # the card was paid through the payment extension above
                    state["cart"] = await run.add_payment(state["cart"], method, cents)
                body = payment_webhook(
                    state["cart"]["id"], f"sim-{uuid.uuid4().hex}", data={"tender": method.lower(), "centAmount": cents}
                )
                return await run.signed_webhook(f"pay-{method.lower()}", body)

            summary.tenders.append((method, cents))
            sent = (
                "signed payment webhook (the card's Payment is the extension's)"
                if method == "CREDIT_CARD"
                else f"Payment {cents} {config.currency} + signed payment webhook"
            )
            await run.step(f"pay-{method.lower()}", sent, pay)

        async def order() -> str:
            event = await run.wait_for_event(
                "order", config.topics.name(PAYMENTS_COMPLETED), lambda e: e.get("cartId") == state["cart"]["id"]
            )
            summary.order_id, summary.order_number = event["orderId"], event["orderNumber"]
            # order-finalization marks the announcement in a Custom Object right after Kafka
            # acked the event (the Order itself stays as created): wait for it, with the step's deadline.
            state["order"] = (await run.commerce.get_order(event["orderId"], EXPAND_PAYMENTS)).json()
            marker = announcements.marker_key("payments-completed", event["orderId"])
            deadline = time.monotonic() + config.timeout_seconds
            while True:
                claim = await announcements.read_claim(run.commerce, marker)
                if claim is not None and claim.state == "published" and claim.event_id == event["eventId"]:
                    break
                if time.monotonic() > deadline:
                    raise StepFailed(
                        "order", f"the announcement marker {marker} is {claim.state if claim else 'missing'}, not published"
                    )
                await asyncio.sleep(0.1)
            return (
                f"Order {event['orderNumber']} ({state['order']['orderState']}, {state['order']['paymentState']}), "
                f"event {event['eventId'][:8]}… with {len(event['payments'])} tenders"
            )

        await run.step("order", f"wait for {config.topics.name(PAYMENTS_COMPLETED)}", order)

        async def return_cart() -> str:
            bought = next(li for li in state["order"]["lineItems"] if li["variant"].get("sku") == "SKU-TSHIRT-M")
            state["returned_line"] = bought
            cart_key = f"sim-return-{uuid.uuid4().hex[:10]}"
            state["return_cart"] = (
                await run.commerce.request(
                    "POST",
                    "/carts",
                    json={
                        "key": cart_key,
                        "currency": config.currency,
                        "country": "DE",
                        "lineItems": [
                            {
                                "sku": "SKU-TSHIRT-M",
                                "quantity": 1,
                                "custom": {
                                    "type": {"typeId": "type", "key": "instore-line-item"},
                                    "fields": {
                                        "purchaseOrderId": state["order"]["id"],
                                        "purchaseLineItemId": bought["id"],
                                        "returnComment": "too small",
                                    },
                                },
                            }
                        ],
                        "custom": {
                            "type": {"typeId": "type", "key": "instore-order"},
                            "fields": {
                                "locationId": config.location_id,
                                "workstationId": config.workstation_id,
                                "userId": config.colleague,
                                "orderType": "return",
                            },
                        },
                    },
                )
            ).json()
            response = await run.http.get(f"{gw}/instore/callbacks/return-carts/{cart_key}", headers=key)
            body = run.expect("return-cart", response, 200)
            return f"200 return cart {body['id'][:8]}…, 1 × SKU-TSHIRT-M of {summary.order_number}"

        await run.step("return-cart", f"create a return cart, GET {gw}/instore/callbacks/return-carts/<key>", return_cart)

        async def refund() -> str:
            amount = state["returned_line"]["totalPrice"]["centAmount"]
            cash_part = min(cash, amount // 4)
            payments = {ref["obj"]["paymentMethodInfo"]["method"]: ref["id"] for ref in state["order"]["paymentInfo"]["payments"]}
            state["refunds"] = [
                (f"rf-{uuid.uuid4().hex[:10]}", payments["CREDIT_CARD"], amount - cash_part),
                (f"rf-{uuid.uuid4().hex[:10]}", payments["CASH"], cash_part),
            ]
            body = refund_webhook(
                state["return_cart"]["id"],
                [(rid, pid, cents, config.currency) for rid, pid, cents in state["refunds"]],
                f"sim-{uuid.uuid4().hex}",
            )
            return await run.signed_webhook("refund", body)

        await run.step("refund", "signed refund webhook, card + cash", refund)

        async def refunded() -> str:
            event = await run.wait_for_event(
                "refunded", config.topics.name(REFUNDS_COMPLETED), lambda e: e.get("returnCartId") == state["return_cart"]["id"]
            )
            # The refund service sets the return items Refunded with the refund, before the
            # event (its announcement marker is a Custom Object): check it, with the step's deadline.
            deadline = time.monotonic() + config.timeout_seconds
            while True:
                order = (await run.commerce.get_order(summary.order_id, EXPAND_PAYMENTS)).json()
                items = [i for info in order.get("returnInfo") or [] for i in info["items"]]
                shape = [(i["lineItemId"], i["quantity"], i["paymentState"]) for i in items]
                if shape == [(state["returned_line"]["id"], 1, "Refunded")]:
                    break
                if time.monotonic() > deadline:
                    raise StepFailed("refunded", f"the Order's return items are {shape}")
                await asyncio.sleep(0.1)
            recorded = {
                t["interactionId"]: t["amount"]["centAmount"]
                for ref in order["paymentInfo"]["payments"]
                for t in ref["obj"]["transactions"]
                if t["type"] == "Refund"
            }
            wanted = {rid: cents for rid, _, cents in state["refunds"]}
            if recorded != wanted:
                raise StepFailed("refunded", f"Refund transactions {recorded}, wanted {wanted}")
            sku = state["returned_line"]["variant"].get("sku") or state["returned_line"]["id"]
            summary.returned = [(sku, i["quantity"], i["paymentState"]) for i in items]
            summary.refunds = list(wanted.items())
            return (
                f"event {event['eventId'][:8]}…: {len(items)} return item Refunded, "
                f"{event['totalRefunded']['centAmount']} {event['totalRefunded']['currencyCode']} refunded "
                f"over {len(event['refunds'])} tenders"
            )

        await run.step("refunded", f"wait for {config.topics.name(REFUNDS_COMPLETED)}", refunded)
        await run.drain(1.0)  # a duplicate event would arrive right behind the first
        expected_events = {
            config.topics.name(PAYMENTS_COMPLETED): ("cartId", state["cart"]["id"]),
            config.topics.name(REFUNDS_COMPLETED): ("returnCartId", state["return_cart"]["id"]),
            config.topics.name(PAYMENT_EXTENSION_RESULTS): ("paymentId", state["extension_payment"]),
        }
        for topic, (wanted_key, wanted_id) in expected_events.items():
            summary.events[topic] = sum(1 for e in run.seen[topic] if e.get(wanted_key) == wanted_id)
        doubled = {topic: n for topic, n in summary.events.items() if n != 1}
        if doubled:
            raise StepFailed("events", f"each topic should hold exactly one event of this sale: {doubled}")
    finally:
        await run.close()
    summary.seconds = time.perf_counter() - started
    return summary
