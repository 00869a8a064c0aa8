"""``TickStore``: the collected trades, read from Kafka into a ``TickBook`` and caught up before each task.

Its own ``AIOKafkaConsumer``, outside any group: every partition of ``market.ticks`` and
``market.ticks.recovered`` is assigned by hand and read from the beginning, ``read_committed`` (a
recovered window committed with its recovery task appears whole or not at all). Nothing is committed;
a restarted worker reads the topics again (their retention is a week).

``catch_up(timeout_s)`` takes the end offsets at the moment it is called and reads until every partition
has reached them, so a task sees every trade and window committed before it started. Having caught up,
it forgets the symbol-days none of whose records was written in the last ``KEPT_MS`` (the topics'
retention, a week): what a restarted worker would no longer read, and without it the book would hold every
trade the process ever read. It gives up after
``timeout_s`` seconds with ``TaskFailed(reason="ticks_behind")`` (``ticks_unavailable`` on a Kafka error)
rather than judge a window on half its trades.

``TickSource`` is what the handler needs of it; unit tests hand the handler a ``TickBook`` in a thin
wrapper instead, without Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import date
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from services.logs import log_event
from services.verification.minutes import MinuteBar, Window
from services.verification.tape import TickBook
from services.worker.errors import TaskFailed, WorkerError

logger = logging.getLogger(__name__)

FETCH_WAIT_MS = 100  # one poll of the catch-up loop waits this long for records at most
#: How long a symbol-day stays in the book after its newest record was written: the retention of
#: ``market.ticks`` and ``market.ticks.recovered`` (``schemas/topics.yaml``), in ms.
KEPT_MS = 7 * 24 * 3600 * 1000


class TickSource(Protocol):
    """Where the handler gets the collected minutes from."""

    async def start(self) -> None:
        """Connect and begin reading."""
        ...

    async def stop(self) -> None:
        """Disconnect."""
        ...

    async def catch_up(self, timeout_s: float) -> int:
        """Read everything committed before now; returns the records read; ``TaskFailed`` on timeout."""
        ...

    def bars(self, symbol: str, day: date, window: Window) -> dict[int, MinuteBar]:
        """The window's minute bars built from the trades read so far."""
        ...


class TickStore:
    """Reads the feed and the recovered windows into ``book``."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        feed_topic: str,
        recovered_topic: str,
        client_id: str = "verification-worker-ticks",
        book: TickBook | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._options = dict(client_options or {})
        self._feed_topic = feed_topic
        self._recovered_topic = recovered_topic
        self._client_id = client_id
        self.book = book or TickBook()
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []

    async def _partitions_of_topics(self) -> list[TopicPartition]:
        """Every partition of both topics, asked of the cluster (a fresh consumer knows no topic yet)."""
        topics = [self._feed_topic, self._recovered_topic]
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap, client_id=f"{self._client_id}-admin", **self._options
        )
        await admin.start()
        try:
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        partitions: list[TopicPartition] = []
        for topic in described:
            if topic["error_code"] or not topic["partitions"]:
                name = topic["topic"]
                raise WorkerError(f"topic {name!r} cannot be read (run `apihub topics ensure`)")
            partitions.extend(TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"])
        return sorted(partitions)

    async def start(self) -> None:
        """Assign every partition of both topics and seek to their beginning."""
        partitions = await self._partitions_of_topics()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_WAIT_MS,
            client_id=self._client_id,
            **self._options,
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer, self._partitions = consumer, partitions
        log_event(
            logger,
            "verification.ticks_assigned",
            topics=[self._feed_topic, self._recovered_topic],
            partitions=len(partitions),
        )

    async def stop(self) -> None:
        """Close the consumer (the book stays readable)."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def catch_up(self, timeout_s: float) -> int:
        """Read up to the end offsets of now (committed records only); returns how many were read."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("start the TickStore before catching up")
        read = 0
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                targets: dict[TopicPartition, int] = await consumer.end_offsets(self._partitions)
                behind = {tp: end for tp, end in targets.items() if end > 0}
                while True:
                    behind = {tp: end for tp, end in behind.items() if await consumer.position(tp) < end}
                    if not behind:
                        self.book.forget(int(time.time() * 1000) - KEPT_MS)
                        return read
                    batch = await consumer.getmany(*behind, timeout_ms=FETCH_WAIT_MS)
                    for tp, records in batch.items():
                        add = self.book.add_feed if tp.topic == self._feed_topic else self.book.add_recovered
                        for record in records:
                            add(record.value, record.timestamp)
                        read += len(records)
        except TimeoutError:
            raise TaskFailed(
                f"the collected ticks were not caught up within {timeout_s:.1f}s ({read} records read)",
                reason="ticks_behind",
            ) from None
        except KafkaError as exc:
            message = f"the collected ticks cannot be read: {exc}"
            raise TaskFailed(message, reason="ticks_unavailable") from exc

    def bars(self, symbol: str, day: date, window: Window) -> dict[int, MinuteBar]:
        """The window's minute bars from the book."""
        return self.book.bars(symbol, day, window)
