"""Benchmark: InStore's signed webhooks into the gateway, each durable in Kafka before the 202.

Starts Apache Kafka and one gateway process (like ``make run``), pre-builds a pool of
distinct signed webhook bodies (so signing is not measured), warms up, then N concurrent
senders post for S seconds and it measures:

- accepted webhooks/s (answers 202, i.e. Kafka acknowledged with acks=all);
- p50/p99/max answer time and the number of answers other than 202;
- peak RSS of the gateway, CPU ms per webhook by process (gateway, Kafka, load generator);
- durability, cheaply: the messages added to ``instore.webhooks.v1`` during the run (sum of
  end offsets, after minus before) must be at least the webhooks answered 202.

Then an open-loop run (:mod:`bench.loadgen`): a fixed offered rate (default 500/s), each
answer timed from when its request was due, so the server's queueing is not hidden by the
senders waiting.

Prints each figure beside its target (issue 14, 2 cores shared by Kafka, the gateway and the
load generator): ≥ 2,000 accepted/s at 64 senders (acks=all); p99 ≤ 20 ms at 500/s offered;
gateway CPU ≤ 0.4 ms per webhook; gateway peak RSS ≤ 150 MB. A missed target is reported, not
an error: the exit status is non-zero only when a request failed unexpectedly or an accepted
webhook is missing from Kafka.

Usage: ``make bench-webhooks`` or ``uv run python -m bench.webhook_intake [--senders N] [--seconds S] [--warmup W]
[--rate R] [--open-seconds S] [--profile DIR]``.
Honours ``KAFKA_BOOTSTRAP_SERVERS`` (else starts a local broker).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.cart_callback import RssSampler, _cpu_seconds, _mark, _pct
from bench.loadgen import OpenLoopRun, open_loop
from bench.profile import profiling, summarise
from tests.support.processes import Service, free_port, start_kafka, start_service

SECRET = "bench-webhook-secret-" + uuid.uuid4().hex
API_KEY = "bench-webhooks-key-" + uuid.uuid4().hex
TOPIC = "instore.webhooks.v1"
TENANT = "bench-tenant-" + uuid.uuid4().hex[:8]


def _sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def _pool(size: int, carts: int = 200, seed: int = 4) -> list[tuple[bytes, dict[str, str]]]:
    """``size`` distinct InStore-like ``payment.completed`` webhooks (~400 bytes), each with its signature header."""
    rnd = random.Random(seed)
    cart_ids = [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(carts)]
    out = []
    for n in range(size):
        body = json.dumps(
            {
                "id": f"evt-{uuid.UUID(int=rnd.getrandbits(128)).hex}",
                "type": "payment.completed",
                "createdAt": f"2025-01-01T12:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
                "cartId": rnd.choice(cart_ids),
                "tenantId": TENANT,
                "locationId": f"store-{rnd.randint(1, 20):03d}",
                "workstationId": f"pos-{rnd.randint(1, 8):02d}",
                "data": {
                    "paymentId": str(uuid.UUID(int=rnd.getrandbits(128))),
                    "tender": "card",
                    "amount": {"centAmount": rnd.randint(100, 99_999), "currencyCode": "EUR"},
                    "reference": f"txn-{rnd.getrandbits(48):012x}",
                },
            },
            separators=(",", ":"),
        ).encode()
        out.append((body, {"X-Signature": _sign(body), "Content-Type": "application/json"}))
    return out


@dataclass
class Run:
    """What the senders saw: answer times (ms) of the measured run, and counts over warm-up + run."""

    latencies: list[float] = field(default_factory=list)
    accepted_total: int = 0
    accepted_run: int = 0
    non_202: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    rps: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)


async def _send(
    url: str,
    pool: list[tuple[bytes, dict[str, str]]],
    senders: int,
    seconds: float,
    warmup: float,
    procs: dict[str, psutil.Process],
    profile: Path | None = None,
) -> Run:
    run = Run()
    connector = aiohttp.TCPConnector(limit=senders + 4)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        measuring = False

        async def once(i: int) -> float:
            body, headers = pool[i % len(pool)]
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = str(response.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = type(exc).__name__
            if status == "202":
                run.accepted_total += 1
                run.accepted_run += measuring
            else:
                run.non_202 += 1
                run.statuses[status] = run.statuses.get(status, 0) + 1
            return (time.perf_counter() - started) * 1000

        async def load(sender: int, until: float, into: list[float]) -> None:
            i = sender * 7919  # each sender walks the pool from its own place
            while time.perf_counter() < until:
                into.append(await once(i))
                i += 1

        # Warm-up, not measured: connections, the producer's metadata, the broker's JIT.
        until = time.perf_counter() + warmup
        await asyncio.gather(*(load(s, until, []) for s in range(senders)))

        measuring = True
        with profiling(profile, {k: p.pid for k, p in procs.items() if k in ("gateway",)}):
            cpu_before = _cpu_seconds(procs)
            started = time.perf_counter()
            until = started + seconds
            await asyncio.gather(*(load(s, until, run.latencies) for s in range(senders)))
            elapsed = time.perf_counter() - started
            cpu_after = _cpu_seconds(procs)
    run.rps = run.accepted_run / elapsed
    run.cpu_ms = {k: (cpu_after[k] - cpu_before[k]) * 1000 / max(1, len(run.latencies)) for k in procs}
    return run


async def _open(
    url: str, pool: list[tuple[bytes, dict[str, str]]], rate: float, seconds: float, procs: dict[str, psutil.Process]
) -> tuple[OpenLoopRun, dict[str, float]]:
    """An open-loop run at ``rate`` webhooks/s; also CPU ms per webhook by process."""
    connector = aiohttp.TCPConnector(limit=0)  # open loop: as many connections as requests in flight
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def send(i: int) -> str:
            body, headers = pool[(i * 7) % len(pool)]
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    return str(response.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                return type(exc).__name__

        cpu_before = _cpu_seconds(procs)
        run = await open_loop(send, rate, seconds)
        cpu_after = _cpu_seconds(procs)
    return run, {k: (cpu_after[k] - cpu_before[k]) * 1000 / max(1, run.offered) for k in procs}


async def _end_offsets_sum(bootstrap: str) -> int:
    """Sum over the partitions of ``instore.webhooks.v1`` of end offset minus start offset (0 if no topic)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(TOPIC)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(TOPIC) or set()
        tps = [TopicPartition(TOPIC, p) for p in partitions]
        if not tps:
            return 0
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=64, help="concurrent senders")
    parser.add_argument("--seconds", type=float, default=10, help="length of the measured run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of unmeasured load first")
    parser.add_argument("--pool", type=int, default=1000, help="distinct signed webhook bodies to cycle through")
    parser.add_argument("--rate", type=float, default=500, help="offered webhooks/s of the open-loop run (0: none)")
    parser.add_argument("--open-seconds", type=float, default=10, help="length of the open-loop run")
    parser.add_argument(
        "--profile", type=Path, default=None, help="record the gateway with py-spy during the measured run into this directory"
    )
    args = parser.parse_args(argv)

    def step(s: str) -> None:
        print(f"bench: {s}", flush=True)

    pool = _pool(args.pool)
    sizes = sorted(len(body) for body, _ in pool)
    step(f"{len(pool)} signed webhook bodies, {sizes[0]}–{sizes[-1]} bytes (median {sizes[len(sizes) // 2]})")
    step("starting Kafka and the gateway …")
    kafka = start_kafka()
    gateway: Service | None = None
    try:
        port = free_port()
        gateway = start_service(
            "gateway",
            "instore_gateway",
            {
                "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "LOG_LEVEL": "INFO",
                "GATEWAY_HTTP_PORT": str(port),
                "INSTORE_CALLBACK_API_KEY": API_KEY,
                "INSTORE_WEBHOOK_SECRET": SECRET,
            },
            port,
        )
        url = f"{gateway.url}/instore/webhooks"
        before = asyncio.run(_end_offsets_sum(kafka.bootstrap_servers))
        pids = {"gateway": gateway.process.proc.pid}
        procs = {"gateway": psutil.Process(gateway.process.proc.pid)}
        if kafka.home is not None:
            procs["kafka"] = psutil.Process(int((kafka.home / "kafka.pid").read_text()))
        procs["load generator"] = psutil.Process()
        with RssSampler(pids) as rss:
            step(f"warm-up {args.warmup:g} s, then {args.seconds:g} s at {args.senders} senders …")
            run = asyncio.run(_send(url, pool, args.senders, args.seconds, args.warmup, procs, args.profile))
            opened: OpenLoopRun | None = None
            if args.rate > 0:
                step(f"open loop: {args.rate:g} webhooks/s offered for {args.open_seconds:g} s …")
                opened, open_cpu = asyncio.run(_open(url, pool, args.rate, args.open_seconds, procs))
        step(f"counting the messages on {TOPIC} …")
        stored = asyncio.run(_end_offsets_sum(kafka.bootstrap_servers)) - before
    finally:
        if gateway is not None:
            gateway.stop()
        kafka.stop()

    lat = run.latencies or [0.0]
    accepted_rps = run.rps
    p50, p99, worst = _pct(lat, 0.5), _pct(lat, 0.99), max(lat)
    gateway_cpu = run.cpu_ms.get("gateway", 0.0)
    print()
    print(
        f"closed loop: {args.senders} senders for {args.seconds:g} s, {len(run.latencies)} webhooks answered "
        f"({run.accepted_run} accepted)"
    )
    print(f"  accepted webhooks/s:             {accepted_rps:7.0f}      (target ≥ 2,000)  {_mark(accepted_rps >= 2000)}")
    print(f"  answer time p50 / p99 / max:     {p50:7.2f} / {p99:.2f} / {worst:.2f} ms  (senders queue: see open loop)")
    parts = ", ".join(f"{name} {ms:.2f}" for name, ms in run.cpu_ms.items() if ms > 0.005)
    print(f"  CPU ms per webhook:              {sum(run.cpu_ms.values()):7.2f}      ({parts})")
    print(f"  gateway CPU per webhook:         {gateway_cpu:7.2f} ms   (target ≤ 0.4 ms) {_mark(gateway_cpu <= 0.4)}")
    accepted_open = 0
    if opened is not None:
        olat = opened.latencies or [0.0]
        o50, o99, omax = _pct(olat, 0.5), _pct(olat, 0.99), max(olat)
        accepted_open = opened.statuses.get("202", 0)
        others = {k: v for k, v in opened.statuses.items() if k != "202"}
        print(
            f"open loop: {args.rate:g}/s offered for {args.open_seconds:g} s, {accepted_open} of {opened.offered} "
            f"accepted{'; other answers ' + str(others) if others else ''}; sender at most "
            f"{opened.late_ms_max:.1f} ms behind schedule"
        )
        print(
            f"  answer time p50 / p99 / max:     {o50:7.2f} / {o99:.2f} / {omax:.2f} ms   (target p99 ≤ 20 ms) {_mark(o99 <= 20)}"
        )
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in open_cpu.items() if ms > 0.005)
        print(f"  CPU ms per webhook:              {sum(open_cpu.values()):7.2f}      ({parts})")
        run.non_202 += sum(others.values())
        run.accepted_total += accepted_open
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(run.statuses.items()))
    print(f"answers other than 202:            {run.non_202:7d}   (warm-up + runs{'; ' + detail if detail else ''})")
    for name, peak in rss.peak.items():
        print(f"peak RSS {name:<13}             {peak:7.0f} MB   (target ≤ 150 MB) {_mark(peak <= 150)}")
    print()
    durable = stored >= run.accepted_total
    print(
        f"durability: {stored} messages added to {TOPIC}, {run.accepted_total} webhooks answered 202 "
        f"(warm-up + run)  {'ok' if durable else 'MISSING ' + str(run.accepted_total - stored)}"
    )
    if args.profile is not None:
        summarise(args.profile)
    if run.non_202 or not durable:
        raise SystemExit(
            f"bench: {run.non_202} requests failed"
            + ("" if durable else f", {run.accepted_total - stored} accepted webhooks not in Kafka")
        )


if __name__ == "__main__":
    main()
