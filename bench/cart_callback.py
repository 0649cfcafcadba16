"""Benchmark: InStore's sale cart callback through the whole stack vs. a direct GET of the Cart.

Starts a real stack (Apache Kafka, the seeded commercetools mock, cart-mapping, the
gateway — as processes, like ``make run``) and measures, for the same cart:

- latency p50/p99 of sequential requests: the callback, and a direct ``GET /carts/key=``
  on the mock; their difference is what the Kafka round trip adds;
- throughput and p50/p99 at N concurrent clients (default 32);
- peak RSS of the gateway and cart-mapping processes during the run.

- an open-loop run of callbacks (:mod:`bench.loadgen`) at a fixed offered rate (default
  200/s), each answer timed from when its request was due.

Prints a table and each figure beside its target (issue 14; 2 cores shared by Kafka, the mock,
the services and the load generator): added latency ≤ 4 ms p50 and ≤ 15 ms p99; ≥ 700
callbacks/s at 32 clients; CPU per callback of the integration's processes together (gateway,
cart-mapping, Kafka, the mock — not the load generator) ≤ 3 ms; each service ≤ 150 MB RSS.

Usage: ``make bench`` or ``uv run python -m bench.cart_callback [--sequential N] [--seconds S] [--concurrency C]
[--rate R] [--profile DIR]``.
Honours ``KAFKA_BOOTSTRAP_SERVERS`` (else starts a local broker).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from bench.loadgen import OpenLoopRun, open_loop
from bench.profile import profiling, summarise
from tests.support.processes import (
    Service,
    free_port,
    start_ct_mock,
    start_kafka,
    start_service,
)

API_KEY = "bench-callback-key-" + uuid.uuid4().hex


@dataclass
class Figures:
    """Latency (ms), throughput (requests/s) and CPU ms per request (by process) of one target."""

    name: str
    seq_p50: float
    seq_p99: float
    conc_rps: float
    conc_p50: float
    conc_p99: float
    errors: int
    cpu_ms: dict[str, float]


def _cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, proc in procs.items():
        try:
            times = proc.cpu_times()
            out[name] = times.user + times.system
        except psutil.Error:
            out[name] = 0.0
    return out


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(
    name: str,
    url: str,
    headers: dict[str, str],
    sequential: int,
    seconds: float,
    concurrency: int,
    warmup: float,
    procs: dict[str, psutil.Process],
    profile: Path | None = None,
    profiled: tuple[str, ...] = (),
) -> Figures:
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        errors = 0

        async def once() -> float:
            nonlocal errors
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            return (time.perf_counter() - started) * 1000

        async def load(until: float, into: list[float]) -> None:
            while time.perf_counter() < until:
                into.append(await once())

        # Warm-up, not measured: connection pools, OAuth token, and the Kafka broker's JIT
        # (a cold JVM answers a produce in ~3 ms, a warm one in ~1 ms).
        until = time.perf_counter() + warmup
        await asyncio.gather(*(load(until, []) for _ in range(concurrency)))
        seq = [await once() for _ in range(sequential)]

        conc: list[float] = []
        with profiling(profile, {k: p.pid for k, p in procs.items() if k in profiled}):
            cpu_before = _cpu_seconds(procs)
            started = time.perf_counter()
            until = started + seconds
            await asyncio.gather(*(load(until, conc) for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            cpu_after = _cpu_seconds(procs)
    cpu_ms = {k: (cpu_after[k] - cpu_before[k]) * 1000 / max(1, len(conc)) for k in procs}
    return Figures(name, _pct(seq, 0.5), _pct(seq, 0.99), len(conc) / elapsed, _pct(conc, 0.5), _pct(conc, 0.99), errors, cpu_ms)


class RssSampler:
    """Samples the RSS of some processes every 0.2 s in a thread; keeps the peak (MB)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: 0.0 for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss / 2**20)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def _open(url: str, headers: dict[str, str], rate: float, seconds: float) -> OpenLoopRun:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers=headers) as session:

        async def send(_: int) -> str:
            try:
                async with session.get(url) as response:
                    await response.read()
                    return str(response.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                return type(exc).__name__

        return await open_loop(send, rate, seconds)


async def _token(mock_url: str) -> str:
    basic = base64.b64encode(b"bench:bench").decode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{mock_url}/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
        ) as response,
    ):
        return (await response.json())["access_token"]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=1000, help="sequential requests per target")
    parser.add_argument("--seconds", type=float, default=10, help="length of the concurrent run per target")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of unmeasured load per target first")
    parser.add_argument("--rate", type=float, default=200, help="offered callbacks/s of the open-loop run (0: none)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the gateway and cart-mapping with py-spy during the concurrent callback run",
    )
    args = parser.parse_args(argv)

    def step(s: str) -> None:
        print(f"bench: {s}", flush=True)

    step("starting Kafka, the commercetools mock, cart-mapping and the gateway …")
    kafka = start_kafka()
    mock = start_ct_mock()
    services: list[Service] = []
    try:
        common = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "LOG_LEVEL": "INFO"}
        cm_port, gw_port = free_port(), free_port()
        services.append(
            start_service(
                "cart-mapping",
                "instore_cart_mapping",
                {
                    **common,
                    **mock.settings_env(),
                    "CART_MAPPING_HTTP_PORT": str(cm_port),
                    "CART_MAPPING_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
                },
                cm_port,
            )
        )
        services.append(
            start_service(
                "gateway",
                "instore_gateway",
                {**common, "GATEWAY_HTTP_PORT": str(gw_port), "INSTORE_CALLBACK_API_KEY": API_KEY},
                gw_port,
            )
        )
        cart_key = mock.seed["saleCartKey"]
        token = asyncio.run(_token(mock.url))
        direct_url = f"{mock.url}/{mock.seed['projectKey']}/carts/key={cart_key}"
        callback_url = f"{services[1].url}/instore/callbacks/carts/{cart_key}"
        pids = {"gateway": services[1].process.proc.pid, "cart-mapping": services[0].process.proc.pid}
        procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        procs["mock"] = psutil.Process(mock.process.proc.pid)
        if kafka.home is not None:
            procs["kafka"] = psutil.Process(int((kafka.home / "kafka.pid").read_text()))
        procs["load generator"] = psutil.Process()
        with RssSampler(pids) as rss:
            step(
                f"direct GET of the cart from the mock: {args.sequential} sequential, "
                f"{args.seconds:g} s at {args.concurrency} clients …"
            )
            direct = asyncio.run(
                _measure(
                    "direct GET (mock)",
                    direct_url,
                    {"Authorization": f"Bearer {token}"},
                    args.sequential,
                    args.seconds,
                    args.concurrency,
                    args.warmup,
                    procs,
                )
            )
            step("sale cart callback through gateway → Kafka → cart-mapping → mock …")
            callback = asyncio.run(
                _measure(
                    "callback (gateway)",
                    callback_url,
                    {"X-Api-Key": API_KEY},
                    args.sequential,
                    args.seconds,
                    args.concurrency,
                    args.warmup,
                    procs,
                    args.profile,
                    ("gateway", "cart-mapping"),
                )
            )
            opened: OpenLoopRun | None = None
            if args.rate > 0:
                step(f"open loop: {args.rate:g} callbacks/s offered for {args.seconds:g} s …")
                opened = asyncio.run(_open(callback_url, {"X-Api-Key": API_KEY}, args.rate, args.seconds))
    finally:
        for service in services:
            service.stop()
        mock.process.stop()
        kafka.stop()

    print()
    print(
        f"{'target':<22}{'seq p50 ms':>12}{'seq p99 ms':>12}{f'rps @{args.concurrency}':>12}"
        f"{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
    )
    for f in (direct, callback):
        print(
            f"{f.name:<22}{f.seq_p50:>12.2f}{f.seq_p99:>12.2f}{f.conc_rps:>12.0f}{f.conc_p50:>10.2f}"
            f"{f.conc_p99:>10.2f}{f.errors:>8}"
        )
    added50, added99 = callback.seq_p50 - direct.seq_p50, callback.seq_p99 - direct.seq_p99
    servers = sum(ms for name, ms in callback.cpu_ms.items() if name != "load generator")
    print()
    print(f"added by the Kafka round trip, p50: {added50:6.2f} ms   (target ≤ 4 ms)   {_mark(added50 <= 4)}")
    print(f"added by the Kafka round trip, p99: {added99:6.2f} ms   (target ≤ 15 ms)  {_mark(added99 <= 15)}")
    print(
        f"callbacks/s at {args.concurrency} clients:      {callback.conc_rps:6.0f}      (target ≥ 700)    "
        f"{_mark(callback.conc_rps >= 700)}"
    )
    measured = ", ".join(name for name in callback.cpu_ms if name != "load generator")
    unmeasured = "" if "kafka" in callback.cpu_ms else "; Kafka not measured: an external broker"
    print(
        f"CPU per callback, integration:      {servers:6.2f} ms   (target ≤ 3 ms)   {_mark(servers <= 3)}"
        f"   ({measured}{unmeasured})"
    )
    print(f"throughput ratio callback/direct:   {callback.conc_rps / direct.conc_rps:6.2f}")
    print(f"latency ratio callback/direct, p50: {callback.seq_p50 / direct.seq_p50:6.2f}")
    for name, peak in rss.peak.items():
        print(f"peak RSS {name:<13}            {peak:6.0f} MB   (target ≤ 150 MB) {_mark(peak <= 150)}")
    print()
    print(f"CPU ms per request at {args.concurrency} clients (2 cores = 2,000 ms/s shared by all):")
    for f in (direct, callback):
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in f.cpu_ms.items() if ms > 0.005)
        print(f"  {f.name:<20} {sum(f.cpu_ms.values()):5.2f}  ({parts})")
    if opened is not None:
        olat = opened.latencies or [0.0]
        others = {k: v for k, v in opened.statuses.items() if k != "200"}
        print(
            f"open loop, {args.rate:g} callbacks/s offered for {args.seconds:g} s: p50 {_pct(olat, 0.5):.2f} ms, "
            f"p99 {_pct(olat, 0.99):.2f} ms, max {max(olat):.2f} ms from the due time; "
            f"{opened.statuses.get('200', 0)} of {opened.offered} answered 200"
            f"{'; other answers ' + str(others) if others else ''} (sender at most {opened.late_ms_max:.1f} ms late)"
        )
        callback.errors += sum(others.values())
    if args.profile is not None:
        summarise(args.profile)
    if direct.errors or callback.errors:
        raise SystemExit(f"bench: {direct.errors + callback.errors} requests failed")


if __name__ == "__main__":
    main()
