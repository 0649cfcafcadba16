"""The real parts a fault scenario runs against, and how it looks at them.

One :class:`Stack` per scenario: its own Kafka broker (on ports outside the ephemeral range,
so it can be stopped and started again on the same ports even when clients storm it with
reconnects — /proc/sys/net/ipv4/ip_local_port_range), its own seeded commercetools mock,
optionally the fault proxy in front of the mock, and the services as processes
(:mod:`tests.support.processes`; output counted, see :class:`CountedProcess`).

Looking: Orders straight from the mock (never through the proxy), topics read from the
beginning (:func:`read_topic`), webhooks signed with the shared benchmark secret and posted
like InStore does (:func:`post_webhook`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from bench.webhook_to_order import API_KEY, SECRET, _commerce
from faults.proxy import FaultProxy, Faults
from tests.support.processes import (
    CtMock,
    Kafka,
    LoggedProcess,
    Service,
    free_port,
    service_env,
    start_ct_mock,
    start_kafka,
    wait_until,
)

WEBHOOKS = "instore.webhooks.v1"
DLQ = "instore.webhooks.v1.dlq"
PAYMENTS = "commerce.payments.completed.v1"
REFUNDS = "commerce.refunds.completed.v1"

INTERESTING = (
    "webhook.",
    "finalize.",
    "payments_completed.",
    "refunds_completed.",
    "refund.",
    "commerce.",
    "order_finalization.",
    "announcement.",
    "crash",
    "Traceback",
    "error",
)
"""Lines kept in memory (the rest are only counted): what the checks and the notes look for."""
LOG_FILE_CAP = 50_000_000
"""Bytes of output mirrored to a process's log file (an outage can make hundreds of MB)."""


class CountedProcess(LoggedProcess):
    """A :class:`LoggedProcess` that counts every line but keeps in memory only the last 2,000 and
    the :data:`INTERESTING` ones — a reconnect storm prints hundreds of thousands of lines."""

    def _read(self) -> None:
        self.count = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=2000)
        written = 0
        assert self.proc.stdout is not None
        with self.log_path.open("w") as f:
            for line in self.proc.stdout:
                self.count += 1
                if written < LOG_FILE_CAP:
                    f.write(line)
                    written += len(line)
                text = line.rstrip("\n")
                self.tail.append(text)
                if any(k in text for k in INTERESTING):
                    with self._lock:
                        self.lines.append(text)

    def lines_now(self) -> int:
        """Lines printed so far."""
        return getattr(self, "count", 0)


def start_service(name: str, module: str, env: dict[str, str], port: int, timeout: float = 90) -> Service:
    """``tests.support.processes.start_service`` with a :class:`CountedProcess` (same readiness rule:
    ``GET /readyz`` answers 200)."""
    process = CountedProcess(name, [sys.executable, "-m", module], service_env(env))
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if not process.alive():
            raise RuntimeError(process.describe())
        try:
            return httpx.get(url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout, f"{name} to be ready", interval=0.1)
    except BaseException:
        process.stop()
        raise
    return Service(process, url)


def quiet_port() -> int:
    """A free port on 127.0.0.1 below the ephemeral range (client sockets never take it)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(20000, max(20001, low - 1))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


@dataclass
class Stack:
    """The parts of one scenario; ``stop`` ends all of them."""

    kafka: Kafka
    mock: CtMock
    proxy: FaultProxy | None = None
    services: dict[str, Service] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, proxy: Faults | None = None) -> Stack:
        """A fresh broker and mock (and the proxy in front of the mock when ``proxy`` is given)."""
        kafka = start_kafka(port=quiet_port(), controller_port=quiet_port())
        try:
            mock = start_ct_mock()
        except BaseException:
            kafka.stop()
            raise
        stack = cls(kafka, mock)
        if proxy is not None:
            stack.proxy = FaultProxy(mock.url, proxy)
            stack.proxy.start(free_port())
        return stack

    # -- services --------------------------------------------------------------------
    def ct_env(self, via_proxy: bool = True) -> dict[str, str]:
        """The ``CTP_*`` environment of a service: the proxy's URL when there is one."""
        env = self.mock.settings_env()
        if self.proxy is not None and via_proxy:
            env["CTP_AUTH_URL"] = env["CTP_API_URL"] = self.proxy.url
        return env

    def gateway(self, name: str = "gateway", **extra: str) -> Service:
        port = free_port()
        service = start_service(
            name,
            "instore_gateway",
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
                "GATEWAY_HTTP_PORT": str(port),
                "INSTORE_CALLBACK_API_KEY": API_KEY,
                "INSTORE_WEBHOOK_SECRET": SECRET,
                **self.ct_env(),
                **extra,
            },
            port,
        )
        self.services[name] = service
        return service

    def finalizer(self, name: str = "order-finalization", **extra: str) -> Service:
        port = free_port()
        group = self.groups.setdefault("order-finalization", f"faults-of-{uuid.uuid4().hex[:6]}")
        service = start_service(
            name,
            "instore_order_finalization",
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
                **self.ct_env(),
                "ORDER_FINALIZATION_HTTP_PORT": str(port),
                "ORDER_FINALIZATION_CONSUMER_GROUP": group,
                **extra,
            },
            port,
        )
        self.services[name] = service
        return service

    def refund(self, name: str = "refund", **extra: str) -> Service:
        port = free_port()
        group = self.groups.setdefault("refund", f"faults-rf-{uuid.uuid4().hex[:6]}")
        service = start_service(
            name,
            "instore_refund",
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
                **self.ct_env(),
                "REFUND_HTTP_PORT": str(port),
                "REFUND_CONSUMER_GROUP": group,
                **extra,
            },
            port,
        )
        self.services[name] = service
        return service

    def kill(self, name: str) -> None:
        """SIGKILL service ``name`` (its whole process group)."""
        self.services[name].process.stop(signal.SIGKILL)

    def kill_kafka(self) -> None:
        """SIGKILL the broker (a crash: nothing flushed, in-flight requests unanswered); ``kafka.resume()`` starts it again."""
        assert self.kafka.home is not None
        pid = int((self.kafka.home / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_until(gone, 30, "the killed broker to exit")

    def log_counts(self) -> dict[str, int]:
        """Lines printed so far, by service."""
        return {
            name: s.process.lines_now()
            for name, s in self.services.items()  # type: ignore[attr-defined]
            if isinstance(s.process, CountedProcess)
        }

    def stop(self) -> None:
        for service in self.services.values():
            with contextlib.suppress(Exception):  # best effort: the other parts must still stop
                service.stop()
        if self.proxy is not None:
            self.proxy.stop()
        self.mock.process.stop()
        self.kafka.stop()


# -- webhooks ----------------------------------------------------------------------------
@dataclass
class Answer:
    """What the gateway answered one POST: status (0: no answer), ``Retry-After`` and the webhook id."""

    status: int
    retry_after: str | None = None
    webhook_id: str | None = None
    error: str | None = None
    problem: str | None = None
    """The last path segment of an RFC 9457 problem body's ``type``."""


def sign(body: bytes) -> dict[str, str]:
    """The headers InStore sends: the HMAC-SHA256 of the raw body under the shared secret."""
    return {"X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(), "Content-Type": "application/json"}


async def post_webhook(session: aiohttp.ClientSession, gateway: Service, body: bytes) -> Answer:
    """POST one signed webhook; the answer, never raising for a failed call."""
    try:
        async with session.post(f"{gateway.url}/instore/webhooks", data=body, headers=sign(body)) as response:
            payload = await response.read()
            wid = problem = None
            try:
                decoded = json.loads(payload) if payload else {}
            except ValueError:
                decoded = {}
            if response.status == 202:
                wid = decoded.get("webhookId")
            elif isinstance(decoded, dict) and isinstance(decoded.get("type"), str):
                problem = re.split(r"[/:]", decoded["type"].rstrip("/"))[-1]
            return Answer(response.status, response.headers.get("Retry-After"), wid, problem=problem)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Answer(0, error=type(exc).__name__)


def http_session(limit: int = 64, timeout: float = 30) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit), timeout=aiohttp.ClientTimeout(total=timeout))


# -- Kafka -------------------------------------------------------------------------------
async def read_topic(bootstrap: str, topic: str, within: float = 30) -> list[Any]:
    """Every record of ``topic`` from the beginning to its end offsets now (an empty list when
    the topic does not exist). Raises ``TimeoutError`` when Kafka does not deliver them in ``within`` s.

    The consumer names the topic (no group): a consumer without topics asks Kafka for the
    metadata of no topic at all, and would see none of its partitions.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=10000,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + within
        records: list[Any] = []
        while not consumer.assignment():
            if time.monotonic() > deadline:
                return []  # no such topic
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records += batch
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}")
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += batch
        return records
    finally:
        await consumer.stop()


def header(record: Any, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode()
    return None


async def group_members(bootstrap: str, group: str) -> tuple[str, int]:
    """The consumer group's state and how many members hold partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (desc,) = await admin.describe_consumer_groups([group])
        groups = getattr(desc, "groups", None)
        if groups is None:  # older shapes
            return "unknown", 0
        _err, _gid, state, _ptype, _proto, members, *_ = groups[0]
        return str(state), len(members)
    finally:
        await admin.close()


# -- Composable Commerce (the mock, directly) ---------------------------------------------
async def all_orders(mock: CtMock) -> list[dict[str, Any]]:
    """Every Order in the mock (paged), with its Payments expanded."""
    out: list[dict[str, Any]] = []
    async with _commerce(mock) as c:
        offset = 0
        while True:
            page = (
                await c.request(
                    "GET", "/orders", params={"limit": "500", "offset": str(offset), "expand": ["paymentInfo.payments[*]"]}
                )
            ).json()
            out += page["results"]
            if len(page["results"]) < 500:
                return out
            offset += 500


async def cart_keys(mock: CtMock, cart_ids: list[str]) -> dict[str, str]:
    """The key of each cart."""
    async with _commerce(mock) as c:
        carts = await asyncio.gather(*(c.get_cart(cid) for cid in cart_ids))
    return {cid: r.json()["key"] for cid, r in zip(cart_ids, carts, strict=True)}


_print_lock = threading.Lock()


def say(text: str) -> None:
    """One progress line on stderr (the table goes to stdout)."""
    with _print_lock:
        print(f"faults {time.strftime('%H:%M:%S')}: {text}", file=sys.stderr, flush=True)
