"""The fault scenarios of issue 10 part C; each starts its own :class:`~faults.stack.Stack` and returns a :class:`Row`.

Every wait is bounded (a deadline per step, printed in the notes when it was hit) and every
count is of real state: the mock's Orders and Payments, the topics read from the beginning.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

from faults.checks import Return, Sale, Tally, converge, prepare_returns, prepare_sales, tally, wait_for
from faults.proxy import Faults
from faults.report import Row
from faults.stack import Answer, Stack, group_members, http_session, post_webhook, say
from tests.support.processes import Service


@dataclass
class Options:
    """The knobs of a run (``python -m faults --help``)."""

    n: int = 25
    outages: tuple[float, ...] = (10.0, 120.0)
    rate: float = 3.0
    drain_seconds: float = 180.0
    fault_share: float = 0.3
    token_ttl: int = 2
    marker_outage_seconds: float = 30.0
    burst: int = 20
    """Webhooks sent at once just before the broker goes down (so produce requests are in flight)."""
    broker_fault: str = "kill"
    """How the broker goes down: ``kill`` (SIGKILL: a crash, in-flight requests unanswered) or ``stop`` (SIGTERM)."""
    kill_window_ms: float = 400.0
    commerce_outage_seconds: float = 60.0
    """How long every Composable Commerce call fails in the commerce-down scenario."""
    slow_marker_ms: float = 0.0
    """In the kill scenarios: the marker write reaches Composable Commerce this much later (through the proxy)."""
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random)


# -- delivering webhooks like InStore -------------------------------------------------------
@dataclass
class Delivery:
    """Every answer one webhook got, in order."""

    answers: list[Answer] = field(default_factory=list)

    @property
    def acked(self) -> bool:
        return any(a.status == 202 for a in self.answers)


async def deliver(
    session: aiohttp.ClientSession, gateway: Service, body: bytes, delivery: Delivery, retry_for: float = 0.0
) -> None:
    """POST ``body`` until it is answered 202, retrying like InStore would — after ``Retry-After``
    (at least 0.5 s) — for up to ``retry_for`` s."""
    deadline = time.monotonic() + retry_for
    while True:
        answer = await post_webhook(session, gateway, body)
        delivery.answers.append(answer)
        if answer.status == 202 or time.monotonic() >= deadline:
            return
        try:
            wait = max(0.5, float(answer.retry_after or 1))
        except ValueError:
            wait = 1.0
        await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))


def _statuses(deliveries: dict[str, Delivery]) -> Counter[str]:
    c: Counter[str] = Counter()
    for d in deliveries.values():
        for a in d.answers:
            label = str(a.status) if a.status else (a.error or "no answer")
            c[f"{label} {a.problem}" if a.problem else label] += 1
    return c


def _account(row: Row, deliveries: dict[str, Delivery], t: Tally) -> None:
    """Acknowledged/sent, webhooks acknowledged but not in Kafka, webhooks never acknowledged."""
    row.sent = len(deliveries)
    row.acked = sum(1 for d in deliveries.values() if d.acked)
    missing = [wid for wid, d in deliveries.items() if d.acked and not t.webhooks_in_kafka.get(wid)]
    never = row.sent - row.acked
    row.add_tally(t, extra_lost=len(missing))
    if missing:
        row.notes.append(f"{len(missing)} webhooks answered 202 but not in instore.webhooks.v1: {missing[:3]}")
    if never:
        row.notes.append(f"{never} webhooks never answered 202 (their sales count as lost when they have no Order)")
    no_retry_after = sum(1 for d in deliveries.values() for a in d.answers if a.status == 503 and not a.retry_after)
    if no_retry_after:
        row.problems.append(f"{no_retry_after} answers 503 without Retry-After")
    repeated = {k: n for d in (t.events_per_order, t.refund_events) for k, n in d.items() if n > 1}
    if repeated:
        same = sum(1 for k in repeated if len(t.event_ids.get(k, ())) == 1)
        row.notes.append(
            f"{len(repeated)} Orders with a repeated event ({sum(repeated.values()) - len(repeated)} extra); "
            f"{same} of them repeat one eventId (deduplicable downstream)"
        )
    row.notes.append("records read: " + ", ".join(f"{k} {v}" for k, v in t.records_read.items()))
    row.notes.append("webhook answers: " + ", ".join(f"{k} × {v}" for k, v in sorted(_statuses(deliveries).items())))


def _events(service: Service) -> list[dict[str, Any]]:
    """The service's kept log lines that are JSON objects."""
    out = []
    for line in service.process.output().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def _sale_stage(service: Service, sale: Sale) -> str:
    """How far the killed order-finalization got with ``sale``, by its log."""
    log = _events(service)
    order_ids = {
        e.get("order_id") for e in log if e.get("event") == "finalize.order_created" and e.get("cart_id") == sale.cart_id
    }
    if any(e.get("event") == "payments_completed.published" and e.get("order_id") in order_ids for e in log):
        return "event published"
    if order_ids:
        return "Order created"
    return "before the Order"


def _return_stage(service: Service, ret: Return) -> str:
    """How far the killed refund service got with ``ret``, by its log."""
    log = _events(service)
    names = {
        e.get("event")
        for e in log
        if ret.order_id in (e.get("order_id"), e.get("payment_id")) or e.get("payment_id") == ret.payment_id
    }
    for stage, name in (
        ("event published", "refunds_completed.published"),
        ("Refund written", "refund.refund_recorded"),
        ("return items written", "refund.return_recorded"),
    ):
        if name in names:
            return stage
    return "before any write"


def _slow_marker(o: Options) -> Faults | None:
    return Faults(marker_delay_seconds=o.slow_marker_ms / 1000) if o.slow_marker_ms else None


# -- 1. SIGKILL order-finalization ---------------------------------------------------------------
async def kill_order_finalization(o: Options) -> Row:
    """N runs: a paid sale's webhook, order-finalization SIGKILLed 0–400 ms later and restarted;
    each run waits for its sale's Order and event before the next."""
    row = Row("kill order-finalization" + (f", marker +{o.slow_marker_ms:g} ms" if o.slow_marker_ms else ""), sales=o.n)
    stack = await asyncio.to_thread(Stack.start, _slow_marker(o))
    try:
        gateway = await asyncio.to_thread(stack.gateway)
        await asyncio.to_thread(stack.finalizer)
        sales = await prepare_sales(stack.mock, o.n)
        deliveries: dict[str, Delivery] = {}
        stages: Counter[str] = Counter()
        slow = 0
        started = time.monotonic()
        async with http_session() as session:
            for i, sale in enumerate(sales):
                deliveries[sale.webhook_id] = d = Delivery()
                await deliver(session, gateway, sale.body(), d, retry_for=30)
                await asyncio.sleep(o.rng.uniform(0, o.kill_window_ms / 1000))
                victim = stack.services["order-finalization"]
                await asyncio.to_thread(stack.kill, "order-finalization")
                stages[_sale_stage(victim, sale)] += 1
                await asyncio.to_thread(stack.finalizer)
                if not await wait_for(functools.partial(_done, stack, [sale], []), 90):
                    slow += 1
                    say(f"kill order-finalization: run {i + 1}: no Order and event 90 s after the restart")
                say(f"kill order-finalization: run {i + 1}/{o.n} done ({time.monotonic() - started:.0f} s)")
        t, _ = await converge(stack, sales, [], 60)
        _account(row, deliveries, t)
        row.notes.append("killed while: " + ", ".join(f"{k} × {v}" for k, v in stages.most_common()))
        if slow:
            row.problems.append(f"{slow} runs without Order and event 90 s after the restart")
    finally:
        await asyncio.to_thread(stack.stop)
    return row


async def _done(stack: Stack, sales: list[Sale], returns: list[Return]) -> bool:
    return (await tally(stack, sales, returns)).settled()


# -- 2. SIGKILL refund ----------------------------------------------------------------------------
async def kill_refund(o: Options) -> Row:
    """N runs: a return's refund webhook, the refund service SIGKILLed 0–400 ms later and restarted."""
    row = Row("kill refund" + (f", marker +{o.slow_marker_ms:g} ms" if o.slow_marker_ms else ""), returns=o.n)
    stack = await asyncio.to_thread(Stack.start, _slow_marker(o))
    try:
        gateway = await asyncio.to_thread(stack.gateway)
        await asyncio.to_thread(stack.refund)
        returns = await prepare_returns(stack.mock, o.n)
        deliveries: dict[str, Delivery] = {}
        stages: Counter[str] = Counter()
        slow = 0
        started = time.monotonic()
        async with http_session() as session:
            for i, ret in enumerate(returns):
                deliveries[ret.webhook_id] = d = Delivery()
                await deliver(session, gateway, ret.body(), d, retry_for=30)
                await asyncio.sleep(o.rng.uniform(0, o.kill_window_ms / 1000))
                victim = stack.services["refund"]
                await asyncio.to_thread(stack.kill, "refund")
                stages[_return_stage(victim, ret)] += 1
                await asyncio.to_thread(stack.refund)
                if not await wait_for(functools.partial(_done, stack, [], [ret]), 90):
                    slow += 1
                    say(f"kill refund: run {i + 1}: not recorded and announced 90 s after the restart")
                say(f"kill refund: run {i + 1}/{o.n} done ({time.monotonic() - started:.0f} s)")
        t, _ = await converge(stack, [], returns, 60)
        _account(row, deliveries, t)
        row.notes.append("killed while: " + ", ".join(f"{k} × {v}" for k, v in stages.most_common()))
        if slow:
            row.problems.append(f"{slow} runs not recorded and announced 90 s after the restart")
    finally:
        await asyncio.to_thread(stack.stop)
    return row


# -- 3. broker outage -----------------------------------------------------------------------------
async def broker_outage(o: Options, outage: float) -> Row:
    """Webhooks at a steady rate; the broker stopped for ``outage`` s and started again; nothing restarted.
    Webhooks answered 503 are sent again after the outage, like InStore retries them."""
    row = Row(f"broker {'killed' if o.broker_fault == 'kill' else 'stopped'} {outage:g} s")
    stack = await asyncio.to_thread(Stack.start)
    pre, post = 3.0, 5.0
    try:
        gateway = await asyncio.to_thread(stack.gateway)
        await asyncio.to_thread(stack.finalizer)
        await asyncio.to_thread(stack.refund)
        sales = await prepare_sales(stack.mock, math.ceil(o.rate * (pre + outage + post + 30)) + o.burst)
        burst, sales = sales[: o.burst], sales[o.burst :]
        row.sales = 0
        deliveries: dict[str, Delivery] = {}
        sent: list[Sale] = []
        tasks: list[asyncio.Task[None]] = []
        stop_sending = asyncio.Event()
        async with http_session(limit=512, timeout=30) as session:

            async def sender() -> None:
                t0 = time.monotonic()
                for i, sale in enumerate(sales):
                    if stop_sending.is_set():
                        return
                    await asyncio.sleep(max(0.0, t0 + i / o.rate - time.monotonic()))
                    deliveries[sale.webhook_id] = d = Delivery()
                    sent.append(sale)
                    tasks.append(asyncio.create_task(deliver(session, gateway, sale.body(), d)))

            sending = asyncio.create_task(sender())
            await asyncio.sleep(pre)
            if burst:  # requests in flight in every part when the broker goes: produce calls that never get an answer
                for sale in burst:
                    deliveries[sale.webhook_id] = d = Delivery()
                    sent.append(sale)
                    tasks.append(asyncio.create_task(deliver(session, gateway, sale.body(), d)))
                await asyncio.sleep(0.15)
            before = stack.log_counts()
            down_at = time.monotonic()
            say(f"broker down {outage:g} s: stopping the broker")
            await asyncio.to_thread(stack.kill_kafka if o.broker_fault == "kill" else stack.kafka.pause)
            await asyncio.sleep(max(0.0, outage - (time.monotonic() - down_at)))
            say(f"broker down {outage:g} s: starting the broker again")
            try:
                await asyncio.to_thread(stack.kafka.resume)
            except RuntimeError as exc:
                row.problems.append(f"the broker did not start again: {str(exc)[-300:]}")
                raise
            up_at = time.monotonic()
            during = stack.log_counts()
            await asyncio.sleep(post)
            stop_sending.set()
            await sending
            await asyncio.gather(*tasks)
            row.sales = len(sent)
            lines = {k: during[k] - before.get(k, 0) for k in during}
            row.outage_log_lines = sum(lines.values())
            span = up_at - down_at
            row.notes.append(
                f"log lines while the broker was down ({span:.0f} s): "
                + ", ".join(f"{k} {v} ({v / span:.0f}/s)" for k, v in lines.items())
            )
            # What InStore would do next: send again what was not acknowledged. First: was it stored anyway?
            unacked = {wid for wid, d in deliveries.items() if not d.acked}
            if unacked:
                stored = (await tally(stack, [], [], unacked)).webhooks_in_kafka
                row.notes.append(
                    f"{len(unacked)} webhooks not acknowledged during the outage, "
                    f"{sum(1 for w in unacked if stored.get(w))} of them stored in Kafka all the same"
                )
                said_not_stored = {w for w in unacked if any(a.problem == "webhook-not-stored" for a in deliveries[w].answers)}
                if said_not_stored:
                    row.notes.append(
                        f"{len(said_not_stored)} answered 503 webhook-not-stored, "
                        f"{sum(1 for w in said_not_stored if stored.get(w))} of them stored all the same"
                    )
                say(f"broker down {outage:g} s: sending {len(unacked)} unacknowledged webhooks again")
                retry_started = time.monotonic()
                await asyncio.gather(
                    *(
                        deliver(session, gateway, s.body(), deliveries[s.webhook_id], retry_for=60)
                        for s in sent
                        if s.webhook_id in unacked
                    )
                )
                still = sum(1 for w in unacked if not deliveries[w].acked)
                row.notes.append(
                    f"resent after the outage: {len(unacked) - still} acknowledged, {still} still "
                    f"refused after {time.monotonic() - retry_started:.0f} s"
                )
        say(f"broker down {outage:g} s: waiting up to {o.drain_seconds:g} s for the backlog to drain")
        drain_started = time.monotonic()
        t, converged = await converge(stack, sent, [], o.drain_seconds)
        _account(row, deliveries, t)
        if converged:
            row.notes.append(f"backlog drained {time.monotonic() - drain_started - 3:.0f} s after the resends")
        for name, service in stack.services.items():
            if not service.process.alive():
                row.problems.append(f"{name} exited during the scenario")
                continue
            row.notes.append(f"{name} /readyz at the end: {await asyncio.to_thread(_ready, service)}")
    finally:
        await asyncio.to_thread(stack.stop)
    return row


def _ready(service: Service) -> str:
    try:
        return str(httpx.get(service.url + "/readyz", timeout=3).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


# -- 4. duplicates with two replicas ---------------------------------------------------------------
async def two_replicas(o: Options) -> list[Row]:
    """Two order-finalization replicas in one group (3 partitions each): the same webhook ten times
    at once per cart; and two webhooks at once naming the same cart by id and by key."""
    ten = Row("same webhook 10× at once", sales=o.n)
    both = Row("cart by id and by key", sales=o.n)
    stack = await asyncio.to_thread(Stack.start)
    try:
        gateway = await asyncio.to_thread(stack.gateway)
        for name in ("order-finalization-1", "order-finalization-2"):
            await asyncio.to_thread(stack.finalizer, name, ORDER_FINALIZATION_CONCURRENCY="3")
        group = stack.groups["order-finalization"]

        async def balanced() -> bool:
            state, members = await group_members(stack.kafka.bootstrap_servers, group)
            return state == "Stable" and members == 6

        if not await wait_for(balanced, 90, 1.0):
            ten.notes.append("the group did not show 6 members in 90 s; going on")
        first = await prepare_sales(stack.mock, o.n)
        second = await prepare_sales(stack.mock, o.n)
        keys = await _cart_keys(stack, [s.cart_id for s in second])
        gate = asyncio.Semaphore(4)
        async with http_session(limit=128) as session:
            dups: dict[str, Delivery] = {}
            copies: list[Delivery] = []

            async def ten_at_once(sale: Sale) -> None:
                async with gate:
                    ds = [Delivery() for _ in range(10)]
                    copies.extend(ds)
                    await asyncio.gather(*(deliver(session, gateway, sale.body(), d, retry_for=30) for d in ds))
                    dups[sale.webhook_id] = Delivery([a for d in ds for a in d.answers])

            await asyncio.gather(*(ten_at_once(s) for s in first))
            pairs: dict[str, Delivery] = {}
            second_ids: dict[str, tuple[str, str]] = {}

            async def id_and_key(sale: Sale) -> None:
                async with gate:
                    by_key = f"evt-key-{sale.webhook_id[4:]}"
                    second_ids[sale.cart_id] = (sale.webhook_id, by_key)
                    pairs[sale.webhook_id], pairs[by_key] = Delivery(), Delivery()
                    await asyncio.gather(
                        deliver(session, gateway, sale.body(), pairs[sale.webhook_id], retry_for=30),
                        deliver(
                            session, gateway, sale.body(ref=keys[sale.cart_id], webhook_id=by_key), pairs[by_key], retry_for=30
                        ),
                    )

            await asyncio.gather(*(id_and_key(s) for s in second))
        t, _ = await converge(stack, first, [], 120)
        _account(ten, dups, t)
        ten.sent, ten.acked = len(copies), sum(1 for d in copies if d.acked)
        ids = set(pairs)
        t2, _ = await converge(stack, second, [], 120, webhook_ids=ids)
        _account(both, pairs, t2)
        split = 0
        for by_id, by_key in second_ids.values():
            holders = [
                {n for n, s in stack.services.items() if n.startswith("order-finalization") and f'"{w}"' in s.process.output()}
                for w in (by_id, by_key)
            ]
            split += holders[0] != holders[1]
        both.notes.append(f"{split} of {len(second_ids)} carts had their two webhooks handled by different replicas")
    finally:
        await asyncio.to_thread(stack.stop)
    return [ten, both]


async def _cart_keys(stack: Stack, cart_ids: list[str]) -> dict[str, str]:
    from faults.stack import cart_keys

    return await cart_keys(stack.mock, cart_ids)


# -- 5. a faulty Composable Commerce ----------------------------------------------------------------
def _proxy_services(stack: Stack) -> Service:
    gateway = stack.gateway()
    extra = {"CTP_TIMEOUT_SECONDS": "2"}
    stack.finalizer(**extra)
    stack.refund(**extra)
    return gateway


async def _send_all(stack: Stack, gateway: Service, bodies: dict[str, bytes], concurrency: int = 4) -> dict[str, Delivery]:
    deliveries = {wid: Delivery() for wid in bodies}
    gate = asyncio.Semaphore(concurrency)
    async with http_session() as session:

        async def one(wid: str) -> None:
            async with gate:
                await deliver(session, gateway, bodies[wid], deliveries[wid], retry_for=30)

        await asyncio.gather(*(one(w) for w in bodies))
    return deliveries


async def commerce_faults(o: Options) -> Row:
    """Sales and returns while the proxy answers ``fault_share`` of all Composable Commerce calls —
    the token endpoint included — with 409 (writes), 429, 503 or a hang past the 2 s client timeout."""
    row = Row(f"commerce faults {o.fault_share:.0%}", sales=o.n, returns=o.n)
    faults = Faults(share=0.0, hang_seconds=3.0, token_ttl_seconds=o.token_ttl, seed=o.seed)
    stack = await asyncio.to_thread(Stack.start, faults)
    assert stack.proxy is not None
    try:
        gateway = await asyncio.to_thread(_proxy_services, stack)
        sales = await prepare_sales(stack.mock, o.n)
        returns = await prepare_returns(stack.mock, o.n)
        bodies = {s.webhook_id: s.body() for s in sales} | {r.webhook_id: r.body() for r in returns}
        faults.share = o.fault_share
        deliveries = await _send_all(stack, gateway, bodies)
        say(f"commerce faults: {len(bodies)} webhooks sent; waiting for every sale and return")
        t, _ = await converge(stack, sales, returns, 300)
        faults.share = 0.0
        _account(row, deliveries, t)
        row.notes.append(f"proxy: {stack.proxy.stats.summary()}; token expires_in rewritten to {o.token_ttl} s")
        if t.dead_letters:
            row.problems.append(
                f"{sum(t.dead_letters.values())} webhooks dead-lettered that a retry could have done: {dict(t.dead_letters)}"
            )
    finally:
        await asyncio.to_thread(stack.stop)
    return row


async def commerce_outage(o: Options) -> Row:
    """Sales and returns while Composable Commerce answers every call 503 (the token endpoint too) for
    ``commerce_outage_seconds`` — less than the consumers' retry budget: nothing may be dead-lettered."""
    row = Row(f"commerce down {o.commerce_outage_seconds:g} s", sales=o.n, returns=o.n)
    faults = Faults(kinds=("503",), token_ttl_seconds=o.token_ttl, seed=o.seed)
    stack = await asyncio.to_thread(Stack.start, faults)
    assert stack.proxy is not None
    try:
        gateway = await asyncio.to_thread(_proxy_services, stack)
        sales = await prepare_sales(stack.mock, o.n)
        returns = await prepare_returns(stack.mock, o.n)
        bodies = {s.webhook_id: s.body() for s in sales} | {r.webhook_id: r.body() for r in returns}
        faults.share = 1.0
        up_at = time.monotonic() + o.commerce_outage_seconds
        deliveries = await _send_all(stack, gateway, bodies)
        await asyncio.sleep(max(0.0, up_at - time.monotonic()))
        faults.share = 0.0
        recovered = time.monotonic()
        t, converged = await converge(stack, sales, returns, 240)
        _account(row, deliveries, t)
        if converged:
            row.notes.append(
                f"every sale and return done {time.monotonic() - recovered - 3:.0f} s after Composable Commerce came back"
            )
        row.notes.append(f"proxy: {stack.proxy.stats.summary()}")
        if t.dead_letters:
            row.problems.append(
                f"{sum(t.dead_letters.values())} webhooks dead-lettered during an outage shorter than the "
                f"retry budget: {dict(t.dead_letters)}"
            )
    finally:
        await asyncio.to_thread(stack.stop)
    return row


async def marker_outage(o: Options) -> Row:
    """Sales and returns while only the "announced" marker write answers 503 for ``marker_outage_seconds``."""
    row = Row(f"marker write down {o.marker_outage_seconds:g} s", sales=o.n, returns=o.n)
    faults = Faults()
    stack = await asyncio.to_thread(Stack.start, faults)
    assert stack.proxy is not None
    try:
        gateway = await asyncio.to_thread(_proxy_services, stack)
        sales = await prepare_sales(stack.mock, o.n)
        returns = await prepare_returns(stack.mock, o.n)
        bodies = {s.webhook_id: s.body() for s in sales} | {r.webhook_id: r.body() for r in returns}
        faults.marker_outage_until = time.monotonic() + o.marker_outage_seconds
        deliveries = await _send_all(stack, gateway, bodies)
        await asyncio.sleep(max(0.0, faults.marker_outage_until - time.monotonic()))
        t, _ = await converge(stack, sales, returns, 180)
        _account(row, deliveries, t)
        row.notes.append(f"proxy: {stack.proxy.stats.summary()}")
    finally:
        await asyncio.to_thread(stack.stop)
    return row
