"""``open_reader``: a consumer outside any group holding every partition of some topics, and
``read_to_end``: what they hold now.

Readers of the workers' own topics (history's progress, the ``apihub history collect`` follower, the demo
and tests) read ``read_committed``, so a transaction a killed worker left open is never seen. Without a
group the consumer is given all partitions of the topics it subscribes to as soon as their metadata
arrives; a topic still unknown after ``wait_s`` seconds is an error naming it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

TOPIC_WAIT_S = 10.0


async def open_reader(
    bootstrap_servers: str,
    topics: Sequence[str],
    *,
    client_id: str,
    wait_s: float = TOPIC_WAIT_S,
    client_options: dict[str, Any] | None = None,
) -> AIOKafkaConsumer:
    """A started consumer without a group (``read_committed``) holding every partition of ``topics``.

    Without a group the consumer is given all partitions of the topics it subscribes to as soon as their
    metadata arrives; a topic still unknown after ``wait_s`` seconds is an error naming it.
    """
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        client_id=client_id,
        **(client_options or {}),
    )
    try:
        await consumer.start()
        deadline = time.monotonic() + wait_s
        while missing := sorted(set(topics) - {tp.topic for tp in consumer.assignment()}):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {missing} do not exist (create them: apihub topics ensure)")
            await asyncio.sleep(0.1)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def read_to_end(consumer: AIOKafkaConsumer, timeout_s: float) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of the consumer's partitions from the beginning up to their end offsets taken now;
    ``TimeoutError`` after ``timeout_s`` seconds."""
    partitions = sorted(consumer.assignment())
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(partitions)
    records: list[ConsumerRecord[bytes, bytes]] = []
    async with asyncio.timeout(timeout_s):
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    return records
