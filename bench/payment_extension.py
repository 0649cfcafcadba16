"""Benchmark: InStore's payment-extension requests — the acknowledgement InStore waits for, and the result.

Starts Apache Kafka, the commercetools mock, the dev fakes (simulated provider + InStore's
statusUrl/callbackUrl), the payment-extension service and the gateway (processes, like
``make run``), creates one minimal Payment per request (as InStore's delegated payment creation
does), then C concurrent senders post N signed ``bank-card/payment`` requests and it measures:

- acknowledgement latency p50/p99/max: the gateway's 200 (after Kafka acknowledged; InStore
  waits for this answer at most the processor's timeout, 15 s in the documented example);
- request-to-callback latency p50/p99/max: from sending to the result arriving at the fake
  ``callbackUrl`` (provider call, Payment update, state writes, callback included);
- requests answered other than 200, results other than one ``succeeded`` per request;
- CPU ms per request by process and peak RSS of gateway and payment-extension.

Target (2-core machine, everything on it): acknowledgement p99 ≤ 20 ms at 32 concurrent
requests. A missed target is reported, not an error; the exit status is non-zero only when a
request was refused or a result is missing or doubled.

Usage: ``make bench-payment-extensions`` or ``uv run python -m bench.payment_extension [--requests N]
[--concurrency C]``. Honours ``KAFKA_BOOTSTRAP_SERVERS`` (else starts a local broker).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import sys
import time
import uuid

import aiohttp
import psutil

from bench.cart_callback import RssSampler, _cpu_seconds, _mark, _pct, _token
from instore_devfakes.instore_samples import payment_request
from tests.support.processes import Service, free_port, start_ct_mock, start_kafka, start_service

SECRET = "bench-pe-secret-" + uuid.uuid4().hex


async def _payments(mock_url: str, project: str, count: int) -> list[str]:
    token = await _token(mock_url)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def one(_: int) -> str:
            async with session.post(
                f"{mock_url}/{project}/payments", json={"amountPlanned": {"centAmount": 1999, "currencyCode": "EUR"}}
            ) as answer:
                return str((await answer.json())["id"])

        return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _run(
    gateway: str,
    fakes: str,
    payments: list[str],
    concurrency: int,
) -> tuple[list[float], list[float], int, int]:
    """Send one request per Payment, ``concurrency`` at a time; returns ack latencies (ms), callback latencies (ms),
    requests not answered 200, results missing or not exactly one succeeded."""
    acks: list[float] = []
    sent_at: dict[str, float] = {}
    refused = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for pid in payments:
        queue.put_nowait(pid)
    async with aiohttp.ClientSession() as session:

        async def sender() -> None:
            nonlocal refused
            while not queue.empty():
                pid = queue.get_nowait()
                rid = "bench-" + uuid.uuid4().hex
                body = payment_request(
                    rid,
                    status_url=f"{fakes}/instore-sim/status/{rid}",
                    callback_url=f"{fakes}/instore-sim/callback/{rid}",
                    payment_id=pid,
                    cent_amount=1999,
                    card={"token": "tok_approve"},
                )
                signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                started = time.time()
                async with session.post(
                    f"{gateway}/instore/payment-extensions/bank-card/payment",
                    data=body,
                    headers={"X-Signature": signature, "Content-Type": "application/json"},
                ) as r:
                    await r.read()
                    if r.status == 200:
                        acks.append((time.time() - started) * 1000)
                        sent_at[rid] = started
                    else:
                        refused += 1

        await asyncio.gather(*(sender() for _ in range(concurrency)))
        results: list[float] = []
        bad = 0
        deadline = time.monotonic() + 120
        pending = dict(sent_at)
        while pending and time.monotonic() < deadline:
            for rid in list(pending):
                async with session.get(f"{fakes}/instore-sim/requests/{rid}") as r:
                    seen = await r.json()
                if seen["callbacks"]:
                    results.append((seen["callbacks"][0]["receivedAt"] - pending.pop(rid)) * 1000)
                    if len(seen["callbacks"]) != 1 or seen["callbacks"][0]["body"]["status"] != "succeeded":
                        bad += 1
            await asyncio.sleep(0.2)
        bad += len(pending)
    return acks, results, refused, bad


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=640, help="requests in the measured run (default 640)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent senders (default 32)")
    parser.add_argument("--warmup", type=int, default=64, help="requests before the measured run (default 64)")
    parser.add_argument(
        "--bursts",
        type=int,
        default=10,
        help="bursts of --concurrency simultaneous requests, each after the last results (default 10)",
    )
    args = parser.parse_args(argv)

    kafka = start_kafka()
    mock = start_ct_mock()
    services: list[Service] = []
    try:
        fakes_port, pe_port, gw_port = free_port(), free_port(), free_port()
        fakes_url = f"http://127.0.0.1:{fakes_port}"
        common = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "LOG_LEVEL": "INFO",
            "PAYMENT_EXTENSION_ALLOWED_URLS": fakes_url,
            "INSTORE_WEBHOOK_SECRET": SECRET,
        }
        services.append(
            start_service(
                "bench-fakes", "instore_devfakes", {"DEVFAKES_HTTP_PORT": str(fakes_port)}, fakes_port, ready_path="/healthz"
            )
        )
        services.append(
            start_service(
                "bench-payment-extension",
                "instore_payment_extension",
                {
                    **common,
                    **mock.settings_env(),
                    "PAYMENT_EXTENSION_HTTP_PORT": str(pe_port),
                    "PAYMENT_EXTENSION_CONSUMER_GROUP": f"bench-pe-{uuid.uuid4().hex[:6]}",
                    "PAYMENT_EXTENSION_SIMULATOR_URL": f"{fakes_url}/provider",
                },
                pe_port,
            )
        )
        services.append(
            start_service(
                "bench-gateway",
                "instore_gateway",
                {**common, "GATEWAY_HTTP_PORT": str(gw_port), "INSTORE_CALLBACK_API_KEY": "bench-pe-key-" + uuid.uuid4().hex},
                gw_port,
            )
        )
        gateway_url = f"http://127.0.0.1:{gw_port}"
        project = mock.seed["projectKey"]
        procs = {
            "gateway": psutil.Process(services[2].process.proc.pid),
            "payment-extension": psutil.Process(services[1].process.proc.pid),
            "dev fakes": psutil.Process(services[0].process.proc.pid),
            "mock": psutil.Process(mock.process.proc.pid),
            "load generator": psutil.Process(),
        }
        if kafka.home is not None:
            procs["kafka"] = psutil.Process(int((kafka.home / "kafka.pid").read_text()))
        warm = asyncio.run(_payments(mock.url, project, args.warmup))
        asyncio.run(_run(gateway_url, fakes_url, warm, args.concurrency))
        payments = asyncio.run(_payments(mock.url, project, args.requests))
        before = _cpu_seconds(procs)
        with RssSampler({n: p.pid for n, p in procs.items() if n in ("gateway", "payment-extension")}) as rss:
            acks, results, refused, bad = asyncio.run(_run(gateway_url, fakes_url, payments, args.concurrency))
        after = _cpu_seconds(procs)
        # bursts: `concurrency` tills pay at the same moment, the next burst once all results are in
        burst_acks: list[float] = []
        burst_results: list[float] = []
        burst_payments = asyncio.run(_payments(mock.url, project, args.concurrency * args.bursts))
        for k in range(args.bursts):
            chunk = burst_payments[k * args.concurrency : (k + 1) * args.concurrency]
            b_acks, b_results, b_refused, b_bad = asyncio.run(_run(gateway_url, fakes_url, chunk, args.concurrency))
            burst_acks += b_acks
            burst_results += b_results
            refused, bad = refused + b_refused, bad + b_bad
    finally:
        for service in reversed(services):
            service.stop()
        mock.process.stop()
        kafka.stop()

    n = max(len(acks), 1)
    burst_p99 = _pct(burst_acks, 0.99)
    print(
        f"payment-extension requests: {len(burst_acks)} in {args.bursts} bursts of {args.concurrency} simultaneous "
        f"requests, then {len(acks)} from {args.concurrency} senders back to back (+{args.warmup} warm-up); "
        f"{refused} refused, {bad} results missing/doubled/not succeeded"
    )
    print(
        f"  bursts of {args.concurrency}: acknowledgement p50 {_pct(burst_acks, 0.5):7.1f} ms  p99 {burst_p99:7.1f} ms  "
        f"max {max(burst_acks, default=0):7.1f} ms   target p99 <= 20 ms: {_mark(burst_p99 <= 20)}"
    )
    print(
        f"  bursts of {args.concurrency}: request → result  p50 {_pct(burst_results, 0.5):7.1f} ms  "
        f"p99 {_pct(burst_results, 0.99):7.1f} ms  max {max(burst_results, default=0):7.1f} ms"
    )
    print(
        f"  back to back: acknowledgement   p50 {_pct(acks, 0.5):7.1f} ms  p99 {_pct(acks, 0.99):7.1f} ms  "
        f"max {max(acks, default=0):7.1f} ms (the service processing the backlog shares the 2 cores)"
    )
    print(
        f"  back to back: request → result  p50 {_pct(results, 0.5):7.1f} ms  p99 {_pct(results, 0.99):7.1f} ms  "
        f"max {max(results, default=0):7.1f} ms (queueing: {len(acks)} sent at once)"
    )
    print(
        "  CPU ms per request (back to back): "
        + ", ".join(f"{name} {(after[name] - before[name]) * 1000 / n:.2f}" for name in procs if name in after and name in before)
    )
    print("  peak RSS: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in rss.peak.items()))
    if refused or bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
