"""JSON log lines: an event name plus fields, secrets masked at any depth."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.logs import JsonFormatter, Sampled, log_event


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


REPO = Path(__file__).resolve().parents[2]
#: An event logged in ``services``: ``log_event(logger, "name"`` or ``Sampled(logger, "name"``,
#: ``self._event("name"`` (a module's own wrapper of it) or ``logger.warning("name", extra=`` (an
#: f-string's ``{...}`` parts stand for any word).
EMITTED = re.compile(
    r"(?:(?:log_event|Sampled)\(\s*\w+,\s*|\b_event\(\s*"
    r"|\blog(?:ger)?\.(?:debug|info|warning|error|exception)\(\s*)"
    r"f?\"([a-z0-9_.{}]+)\""
)


def emitted_events() -> set[str]:
    """Every event name the services log (``services/logs.py`` itself only describes the form)."""
    names: set[str] = set()
    for path in sorted((REPO / "services").rglob("*.py")):
        if path != REPO / "services" / "logs.py":
            names.update(EMITTED.findall(path.read_text()))
    return names


def event_form(name: str) -> re.Pattern[str]:
    """The names an emitted event stands for: itself, or with any word for each ``{...}`` of an f-string."""
    return re.compile(re.sub(r"\\\{\w+\\\}", "[a-z0-9_]+", re.escape(name)))


def documented_events() -> set[str]:
    """The event names of docs/LOGGING.md's events table (a row may name several, ``a`` / ``b``)."""
    section = (REPO / "docs" / "LOGGING.md").read_text().split("\n## Events\n", 1)[1]
    first_cells = re.findall(r"^\| ([^|]+) \|", section, re.MULTILINE)
    return {name for cell in first_cells for name in re.findall(r"`([a-z0-9_]+(?:\.[a-z0-9_]+)+)`", cell)}


def test_the_log_doc_lists_every_event_the_services_log() -> None:
    """docs/LOGGING.md's events table names each event the code logs and no other: an event added or
    renamed fails here until the table follows (``worker.task_{outcome}`` stands for its outcomes)."""
    emitted = {name: event_form(name) for name in emitted_events()}
    assert {"gateway.started", "events.send_failed", "sandbox.started"} <= emitted.keys()
    documented = documented_events()
    undocumented = [name for name, form in emitted.items() if not any(form.fullmatch(d) for d in documented)]
    never_logged = [d for d in documented if not any(form.fullmatch(d) for form in emitted.values())]
    assert (sorted(undocumented), sorted(never_logged)) == ([], [])


def test_a_sampled_event_is_logged_once_a_second_with_the_lines_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Repeated within ``every_s`` an event is counted, not written; the next line carries the count."""
    now = [100.0]
    event = Sampled(logging.getLogger("test.sampled"), "redis.lost", every_s=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.sampled"):
        for step in range(25):  # 2.5 s at ten a second
            now[0] = 100.0 + step / 10
            event.log(request_id=str(step))
    lines = [(r.fields["request_id"], r.fields["suppressed"]) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [("0", 0), ("10", 9), ("20", 9)]
