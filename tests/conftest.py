"""Shared fixtures: paths to the reference material beside the repo."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import (
    CtMock,
    Kafka,
    RedisServer,
    start_ct_mock,
    start_kafka,
    start_redis,
)

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
    """A real Kafka broker: ``KAFKA_BOOTSTRAP_SERVERS``, else a local KRaft node for this run."""
    broker = start_kafka()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """A real Redis: ``REDIS_URL``, else a local ``redis-server`` for this run (nothing persisted)."""
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ct_mock() -> Iterator[CtMock]:
    """The seeded commercetools mock server, one for the whole run."""
    mock = start_ct_mock()
    yield mock
    mock.process.stop()
