"""What ``history.progress`` says is held: ``ProgressBook``, and ``ProgressReader`` that fills it from Kafka.

The book maps ``symbol|timeframe|day`` to that day's ``DayHeld``; a piece whose days are all ``closed`` is
skipped without an upstream call (a weekday another broker found without minute bars is not closed for
this one). The reader is a plain consumer without a group (``read_committed``, every
partition, from the beginning): ``start`` opens it, ``catch_up`` reads up to the end offsets of the moment
(the last stable offsets, so a killed worker's open transaction never makes it wait) into the book. The
worker catches up when it starts and again before each job; its own checkpoints enter the book as they
commit, so a job never asks twice for a day it has just written.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.history.plan import trades_on
from services.history.records import DayHeld
from services.logs import log_event
from services.worker.reader import open_reader

logger = logging.getLogger(__name__)

#: Longest ``catch_up`` (seconds); an incomplete book only costs calls for days it did not learn of.
CATCH_UP_S = 30.0
POLL_MS = 200
#: How long a topic may take to appear in the cluster's metadata (seconds).


class ProgressBook:
    """The symbol-days held, by progress key."""

    def __init__(self) -> None:
        self._held: dict[str, DayHeld] = {}
        self.unreadable = 0

    def __len__(self) -> int:
        return len(self._held)

    def get(self, key: str) -> DayHeld | None:
        """The progress of one symbol-day, or None when nothing is known of it."""
        return self._held.get(key)

    def closed(self, key: str, provider: str) -> bool:
        """True when the symbol-day is held and can no longer change, for a job of ``provider``: a weekday
        whose minute bars another broker answered without rows is not (a day older than that broker keeps
        looks like a holiday there), so it is asked again. Daily bars reach back years at both brokers."""
        held = self._held.get(key)
        if held is None or not held.closed:
            return False
        foreign_empty = held.provider != provider and held.candles == 0 and held.timeframe == "1m"
        return not (foreign_empty and trades_on(held.day))

    def note(self, held: DayHeld) -> None:
        """Remember a symbol-day (after its record was committed)."""
        self._held[held.key] = held

    def read(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one ``history.progress`` record (``kind: "day"`` or a tombstone; job records are skipped)."""
        if key is None:
            return
        name = key.decode(errors="replace")
        if value is None:
            self._held.pop(name, None)
            return
        try:
            data = orjson.loads(value)
            if not isinstance(data, dict) or data.get("kind") != "day":
                return
            if data.get("timeframe") not in ("1m", "1d"):
                raise ValueError("unknown timeframe")
            held = DayHeld(
                str(data["symbol"]),
                data["timeframe"],
                date.fromisoformat(str(data["day"])),
                int(data["candles"]),
                bool(data["closed"]),
                str(data["provider"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.unreadable += 1
            return
        if held.key == name:
            self._held[name] = held
        else:
            self.unreadable += 1


class ProgressSource(Protocol):
    """Where the worker's book comes from (Kafka in production; a replay of commits in unit tests)."""

    async def start(self) -> None:
        """Open it."""
        ...

    async def catch_up(self, book: ProgressBook) -> int:
        """Read what was committed since the last call into ``book``; returns the records read."""
        ...

    async def stop(self) -> None:
        """Close it."""
        ...


class ProgressReader:
    """Reads ``topic`` (every partition, ``read_committed``, no consumer group) into a ``ProgressBook``."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        catch_up_s: float = CATCH_UP_S,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._options = client_options
        self._topic = topic
        self._catch_up_s = catch_up_s
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []

    async def start(self) -> None:
        """Connect with every partition of the topic, from its beginning."""
        consumer = await open_reader(
            self._bootstrap,
            [self._topic],
            client_id="history-collector-progress",
            client_options=self._options,
        )
        self._partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*self._partitions)
        self._consumer = consumer

    async def stop(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def catch_up(self, book: ProgressBook) -> int:
        """Read up to the current end offsets into ``book`` (at most ``catch_up_s``); returns records read."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("start the ProgressReader before catching up")
        ends = await consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + self._catch_up_s
        read = 0
        while True:
            behind = [tp for tp in self._partitions if await consumer.position(tp) < ends[tp]]
            if not behind:
                return read
            if time.monotonic() > deadline:
                log_event(
                    logger,
                    "history.progress_incomplete",
                    logging.WARNING,
                    topic=self._topic,
                    read=read,
                    partitions_behind=len(behind),
                )
                return read
            batch = await consumer.getmany(*behind, timeout_ms=POLL_MS)
            for records in batch.values():
                for record in records:
                    book.read(record.key, record.value)
                    read += 1
