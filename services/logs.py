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
