"""recovery-worker on real Kafka: ``BackfillManager`` run by the real ``TaskLoop`` on this test's own topics
repairs a window with the sandbox market's own trades (through a gateway) and asks for a re-check; and a
window with a minute too busy for one record (its trades served by an in-memory hub) goes as parts that
the verification worker's ``TickStore`` reads back whole."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from hubclient import HubClient
from hubclient.market import KST
from hubclient.models import ApiRequest, ApiResponse
from hubclient.testing import InMemoryTransport, ok
from services.recovery.records import WINDOW_BYTES
from services.recovery.worker import NAME, BackfillManager, build
from services.sandbox.feed import sandbox_market
from services.sandbox.settings import SandboxSettings
from services.settings import KafkaSettings, WorkerSettings, WorkerTopics
from services.verification.minutes import Window, bars_from_trades
from services.verification.tick_store import TickStore
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


def recovery_task(day: date) -> dict[str, Any]:
    """The first round's recovery task of SYMBOL's START-END window on ``day``, as the verification worker
    writes it."""
    return {
        "task_id": f"recover|{SYMBOL}|{day}|{START}-{END}|r1",
        "symbol": SYMBOL,
        "day": day.isoformat(),
        "start": START,
        "end": END,
        "round": 1,
        "reason": "gap",
    }


async def done_twice(
    services: Services, settings: WorkerSettings, handler: BackfillManager, task: dict[str, Any]
) -> list[ConsumerRecord[bytes, bytes]]:
    """``handler`` run by the real ``TaskLoop`` on ``settings``' topics, sent ``task`` twice (a redelivery);
    returns the two re-verification tasks it committed, then stops the loop."""
    topics = settings.topics
    loop = TaskLoop(handler, settings)
    await loop.start()
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    try:
        producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap)
        await producer.start()
        try:
            for _ in range(2):
                await producer.send_and_wait(topics.recovery_tasks, orjson.dumps(task), key=b"k")
        finally:
            await producer.stop()
        return await read_committed(services.kafka_bootstrap, topics.verification_tasks, count=2)
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
        await loop.stop()


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
    task = recovery_task(day)
    task_id = task["task_id"]
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
        checks = await done_twice(services, settings, build(settings, hub), task)
    windows = await read_committed(services.kafka_bootstrap, worker_topics.ticks_recovered, count=2)

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


BUSY_DAY = date(2026, 11, 27)
BUSY_TRADES = 15_000  # in the one minute 10:01: over 1 MiB as one record's ticks


def busy_tape() -> list[tuple[datetime, int, int]]:
    """(time, price, volume) oldest first: a trade before the window, a few in 10:00, BUSY_TRADES in 10:01
    (250 a second), a few in 10:02-10:04; every volume differs, so no two trades look alike."""
    first = datetime.combine(BUSY_DAY, time(10, 0), KST)
    out = [(first - timedelta(seconds=1), 70_000, 1)]
    out += [(first + timedelta(seconds=7 * i), 70_000 + i, 2 + i) for i in range(8)]
    busy = first + timedelta(minutes=1)
    out += [(busy + timedelta(seconds=i // 250), 70_000 + i % 97, 100 + i) for i in range(BUSY_TRADES)]
    later = first + timedelta(minutes=2)
    out += [(later + timedelta(seconds=11 * i), 71_000 + i, 20_000 + i) for i in range(15)]
    return out


def kiwoom_pages(tape: list[tuple[datetime, int, int]], size: int = 900) -> list[list[dict[str, str]]]:
    """ka10079 pages of ``tape``, newest first, ``size`` rows each."""
    rows = [
        {
            "cur_prc": f"+{price}",
            "trde_qty": str(volume),
            "cntr_tm": f"{when:%Y%m%d%H%M%S}",
            "open_pric": str(price),
            "high_pric": str(price),
            "low_pric": str(price),
        }
        for when, price, volume in reversed(tape)
    ]
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def test_a_minute_too_busy_for_one_record_goes_through_kafka_in_parts(
    services: Services, worker_topics: WorkerTopics, unique: str
) -> None:
    """A window whose minute 10:01 holds 15,000 trades (over Kafka's 1 MiB as one record), done twice by the
    real TaskLoop, is committed both times as the same keys and values: that minute in parts, each under
    WINDOW_BYTES, the rest as whole windows; nothing is dead-lettered, and the verification worker's
    TickStore, reading them back from Kafka, builds every minute from exactly the tape's trades."""
    tape = busy_tape()
    pages = kiwoom_pages(tape)

    def broker(request: ApiRequest) -> ApiResponse:
        index = int(request.continuation["next-key"]) if request.continuation else 0
        more = {"cont-yn": "Y", "next-key": str(index + 1)} if index + 1 < len(pages) else None
        return ok(request, {"stk_cd": SYMBOL, "stk_tic_chart_qry": pages[index]}, continuation=more)

    task = recovery_task(BUSY_DAY)
    task_id = task["task_id"]
    feed = await private_worker_topics(services.kafka_bootstrap, f"f{unique}", "ticks")
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=services.kafka_bootstrap),
        topics=worker_topics,
        group_id=f"recovery-busy-{unique}",
        instance_id=f"rw-busy-{unique}",
        task_deadline_s=45,
    )
    async with HubClient(InMemoryTransport(broker), caller=NAME) as hub:
        checks = await done_twice(
            services, settings, BackfillManager(settings, hub, today=lambda: BUSY_DAY), task
        )
    windows = await read_committed(services.kafka_bootstrap, worker_topics.ticks_recovered)

    assert len(checks) == 2 and await end_offset(services, worker_topics.dlq) == 0
    by_key: dict[bytes, list[bytes]] = {}
    for record in windows:
        by_key.setdefault(record.key, []).append(record.value)
    assert all(len(held) == 2 and held[0] == held[1] for held in by_key.values())  # done twice, the same
    values = {key.decode(): orjson.loads(held[0]) for key, held in by_key.items()}
    base = f"{SYMBOL}|{BUSY_DAY}|"
    parts = sum(1 for value in values.values() if "parts" in value)
    assert parts >= 3  # 15,000 trades take more than two records of WINDOW_BYTES
    split = [values[f"{base}10:01-10:02|{k}/{parts}"] for k in range(1, parts + 1)]
    assert [(v["start"], v["end"], v["part"], v["parts"], v["task_id"]) for v in split] == [
        ("10:01", "10:02", k, parts, task_id) for k in range(1, parts + 1)
    ]
    whole = [values[f"{base}10:00-10:01"], values[f"{base}10:02-10:05"]]
    assert len(values) == parts + 2 and not any("part" in v for v in whole)
    for key, value in values.items():
        assert len(orjson.dumps(value["ticks"])) <= WINDOW_BYTES, key
    ticks = [t for value in (whole[0], *split, whole[1]) for t in value["ticks"]]
    assert [(datetime.fromisoformat(t["time_kst"]), t["price"], t["volume"]) for t in ticks] == tape[1:]

    store = TickStore(
        services.kafka_bootstrap, feed_topic=feed.ticks, recovered_topic=worker_topics.ticks_recovered
    )
    await store.start()
    try:
        assert await store.catch_up(30) == len(windows)
    finally:
        await store.stop()
    assert store.book.malformed == 0
    expected = bars_from_trades(
        (when.hour * 60 + when.minute, price, volume) for when, price, volume in tape[1:]
    )
    assert store.bars(SYMBOL, BUSY_DAY, Window(600, 605)) == expected
