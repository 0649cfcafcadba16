"""The JSON log lines: one object per line, whatever a caller logs; levels filtered; other libraries' lines alike."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from instore_shared.logging import configure_logging, correlation_scope, get_logger


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_one_json_object_whatever_was_logged() -> None:
    stream = io.StringIO()
    configure_logging("svc", "INFO", json=True, stream=stream)
    try:
        log = get_logger("test")
        log.debug("below.the.level", x=1)
        with correlation_scope("cid-1"):
            log.info("plain", n=2**70, raw=b"\xff", obj=object(), nested={1: "a"})
        log.warning("surrogate", path="/x/\udcff")  # msgspec refuses lone surrogates: the fallback writes it
        log.error("odd.key", detail={(1, 2): "tuple key"})
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            log.exception("failed")
        logging.getLogger("aiokafka").warning("foreign %s", "line")
        lines = _lines(stream)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    events = [line["event"] for line in lines]
    assert events == ["plain", "surrogate", "odd.key", "failed", "foreign line"]
    assert all(line["service"] == "svc" and "timestamp" in line for line in lines)
    assert lines[0]["correlation_id"] == "cid-1" and lines[0]["level"] == "info"
    assert "ZeroDivisionError: boom" in str(lines[3]["exception"])
    assert lines[4]["logger"] == "aiokafka" and lines[4]["level"] == "warning"


def test_a_failing_log_stream_never_fails_the_caller(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    configure_logging("svc", "INFO", json=True, stream=Broken())
    try:
        log = get_logger("test")
        log.info("lost")  # no exception: the request that logs goes on
        log.error("lost too")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert capsys.readouterr().err.count("log line dropped") <= 1


def test_nan_beside_an_unencodable_value_still_gives_json() -> None:
    stream = io.StringIO()
    configure_logging("svc", "INFO", json=True, stream=stream)
    try:
        get_logger("test").warning("odd", path="/\udcff", ratio=float("nan"))
        lines = _lines(stream)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert lines[0]["event"] == "odd" and "log_error" in lines[0]
