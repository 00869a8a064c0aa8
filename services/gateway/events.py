"""Operational events on Kafka: what operators alert on, for any watcher to subscribe to.

The two events operators alert on, ``ratelimit.rejected`` and ``redlock.contention`` (fields in
``docs/LOGGING.md``), are also published to the topic ``apihub.events`` (``APIHUB_KAFKA__EVENTS_TOPIC``),
so an external watcher (the user's "Sentinel") subscribes instead of scraping logs. ``EventForwarder`` is
a logging handler on the ``services.gateway`` loggers: it copies those records, with the same redaction
as the log line, into a bounded queue that a background task produces from, keyed by provider. Logging
never waits for Kafka: when the queue is full an event is dropped and counted
(``apihub_events_dropped_total``), and a failed send is logged once per failure and dropped too: events
are a best-effort copy of the log, which stays the record.

Value: ``{"event", "ts_ms", "instance_id", ...the log line's fields}`` as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import Counter

from services.logs import redact

logger = logging.getLogger(__name__)

FORWARDED = frozenset({"ratelimit.rejected", "redlock.contention"})
QUEUE_LIMIT = 1000
DRAIN_S = 2.0

DROPPED = Counter("apihub_events_dropped", "Operational events not published to the events topic", ["reason"])

#: Produces one event: (topic, key, value).
Send = Callable[[str, bytes, bytes], Awaitable[None]]


def event_value(record: logging.LogRecord, instance_id: str) -> dict[str, Any] | None:
    """The published form of a log record, or None for a record that is not forwarded."""
    name = record.getMessage()
    if name not in FORWARDED:
        return None
    fields = getattr(record, "fields", None)
    clean = redact(fields) if isinstance(fields, dict) else {}
    return {"event": name, "ts_ms": int(record.created * 1000), "instance_id": instance_id, **clean}


class EventForwarder(logging.Handler):
    """Copies the forwarded events from the gateway's loggers to a topic (``start``/``stop``)."""

    def __init__(self, send: Send, *, topic: str, instance_id: str, source: str = "services.gateway") -> None:
        super().__init__(level=logging.INFO)
        self._send = send
        self._topic = topic
        self._instance_id = instance_id
        self._source = logging.getLogger(source)
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Queue a forwarded event; never blocks, never raises."""
        value = event_value(record, self._instance_id)
        if value is None:
            return
        try:
            self._queue.put_nowait(value)
        except asyncio.QueueFull:
            DROPPED.labels("queue_full").inc()

    async def start(self) -> None:
        """Attach to the gateway's loggers and start publishing."""
        self._source.addHandler(self)
        self._task = asyncio.create_task(self._run(), name="events")

    async def stop(self) -> None:
        """Detach, publish what is queued (at most ``DRAIN_S``), then end."""
        self._source.removeHandler(self)
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_S):
                await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            value = await self._queue.get()
            try:
                key = str(value.get("provider") or value.get("event")).encode()
                await self._send(self._topic, key, orjson.dumps(value, default=str))
                self.published += 1
            except Exception as exc:  # the log line is the record; the copy is best effort
                DROPPED.labels("send_failed").inc()
                logger.warning("events.send_failed", extra={"fields": {"error": str(exc)[:300]}})
            finally:
                self._queue.task_done()
