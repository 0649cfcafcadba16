"""``instore-integration``: the operator commands, in every service image (instore-shared installs it).

    instore-integration replay-dlq --topic instore.webhooks.v1.dlq [--dry-run] [--max N]
    instore-integration events --topic commerce.payments.completed.v1 [--max N]
    instore-integration simulate [--gateway URL] ...        (needs the instore-devfakes package)

``--topic`` takes a topic's *registry* name (:mod:`instore_shared.kafka.topics`); ``KAFKA_TOPIC_PREFIX``
is put in front of it, so the same command works in every environment. Kafka connection and security
come from the environment, as for the services (``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_SECURITY_PROTOCOL``,
``KAFKA_SASL_*``, ``KAFKA_SSL_*``). Results go to stdout (one line per message, never a payload for
``replay-dlq``); progress — counts and rate — and errors go to stderr.

Exit codes: 0 done; 1 Kafka failed, the topic is missing or a simulated step failed; 2 bad arguments
or settings, or ``simulate`` without instore-devfakes; 130 interrupted (Ctrl-C), after the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, TextIO

from instore_shared.kafka.topics import ALL_TOPICS, DLQ_SUFFIX

if TYPE_CHECKING:
    from instore_shared.kafka.dlq import ReplayEntry
    from instore_shared.settings import BaseServiceSettings

PROG = "instore-integration"

KAFKA_ENV_HELP = (
    "Kafka from the environment: KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, "
    "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE, "
    "KAFKA_CLIENT_ID_PREFIX; topic names under KAFKA_TOPIC_PREFIX (docs/configuration.md)."
)

DEFAULT_REPLAY_GROUP = "dlq-replay"
"""The replay's consumer group (its offsets record what was replayed), under ``KAFKA_TOPIC_PREFIX``."""


class Progress:
    """Counts and rate of a long run on ``stream`` (stderr): at most one line per ``interval`` seconds while
    messages come, and a final line from :meth:`finish`.

    Line shape: ``<prog>: <n> <unit> in <s> s (<rate>/s)``.
    """

    def __init__(
        self,
        prog: str,
        unit: str,
        stream: TextIO | None = None,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prog, self.unit, self.interval, self.clock = prog, unit, interval, clock
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.started = clock()
        self._last_report = self.started

    def add(self, n: int = 1) -> None:
        """Count ``n`` more; report when the last report is ``interval`` seconds old."""
        self.count += n
        now = self.clock()
        if now - self._last_report >= self.interval:
            self._last_report = now
            self._report(now, "")

    def finish(self, note: str = "") -> None:
        """Report the total (with ``note`` appended, e.g. ``interrupted``)."""
        self._report(self.clock(), note)

    def _report(self, now: float, note: str) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        tail = f", {note}" if note else ""
        print(f"{self.prog}: {self.count} {self.unit} in {elapsed:.1f} s ({rate:.0f}/s){tail}", file=self.stream, flush=True)


def _kafka_settings(prog: str) -> BaseServiceSettings:
    """The Kafka settings from the environment (exit 2 naming a bad variable); logs to stderr at WARNING."""
    from instore_shared.logging import configure_logging
    from instore_shared.settings import BaseServiceSettings, load_settings

    settings = load_settings(BaseServiceSettings, prog)
    # ERROR: an unreachable broker is said once, by the command's own message (exit 1), not also by the
    # reconnect warning and aiokafka's connection errors before it
    configure_logging(prog.replace(" ", "-"), "ERROR", json=settings.log_json, stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return settings


def _topic(parser: argparse.ArgumentParser, settings: BaseServiceSettings, name: str, dlq_only: bool = False) -> str:
    """The deployment's name of topic ``name`` — a registry name, or the same with this deployment's
    ``KAFKA_TOPIC_PREFIX`` (as alerts and metrics show it); a usage error (exit 2) otherwise, or when
    ``dlq_only`` and it is not a dead-letter topic."""
    names = settings.topic_names()
    try:
        topic = names.registry_topic(name)
    except LookupError as exc:
        parser.error(str(exc))
    if dlq_only and not topic.name.endswith(DLQ_SUFFIX):
        dead = ", ".join(t.name for t in ALL_TOPICS if t.name.endswith(DLQ_SUFFIX))
        parser.error(f"--topic must be a dead-letter topic ({dead})")
    return names.name(topic)


def _check_topic(parser: argparse.ArgumentParser, name: str, dlq_only: bool = False) -> None:
    """Before any setting is read: a usage error (exit 2) unless ``name`` ends with a registry name (it may
    carry a prefix, checked by :func:`_topic` once the settings are read) — a dead-letter topic's with
    ``dlq_only``."""
    if dlq_only and not name.endswith(DLQ_SUFFIX):
        dead = ", ".join(t.name for t in ALL_TOPICS if t.name.endswith(DLQ_SUFFIX))
        parser.error(f"--topic must be a dead-letter topic ({dead})")
    if not any(name.endswith(t.name) for t in ALL_TOPICS):
        parser.error(f"no topic {name!r} in the registry; one of: {', '.join(t.name for t in ALL_TOPICS)}")


def _check_idle_timeout(parser: argparse.ArgumentParser, seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds > 0):
        parser.error("--idle-timeout must be a number of seconds > 0")


def _describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, without the type twice (aiokafka's messages start with it)."""
    text, kind = str(exc), type(exc).__name__
    return text if text.startswith(kind) else f"{kind}: {text}"


# -- replay-dlq --------------------------------------------------------------------------
def _replay_dlq(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from instore_shared.kafka.dlq import replay

    prog = f"{PROG} replay-dlq"
    if args.max_messages is not None and args.max_messages < 1:
        parser.error("--max must be >= 1")
    _check_idle_timeout(parser, args.idle_timeout)
    _check_topic(parser, args.topic, dlq_only=True)
    settings = _kafka_settings(prog)
    topic = _topic(parser, settings, args.topic, dlq_only=True)
    group = args.group or settings.topic_names().group(DEFAULT_REPLAY_GROUP)
    print(f"{prog}: {topic} in group {group}{' (dry run)' if args.dry_run else ''}", file=sys.stderr, flush=True)
    progress = Progress(prog, "dead letters")

    def on_entry(entry: ReplayEntry) -> None:
        print(entry.line(), flush=True)
        progress.add()

    try:
        report = asyncio.run(
            replay(
                settings.kafka_bootstrap_servers,
                topic,
                client_options=settings.kafka_client_options(),
                max_messages=args.max_messages,
                dry_run=args.dry_run,
                idle_timeout=args.idle_timeout,
                group_id=group,
                client_id=f"{settings.kafka_client_id_prefix}-dlq-replay",
                on_entry=on_entry,
            )
        )
    except KeyboardInterrupt:
        progress.finish("interrupted (what was committed stays committed; run again to go on)")
        return 130
    except (LookupError, TimeoutError) as exc:
        progress.finish("failed")
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        progress.finish("failed")
        print(f"{prog}: Kafka failed: {_describe(exc)}", file=sys.stderr)
        return 1
    progress.finish()
    print(f"summary {topic}: {report.summary()}", flush=True)
    return 0


# -- events ------------------------------------------------------------------------------
def _events(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from instore_shared.kafka.events import show

    prog = f"{PROG} events"
    _check_idle_timeout(parser, args.idle_timeout)
    if args.max_messages is not None and args.max_messages < 1:
        parser.error("--max must be >= 1")
    _check_topic(parser, args.topic)
    settings = _kafka_settings(prog)
    topic = _topic(parser, settings, args.topic)
    progress = Progress(prog, "messages")
    try:
        asyncio.run(
            show(
                settings.kafka_bootstrap_servers,
                topic,
                args.idle_timeout,
                settings.kafka_client_options(),
                on_message=progress.add,
                max_messages=args.max_messages,
            )
        )
    except KeyboardInterrupt:
        progress.finish(f"on {topic}, interrupted")
        return 130
    except LookupError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"{prog}: Kafka failed: {_describe(exc)}", file=sys.stderr)
        return 1
    progress.finish(f"on {topic}")
    return 0


# -- simulate ----------------------------------------------------------------------------
NO_DEVFAKES = (
    f"{PROG} simulate: needs the instore-devfakes package, which is not installed here (it is in the "
    "development workspace: `make simulate`, or `uv sync --package instore-devfakes`; service images do not "
    "carry it)."
)


def _devfakes_commands() -> ModuleType | None:
    """:mod:`instore_devfakes.commands`, or None when the instore-devfakes package is not installed."""
    try:
        from instore_devfakes import commands
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "instore_devfakes":
            return None
        raise
    return commands


def _add_simulate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devfakes = _devfakes_commands()
    if devfakes is None:
        cmd = commands.add_parser(
            "simulate",
            help="play InStore against a running stack (needs instore-devfakes: not installed here)",
            description=NO_DEVFAKES,
        )
        # whatever options follow are simulate's, unknown here: main() lets them through to the message
        cmd.set_defaults(run=lambda _args, _parser: _no_devfakes(), parser=cmd, takes_any=True)
        return
    cmd = commands.add_parser(
        "simulate",
        help="play InStore against a running stack: a sale, its Order, a return, its refund",
        description=devfakes.SIMULATE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    devfakes.add_simulate_arguments(cmd)
    cmd.set_defaults(run=lambda args, _parser: devfakes.run_simulate(args, f"{PROG} simulate"), parser=cmd)


def _no_devfakes() -> int:
    print(NO_DEVFAKES, file=sys.stderr)
    return 2


# -- the command line --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``instore-integration`` argument parser (sub-commands ``replay-dlq``, ``events``, ``simulate``)."""
    registry = ", ".join(t.name for t in ALL_TOPICS)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operator commands of the InStore integration. " + KAFKA_ENV_HELP,
        epilog="Exit codes: 0 done; 1 Kafka failed, the topic is missing or a simulated step failed; 2 bad arguments "
        "or settings; 130 interrupted. `instore-integration <command> --help` for each command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{replay-dlq,events,simulate}")

    replay = commands.add_parser(
        "replay-dlq",
        help="re-publish dead letters to their source topic",
        description="Re-publish the dead letters of a dead-letter topic to their source topic (bytes, key and "
        "headers as received; dlq-* headers removed, dlq-replay-count added), committing each only after the "
        "source topic acknowledged it: at-least-once, the consumers are idempotent. One line per dead letter on "
        "stdout (offset, source topic, reason; never the payload), a summary line last; counts and rate on "
        "stderr. " + KAFKA_ENV_HELP,
    )
    replay.add_argument(
        "--topic", required=True, help="registry name of the dead-letter topic, e.g. instore.webhooks.v1.dlq (prefix added)"
    )
    replay.add_argument("--max", type=int, default=None, dest="max_messages", help="stop after N dead letters")
    replay.add_argument("--dry-run", action="store_true", help="list only: publish nothing, commit nothing")
    replay.add_argument(
        "--idle-timeout", type=float, default=5.0, help="stop when no dead letter came for this many seconds (default 5)"
    )
    replay.add_argument(
        "--group",
        default=None,
        help=f"consumer group recording progress (default: KAFKA_TOPIC_PREFIX + {DEFAULT_REPLAY_GROUP}; given: as is)",
    )
    replay.set_defaults(run=_replay_dlq, parser=replay)

    events = commands.add_parser(
        "events",
        help="print a topic's messages",
        description="Print a topic's messages, one line each (p<partition> @<offset> key=<key> <value>), from the "
        "beginning of every partition, without a consumer group (nothing committed); stops when the topic was "
        f"quiet for --idle-timeout seconds. Counts and rate on stderr. Topics: {registry}. " + KAFKA_ENV_HELP,
    )
    events.add_argument("--topic", required=True, help="registry name, e.g. commerce.payments.completed.v1 (prefix added)")
    events.add_argument("--idle-timeout", type=float, default=3.0, help="stop after this many quiet seconds (default 3)")
    events.add_argument("--max", type=int, default=None, dest="max_messages", help="stop after N messages")
    events.set_defaults(run=_events, parser=events)

    _add_simulate(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (module doc). ``--help`` reads no setting and connects nowhere."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_any", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    run: Callable[[argparse.Namespace, argparse.ArgumentParser], int] = args.run
    return run(args, args.parser)


if __name__ == "__main__":
    raise SystemExit(main())
