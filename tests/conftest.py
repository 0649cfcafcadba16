"""Shared fixtures: paths to the reference material beside the repo."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.containers import CHOICES, kafka_for_run, redis_for_run
from tests.support.processes import CtMock, Kafka, RedisServer, start_ct_mock

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = (REPO_ROOT / ".." / "shared").resolve()
EXAMPLES = REFERENCE / "commercetools" / "examples"


def load_example(name: str) -> dict[str, Any]:
    """An official commercetools example resource from ``../shared/commercetools/examples``.

    Fails (never skips) when the reference folder is absent.
    """
    path = EXAMPLES / name
    if not path.is_file():
        pytest.fail(f"reference example {path} is missing: ../shared must sit beside the repository")
    return json.loads(path.read_text())


# -- real parts (started only by the tests that ask for them) -------------------------
@pytest.fixture(scope="session")
def kafka() -> Iterator[Kafka]:
    """A real Kafka broker: ``KAFKA_BOOTSTRAP_SERVERS``, else a container (testcontainers, when a
    Docker API answers: ``tests/support/containers.py``), else a local KRaft node for this run."""
    broker = kafka_for_run()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """A real Redis: ``REDIS_URL``, else a container (as ``kafka``), else a local ``redis-server``
    for this run (nothing persisted)."""
    server = redis_for_run()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ct_mock() -> Iterator[CtMock]:
    """The seeded commercetools mock server, one for the whole run."""
    mock = start_ct_mock()
    yield mock
    mock.process.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where this run's Kafka and Redis came from (external, container or process)."""
    for part, choice in sorted(CHOICES.items()):
        terminalreporter.write_line(f"{part}: {choice.source.value} ({choice.reason})")
