"""verification-worker on real Kafka, a sandbox process and a gateway, through the real ``TaskLoop``.

The sandbox's feed publishes a past day of one symbol with gaps and corrupted trades to this test's own
``market.ticks``; ``VerificationConsumer`` checks the session's half-hour windows against KIS and Kiwoom
through the hub.
Every injected minute is found, clean windows verify, each problem has its recovery task. Then recovered
windows holding the sandbox's true trades are committed to ``market.ticks.recovered`` (as the recovery
worker would) and the second round verifies every window without a recovery task.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hubclient import HubClient
from hubclient.market import KST
from services.sandbox.feed import FeedReport, publish_day, sandbox_market
from services.sandbox.settings import FeedSettings, SandboxSettings
from services.settings import KafkaSettings, WorkerSettings, WorkerTopics
from services.verification.minutes import hhmm, parse_hhmm
from services.verification.worker import build
from services.worker.runtime import TaskLoop
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics, private_worker_topics

SYMBOL = "005930"
MARKET = sandbox_market(SandboxSettings())


def past_day() -> date:
    """The trading day before the sandbox clock's day (the latest weekday), so past for both clocks."""
    latest = MARKET.latest_trading_day(datetime.now(KST).date())
    day = MARKET.previous_trading_day(latest) if latest else None
    assert day is not None
    return day


DAY = past_day()
GAPS = ("10:00-10:03", "13:10-13:12")
READ_TIMEOUT_S = 40.0


@pytest.fixture
async def worker_topics(services: Services, unique: str) -> WorkerTopics:
    """This test's own copies of the topics the verification worker reads and writes."""
    fields = (
        "ticks",
        "ticks_recovered",
        "verification_tasks",
        "verification_results",
        "recovery_tasks",
        "dlq",
    )
    return await private_worker_topics(services.kafka_bootstrap, f"v{unique}", *fields)


def minute_of(ts_ms: int) -> int:
    """Minute of the KST day of an epoch-ms instant."""
    local = datetime.fromtimestamp(ts_ms / 1000, tz=KST)
    return local.hour * 60 + local.minute


def injected(report: FeedReport) -> set[int]:
    """Minutes of SYMBOL the feed left out or published a corrupted trade in."""
    gaps = report.skipped_by_gap[SYMBOL]
    minutes = {m for g in gaps for m in range(parse_hhmm(g.start[:5]), parse_hhmm(g.end[:5]))}
    return minutes | {minute_of(c.ts_ms) for c in report.corrupted[SYMBOL]}


def session_windows() -> list[tuple[int, int]]:
    """The session in half hours, 09:00-09:30 ... 15:00-15:31 (the last one holds the closing auction)."""
    starts = range(parse_hhmm("09:00"), parse_hhmm("15:30"), 30)
    return [(s, s + 30) for s in starts[:-1]] + [(starts[-1], parse_hhmm("15:31"))]


def task(window: tuple[int, int], round_: int) -> dict[str, Any]:
    """A verification task of SYMBOL on DAY."""
    start, end = hhmm(window[0]), hhmm(window[1])
    return {
        "task_id": f"verify|{SYMBOL}|{DAY}|{start}-{end}|r{round_}",
        "symbol": SYMBOL,
        "day": DAY.isoformat(),
        "start": start,
        "end": end,
        "round": round_,
    }


def recovered_window(start: int, end: int) -> dict[str, Any]:
    """The sandbox's true trades of [start, end) as a recovered window record."""
    midnight = datetime.combine(DAY, time(), KST)
    per_second: Counter[int] = Counter()
    ticks = []
    for t in MARKET.ticks(SYMBOL, DAY):
        if start <= t.second // 60 < end:
            n = per_second[t.second]
            per_second[t.second] += 1
            at = (midnight + timedelta(seconds=t.second)).isoformat()
            ticks.append({"time_kst": at, "n": n, "price": t.price, "volume": t.volume})
    return {
        "kind": "window",
        "symbol": SYMBOL,
        "day": DAY.isoformat(),
        "start": hhmm(start),
        "end": hhmm(end),
        "provider": "KIWOOM",
        "tr_id": "ka10079",
        "ticks": ticks,
        "task_id": f"recover|{SYMBOL}|{DAY}|{hhmm(start)}-{hhmm(end)}|r1",
    }


class Reader:
    """Reads a topic from the beginning (committed records only), keeping every record."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.values: list[tuple[str, dict[str, Any]]] = []

    async def until(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        """(key, value) of the first ``count`` records."""
        async with asyncio.timeout(READ_TIMEOUT_S):
            while len(self.values) < count:
                for batch in (await self._consumer.getmany(timeout_ms=200)).values():
                    self.values.extend((r.key.decode(), orjson.loads(r.value)) for r in batch)
        return self.values[:count]

    async def drain(self, seconds: float) -> int:
        """Keep reading for ``seconds``; the number of records held then."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            for batch in (await self._consumer.getmany(timeout_ms=200)).values():
                self.values.extend((r.key.decode(), orjson.loads(r.value)) for r in batch)
        return len(self.values)


@asynccontextmanager
async def reader(services: Services, topic: str) -> AsyncIterator[Reader]:
    """A ``Reader`` on ``topic``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=services.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        yield Reader(consumer)
    finally:
        await consumer.stop()


@asynccontextmanager
async def verification_worker(
    services: Services, topics: Topics, wt: WorkerTopics, unique: str
) -> AsyncIterator[None]:
    """The worker as ``apihub worker verification-worker`` runs it: hub, handler, TaskLoop."""
    settings = WorkerSettings(
        kafka=KafkaSettings(
            bootstrap_servers=services.kafka_bootstrap,
            request_topic=topics.requests,
            response_topic=topics.responses,
        ),
        topics=wt,
        group_id=f"verify-{unique}",
        instance_id=unique,
        call_timeout_s=10,
        task_deadline_s=45,
    )
    hub = HubClient.connect(
        services.kafka_bootstrap,
        caller="verification-worker",
        request_topic=topics.requests,
        reply_topic=topics.responses,
        default_timeout_s=10,
    )
    handler = build(settings, hub)
    loop = TaskLoop(handler, settings)
    stop = asyncio.Event()
    await hub.start()
    try:
        await handler.start()
        await loop.start()
        running = asyncio.create_task(loop.run(stop))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(running, 15)
    finally:
        await loop.stop()
        await handler.stop()
        await hub.stop()


async def produce(
    services: Services, topic: str, records: list[tuple[str, dict[str, Any]]], *, txn: str | None = None
) -> None:
    """Publish (key, value) records, in one transaction when ``txn`` names a transactional id."""
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, transactional_id=txn)
    await producer.start()
    try:
        if txn is None:
            for key, value in records:
                await producer.send_and_wait(topic, orjson.dumps(value), key=key.encode())
        else:
            async with producer.transaction():
                for key, value in records:
                    await producer.send(topic, orjson.dumps(value), key=key.encode())
    finally:
        await producer.stop()


def problem_minutes(result: dict[str, Any]) -> set[int]:
    """Every minute a result reports as a problem."""
    return {m for p in result["problems"] for m in range(parse_hhmm(p["start"]), parse_hhmm(p["end"]))}


@pytest.mark.timeout(90)
async def test_finds_every_injected_minute_and_verifies_after_repair(
    services: Services, topics: Topics, gateway: GatewayFactory, worker_topics: WorkerTopics, unique: str
) -> None:
    """Injected gaps and corruptions are found minute by minute, with recovery tasks; repaired, all verify."""
    feed = FeedSettings(
        bootstrap_servers=services.kafka_bootstrap,
        topic=worker_topics.ticks,
        symbols=[SYMBOL],
        gaps=[f"{SYMBOL}@{g}" for g in GAPS],
        corrupt_rate=0.006,
        seed=17,
    )
    report = await publish_day(SandboxSettings(feed=feed), services.kafka_bootstrap, day=DAY)
    damaged = injected(report)
    windows = session_windows()
    assert report.complete and report.corrupted[SYMBOL] and len(windows) == 13

    async with (
        gateway(),
        verification_worker(services, topics, worker_topics, unique),
        reader(services, worker_topics.verification_results) as results,
        reader(services, worker_topics.recovery_tasks) as recoveries,
    ):
        await produce(
            services, worker_topics.verification_tasks, [(task(w, 1)["task_id"], task(w, 1)) for w in windows]
        )
        first = {key: value for key, value in await results.until(len(windows))}
        clean_windows = 0
        for window in windows:
            result = first[task(window, 1)["task_id"]]
            expected = {m for m in damaged if window[0] <= m < window[1]}
            assert problem_minutes(result) == expected, (hhmm(window[0]), result["problems"])
            assert result["status"] == ("problems" if expected else "verified")
            assert result["minutes"] == len(range(*window)) and result["disagreements"] == []
            clean_windows += not expected
        assert clean_windows >= 1
        wanted = {
            f"recover|{SYMBOL}|{DAY}|{p['start']}-{p['end']}|r1": (p["start"], p["end"], p["kind"])
            for r in first.values()
            for p in r["problems"]
        }
        recovery = {key: value for key, value in await recoveries.until(len(wanted))}
        assert {k: (v["start"], v["end"], v["reason"]) for k, v in recovery.items()} == wanted
        assert all(v["round"] == 1 and v["task_id"] == k for k, v in recovery.items())

        repaired = [recovered_window(parse_hhmm(v["start"]), parse_hhmm(v["end"])) for v in recovery.values()]
        keyed = [(f"{SYMBOL}|{DAY}|{v['start']}-{v['end']}", v) for v in repaired]
        await produce(services, worker_topics.ticks_recovered, keyed, txn=f"test-recovery-{unique}")
        await produce(
            services, worker_topics.verification_tasks, [(task(w, 2)["task_id"], task(w, 2)) for w in windows]
        )
        second = {key: value for key, value in (await results.until(2 * len(windows)))[len(windows) :]}
        assert {key: r["status"] for key, r in second.items()} == {
            task(w, 2)["task_id"]: "verified" for w in windows
        }
        assert await recoveries.drain(1.5) == len(wanted)  # round 2 wrote no recovery task
