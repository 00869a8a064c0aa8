"""Market feed: the sandbox's stand-in for the WebSocket collectors (``kis-service``, ``kiwoom-service``).

Publishes the deterministic trades of ``Market.ticks`` to ``market.ticks``: one JSON message (orjson) per
trade, key = symbol, so a symbol's ticks stay in one partition and in order. The value holds ``symbol``,
``day`` (YYYYMMDD), ``seq`` (1-based position of the trade in the symbol-day's full tape, so a gap also
shows as a jump in ``seq``), ``ts_ms`` (epoch ms), ``time_kst`` (ISO 8601, +09:00), ``price`` (KRW),
``volume`` (shares) and ``source`` (``kis-ws`` | ``kiwoom-ws``). The record timestamp is the time of
publication, not ``ts_ms``: a replayed old day must not fall straight out of the topic's retention.

Two kinds of damage give the verification and recovery workers something real to find:

- missing intervals: the configured ``gaps`` plus random minute-aligned intervals covering about
  ``gap_rate`` of each symbol's session (start inclusive, end exclusive, KST); their ticks are not sent;
- corrupted values: about ``corrupt_rate`` of the published ticks carry price 0, a negated volume or a
  price 3-10x beyond the day's high or low. The message says nothing; the ``FeedReport`` lists them.

Both are pure functions of (``seed``, symbol, day), so ``plan_day`` tells a test the truth without Kafka.
``publish_day`` publishes one day and returns a ``FeedReport``; ``run_feed`` is the long-running process
that follows the simulated clock, publishing each trade once the clock has passed it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError, UnknownTopicOrPartitionError

from services.logs import log_event
from services.sandbox.bars import CLOSE_S, OPEN_S, DailyBar, Tick, round_tick
from services.sandbox.clock import KST, SimClock, as_kst
from services.sandbox.market import Market
from services.sandbox.settings import CorruptionKind, FeedSettings, SandboxSettings

logger = logging.getLogger(__name__)

SOURCES = ("kis-ws", "kiwoom-ws")
_SESSION_MINUTES = (CLOSE_S - OPEN_S) // 60  # 390; the 15:30:00 closing auction lies just past the last
_KEEP_DAYS = 16  # day runs run_feed remembers, so a clock set back does not publish a day twice
_MIN_WAIT_S = 0.01
#: How long the feed looks for its topic in Kafka's metadata before refusing it, and how often.
TOPIC_WAIT_S = 5.0
TOPIC_LOOK_S = 0.25


# -- the plan: what happens to every trade of a day --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GapInterval:
    """A missing interval of one symbol: trades with ``start_s <= second < end_s`` are not published."""

    symbol: str
    start_s: int  # seconds since 00:00 KST
    end_s: int


@dataclass(frozen=True, slots=True)
class FeedTick:
    """One trade of the plan, as the feed publishes it (or skips it)."""

    symbol: str
    seq: int  # 1-based position in the symbol-day's full tape
    original: Tick
    price: int  # KRW as published; differs from the original only when corrupted
    volume: int  # shares as published
    corruption: CorruptionKind | None = None
    gap: int | None = None  # index into ``DayPlan.gaps`` when the trade is not published

    @property
    def second(self) -> int:
        """Seconds since 00:00 KST."""
        return self.original.second


@dataclass(frozen=True)
class DayPlan:
    """Every trade of one day for the feed's symbols in time order: published, corrupted or skipped."""

    day: date
    ticks: tuple[FeedTick, ...]
    gaps: tuple[GapInterval, ...]
    sources: Mapping[str, str]  # symbol -> kis-ws | kiwoom-ws


def _seconds(value: time) -> int:
    return value.hour * 3600 + value.minute * 60 + value.second


def _hms(second: int) -> str:
    """Seconds since 00:00 as HH:MM:SS."""
    return f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"


def _gap_intervals(feed: FeedSettings, code: str, day: date) -> list[GapInterval]:
    """Configured and random missing intervals of ``code`` on ``day``, merged and sorted."""
    spans = [(_seconds(g.start), _seconds(g.end)) for g in feed.gaps if g.symbol in (code, "*")]
    if feed.gap_rate > 0:
        rng = random.Random(f"{feed.seed}:{code}:{day.isoformat()}:gaps")
        covered: set[int] = set()
        target = round(feed.gap_rate * _SESSION_MINUTES)
        for _ in range(4 * _SESSION_MINUTES):  # overlapping draws add nothing, so bound the attempts
            missing = target - len(covered)
            if missing <= 0:
                break
            length = min(rng.randint(feed.gap_min_minutes, feed.gap_max_minutes), missing)
            first = rng.randrange(_SESSION_MINUTES - length + 1)
            covered.update(range(first, first + length))
            spans.append((OPEN_S + 60 * first, OPEN_S + 60 * (first + length)))
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [GapInterval(code, start, end) for start, end in merged]


def _corrupt(kind: CorruptionKind, tick: Tick, bar: DailyBar, rng: random.Random) -> tuple[int, int]:
    """(price, volume) of a corrupted trade."""
    if kind == "zero_price":
        return 0, tick.volume
    if kind == "negative_volume":
        return tick.price, -tick.volume
    factor = rng.uniform(3.0, 10.0)
    if rng.random() < 0.5:
        return round_tick(bar.high * factor), tick.volume
    return round_tick(bar.low / factor), tick.volume


def plan_day(feed: FeedSettings, market: Market, day: date) -> DayPlan:
    """What the feed does with every trade of ``day``: a pure function of the settings, market and day."""
    if not market.is_trading_day(day):
        raise ValueError(f"{day.isoformat()} is not a trading day of the sandbox market")
    gaps: list[GapInterval] = []
    streams: list[list[FeedTick]] = []
    for code in feed.symbols:
        intervals = _gap_intervals(feed, code, day)
        starts = [g.start_s for g in intervals]
        base = len(gaps)
        gaps.extend(intervals)
        bar = market.daily_bar(code, day)
        if bar is None:  # cannot happen for a known symbol on a trading day; keeps the types honest
            raise ValueError(f"no daily bar for {code} on {day.isoformat()}")
        rng = random.Random(f"{feed.seed}:{code}:{day.isoformat()}:corrupt")
        stream: list[FeedTick] = []
        for seq, tick in enumerate(market.ticks(code, day), start=1):
            kind: CorruptionKind | None = None
            price, volume = tick.price, tick.volume
            # one draw per trade whether or not it is published, so gaps never move the corruption
            if feed.corrupt_rate > 0 and rng.random() < feed.corrupt_rate:
                chosen = rng.choice(feed.corrupt_kinds)
                price, volume = _corrupt(chosen, tick, bar, rng)
                kind = chosen
            at = bisect_right(starts, tick.second) - 1
            gap = base + at if at >= 0 and tick.second < intervals[at].end_s else None
            stream.append(FeedTick(code, seq, tick, price, volume, kind, gap))
        streams.append(stream)
    if feed.source == "alternate":
        sources = {code: SOURCES[i % 2] for i, code in enumerate(feed.symbols)}
    else:
        sources = dict.fromkeys(feed.symbols, feed.source)
    # heapq.merge is stable: trades in the same second keep the symbols' configured order
    ticks = tuple(heapq.merge(*streams, key=lambda t: t.second))
    return DayPlan(day, ticks, tuple(gaps), sources)


# -- the report ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Corruption:
    """A trade published with a corrupted value; ``true_*`` are what ``Market.ticks`` says."""

    symbol: str
    seq: int
    kind: CorruptionKind
    ts_ms: int
    price: int
    volume: int
    true_price: int
    true_volume: int


@dataclass(slots=True)
class GapReport:
    """One missing interval (KST, HH:MM:SS, end exclusive) and the trades it kept from the topic so far."""

    start: str
    end: str
    skipped: int = 0
    first_seq: int | None = None
    last_seq: int | None = None


@dataclass
class FeedReport:
    """What one day's publication did: counts, missing intervals, corrupted trades, first and last instant."""

    day: date
    topic: str
    published: int = 0
    published_by_symbol: dict[str, int] = field(default_factory=dict)
    skipped_by_gap: dict[str, list[GapReport]] = field(default_factory=dict)
    corrupted: dict[str, list[Corruption]] = field(default_factory=dict)
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    complete: bool = False  # every trade of the day, through the closing auction, has been handled
    stopped: bool = False  # the stop event ended the publication early

    @property
    def skipped(self) -> int:
        """Trades left out by gaps, all symbols."""
        return sum(g.skipped for gaps in self.skipped_by_gap.values() for g in gaps)

    @property
    def corrupted_count(self) -> int:
        """Trades published with a corrupted value, all symbols."""
        return sum(len(c) for c in self.corrupted.values())

    def corrupted_seqs(self, symbol: str) -> list[int]:
        """Sequence numbers of ``symbol``'s corrupted trades, ascending."""
        return [c.seq for c in self.corrupted.get(symbol, [])]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "day": self.day.strftime("%Y%m%d"),
            "topic": self.topic,
            "published": self.published,
            "skipped": self.skipped,
            "corrupted_count": self.corrupted_count,
            "published_by_symbol": dict(self.published_by_symbol),
            "skipped_by_gap": {
                symbol: [
                    {"start": g.start, "end": g.end, "skipped": g.skipped, "seqs": [g.first_seq, g.last_seq]}
                    for g in gaps
                ]
                for symbol, gaps in self.skipped_by_gap.items()
            },
            "corrupted": {
                symbol: [
                    {
                        "seq": c.seq,
                        "kind": c.kind,
                        "ts_ms": c.ts_ms,
                        "price": c.price,
                        "volume": c.volume,
                        "true_price": c.true_price,
                        "true_volume": c.true_volume,
                    }
                    for c in items
                ]
                for symbol, items in self.corrupted.items()
            },
            "first_ts_ms": self.first_ts_ms,
            "last_ts_ms": self.last_ts_ms,
            "complete": self.complete,
            "stopped": self.stopped,
        }


# -- publishing ----------------------------------------------------------------------------------------------
async def _wait(stop: asyncio.Event | None, delay_s: float) -> bool:
    """Sleep ``delay_s`` or until ``stop`` is set; True when stopped."""
    if stop is None:
        await asyncio.sleep(delay_s)
        return False
    try:
        async with asyncio.timeout(delay_s):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def _drain(pending: list[asyncio.Future[Any]]) -> None:
    """Wait for every outstanding acknowledgement; raise the first delivery error."""
    if not pending:
        return
    results = await asyncio.gather(*pending, return_exceptions=True)
    pending.clear()
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # abandoned after an error: retrieve it so asyncio does not complain


class _DayRun:
    """Publication state of one day: the plan, how far it has been handled and the report so far."""

    def __init__(self, plan: DayPlan, feed: FeedSettings) -> None:
        self.plan = plan
        self.feed = feed
        self.cursor = 0
        self.announced = False
        self._seconds = [t.second for t in plan.ticks]
        self._midnight = datetime.combine(plan.day, time(), KST)
        self._midnight_ms = int(self._midnight.timestamp()) * 1000
        self._day = plan.day.strftime("%Y%m%d")
        self._gaps = [GapReport(_hms(g.start_s), _hms(g.end_s)) for g in plan.gaps]
        self.report = FeedReport(plan.day, feed.topic)
        for code in feed.symbols:
            self.report.published_by_symbol[code] = 0
            self.report.skipped_by_gap[code] = []
            self.report.corrupted[code] = []
        for interval, gap in zip(plan.gaps, self._gaps, strict=True):
            self.report.skipped_by_gap[interval.symbol].append(gap)

    @property
    def done(self) -> bool:
        """Every trade of the day has been handled."""
        return self.cursor >= len(self.plan.ticks)

    @property
    def next_second(self) -> int | None:
        """Second of day of the next trade to handle, None when done."""
        return None if self.done else self._seconds[self.cursor]

    def _value(self, tick: FeedTick, ts_ms: int) -> bytes:
        return orjson.dumps(
            {
                "symbol": tick.symbol,
                "day": self._day,
                "seq": tick.seq,
                "ts_ms": ts_ms,
                "time_kst": (self._midnight + timedelta(seconds=tick.second)).isoformat(),
                "price": tick.price,
                "volume": tick.volume,
                "source": self.plan.sources[tick.symbol],
            }
        )

    def _skip(self, tick: FeedTick, gap: int) -> None:
        report = self._gaps[gap]
        report.skipped += 1
        report.first_seq = tick.seq if report.first_seq is None else report.first_seq
        report.last_seq = tick.seq

    def _sent(self, tick: FeedTick, ts_ms: int) -> None:
        report = self.report
        report.published += 1
        report.published_by_symbol[tick.symbol] += 1
        if report.first_ts_ms is None:
            report.first_ts_ms = ts_ms
        report.last_ts_ms = ts_ms
        if tick.corruption is not None:
            report.corrupted[tick.symbol].append(
                Corruption(
                    tick.symbol,
                    tick.seq,
                    tick.corruption,
                    ts_ms,
                    tick.price,
                    tick.volume,
                    tick.original.price,
                    tick.original.volume,
                )
            )
        if report.published % self.feed.progress_every == 0:
            log_event(
                logger,
                "feed.progress",
                day=self._day,
                published=report.published,
                skipped=report.skipped,
                corrupted=report.corrupted_count,
                time_kst=_hms(tick.second),
            )

    async def publish(
        self, producer: Any, *, until_s: int | None, stop: asyncio.Event | None, speed: float = 0.0
    ) -> None:
        """Handle the trades up to second ``until_s`` (None = the whole day), paced at ``speed`` if > 0."""
        end = len(self._seconds) if until_s is None else bisect_right(self._seconds, until_s)
        if self.cursor >= end:
            self.report.complete = self.done
            return
        loop = asyncio.get_running_loop()
        started, first_second = loop.time(), self._seconds[self.cursor]
        pending: list[asyncio.Future[Any]] = []
        try:
            while self.cursor < end:
                if stop is not None and stop.is_set():
                    self.report.stopped = True
                    break
                tick = self.plan.ticks[self.cursor]
                if speed > 0:
                    delay_s = started + (tick.second - first_second) / speed - loop.time()
                    if delay_s > 0:
                        await _drain(pending)  # what is due is acknowledged before the pause
                        if await _wait(stop, delay_s):
                            continue
                if tick.gap is not None:
                    self._skip(tick, tick.gap)
                else:
                    ts_ms = self._midnight_ms + tick.second * 1000
                    value = self._value(tick, ts_ms)
                    pending.append(
                        await producer.send(self.feed.topic, value=value, key=tick.symbol.encode())
                    )
                    self._sent(tick, ts_ms)
                    if len(pending) >= self.feed.max_in_flight:
                        await _drain(pending)
                self.cursor += 1
            await _drain(pending)
        except BaseException:
            for future in pending:
                future.add_done_callback(_retrieve)
            raise
        self.report.complete = self.done

    def log_done(self) -> None:
        """One ``feed.day_done`` line (with ``complete`` and ``stopped``), once."""
        if self.announced:
            return
        self.announced = True
        report = self.report
        log_event(
            logger,
            "feed.day_done",
            day=self._day,
            topic=report.topic,
            published=report.published,
            skipped=report.skipped,
            corrupted=report.corrupted_count,
            complete=report.complete,
            stopped=report.stopped,
            gaps={
                s: [f"{g.start}-{g.end}" for g in gaps] for s, gaps in report.skipped_by_gap.items() if gaps
            },
        )


@asynccontextmanager
async def _producer(
    target: Any, feed: FeedSettings, client_options: Mapping[str, Any] | None
) -> AsyncIterator[Any]:
    """Use a producer passed in as is; otherwise own an idempotent one for the block, connecting with
    ``client_options`` (SASL/TLS: ``services.kafka_client.client_kwargs``)."""
    if not isinstance(target, str):
        yield target
        return
    producer = AIOKafkaProducer(
        bootstrap_servers=target,
        client_id=feed.client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=feed.linger_ms,
        **dict(client_options or {}),
    )
    try:
        await producer.start()
        await _require_topic(producer, feed.topic)
        yield producer
    finally:
        await producer.stop()


async def _require_topic(producer: AIOKafkaProducer, topic: str) -> None:
    """Refuse within ``TOPIC_WAIT_S`` a topic Kafka does not have (``UnknownTopicOrPartitionError``) or does
    not let this principal see (``TopicAuthorizationFailedError``): the first send would wait for its
    metadata for the whole request timeout (40 s) before saying so. A topic created a moment ago may be
    missing from the first answers (its metadata is still spreading), hence a few looks."""
    client = producer.client
    await client.add_topic(topic)  # a metadata request naming it
    for _ in range(round(TOPIC_WAIT_S / TOPIC_LOOK_S)):
        if topic in client.cluster.unauthorized_topics:
            raise TopicAuthorizationFailedError(topic)
        if client.cluster.partitions_for_topic(topic) is not None:
            return
        await asyncio.sleep(TOPIC_LOOK_S)
        await client.force_metadata_update()
    raise UnknownTopicOrPartitionError(topic)


def sandbox_clock(settings: SandboxSettings) -> SimClock:
    """A simulated clock built as the sandbox server builds its own (same start rule and rate)."""
    return SimClock(settings.clock_start, settings.clock_rate, settings.clock_start_time_kst)


def sandbox_market(settings: SandboxSettings) -> Market:
    """The market the sandbox server serves, so the feed's ticks equal its REST answers."""
    return Market(
        settings.market_seed,
        settings.market_history_start,
        settings.market_holidays,
        settings.market_cache_days,
    )


def _second_of_day(instant: datetime) -> int:
    local = as_kst(instant)
    return local.hour * 3600 + local.minute * 60 + local.second


async def publish_day(
    settings: SandboxSettings,
    producer_or_bootstrap: AIOKafkaProducer | str,
    *,
    day: date | None = None,
    until: datetime | None = None,
    stop: asyncio.Event | None = None,
    market: Market | None = None,
    clock: SimClock | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> FeedReport:
    """Publish one day of ``settings.feed.symbols`` to ``settings.feed.topic`` and report what was done.

    ``day`` defaults to ``settings.feed.day``, then to the clock's current trading day. Trades after
    ``until`` (default: the clock's now, so a sandbox never publishes the future) are left out. Replays at
    ``settings.feed.speed`` simulated seconds per real second (0 = as fast as possible). A producer passed
    in is used as is and left running; a bootstrap string gets an idempotent producer (acks=all) owned by
    this call, connecting with ``client_options`` (the security arguments of
    ``services.kafka_client.client_kwargs``). ``stop`` ends the publication early (``report.stopped``).
    """
    feed = settings.feed
    clock = clock or sandbox_clock(settings)
    market = market or sandbox_market(settings)
    now = clock.now()
    day = day or feed.day or market.latest_trading_day(now.date())
    if day is None:
        raise ValueError(f"no trading day on or before {now.date().isoformat()} in the sandbox market")
    cut = as_kst(until) if until is not None else now
    until_s = None if cut.date() > day else -1 if cut.date() < day else _second_of_day(cut)
    run = _DayRun(plan_day(feed, market, day), feed)
    log_event(
        logger,
        "feed.day_started",
        day=day.strftime("%Y%m%d"),
        topic=feed.topic,
        symbols=feed.symbols,
        speed=feed.speed,
        until_kst=None if until_s is None else cut.isoformat(),
    )
    async with _producer(producer_or_bootstrap, feed, client_options) as producer:
        await run.publish(producer, until_s=until_s, stop=stop, speed=feed.speed)
    run.log_done()
    return run.report


async def run_feed(
    settings: SandboxSettings,
    stop: asyncio.Event,
    *,
    clock: SimClock | None = None,
    market: Market | None = None,
    producer: AIOKafkaProducer | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Follow the simulated clock until ``stop`` is set, publishing each trade once the clock has passed it.

    On start the current trading day is published up to now at once; afterwards the feed wakes for the
    next trade (or every ``poll_interval_s`` at most, to notice clock jumps). A day left unfinished when
    the clock moves to a later one is completed first; a day seen before is continued, never repeated.
    Pass the sandbox's own ``clock`` and ``market`` to run inside the sandbox process; without a
    ``producer``, one is made with ``client_options`` (SASL/TLS) as in ``publish_day``.
    """
    feed = settings.feed
    clock = clock or sandbox_clock(settings)
    market = market or sandbox_market(settings)
    runs: OrderedDict[date, _DayRun] = OrderedDict()
    target = feed.bootstrap_servers if producer is None else producer
    async with _producer(target, feed, client_options) as kafka:
        log_event(
            logger, "feed.started", topic=feed.topic, symbols=feed.symbols, now_kst=clock.now().isoformat()
        )
        while not stop.is_set():
            now = clock.now()
            day = market.latest_trading_day(now.date())
            delay_s = feed.poll_interval_s
            if day is not None:
                run = runs.get(day)
                if run is None:
                    for earlier in list(runs.values()):
                        if earlier.plan.day < day and not earlier.done:
                            await earlier.publish(kafka, until_s=None, stop=stop)
                            if earlier.done:
                                earlier.log_done()
                    run = runs[day] = _DayRun(plan_day(feed, market, day), feed)
                    while len(runs) > _KEEP_DAYS:
                        runs.popitem(last=False)
                live = day == now.date()
                await run.publish(kafka, until_s=_second_of_day(now) if live else None, stop=stop)
                if run.done:
                    run.log_done()
                next_second = run.next_second
                if live and next_second is not None and clock.rate > 0:
                    now_s = _second_of_day(now) + now.microsecond / 1e6
                    delay_s = min(delay_s, max(_MIN_WAIT_S, (next_second - now_s) / clock.rate))
            await _wait(stop, delay_s)
    log_event(logger, "feed.stopped", days=[d.strftime("%Y%m%d") for d in runs])
