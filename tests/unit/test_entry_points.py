"""Every entry point answers ``--help`` and refuses unknown arguments — without settings, servers or Kafka.

Each runs as a subprocess with next to no environment (PATH only) plus settings that would make a
start fail (a SASL protocol without credentials, an illegal topic prefix): ``--help`` must not
read them. A short timeout stands for "starts nothing" (a server would still be running).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT

BIN = Path(sys.executable).parent
TIMEOUT = 30  # seconds; --help takes ~1 s (the gateway's imports), a started server never returns
POISON = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_TOPIC_PREFIX": "not a prefix", "PATH": "/usr/bin:/bin"}

SERVICES = [
    ("instore-gateway", "instore_gateway", "GATEWAY_HTTP_PORT"),
    ("instore-cart-mapping", "instore_cart_mapping", "CART_MAPPING_CONSUMER_GROUP"),
    ("instore-order-finalization", "instore_order_finalization", "ORDER_FINALIZATION_CONSUMER_GROUP"),
    ("instore-refund", "instore_refund", "REFUND_CONSUMER_GROUP"),
    ("instore-payment-extension", "instore_payment_extension", "PAYMENT_EXTENSION_PROVIDER"),
    ("instore-devfakes", "instore_devfakes", "DEVFAKES_HTTP_PORT"),
]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=POISON, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT)


def _ways(script: str, module: str) -> list[list[str]]:
    """The console script (as installed by the package) and ``python -m``."""
    return [[str(BIN / script)], [sys.executable, "-m", module]]


@pytest.mark.parametrize(("script", "module", "variable"), SERVICES, ids=[s[0] for s in SERVICES])
def test_services_answer_help_listing_their_settings(script: str, module: str, variable: str) -> None:
    for way in _ways(script, module):
        result = _run(*way, "--help")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: {script}")
        assert variable in result.stdout and "invalid settings" not in result.stderr
        if module != "instore_devfakes":
            assert "KAFKA_BOOTSTRAP_SERVERS" in result.stdout and "KAFKA_TOPIC_PREFIX" in result.stdout
            assert "docs/configuration.md" in result.stdout


@pytest.mark.parametrize(("script", "module", "variable"), SERVICES, ids=[s[0] for s in SERVICES])
def test_services_refuse_unknown_arguments_with_their_usage(script: str, module: str, variable: str) -> None:
    for way in _ways(script, module):
        result = _run(*way, "--no-such-option")
        assert result.returncode == 2
        assert f"usage: {script}" in result.stderr and "unrecognized arguments: --no-such-option" in result.stderr


def test_a_service_reads_its_settings_only_to_start() -> None:
    """The same poisoned environment without --help: the settings are read and refused (exit 2), no traceback."""
    result = _run(str(BIN / "instore-cart-mapping"))
    assert result.returncode == 2
    assert "KAFKA_TOPIC_PREFIX" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [[], ["replay-dlq"], ["events"], ["simulate"]])
def test_instore_integration_help(command: list[str]) -> None:
    result = _run(str(BIN / "instore-integration"), *command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: instore-integration {command[0] if command else ''}".rstrip())
    if command in ([], ["replay-dlq"], ["events"]):
        assert "KAFKA_TOPIC_PREFIX" in result.stdout and "KAFKA_SASL_USERNAME" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nonsense"], "invalid choice: 'nonsense'"),
        ([], "the following arguments are required"),
        (["events"], "the following arguments are required: --topic"),
        (["events", "--topic", "instore.no-such.v1"], "no topic 'instore.no-such.v1' in the registry"),
        (["replay-dlq", "--topic", "instore.webhooks.v1"], "--topic must be a dead-letter topic"),
        (["replay-dlq", "--topic", "instore.webhooks.v1.dlq", "--max", "-1"], "--max must be >= 1"),
        (["replay-dlq", "--topic", "instore.webhooks.v1.dlq", "--max", "0"], "--max must be >= 1"),
        (["replay-dlq", "--topic", "instore.webhooks.v1.dlq", "--idle-timeout", "nan"], "--idle-timeout must be"),
        (["events", "--topic", "instore.webhooks.v1", "--idle-timeout", "inf"], "--idle-timeout must be"),
        (["events", "--topic", "instore.webhooks.v1", "--idle-timeout", "0"], "--idle-timeout must be"),
        (["events", "--topic", "instore.webhooks.v1", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_instore_integration_refuses_bad_arguments_with_usage(argv: list[str], message: str) -> None:
    result = _run(str(BIN / "instore-integration"), *argv)
    assert result.returncode == 2
    assert "usage: instore-integration" in result.stderr and message in result.stderr, result.stderr


def test_instore_integration_refuses_bad_settings_naming_the_variable() -> None:
    result = _run(str(BIN / "instore-integration"), "events", "--topic", "instore.webhooks.v1")
    assert result.returncode == 2
    assert "KAFKA_TOPIC_PREFIX" in result.stderr and "Traceback" not in result.stderr


WITHOUT_DEVFAKES = (
    "import sys; sys.modules['instore_devfakes'] = None  # as in a service image: the package is not installed\n"
    "from instore_shared.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def test_simulate_without_the_devfakes_package_says_so() -> None:
    result = _run(sys.executable, "-c", WITHOUT_DEVFAKES, "simulate", "--gateway", "http://gateway:8080")
    assert result.returncode == 2
    assert "needs the instore-devfakes package, which is not installed here" in result.stderr
    assert "Traceback" not in result.stderr
    helped = _run(sys.executable, "-c", WITHOUT_DEVFAKES, "simulate", "--help")
    assert helped.returncode == 0 and "not installed here" in " ".join(helped.stdout.split())
    listed = _run(sys.executable, "-c", WITHOUT_DEVFAKES, "--help")
    assert listed.returncode == 0 and "not installed here" in " ".join(listed.stdout.split())


def test_simulate_with_the_devfakes_package_checks_its_environment() -> None:
    result = _run(str(BIN / "instore-integration"), "simulate")
    assert result.returncode == 2
    assert "INSTORE_CALLBACK_API_KEY" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [["events", "--topic", "instore.webhooks.v1"], ["replay-dlq", "--topic", "instore.webhooks.v1.dlq", "--dry-run"]],
)
def test_instore_integration_exits_1_when_kafka_cannot_be_reached(command: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # nothing listens on port 1
    result = subprocess.run(
        [str(BIN / "instore-integration"), *command], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 1
    assert "Kafka failed: KafkaConnectionError: Unable to bootstrap" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    # said once, by the command: no reconnect warning or aiokafka connection error before it
    assert not [line for line in result.stderr.splitlines() if line.startswith("{")], result.stderr
