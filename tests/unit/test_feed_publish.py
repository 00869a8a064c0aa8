"""The market feed's publication logic on an in-memory producer (the real Kafka run is in integration)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import date, datetime, time

import orjson
import pytest

from services.sandbox.clock import KST, SimClock
from services.sandbox.feed import (
    DayPlan,
    FeedReport,
    _gap_intervals,
    plan_day,
    publish_day,
    run_feed,
    sandbox_clock,
    sandbox_market,
)
from services.sandbox.settings import FeedGap, FeedSettings, SandboxSettings

DAY = date(2026, 11, 26)  # a Thursday inside the default market history
NEXT_DAY = date(2026, 11, 27)
SYMBOL = "005930"
OTHER = "000660"


class Delivery(Exception):
    """The broker refused a record."""


class RecordingProducer:
    """Stands in for ``AIOKafkaProducer.send``: keeps each record and acks it (fails from ``fail_at``)."""

    def __init__(self, *, fail_at: int | None = None, on_send: asyncio.Event | None = None) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []
        self._fail_at = fail_at
        self._on_send = on_send

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[None]:
        """Record one message; the returned future is its acknowledgement."""
        self.records.append((topic, value, key))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._fail_at is not None and len(self.records) >= self._fail_at:
            ack.set_exception(Delivery(f"record {len(self.records)} refused"))
        else:
            ack.set_result(None)
        if self._on_send is not None:
            self._on_send.set()
        return ack

    def values(self) -> list[dict[str, object]]:
        """The published values, decoded."""
        return [orjson.loads(value) for _, value, _ in self.records]


def settings_with(**feed: object) -> SandboxSettings:
    """Sandbox settings whose clock is frozen mid-session on DAY."""
    start = datetime(2026, 11, 26, 10, 0, tzinfo=KST)
    return SandboxSettings(clock_start=start, clock_rate=0.0, feed=FeedSettings(**feed))


def due(settings: SandboxSettings, symbols: list[str], day: date, until_s: int | None = None) -> int:
    """Trades of ``symbols`` on ``day`` at or before ``until_s`` (None: all of them)."""
    market = sandbox_market(settings)
    return sum(
        1 for code in symbols for t in market.ticks(code, day) if until_s is None or t.second <= until_s
    )


def test_configured_gap_and_wildcard_are_merged_per_symbol() -> None:
    """Overlapping configured gaps (one for every symbol) merge into one interval per symbol."""
    feed = FeedSettings(
        symbols=[SYMBOL, OTHER],
        gaps=[
            FeedGap(symbol=SYMBOL, start=time(10, 0), end=time(10, 30)),
            FeedGap(symbol="*", start=time(10, 20), end=time(10, 40)),
        ],
    )
    mine = _gap_intervals(feed, SYMBOL, DAY)
    others = _gap_intervals(feed, OTHER, DAY)
    assert [(g.start_s, g.end_s) for g in mine] == [(10 * 3600, 10 * 3600 + 40 * 60)]
    assert [(g.start_s, g.end_s) for g in others] == [(10 * 3600 + 20 * 60, 10 * 3600 + 40 * 60)]


def test_plan_marks_gap_trades_and_fixed_sources() -> None:
    """A trade inside a gap carries the gap's index; a fixed source is used for every symbol."""
    settings = settings_with(
        symbols=[SYMBOL, OTHER], source="kis-ws", gaps=[{"symbol": OTHER, "start": "11:00", "end": "11:05"}]
    )
    plan = plan_day(settings.feed, sandbox_market(settings), DAY)
    assert isinstance(plan, DayPlan)
    assert plan.sources == {SYMBOL: "kis-ws", OTHER: "kis-ws"}
    gapped = [t for t in plan.ticks if t.gap is not None]
    assert gapped and all(t.symbol == OTHER and 11 * 3600 <= t.second < 11 * 3600 + 300 for t in gapped)
    seconds = [t.second for t in plan.ticks]
    assert seconds == sorted(seconds)


def test_plan_refuses_a_day_without_trading() -> None:
    """A weekend is not a trading day of the sandbox market."""
    settings = settings_with()
    with pytest.raises(ValueError, match="not a trading day"):
        plan_day(settings.feed, sandbox_market(settings), date(2026, 11, 28))


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("zero_price", lambda c: c.price == 0 and c.volume == c.true_volume),
        ("negative_volume", lambda c: c.volume == -c.true_volume and c.price == c.true_price),
        ("price_outlier", lambda c: c.price >= 3 * c.true_price or c.price * 3 <= c.true_price),
    ],
)
async def test_each_corruption_kind_is_published_and_reported(kind: str, check: object) -> None:
    """Each kind of corrupted value goes out unmarked, and the report keeps the true values beside it."""
    settings = settings_with(symbols=[SYMBOL], corrupt_rate=0.05, corrupt_kinds=[kind])
    producer = RecordingProducer()
    report = await publish_day(settings, producer, day=DAY)
    corrupted = report.corrupted[SYMBOL]
    assert corrupted and report.corrupted_count == len(corrupted)
    assert all(c.kind == kind and check(c) for c in corrupted)  # type: ignore[operator]
    by_seq = {v["seq"]: v for v in producer.values()}
    for c in corrupted:
        assert (by_seq[c.seq]["price"], by_seq[c.seq]["volume"]) == (c.price, c.volume)
    assert report.corrupted_seqs(SYMBOL) == sorted(c.seq for c in corrupted)


async def test_publish_day_whole_day_with_a_gap() -> None:
    """A past day is published whole, minus the gap, keyed by symbol, with the report telling the truth."""
    settings = settings_with(symbols=[SYMBOL], gaps=[{"symbol": SYMBOL, "start": "10:00", "end": "10:30"}])
    producer = RecordingProducer()
    report = await publish_day(
        settings,
        producer,
        day=DAY,
        until=datetime(2026, 11, 27, 9, 0, tzinfo=KST),
    )
    total = due(settings, [SYMBOL], DAY)
    assert report.complete and not report.stopped
    assert report.published + report.skipped == total
    assert report.published == len(producer.records) == report.published_by_symbol[SYMBOL]
    [gap] = report.skipped_by_gap[SYMBOL]
    assert (gap.start, gap.end) == ("10:00:00", "10:30:00") and gap.skipped == report.skipped > 0
    values = producer.values()
    assert {topic for topic, _, _ in producer.records} == {"market.ticks"}
    assert {key for _, _, key in producer.records} == {SYMBOL.encode()}
    assert not any("10:00:00" <= str(v["time_kst"])[11:19] < "10:30:00" for v in values)
    seqs = [int(str(v["seq"])) for v in values]
    assert seqs == sorted(seqs) and seqs[0] == 1
    assert gap.first_seq is not None and gap.last_seq is not None
    assert set(range(gap.first_seq, gap.last_seq + 1)).isdisjoint(seqs)
    assert report.first_ts_ms == values[0]["ts_ms"] and report.last_ts_ms == values[-1]["ts_ms"]
    as_dict = report.as_dict()
    assert as_dict["day"] == "20261126" and as_dict["published"] == report.published
    assert as_dict["skipped_by_gap"][SYMBOL][0]["seqs"] == [gap.first_seq, gap.last_seq]
    assert orjson.loads(orjson.dumps(as_dict)) == as_dict


async def test_publish_day_stops_at_the_clocks_now_and_skips_the_future() -> None:
    """By default only trades up to the simulated now go out; a day after ``until`` sends nothing."""
    settings = settings_with(symbols=[SYMBOL, OTHER], progress_every=100)
    producer = RecordingProducer()
    report = await publish_day(settings, producer)
    assert report.day == DAY and not report.complete
    assert report.published == due(settings, [SYMBOL, OTHER], DAY, until_s=10 * 3600)
    assert max(str(v["time_kst"]) for v in producer.values()) <= "2026-11-26T10:00:00+09:00"
    assert {v["source"] for v in producer.values()} == {"kis-ws", "kiwoom-ws"}

    later = RecordingProducer()
    future = await publish_day(settings, later, day=NEXT_DAY)
    assert future.published == 0 and later.records == [] and not future.complete


async def test_publish_day_uses_the_configured_day() -> None:
    """``feed.day`` names the day when none is passed."""
    settings = settings_with(symbols=[OTHER], day=DAY)
    producer = RecordingProducer()
    report = await publish_day(
        settings,
        producer,
        until=datetime(2026, 11, 26, 9, 5, tzinfo=KST),
    )
    assert report.day == DAY
    assert report.published == due(settings, [OTHER], DAY, until_s=9 * 3600 + 300) > 0


async def test_publish_day_without_any_trading_day_is_refused() -> None:
    """A clock on the market's first day, a Saturday, has no trading day to publish (a clock before the
    first day is refused by the settings)."""
    first_day = date(2024, 1, 6)  # a Saturday
    settings = SandboxSettings(
        market_history_start=first_day, clock_start=datetime(2024, 1, 6, 10, 0, tzinfo=KST), clock_rate=0.0
    )
    with pytest.raises(ValueError, match="no trading day"):
        await publish_day(settings, RecordingProducer())


async def test_a_refused_record_fails_the_publication() -> None:
    """A delivery error is raised, not swallowed, and later acknowledgements are not left unretrieved."""
    settings = settings_with(symbols=[SYMBOL], max_in_flight=10)
    producer = RecordingProducer(fail_at=25)
    with pytest.raises(Delivery):
        await publish_day(settings, producer, day=DAY)
    assert 25 <= len(producer.records) <= 30


async def test_paced_replay_can_be_stopped() -> None:
    """At a finite speed the replay waits between trades and ends early, reported as stopped, when asked."""
    settings = settings_with(symbols=[SYMBOL], speed=60.0)
    stop = asyncio.Event()
    sent = asyncio.Event()
    producer = RecordingProducer(on_send=sent)

    async def stop_soon() -> None:
        await sent.wait()
        await asyncio.sleep(0.2)
        stop.set()

    stopper = asyncio.create_task(stop_soon())
    report = await asyncio.wait_for(
        publish_day(settings, producer, day=DAY, stop=stop),
        timeout=10,
    )
    await stopper
    assert report.stopped and not report.complete
    assert 0 < report.published == len(producer.records) < due(settings, [SYMBOL], DAY)


async def test_paced_replay_without_a_stop_event_sleeps_between_trades() -> None:
    """Without a stop event the paced replay still publishes what is due, in order."""
    settings = settings_with(symbols=[SYMBOL], speed=100_000.0)
    producer = RecordingProducer()
    report = await publish_day(
        settings,
        producer,
        day=DAY,
        until=datetime(2026, 11, 26, 9, 3, tzinfo=KST),
    )
    assert report.published == due(settings, [SYMBOL], DAY, until_s=9 * 3600 + 180) > 1
    seqs = [v["seq"] for v in producer.values()]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_run_feed_follows_a_clock_and_finishes_an_earlier_day() -> None:
    """The long-running feed publishes up to now, then on a later day first completes the day it left."""
    settings = settings_with(symbols=[SYMBOL], poll_interval_s=0.02)
    market = sandbox_market(settings)
    clock = SimClock(datetime(2026, 11, 26, 10, 0, tzinfo=KST), rate=0)
    producer = RecordingProducer()
    stop = asyncio.Event()
    task = asyncio.create_task(run_feed(settings, stop, clock=clock, market=market, producer=producer))
    try:
        first = due(settings, [SYMBOL], DAY, until_s=10 * 3600)
        async with asyncio.timeout(10):
            while len(producer.records) < first:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the frozen clock lets nothing later through
        assert len(producer.records) == first
        clock.set(now=datetime(2026, 11, 27, 9, 1, tzinfo=KST))
        second = due(settings, [SYMBOL], DAY) + due(settings, [SYMBOL], NEXT_DAY, until_s=9 * 3600 + 60)
        async with asyncio.timeout(10):
            while len(producer.records) < second:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    values = producer.values()
    assert len(values) == second
    days = [str(v["day"]) for v in values]
    assert days == sorted(days) and set(days) == {"20261126", "20261127"}
    for day in ("20261126", "20261127"):
        seqs = [v["seq"] for v in values if v["day"] == day]
        assert seqs == list(range(1, len(seqs) + 1))  # never repeated, never a hole


async def test_run_feed_with_a_running_clock_wakes_for_the_next_trade() -> None:
    """With a moving clock the feed keeps publishing trades as the clock passes them, then stops cleanly."""
    settings = settings_with(symbols=[SYMBOL], poll_interval_s=0.05)
    clock = SimClock(datetime(2026, 11, 26, 9, 0, tzinfo=KST), rate=600.0)
    producer = RecordingProducer()
    stop = asyncio.Event()
    task = asyncio.create_task(run_feed(settings, stop, clock=clock, producer=producer))
    later = datetime(2026, 11, 26, 9, 1, tzinfo=KST).isoformat()  # 0.1 s of real time after the start
    try:
        async with asyncio.timeout(30):  # until a trade the clock reached only after the start is published
            while not any(str(v["time_kst"]) > later for v in producer.values()):
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    last = max(str(v["time_kst"]) for v in producer.values())
    assert last <= clock.now().isoformat()


def test_sandbox_clock_and_market_follow_the_settings() -> None:
    """The feed builds its clock and market exactly as the sandbox server does."""
    settings = settings_with()
    assert sandbox_clock(settings).now() == datetime(2026, 11, 26, 10, 0, tzinfo=KST)
    assert sandbox_market(settings).is_trading_day(DAY)


def test_empty_report_counts_nothing() -> None:
    """A fresh report has no skipped or corrupted trades and no instants."""
    report = FeedReport(DAY, "t")
    assert (report.skipped, report.corrupted_count, report.corrupted_seqs(SYMBOL)) == (0, 0, [])
    assert report.as_dict()["first_ts_ms"] is None


def test_random_gaps_cover_about_the_rate_and_depend_on_the_seed() -> None:
    """Random gaps are whole minutes inside the session, about ``gap_rate`` of it, fixed by the seed."""
    feed = FeedSettings(symbols=[SYMBOL], gap_rate=0.1, gap_min_minutes=2, gap_max_minutes=5, seed=5)
    gaps = _gap_intervals(feed, SYMBOL, DAY)
    assert gaps == _gap_intervals(feed, SYMBOL, DAY)
    assert gaps != _gap_intervals(feed.model_copy(update={"seed": 6}), SYMBOL, DAY)
    minutes = sum(g.end_s - g.start_s for g in gaps) // 60
    assert 30 <= minutes <= 39
    assert all(g.start_s % 60 == 0 and 9 * 3600 <= g.start_s < g.end_s <= 15 * 3600 + 30 * 60 for g in gaps)
    assert all(a.end_s < b.start_s for a, b in itertools.pairwise(gaps))
