"""``simulate`` as a command: its arguments and its run, shared by ``instore-devfakes simulate`` and
``instore-integration simulate`` (:mod:`instore_shared.cli`).

The simulator (:mod:`instore_devfakes.simulator`) plays InStore and the host app against a running
stack, one line per step on stdout. What it needs beyond its arguments comes from the environment:
``INSTORE_CALLBACK_API_KEY`` and ``INSTORE_WEBHOOK_SECRET`` (the stack's), ``CTP_*`` (to check the
Order in Composable Commerce), and the Kafka settings every service reads (``KAFKA_BOOTSTRAP_SERVERS``,
``KAFKA_SECURITY_PROTOCOL``/``KAFKA_SASL_*``/``KAFKA_SSL_*``, ``KAFKA_TOPIC_PREFIX``).
Exit codes: 0 the sale, payment, return and refund went through; 1 a step failed (named); 2 bad
arguments or settings.
"""

from __future__ import annotations

import argparse
import os
import sys

SIMULATE_DESCRIPTION = (
    "Play InStore and the host app against a running stack: a colleague session, a cart callback, a paid sale "
    "(one Order, one commerce.payments.completed.v1), a payment extension, a return and its refund; one line "
    "per step on stdout.\n\n"
    "From the environment: INSTORE_CALLBACK_API_KEY, INSTORE_WEBHOOK_SECRET (the stack's), CTP_* (to read the "
    "Order), KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*, KAFKA_TOPIC_PREFIX.\n"
    "Exit codes: 0 done, 1 a step failed (named on stderr), 2 bad arguments or settings."
)

REQUIRED_ENV = ("INSTORE_CALLBACK_API_KEY", "INSTORE_WEBHOOK_SECRET", "CTP_CLIENT_ID")
"""Variables ``simulate`` cannot run without (``make demo``, ``make run`` and ``make simulate`` set them)."""


def _default_fakes_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('DEVFAKES_HTTP_PORT', '8090')}"


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``simulate``'s options to ``parser`` (defaults from the environment ``make run`` uses)."""
    env = os.environ.get
    parser.add_argument(
        "--gateway",
        default=f"http://127.0.0.1:{env('GATEWAY_HTTP_PORT', '8080')}",
        help="gateway base URL (default: %(default)s, from GATEWAY_HTTP_PORT)",
    )
    parser.add_argument("--ims", default=_default_fakes_url(), help="dev fakes base URL (default: %(default)s)")
    parser.add_argument(
        "--kafka",
        default=None,
        help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:$KAFKA_PORT, else 127.0.0.1:9092)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds each step may take (default: %(default)s)")
    parser.add_argument("--user", default="colleague-42", help="the colleague's user id (default: %(default)s)")


def run_simulate(args: argparse.Namespace, prog: str) -> int:
    """Run the simulator with ``args`` (:func:`add_simulate_arguments`); returns the exit code (module doc).

    ``prog`` names the command in messages (``instore-integration simulate``)."""
    import asyncio

    from instore_devfakes.simulator import SimulatorConfig, StepFailed, simulate
    from instore_shared.logging import configure_logging
    from instore_shared.settings import BaseServiceSettings, CommercetoolsSettings, load_settings

    if args.timeout <= 0:
        print(f"{prog}: --timeout must be > 0", file=sys.stderr)
        return 2
    # stdout carries the steps and the summary; the libraries' own lines (warnings) go to stderr
    configure_logging("simulator", os.environ.get("SIMULATOR_LOG_LEVEL", "WARNING"), json=False, stream=sys.stderr)
    missing = [var for var in REQUIRED_ENV if not os.environ.get(var)]
    if missing:
        print(f"{prog}: {', '.join(missing)} not set (make demo, make run and make simulate set them)", file=sys.stderr)
        return 2
    kafka = load_settings(BaseServiceSettings, prog)
    bootstrap = args.kafka or (
        kafka.kafka_bootstrap_servers
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or not os.environ.get("KAFKA_PORT")
        else f"127.0.0.1:{os.environ['KAFKA_PORT']}"
    )
    config = SimulatorConfig(
        gateway_url=args.gateway.rstrip("/"),
        ims_url=args.ims.rstrip("/"),
        callback_api_key=os.environ["INSTORE_CALLBACK_API_KEY"],
        webhook_secret=os.environ["INSTORE_WEBHOOK_SECRET"],
        kafka_bootstrap_servers=bootstrap,
        commerce=load_settings(CommercetoolsSettings, prog),
        colleague=args.user,
        currency=os.environ.get("INSTORE_CURRENCY", "EUR"),
        timeout_seconds=args.timeout,
        topics=kafka.topic_names(),
        kafka_client_options=kafka.kafka_client_options(),
    )
    try:
        summary = asyncio.run(simulate(config, sys.stdout))
    except StepFailed as exc:
        print(f"\n{prog}: FAILED at step {exc.step!r}: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    print("\nsimulate: OK\n" + "\n".join("  " + line for line in summary.lines()))
    return 0
