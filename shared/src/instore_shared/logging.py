"""structlog JSON logging with a correlation id per request or message.

The correlation id lives in a context variable (``structlog.contextvars``), so every log
line emitted while handling one request or one Kafka message carries it without being
passed around. Standard-library loggers (uvicorn, aiokafka, faststream) go through the
same renderer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import structlog
from log_rate_limit import DefaultSID, StreamRateLimitFilter
from structlog.typing import FilteringBoundLogger, Processor

from instore_shared.telemetry import add_trace_ids

CORRELATION_ID_KEY = "correlation_id"

KAFKA_CLIENT_LOG_PERIOD_SECONDS = 30.0
"""aiokafka writes a line per failed attempt (thousands a second in an outage): each of its log
statements gets through at most once per this many seconds, with a count of what was skipped."""


_RATE_LIMITED = ("aiokafka", "opentelemetry")
"""Loggers that write a line per failed attempt: aiokafka (a broker outage) and the OpenTelemetry
SDK (an unreachable OTLP endpoint: a line per export retry; spans are dropped, requests never wait)."""


class KafkaClientLogRateLimit(logging.Filter):
    """Handler filter: at most one line per aiokafka or OpenTelemetry SDK log statement (file:line) per ``period`` s,
    the next one saying how many were skipped (``log-rate-limit``). Other loggers pass untouched.
    State changes (broker unreachable, still unreachable, reconnected) are logged once each by
    :mod:`instore_shared.kafka.reconnect`."""

    def __init__(self, period: float = KAFKA_CLIENT_LOG_PERIOD_SECONDS) -> None:
        super().__init__()
        self._limit = StreamRateLimitFilter(period_sec=period, default_stream_id=DefaultSID.FILE_LINE_NO)

    def filter(self, record: logging.LogRecord) -> bool:
        """True when ``record`` is to be written."""
        return not record.name.startswith(_RATE_LIMITED) or self._limit.filter(record)


def configure_logging(service: str, level: str = "INFO", json: bool = True, stream: Any = None) -> None:
    """Configure structlog and the standard library for one process.

    Args:
        service: name written into every line as ``service``.
        level: a standard level name (``DEBUG``, ``INFO``, ...).
        json: one JSON object per line when true, else console rendering.
        stream: where the lines go (default: standard output; a CLI whose output is its
            result passes ``sys.stderr``).
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer = structlog.processors.JSONRenderer(serializer=_json) if json else structlog.dev.ConsoleRenderer()
    out = stream or sys.stdout
    # Our own lines take structlog's native path: the level is checked by the method itself
    # (a DEBUG call below the level costs nothing), rendered once and written to the stream.
    # Through the standard library (LogRecord, findCaller, handler, formatter) a line cost
    # ~40 µs, two per webhook, ~12 % of the gateway's CPU per webhook (py-spy, issue 14).
    structlog.configure(
        processors=[*shared, renderer],
        logger_factory=lambda *_: _SafeWriteLogger(out),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    # Other libraries' standard-library loggers (uvicorn, aiokafka, FastStream, OpenTelemetry) are
    # rendered alike by the same processors.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(KafkaClientLogRateLimit())
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


def get_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger for module ``name`` (the name is not written: lines carry ``service`` and their event)."""
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger


class _SafeWriteLogger(structlog.WriteLogger):
    """structlog's ``WriteLogger`` that never raises: a log stream that fails (a closed pipe, a full disk) must not
    fail the request that logs — the standard library's handlers behave so too (``Handler.handleError``). The
    first failure is reported on standard error, once per process."""

    _reported = False

    def msg(self, message: str) -> None:
        """Write ``message`` and a newline; on an ``OSError``, drop the line."""
        try:
            super().msg(message)
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            if not _SafeWriteLogger._reported:
                _SafeWriteLogger._reported = True
                with contextlib.suppress(Exception):
                    sys.stderr.write(
                        f"--- log line dropped: the log stream failed ({type(exc).__name__}: {exc}); "
                        "later failures are not reported ---\n"
                    )

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _json(event: Any, **_: Any) -> str:
    """JSON of one log line with msgspec (several times json.dumps' speed); what it cannot encode becomes its str().

    A line msgspec refuses (a lone surrogate in a string, a key it cannot write) is written by
    the standard library's encoder instead: a log call never raises over its values."""
    try:
        return msgspec.json.encode(event, enc_hook=str).decode()
    except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
        try:
            return json.dumps(event, default=str, skipkeys=True, allow_nan=False)
        except ValueError:  # NaN or infinity beside what msgspec refused: keep the event, say what was lost
            return json.dumps(
                {
                    "event": str(event.get("event")),
                    "level": event.get("level"),
                    "log_error": "values not encodable as JSON were dropped",
                }
            )
