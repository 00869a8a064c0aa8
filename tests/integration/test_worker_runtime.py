"""The worker runtime on a real Kafka: tasks in, outputs and dead letters out, offsets committed with them."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.settings import KafkaSettings, WorkerSettings, WorkerTopics
from services.worker.runtime import TaskLoop
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import Topics, private_worker_topics, read_committed
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


async def test_two_workers_with_one_instance_id_are_told_to_set_their_own(
    services: Services, unique: str, tmp_path: Path, topics: Topics
) -> None:
    """Two history-collectors with one APIHUB_INSTANCE_ID share a transactional id, so the second fences the
    first: the first exits 2 saying each instance needs its own APIHUB_INSTANCE_ID (not "Kafka is not
    reachable"), without a traceback."""
    bootstrap = services.kafka_bootstrap
    fields = ("history_jobs", "history_progress", "candles", "dlq")
    own = await private_worker_topics(bootstrap, f"x{unique}", *fields)
    env = {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "APIHUB_GROUP_ID": f"fence-{unique}",
        "APIHUB_INSTANCE_ID": "same-host",
        "APIHUB_KAFKA__REQUEST_TOPIC": topics.requests,  # the hub client's: this test's own, so they exist
        "APIHUB_KAFKA__RESPONSE_TOPIC": topics.responses,
        **{f"APIHUB_TOPICS__{field.upper()}": getattr(own, field) for field in fields},
    }
    children = []
    for name in ("first", "second"):
        port = processes.free_port()
        children.append(
            await processes.start(
                name,
                processes.apihub_argv("worker", "history-collector"),
                env={**env, "APIHUB_HEALTH_PORT": str(port)},
                log_path=tmp_path / f"{name}.log",
                ready_url=f"http://127.0.0.1:{port}/readyz",
            )
        )
    first, second = children
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        async with asyncio.timeout(90):
            while first.running:  # malformed tasks on every partition until the first commits one
                for partition in range(3):
                    await producer.send_and_wait(own.history_jobs, b"{not json", partition=partition)
                await asyncio.sleep(1)
    finally:
        await producer.stop()
        await second.stop()
        await first.stop()
    log = (tmp_path / "first.log").read_text()
    assert first.proc.returncode == 2, first.describe_exit()
    assert "error: Kafka fenced this worker" in log and "its own APIHUB_INSTANCE_ID" in log, log[-3000:]
    assert f"'fence-{unique}.same-host'" in log
    # Only the error line is plain text; the rest is the JSON log (where aiokafka's own abandoned futures
    # are logged by asyncio), never a traceback on the terminal.
    assert [line for line in log.splitlines() if not line.startswith("{")] == [
        line for line in log.splitlines() if line.startswith("error: Kafka fenced this worker")
    ]
    assert "not reachable" not in log
