"""structlog JSON logging with a correlation id per request or message.

The correlation id lives in a context variable (``structlog.contextvars``), so every log
line emitted while handling one request or one Kafka message carries it without being
passed around. Standard-library loggers (uvicorn, aiokafka, faststream) go through the
same renderer.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

CORRELATION_ID_KEY = "correlation_id"


def configure_logging(service: str, level: str = "INFO", json: bool = True, stream: Any = None) -> None:
    """Configure structlog and the standard library for one process.

    Args:
        service: name written into every line as ``service``.
        level: a standard level name (``DEBUG``, ``INFO``, ...).
        json: one JSON object per line when true, else console rendering.
        stream: where the lines go (default: standard output; a CLI whose output is its
            result passes ``sys.stderr``).
    """
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        # filter_by_level first: a DEBUG call below the level costs a comparison, not a timestamp.
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def new_correlation_id() -> str:
    """A fresh correlation id: a UUID4 in its 36-character text form."""
    return str(uuid.uuid4())


@contextmanager
def correlation_scope(correlation_id: str) -> Iterator[str]:
    """Bind ``correlation_id`` to every log line inside the ``with`` block."""
    with structlog.contextvars.bound_contextvars(**{CORRELATION_ID_KEY: correlation_id}):
        yield correlation_id


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name``."""
    return structlog.stdlib.get_logger(name)
