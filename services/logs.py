"""JSON logs: one object per line, an event name plus fields, never a secret.

Code logs ``logger.info("event.name", extra={"fields": {...}})`` (or ``log_event``); the formatter writes
``{"ts": ..., "level": ..., "logger": ..., "event": "event.name", ...fields}``; a line of a library's own
(aiokafka, asyncio: free text, no fields) is ``"event": "<library>.log"`` with the text in ``message``, so
``event`` is always a dotted name. The format is described in ``docs/LOGGING.md``. Library code never
configures handlers; ``configure_logging`` is for processes.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

#: Field names whose values are replaced before a line is written.
SECRET_FIELDS = frozenset(
    {
        "appkey",
        "appsecret",
        "secretkey",
        "token",
        "access_token",
        "approval_key",  # KIS's WebSocket key
        "secret",  # a lent WebSocket credential (hubclient.models.WebSocketCredentials)
        "authorization",
        "password",
    }
)
REDACTED = "***"
EVENT_NAME = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)+")


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with structured ``fields``."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


class Sampled:
    """An event that repeats per request while a dependency is away (Redis, Kafka), logged at most once
    per ``every_s`` seconds: the lines held back in between are counted in the next one's ``suppressed``,
    so an outage at hundreds of requests a second writes a line a second, not hundreds."""

    def __init__(
        self,
        logger: logging.Logger,
        event: str,
        level: int = logging.WARNING,
        *,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger, self._event, self._level = logger, event, level
        self._every_s = every_s
        self._clock = clock
        self._next_s = float("-inf")
        self._held = 0

    def log(self, **fields: Any) -> None:
        """Log the event with ``fields`` and ``suppressed``, or count it when one was logged lately."""
        now = self._clock()
        if now < self._next_s:
            self._held += 1
            return
        self._next_s = now + self._every_s
        log_event(self._logger, self._event, self._level, **fields, suppressed=self._held)
        self._held = 0


def redact(value: Any) -> Any:
    """``value`` with every secret field (``SECRET_FIELDS``, at any depth of dicts) replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in SECRET_FIELDS else redact(v) for k, v in value.items()}
    return value


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": message,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(redact(fields))
        elif not EVENT_NAME.fullmatch(message):  # a library's own text
            line["event"] = f"{record.name.partition('.')[0]}.log"
            line["message"] = message
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    """Send JSON lines to stderr; quiet the chatty client libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
