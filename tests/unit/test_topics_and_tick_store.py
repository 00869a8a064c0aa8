"""``ensure_topics`` and the verification worker's ``TickStore`` on an in-memory Kafka."""

from __future__ import annotations

import time
from datetime import date, datetime
from datetime import time as dt_time

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from services import topics as topics_module
from services.sandbox.clock import KST
from services.sandbox.feed import publish_day, sandbox_market
from services.sandbox.settings import FeedSettings, SandboxSettings
from services.topics import EnsureReport, TopicSpec, ensure_topics, load_topics
from services.verification import tick_store as tick_store_module
from services.verification.minutes import Window
from services.verification.tick_store import KEPT_MS, TickStore
from services.worker.errors import TaskFailed, WorkerError
from tests.unit.kafka_fakes import FakeAdmin, FakeCluster, FakeConsumer, FakeProducer, factory

DAY = date(2026, 11, 26)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """An empty in-memory Kafka, wired into ``services.topics`` and the tick store."""
    fake = FakeCluster()
    monkeypatch.setattr(topics_module, "AIOKafkaAdminClient", factory(fake, FakeAdmin, []))
    monkeypatch.setattr(tick_store_module, "AIOKafkaAdminClient", factory(fake, FakeAdmin, []))
    monkeypatch.setattr(tick_store_module, "AIOKafkaConsumer", factory(fake, FakeConsumer, []))
    return fake


def test_load_topics_renames_for_isolation() -> None:
    """The declared topics load with their partitions and config; ``rename`` swaps names only."""
    specs = {s.name: s for s in load_topics()}
    assert {"api.requests", "api.responses", "api.requests.dlq"} <= set(specs)
    renamed = {s.name: s for s in load_topics(rename={"api.requests": "t1.requests"})}
    assert "api.requests" not in renamed
    assert renamed["t1.requests"].partitions == specs["api.requests"].partitions
    assert renamed["t1.requests"].config == specs["api.requests"].config


async def test_ensure_creates_then_reports_unchanged_then_drift(cluster: FakeCluster) -> None:
    """First run creates every topic; the second changes nothing; a changed topic is reported as drift."""
    specs = [
        TopicSpec("a.topic", 3, 1, {"cleanup.policy": "compact"}),
        TopicSpec("b.topic", 1, 1, {}),
    ]
    first = await ensure_topics("kafka:9092", specs)
    assert first.created == ["a.topic", "b.topic"] and first.changed
    second = await ensure_topics("kafka:9092", specs)
    assert second == EnsureReport(unchanged=["a.topic", "b.topic"]) and not second.changed
    cluster.create("a.topic", 4)  # one partition more than declared
    cluster.configs["a.topic"]["cleanup.policy"] = "delete"
    third = await ensure_topics("kafka:9092", specs)
    assert third.unchanged == ["b.topic"]
    assert third.drift == [
        "a.topic: partitions 4, declared 3",
        "a.topic: cleanup.policy='delete', declared 'compact'",
    ]


async def test_a_topic_kafka_refuses_is_reported_refused_not_created(cluster: FakeCluster) -> None:
    """Kafka answers a topic it will not create with an error for that topic (the request itself succeeds):
    it is reported refused with Kafka's reason, the others created, and the next run tries it again."""
    specs = [TopicSpec("good.topic", 1, 1, {}), TopicSpec("bad.topic", 1, 1, {})]
    cluster.refusals["bad.topic"] = (44, "replication factor below the cluster's minimum")  # POLICY_VIOLATION
    first = await ensure_topics("kafka:9092", specs)
    assert first.created == ["good.topic"]
    assert first.refused == [
        "bad.topic: PolicyViolationError: replication factor below the cluster's minimum"
    ]
    second = await ensure_topics("kafka:9092", specs)
    assert (second.created, second.unchanged, len(second.refused)) == ([], ["good.topic"], 1)


async def feed_ticks(cluster: FakeCluster, **feed: object) -> int:
    """Publish DAY's trades of 005930 until 10:10 to ``market.ticks`` on the fake; returns the count."""
    settings = SandboxSettings(feed=FeedSettings(symbols=["005930"], **feed))
    producer = FakeProducer(cluster)
    until = datetime(2026, 11, 26, 10, 10, tzinfo=KST)
    report = await publish_day(settings, producer, day=DAY, until=until)
    return report.published


async def test_tick_store_builds_the_markets_bars_from_the_topic(cluster: FakeCluster) -> None:
    """The store reads the feed from the beginning and its bars equal the sandbox market's own."""
    cluster.create("market.ticks", 2)
    cluster.create("market.ticks.recovered", 1)
    published = await feed_ticks(cluster)
    store = TickStore("kafka:9092", feed_topic="market.ticks", recovered_topic="market.ticks.recovered")
    with pytest.raises(RuntimeError, match="start"):
        await store.catch_up(1)
    await store.start()
    try:
        assert await store.catch_up(5) == published
        assert await store.catch_up(5) == 0
    finally:
        await store.stop()
    bars = store.bars("005930", DAY, Window(600, 605))
    market = {b.minute: b for b in sandbox_market(SandboxSettings()).minute_bars("005930", DAY)}
    assert sorted(bars) == [600, 601, 602, 603, 604]
    for minute, bar in bars.items():
        truth = market[minute]
        assert bar.values() == (truth.open, truth.high, truth.low, truth.close, truth.volume)


async def test_tick_store_refuses_missing_topics(cluster: FakeCluster) -> None:
    """A topic that does not exist is named, with the command that creates it."""
    cluster.create("market.ticks", 1)
    store = TickStore("kafka:9092", feed_topic="market.ticks", recovered_topic="nope")
    with pytest.raises(WorkerError, match="'nope' cannot be read"):
        await store.start()


async def test_tick_store_failures_are_task_failures(cluster: FakeCluster) -> None:
    """Unreadable ticks or a catch-up out of time fail the task with a reason, not the worker."""
    cluster.create("market.ticks", 1)
    cluster.create("market.ticks.recovered", 1)
    await feed_ticks(cluster)
    store = TickStore("kafka:9092", feed_topic="market.ticks", recovered_topic="market.ticks.recovered")
    await store.start()
    try:
        consumer = store._consumer
        assert isinstance(consumer, FakeConsumer)
        consumer.fail_next("end_offsets", KafkaConnectionError("broker gone"))
        with pytest.raises(TaskFailed) as unavailable:
            await store.catch_up(5)
        assert unavailable.value.reason == "ticks_unavailable"
        with pytest.raises(TaskFailed) as behind:
            await store.catch_up(0)
        assert behind.value.reason == "ticks_behind"
    finally:
        await store.stop()


async def test_tick_store_forgets_symbol_days_past_the_topics_retention(cluster: FakeCluster) -> None:
    """The book keeps only what the topics still hold: a symbol-day none of whose records was written in
    the last week is dropped at the next catch-up (a worker running for months would otherwise hold every
    trade it ever read), and one that gets a new record (a recovered window) is kept."""
    cluster.create("market.ticks", 1)
    cluster.create("market.ticks.recovered", 1)
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - 7 * 24 * 3600 * 1000 - 60_000  # past the topics' retention of a week
    old_day, kept_day, recent_day = date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 26)
    for day in (old_day, kept_day):
        cluster.append("market.ticks", tick(day, "10:00:01"), timestamp_ms=old_ms)
    cluster.append("market.ticks", tick(recent_day, "10:00:01"), timestamp_ms=now_ms)
    store = TickStore("kafka:9092", feed_topic="market.ticks", recovered_topic="market.ticks.recovered")
    await store.start()
    try:
        assert await store.catch_up(5) == 3
        assert store.book.symbol_days() == [("005930", recent_day)]
        cluster.append("market.ticks", tick(old_day, "10:00:02"), timestamp_ms=old_ms)  # a late old copy
        cluster.append("market.ticks.recovered", window(kept_day), timestamp_ms=now_ms)
        assert await store.catch_up(5) == 2
        assert store.book.symbol_days() == [("005930", kept_day), ("005930", recent_day)]
    finally:
        await store.stop()
    assert sorted(store.bars("005930", kept_day, Window(600, 601))) == [600]


def tick(day: date, clock: str) -> bytes:
    """One ``market.ticks`` value of 005930 on ``day`` at ``clock`` (HH:MM:SS KST)."""
    instant = datetime.combine(day, dt_time.fromisoformat(clock), KST)
    value = {"symbol": "005930", "day": f"{day:%Y%m%d}", "seq": 1, "time_kst": instant.isoformat()}
    return orjson.dumps({**value, "price": 70_000, "volume": 1})


def window(day: date) -> bytes:
    """A recovered 10:00-10:01 window of 005930 on ``day`` with one trade."""
    instant = datetime.combine(day, dt_time(10, 0, 5), KST).isoformat()
    ticks = [{"time_kst": instant, "n": 0, "price": 70_100, "volume": 2}]
    value = {"kind": "window", "symbol": "005930", "day": day.isoformat(), "start": "10:00", "end": "10:01"}
    return orjson.dumps({**value, "provider": "KIWOOM", "tr_id": "ka10079", "ticks": ticks, "task_id": "t"})


def test_the_tick_book_keeps_as_long_as_the_tick_topics_do() -> None:
    """``KEPT_MS`` is the declared retention of both topics the book is read from: a book keeping less
    would forget what a restarted worker still reads, one keeping more would grow past it."""
    retention = {t.name: t.config.get("retention.ms") for t in load_topics()}
    assert retention["market.ticks"] == retention["market.ticks.recovered"] == str(KEPT_MS)
