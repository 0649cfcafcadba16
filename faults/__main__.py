"""``python -m faults``: run the fault scenarios, print a table of counts, exit 1 when anything
was lost or duplicated (or another expectation broke), 2 on a harness error.

Usage: ``make faults ARGS="--n 25"``; ``make faults ARGS=--short`` for CI (N=3, a 10 s
broker outage, 10 s of Composable Commerce down, a 10 s marker outage); ``--scenarios kill-of,outage`` to pick.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import sys
import time
import traceback
from collections.abc import Awaitable, Callable

from faults import scenarios as sc
from faults.report import Row, table
from faults.stack import say
from instore_shared.logging import configure_logging

SCENARIOS = ("kill-of", "kill-refund", "outage", "replicas", "commerce", "commerce-down", "marker")
"""kill-of: SIGKILL order-finalization; kill-refund: SIGKILL refund; outage: the broker down (each
--outage-seconds); replicas: duplicates with two order-finalization replicas; commerce: the
fault proxy; commerce-down: every Composable Commerce call failing for a while; marker: only the marker write failing."""


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


async def _awaited(job: Callable[[], Awaitable[Row | list[Row]]]) -> Row | list[Row]:
    return await job()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=25, help="runs / sales / returns per scenario (default 25)")
    parser.add_argument(
        "--short",
        action="store_true",
        help="the CI version: --n 3 --outage-seconds 10 --marker-outage-seconds 10 --commerce-outage-seconds 10 --rate 2",
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--outage-seconds", default="10,120", help="broker outages to run, comma-separated (10,120)")
    parser.add_argument(
        "--broker-fault",
        choices=("kill", "stop"),
        default="kill",
        help="how the broker goes down: SIGKILL (a crash, default) or SIGTERM (a clean stop)",
    )
    parser.add_argument("--burst", type=int, default=20, help="webhooks sent at once just before the broker goes down")
    parser.add_argument("--rate", type=float, default=3.0, help="webhooks/s during the broker outage scenario")
    parser.add_argument("--drain-seconds", type=float, default=180.0, help="how long the backlog may take to drain")
    parser.add_argument("--fault-share", type=float, default=0.3, help="share of Composable Commerce calls faulted")
    parser.add_argument("--token-ttl", type=int, default=2, help="token expires_in the proxy hands out (s)")
    parser.add_argument(
        "--commerce-outage-seconds",
        type=float,
        default=60.0,
        help="how long every Composable Commerce call fails in commerce-down (60; under the retry budget)",
    )
    parser.add_argument("--marker-outage-seconds", type=float, default=30.0, help="how long the marker write fails")
    parser.add_argument(
        "--slow-marker-ms",
        type=float,
        default=0.0,
        help="kill scenarios: delay the marker write by this much (a proxy before the mock)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (kill points, faults)")
    args = parser.parse_args(argv)
    if args.short:
        args.n, args.outage_seconds, args.marker_outage_seconds, args.rate = 3, "10", 10.0, 2.0
        args.commerce_outage_seconds = 10.0
    configure_logging("faults", level="WARNING", json=False)  # not a line per API call while preparing
    os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # every scenario needs a broker of its own to stop
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    opts = sc.Options(
        n=args.n,
        outages=_floats(args.outage_seconds),
        rate=args.rate,
        drain_seconds=args.drain_seconds,
        fault_share=args.fault_share,
        token_ttl=args.token_ttl,
        marker_outage_seconds=args.marker_outage_seconds,
        broker_fault=args.broker_fault,
        burst=args.burst,
        slow_marker_ms=args.slow_marker_ms,
        commerce_outage_seconds=args.commerce_outage_seconds,
        seed=seed,
        rng=random.Random(seed),
    )
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    say(f"seed {seed}; scenarios {', '.join(chosen)}; N={opts.n}")
    rows: list[Row] = []
    harness_error = False
    started = time.monotonic()
    for name in chosen:
        runs: dict[str, Callable[[], Awaitable[Row | list[Row]]]] = {
            "kill-of": lambda: sc.kill_order_finalization(opts),
            "kill-refund": lambda: sc.kill_refund(opts),
            "replicas": lambda: sc.two_replicas(opts),
            "commerce": lambda: sc.commerce_faults(opts),
            "commerce-down": lambda: sc.commerce_outage(opts),
            "marker": lambda: sc.marker_outage(opts),
        }
        jobs: list[tuple[str, Callable[[], Awaitable[Row | list[Row]]]]] = (
            [(f"outage {o:g}", functools.partial(sc.broker_outage, opts, o)) for o in opts.outages]
            if name == "outage"
            else [(name, runs[name])]
        )
        for label, job in jobs:
            say(f"--- {label} ---")
            t0 = time.monotonic()
            result: Row | list[Row]
            try:
                result = asyncio.run(_awaited(job))
            except Exception as exc:
                traceback.print_exc()
                harness_error = True
                result = Row(label, problems=[f"harness error: {type(exc).__name__}: {exc}"[:300]])
            got = result if isinstance(result, list) else [result]
            for row in got:
                row.seconds = time.monotonic() - t0
            rows += got
            say(f"{label}: {time.monotonic() - t0:.0f} s")
    print()
    print(table(rows))
    print(f"\nN={opts.n}, seed {seed}, {time.monotonic() - started:.0f} s in all")
    if any(r.lost or r.duplicated for r in rows) or any(r.failed for r in rows):
        return 1
    return 2 if harness_error else 0


if __name__ == "__main__":
    sys.exit(main())
