"""JSON log lines: an event name plus fields, secrets masked at any depth."""

from __future__ import annotations

import logging
from typing import Any

import orjson

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
