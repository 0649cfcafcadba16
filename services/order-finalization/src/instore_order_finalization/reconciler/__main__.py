"""``instore-reconciler``: one reconciliation run (the Kubernetes CronJob), or a run every N seconds (make run).

    instore-reconciler [--dry-run] [--once]

Findings go to stdout, one line each (``handed | would-hand | reported``, the kind, the cart, the
Order, the money); structured logs (progress, the run's summary) to stderr. Metrics of each run:
pushed to ``RECONCILER_PUSHGATEWAY_URL`` when set, served on ``RECONCILER_METRICS_PORT`` in a loop.

Exit codes: 0 the run (or the loop, stopped by SIGTERM/SIGINT) ended; 1 a run failed (Composable
Commerce or Kafka; in a loop, a failed run is logged and the next one comes); 2 bad arguments or
settings; 130 interrupted during a single run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    push_to_gateway,
    start_http_server,
)

from instore_order_finalization.reconciler.run import Finding, RunReport, reconcile
from instore_order_finalization.reconciler.settings import ReconcilerSettings
from instore_order_finalization.reconciler.trigger import KafkaTrigger
from instore_shared.entrypoint import DOCS_HINT, settings_help
from instore_shared.kafka.topics import WEBHOOKS
from instore_shared.logging import get_logger
from instore_shared.settings import CommercetoolsSettings

log = get_logger("instore_order_finalization.reconciler")

PROG = "instore-reconciler"
DESCRIPTION = (
    "The safety net for lost payment webhooks: finds this InStore environment's paid carts without an Order and "
    "Orders whose payments-completed event was never announced, and hands each to order-finalization on "
    "instore.webhooks.v1 (header origin: reconciliation); reports refunds without a return. Writes nothing to "
    "Composable Commerce itself."
)
SCOPES = ("view_orders", "view_payments", "view_key_value_documents")
"""Read-only: carts and Orders, their Payments (expanded), the announcement markers (Custom Objects)."""


class Metrics:
    """The run metrics, in their own registry (what is pushed is exactly this).

    Gauges describe the last run (a CronJob pod pushes one run); the counter counts runs in this process.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.runs = Counter("instore_reconciler_runs", "Reconciliation runs, by result.", ["result"], registry=self.registry)
        self.findings = Gauge(
            "instore_reconciler_last_run_findings",
            "What the last run found, by kind (unordered-cart, unannounced-order, refund-without-return) and action.",
            ["kind", "action"],
            registry=self.registry,
        )
        self.scanned = Gauge(
            "instore_reconciler_last_run_scanned", "Records the last run read, by resource.", ["resource"], registry=self.registry
        )
        self.duration = Gauge("instore_reconciler_last_run_seconds", "How long the last run took.", registry=self.registry)
        self.last_success = Gauge(
            "instore_reconciler_last_success_timestamp_seconds",
            "Unix time the last successful run ended (alert when it grows old).",
            registry=self.registry,
        )

    def record(self, report: RunReport) -> None:
        """Set the gauges from ``report`` (every kind/action pair, zeros included, so a healed state shows 0)."""
        self.runs.labels("ok").inc()
        for kind in ("unordered-cart", "unannounced-order", "refund-without-return"):
            for action in ("handed", "would-hand", "reported"):
                self.findings.labels(kind, action).set(report.count(kind, action))
        for resource, n in report.scanned.items():
            self.scanned.labels(resource).set(n)
        self.duration.set(report.seconds)
        self.last_success.set(time.time())


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``--dry-run``, ``--once``; ``--help`` lists the environment variables."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Configured by environment variables:\n"
        + settings_help([ReconcilerSettings, CommercetoolsSettings])
        + "\n\nExit codes: 0 done; 1 a run failed; 2 bad arguments or settings; 130 interrupted.\n"
        + DOCS_HINT,
    )
    parser.add_argument("--dry-run", action="store_true", help="hand nothing: list what a run would do")
    parser.add_argument("--once", action="store_true", help="one run, whatever RECONCILER_INTERVAL_SECONDS says")
    return parser


def _print(finding: Finding) -> None:
    print(f"{PROG}: {finding.line()}", flush=True)


async def _run_once(settings: ReconcilerSettings, commerce_settings: CommercetoolsSettings, dry_run: bool) -> RunReport:
    from instore_shared.clock import SystemClock
    from instore_shared.commercetools import CommercetoolsClient

    run_id = f"reconcile-{uuid.uuid4().hex[:12]}"
    topic = settings.topic_names().name(WEBHOOKS)
    async with CommercetoolsClient(commerce_settings) as commerce:
        if dry_run:
            return await reconcile(
                commerce, _NoTrigger(), settings=settings, clock=SystemClock(), dry_run=True, on_finding=_print
            )
        client_id = f"{settings.kafka_client_id_prefix}-reconciler"
        options = settings.kafka_client_options()
        async with KafkaTrigger(settings.kafka_bootstrap_servers, topic, client_id, run_id, options) as trigger:
            return await reconcile(commerce, trigger, settings=settings, clock=SystemClock(), on_finding=_print)


class _NoTrigger:
    async def hand(self, cart_id: str, reason: str) -> None:  # pragma: no cover - a dry run never hands
        raise AssertionError("a dry run hands nothing")


async def _loop(
    settings: ReconcilerSettings, commerce_settings: CommercetoolsSettings, dry_run: bool, once: bool, metrics: Metrics
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    interval = 0.0 if once else settings.reconciler_interval_seconds
    status = 0
    while True:
        run = asyncio.ensure_future(_run_once(settings, commerce_settings, dry_run))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            log.warning("reconcile.interrupted")
            return 130 if interval == 0 else 0
        stopped.cancel()
        try:
            report = run.result()
            status = 0
        except Exception as exc:  # one failed run: said, counted; a loop goes on
            if not dry_run:
                metrics.runs.labels("failed").inc()
            log.error("reconcile.run_failed", error=f"{type(exc).__name__}: {exc}")
            status = 1
        else:
            if not dry_run:
                metrics.record(report)
        if not dry_run:  # a dry run's zeros would silence the alerts on what the real runs found
            _push(settings, metrics)
        if interval == 0:
            return status
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
            return 0
        except TimeoutError:
            continue


def _push(settings: ReconcilerSettings, metrics: Metrics) -> None:
    if not settings.reconciler_pushgateway_url:
        return
    try:
        push_to_gateway(settings.reconciler_pushgateway_url, job="instore-reconciler", registry=metrics.registry, timeout=10)
    except Exception as exc:  # the run's result stands; the push is telemetry
        log.warning("reconcile.push_failed", error=f"{type(exc).__name__}: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, read settings (exit 2 when invalid), run; returns the exit code."""
    args = build_parser().parse_args(argv)

    from instore_shared.logging import configure_logging
    from instore_shared.service import with_scopes
    from instore_shared.settings import load_settings

    settings = load_settings(ReconcilerSettings, PROG)
    commerce_settings = with_scopes(load_settings(CommercetoolsSettings, PROG), *SCOPES)
    configure_logging("reconciler", settings.log_level, settings.log_json, stream=sys.stderr)
    metrics = Metrics()
    if settings.reconciler_metrics_port and settings.reconciler_interval_seconds and not args.once:
        try:
            start_http_server(settings.reconciler_metrics_port, settings.reconciler_metrics_host, registry=metrics.registry)
        except OSError as exc:
            where = f"{settings.reconciler_metrics_host}:{settings.reconciler_metrics_port}"
            print(f"{PROG}: RECONCILER_METRICS_PORT: cannot serve /metrics on {where}: {exc.strerror}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(_loop(settings, commerce_settings, args.dry_run, args.once, metrics))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
