"""JSON log lines: an event name plus fields, secrets masked at any depth."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from services.logs import JsonFormatter, log_event


def render(event: str, **fields: Any) -> dict[str, object]:
    """Format one record the way the services do and parse it back."""
    captured: list[logging.LogRecord] = []
    logger = logging.getLogger("test.logs")
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign,assignment]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_event(logger, event, **fields)
    finally:
        logger.removeHandler(handler)
    (record,) = captured
    parsed: dict[str, object] = orjson.loads(JsonFormatter().format(record))
    return parsed


def test_event_and_fields() -> None:
    """The line carries ts, level, logger, the event name and every field."""
    line = render("request.answered", request_id="r1", status="ok", total_ms=1.5)
    assert line["event"] == "request.answered" and line["level"] == "info" and line["logger"] == "test.logs"
    assert (line["request_id"], line["status"], line["total_ms"]) == ("r1", "ok", 1.5)
    assert str(line["ts"]).endswith("Z")


def test_secrets_are_masked() -> None:
    """Secret-named fields are masked, also inside nested objects."""
    line = render("token.debug", appkey="A" * 36, nested={"Authorization": "Bearer x", "ok": 1})
    text = orjson.dumps(line).decode()
    assert "A" * 36 not in text and "Bearer x" not in text
    assert line["appkey"] == "***" and line["nested"] == {"Authorization": "***", "ok": 1}


@pytest.mark.parametrize(
    ("logger", "message", "event"),
    [
        (
            "aiokafka.consumer.group_coordinator",
            "Heartbeat failed for group x: generation id is not current",
            "aiokafka.log",
        ),
        ("asyncio", "Future exception was never retrieved\nfuture: <Future ...>", "asyncio.log"),
        ("services.gateway.app", "gateway.started", "gateway.started"),  # a dotted name stays the event
    ],
)
def test_a_librarys_own_line_keeps_event_a_dotted_name(logger: str, message: str, event: str) -> None:
    """aiokafka's and asyncio's free text (no fields) goes to ``message`` under ``<library>.log``, so
    ``event`` is always a name to filter on; the line stays one JSON object, even for a text of two lines."""
    record = logging.LogRecord(logger, logging.WARNING, __file__, 1, message, None, None)
    text = JsonFormatter().format(record)
    line = orjson.loads(text)
    assert "\n" not in text and line["event"] == event and line["logger"] == logger
    assert line.get("message") == (None if event == message else message)
