"""recovery-worker on real Kafka, the sandbox and a gateway: ``BackfillManager`` run by the real ``TaskLoop``
on this test's own topics repairs a window with the sandbox market's own trades and asks for a re-check."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hubclient import HubClient
from hubclient.market import KST
from services.recovery.worker import NAME, build
from services.sandbox.feed import sandbox_market
from services.sandbox.settings import SandboxSettings
from services.settings import KafkaSettings, WorkerSettings, WorkerTopics
from services.worker.runtime import TaskLoop
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics, private_worker_topics, read_committed

SYMBOL = "005930"
START, END = "10:00", "10:05"


@pytest.fixture
async def worker_topics(services: Services, unique: str) -> WorkerTopics:
    """The recovery worker's task, output and dead-letter topics, private to this test."""
    fields = ("recovery_tasks", "ticks_recovered", "verification_tasks", "dlq")
    return await private_worker_topics(services.kafka_bootstrap, f"r{unique}", *fields)


async def sandbox_now(sandbox_url: str) -> datetime:
    """The sandbox's simulated now (KST)."""
    async with aiohttp.ClientSession() as session, session.get(f"{sandbox_url}/_sandbox/clock") as resp:
        body: dict[str, Any] = await resp.json()
    return datetime.fromisoformat(body["now"]).astimezone(KST)


def window_day(now: datetime) -> date:
    """The sandbox's latest trading day whose START-END window has fully traded by ``now``."""
    market = sandbox_market(SandboxSettings())
    day = market.latest_trading_day(now.date())
    assert day is not None
    if day == now.date() and now.time() < time(10, 6):
        day = market.previous_trading_day(day)
        assert day is not None
    return day


async def end_offset(services: Services, topic: str) -> int:
    """Records ever written to partition 0 of ``topic`` (transaction markers included)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=services.kafka_bootstrap)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        return int((await consumer.end_offsets([partition]))[partition])
    finally:
        await consumer.stop()


async def test_recovery_task_repairs_the_window_and_asks_for_a_recheck(
    services: Services,
    topics: Topics,
    gateway: GatewayFactory,
    sandbox_url: str,
    worker_topics: WorkerTopics,
    unique: str,
) -> None:
    """A recovery task processed twice by the real TaskLoop yields, both times, one window record holding
    exactly the sandbox market's trades of the window and the next round's verification task."""
    day = window_day(await sandbox_now(sandbox_url))
    task_id = f"recover|{SYMBOL}|{day}|{START}-{END}|r1"
    task = {
        "task_id": task_id,
        "symbol": SYMBOL,
        "day": day.isoformat(),
        "start": START,
        "end": END,
        "round": 1,
        "reason": "gap",
    }
    settings = WorkerSettings(
        kafka=KafkaSettings(
            bootstrap_servers=services.kafka_bootstrap,
            request_topic=topics.requests,
            response_topic=topics.responses,
        ),
        topics=worker_topics,
        group_id=f"recovery-{unique}",
        instance_id=f"rw-{unique}",
        task_deadline_s=45,
    )
    hub = HubClient.connect(
        services.kafka_bootstrap, caller=NAME, request_topic=topics.requests, reply_topic=topics.responses
    )
    async with gateway(), hub:
        loop = TaskLoop(build(settings, hub), settings)
        await loop.start()
        stop = asyncio.Event()
        running = asyncio.create_task(loop.run(stop))
        try:
            producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
            await producer.start()
            try:
                for _ in range(2):  # the same task twice: a redelivery
                    await producer.send_and_wait(worker_topics.recovery_tasks, orjson.dumps(task), key=b"k")
            finally:
                await producer.stop()
            windows = await read_committed(services.kafka_bootstrap, worker_topics.ticks_recovered, count=2)
            checks = await read_committed(services.kafka_bootstrap, worker_topics.verification_tasks, count=2)
        finally:
            stop.set()
            await asyncio.wait_for(running, 15)
            await loop.stop()

    assert [r.key for r in windows] == [f"{SYMBOL}|{day}|{START}-{END}".encode()] * 2
    assert windows[0].value == windows[1].value
    window = orjson.loads(windows[0].value)
    first = datetime.combine(day, time(10, 0), KST)
    last = datetime.combine(day, time(10, 5), KST)
    truth = [t for t in sandbox_market(SandboxSettings()).ticks(SYMBOL, day) if first <= t.at(day) < last]
    assert truth
    numbers = [sum(1 for u in truth[:i] if u.second == t.second) for i, t in enumerate(truth)]
    assert window == {
        "kind": "window",
        "symbol": SYMBOL,
        "day": day.isoformat(),
        "start": START,
        "end": END,
        "provider": "KIWOOM",
        "tr_id": "ka10079",
        "ticks": [
            {"time_kst": t.at(day).isoformat(), "n": n, "price": t.price, "volume": t.volume}
            for t, n in zip(truth, numbers, strict=True)
        ],
        "task_id": task_id,
    }
    verify_id = f"verify|{SYMBOL}|{day}|{START}-{END}|r2"
    assert [r.key for r in checks] == [verify_id.encode()] * 2
    assert checks[0].value == checks[1].value
    assert orjson.loads(checks[0].value) == {
        "task_id": verify_id,
        "symbol": SYMBOL,
        "day": day.isoformat(),
        "start": START,
        "end": END,
        "round": 2,
    }
    assert await end_offset(services, worker_topics.dlq) == 0
