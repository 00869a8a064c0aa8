"""The market feed publishes the sandbox's ticks to real Kafka with the configured gaps and corruption."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from services.sandbox.bars import Tick
from services.sandbox.clock import KST, SimClock
from services.sandbox.feed import GapReport, plan_day, publish_day, run_feed, sandbox_market
from services.sandbox.settings import FeedSettings, SandboxSettings
from services.topics import ensure_topics, load_topics
from tests import processes
from tests.conftest import Services

DAY = date(2026, 11, 26)  # a Thursday inside the default market history
SYMBOL = "005930"
GAP_START_S, GAP_END_S = 10 * 3600, 10 * 3600 + 30 * 60  # 10:00:00 inclusive to 10:30:00 exclusive


@pytest.fixture
async def tick_topic(services: Services, unique: str) -> str:
    """This test's own copy of ``market.ticks``, as declared in schemas/topics.yaml."""
    name = f"f{unique}.ticks"
    specs = [s for s in load_topics(rename={"market.ticks": name}) if s.name == name]
    await ensure_topics(services.kafka_bootstrap, specs)
    return name


def feed_settings(services: Services, topic: str, **feed: Any) -> SandboxSettings:
    """Sandbox settings whose feed publishes to ``topic`` on the test Kafka."""
    return SandboxSettings(feed=FeedSettings(bootstrap_servers=services.kafka_bootstrap, topic=topic, **feed))


class Reader:
    """Reads a topic from the beginning, all partitions, keeping every record."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.records: list[Any] = []

    async def until(self, count: int, timeout_s: float = 60) -> list[Any]:
        """Read until ``count`` records have arrived in all."""
        async with asyncio.timeout(timeout_s):
            while len(self.records) < count:
                await self.poll(200)
        return self.records

    async def poll(self, timeout_ms: int) -> None:
        """One fetch of whatever is there."""
        for batch in (await self._consumer.getmany(timeout_ms=timeout_ms)).values():
            self.records.extend(batch)


@asynccontextmanager
async def reader(services: Services, topic: str) -> AsyncIterator[Reader]:
    """A ``Reader`` on ``topic``, its consumer closed on exit."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=services.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        yield Reader(consumer)
    finally:
        await consumer.stop()


def ts_ms(tick: Tick, day: date) -> int:
    """Epoch milliseconds of a trade."""
    return int(tick.at(day).timestamp()) * 1000


async def test_publish_day_with_gap_and_corruption(
    services: Services, tick_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One symbol-day arrives whole but for the gap, in order, with exactly the reported ticks corrupted."""
    settings = feed_settings(
        services,
        tick_topic,
        symbols=[SYMBOL],
        gaps=[f"{SYMBOL}@10:00-10:30"],
        corrupt_rate=0.03,
        seed=5,
        progress_every=500,
    )
    caplog.set_level(logging.INFO, logger="services.sandbox.feed")
    ticks = sandbox_market(settings).ticks(SYMBOL, DAY)
    in_gap = {seq for seq, t in enumerate(ticks, start=1) if GAP_START_S <= t.second < GAP_END_S}
    expected = len(ticks) - len(in_gap)
    assert in_gap and expected > 0

    report = await publish_day(settings, services.kafka_bootstrap, day=DAY)

    assert report.complete and not report.stopped
    assert report.published == report.published_by_symbol[SYMBOL] == expected
    assert report.skipped_by_gap == {
        SYMBOL: [GapReport("10:00:00", "10:30:00", len(in_gap), min(in_gap), max(in_gap))]
    }
    corrupted = set(report.corrupted_seqs(SYMBOL))
    assert corrupted and not corrupted & in_gap
    progress = [r for r in caplog.records if r.getMessage() == "feed.progress"]
    published = [r.fields["published"] for r in progress]  # type: ignore[attr-defined]
    assert published == list(range(500, expected + 1, 500))
    assert [r.getMessage() for r in caplog.records][-1] == "feed.day_done"
    async with reader(services, tick_topic) as topic:
        records = await topic.until(expected)
        await topic.poll(1000)  # nothing beyond the expected count may follow
    assert len(records) == expected
    assert {r.key for r in records} == {SYMBOL.encode()}
    assert len({r.partition for r in records}) == 1  # one key, one partition, so the order is kept
    values = [orjson.loads(r.value) for r in records]
    seqs = [v["seq"] for v in values]
    assert seqs == sorted(set(seqs)), "seq strictly increasing within the symbol's partition"
    assert set(seqs) == set(range(1, len(ticks) + 1)) - in_gap
    assert not any(time(10) <= datetime.fromisoformat(v["time_kst"]).time() < time(10, 30) for v in values)
    assert (report.first_ts_ms, report.last_ts_ms) == (ts_ms(ticks[0], DAY), ts_ms(ticks[-1], DAY))
    bar = sandbox_market(settings).daily_bar(SYMBOL, DAY)
    assert bar is not None
    for value in values:
        tick = ticks[value["seq"] - 1]
        assert value["symbol"] == SYMBOL and value["day"] == "20261126" and value["source"] == "kis-ws"
        assert value["ts_ms"] == ts_ms(tick, DAY) and value["time_kst"] == tick.at(DAY).isoformat()
        assert not GAP_START_S <= tick.second < GAP_END_S
        if value["seq"] in corrupted:
            assert (value["price"], value["volume"]) != (tick.price, tick.volume)
            assert value["price"] == 0 or value["volume"] < 0 or not bar.low <= value["price"] <= bar.high
        else:
            assert (value["price"], value["volume"]) == (tick.price, tick.volume)
    kinds = {c.seq: (c.kind, c.price, c.volume) for c in report.corrupted[SYMBOL]}
    assert {v["seq"]: (v["price"], v["volume"]) for v in values if v["seq"] in kinds} == {
        seq: (price, volume) for seq, (_, price, volume) in kinds.items()
    }


def test_plan_is_reproducible() -> None:
    """Random gaps and corruption depend only on the seed, symbol and day, and cover about the set rates."""
    settings = SandboxSettings(feed=FeedSettings(gap_rate=0.1, corrupt_rate=0.02, seed=3))
    first = plan_day(settings.feed, sandbox_market(settings), DAY)
    again = plan_day(settings.feed, sandbox_market(settings), DAY)
    other = plan_day(settings.feed.model_copy(update={"seed": 4}), sandbox_market(settings), DAY)
    assert first == again and first != other
    for code in settings.feed.symbols:
        minutes = sum(g.end_s - g.start_s for g in first.gaps if g.symbol == code) // 60
        assert 35 <= minutes <= 39  # 10 % of 390 minutes, less what overlapping draws wasted
    corrupted = sum(t.corruption is not None for t in first.ticks)
    assert 0.01 * len(first.ticks) < corrupted < 0.03 * len(first.ticks)
    assert {t.corruption for t in first.ticks} == {None, "zero_price", "negative_volume", "price_outlier"}


async def test_run_feed_follows_the_clock(services: Services, tick_topic: str) -> None:
    """The long-running feed publishes up to the simulated now, follows a clock jump and stops cleanly."""
    symbols = ["005930", "000660"]
    settings = feed_settings(services, tick_topic, symbols=symbols, poll_interval_s=0.05)
    market = sandbox_market(settings)
    clock = SimClock(datetime(2026, 11, 26, 10, 0, tzinfo=KST), rate=0)

    def due(until_s: int) -> int:
        return sum(1 for code in symbols for t in market.ticks(code, DAY) if t.second <= until_s)

    stop = asyncio.Event()
    task = asyncio.create_task(run_feed(settings, stop, clock=clock, market=market))
    try:
        async with reader(services, tick_topic) as topic:
            await topic.until(due(10 * 3600))
            await topic.poll(500)  # the frozen clock lets nothing later through
            assert len(topic.records) == due(10 * 3600)
            clock.set(now=datetime(2026, 11, 26, 11, 0, tzinfo=KST))
            records = await topic.until(due(11 * 3600))
            await topic.poll(500)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert len(records) == due(11 * 3600)
    values = [orjson.loads(r.value) for r in records]
    for code in symbols:
        seqs = [v["seq"] for v in values if v["symbol"] == code]
        assert seqs == list(range(1, len(seqs) + 1))  # no repeat, no hole, in order
    assert max(v["time_kst"] for v in values) <= "2026-11-26T11:00:00+09:00"
    assert {v["source"] for v in values} == {"kis-ws", "kiwoom-ws"}  # alternate by symbol


async def test_paced_replay_stops_cleanly(services: Services, tick_topic: str) -> None:
    """A replay at 600x stops when asked, with what it published acknowledged and reported."""
    settings = feed_settings(services, tick_topic, symbols=[SYMBOL], speed=600.0)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.5, stop.set)
    report = await asyncio.wait_for(publish_day(settings, services.kafka_bootstrap, day=DAY, stop=stop), 30)
    assert report.stopped and not report.complete
    assert 0 < report.published < len(sandbox_market(settings).ticks(SYMBOL, DAY))
    async with reader(services, tick_topic) as topic:
        records = await topic.until(report.published)
        await topic.poll(500)
    assert len(records) == report.published
    assert orjson.loads(records[-1].value)["ts_ms"] == report.last_ts_ms


def test_feed_to_a_missing_topic_names_it(services: Services, unique: str) -> None:
    """``apihub feed`` to a topic Kafka does not have ends with one line naming the topic and
    ``apihub topics ensure``, exit 2; Kafka was reachable, so it does not say otherwise. It says so at
    once: it used to wait for the topic's metadata for the whole 40 s request timeout first (the bound
    below is under it)."""
    topic = f"nosuch{unique}.ticks"
    argv = [
        "feed",
        "--once",
        "--topic",
        topic,
        "--symbols",
        SYMBOL,
        "--bootstrap-servers",
        services.kafka_bootstrap,
    ]
    done = subprocess.run(
        processes.apihub_argv(*argv),
        env=processes.clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("apihub feed: error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 1 and repr(topic) in errors[0] and "apihub topics ensure" in errors[0]
    assert "not reachable" not in done.stderr and "Traceback" not in done.stderr
