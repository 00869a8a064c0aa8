"""The worker runtime on a real Kafka: tasks in, outputs and dead letters out, offsets committed with them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.settings import KafkaSettings, WorkerSettings, WorkerTopics
from services.worker.runtime import TaskLoop
from tests.conftest import Services
from tests.integration.conftest import read_committed
from tests.unit.test_worker_runtime import EchoHandler


async def read_all(bootstrap: str, topic: str, count: int) -> list[tuple[str, Any]]:
    """The first ``count`` committed records of ``topic`` as (key, parsed JSON value)."""
    return [
        (r.key.decode(), orjson.loads(r.value)) for r in await read_committed(bootstrap, topic, count=count)
    ]


async def test_tasks_and_dead_letters_commit_with_their_offsets(services: Services, unique: str) -> None:
    """Valid tasks' outputs and a malformed record's dead letter are committed in transactions with the
    group's offsets: a read_committed reader sees each record once, and the group is past all three."""
    bootstrap = services.kafka_bootstrap
    tasks_topic, out_topic, dlq = f"w{unique}.tasks", f"w{unique}.out", f"w{unique}.dlq"
    handler = EchoHandler(task_topic=tasks_topic, out_topic=out_topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in (tasks_topic, out_topic, dlq)])
    finally:
        await admin.close()
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=WorkerTopics(dlq=dlq),
        group_id=f"echo-{unique}",
        instance_id=f"i-{unique}",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in (b'{"task_id": "a", "word": "one"}', b"{not json", b'{"task_id": "b", "word": "two"}'):
            await producer.send_and_wait(tasks_topic, value, key=b"k")
    finally:
        await producer.stop()
    loop = TaskLoop(handler, settings)
    stop = asyncio.Event()
    await loop.start()
    runner = asyncio.create_task(loop.run(stop))
    try:
        letters = await read_all(bootstrap, dlq, 1)
        echoes = await read_all(bootstrap, out_topic, 4)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, 10)
        await loop.stop()
    assert [(k, v["reason"]) for k, v in letters] == [("k", "malformed")]
    assert letters[0][1]["offset"] == 1 and letters[0][1]["task"] == "{not json"
    assert sorted(k for k, _ in echoes) == ["a|1", "a|2", "b|1", "b|2"]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"echo-{unique}")
    await consumer.start()
    try:
        committed = await consumer.committed(TopicPartition(tasks_topic, 0))
    finally:
        await consumer.stop()
    assert committed == 3
