"""The workers' share of the soak: history jobs and verification tasks published at a steady pace.

- History: every ``HISTORY_EVERY_S`` one ``1m`` job over one past weekday (the n-th before the sandbox's
  day, so no job repeats a day another job already holds and every one makes real calls) for two of the
  feed's symbols, alternating KIS and Kiwoom. The collector's calls go as ``bulk``.
- Verification: every ``VERIFY_EVERY_S`` one ``WINDOW_MIN``-minute window of one symbol, chosen among the
  windows of the sandbox's day that closed at least ``SETTLE_S`` before the clock's now (the feed follows
  the same clock, so their trades have been published): every such (window, symbol) once per pass,
  oldest first, then a new pass over what has closed by then. The feed's gaps and corrupted trades turn
  into recovery tasks, and each recovery into a second-round verification, so all three workers work.

``history_job`` and ``VerificationPlan`` are pure; ``WorkFeeder`` publishes what they return.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tests.soak.load import SYMBOLS

HISTORY_EVERY_S = 20.0
VERIFY_EVERY_S = 10.0
WINDOW_MIN = 10
SETTLE_S = 60
OPEN_MIN = 9 * 60  # 09:00
CLOSE_MIN = 15 * 60 + 30  # 15:30
HISTORY_TOPIC = "history.jobs"
VERIFY_TOPIC = "verification.tasks"

#: The sandbox clock's now (KST-aware), e.g. read from ``GET /_sandbox/clock``.
ClockReader = Callable[[], Awaitable[datetime]]


def weekdays_before(day: date, n: int) -> date:
    """The ``n``-th weekday before ``day`` (``n`` >= 1)."""
    found = 0
    current = day
    while found < n:
        current -= timedelta(days=1)
        if current.weekday() < 5:
            found += 1
    return current


def history_job(n: int, sandbox_day: date) -> dict[str, Any]:
    """The ``n``-th history job (from 0): two symbols, one past weekday, KIS on even ``n``, Kiwoom on odd."""
    first = (2 * n) % len(SYMBOLS)
    day = weekdays_before(sandbox_day, n % 200 + 1).isoformat()  # inside the sandbox's year of minute bars
    return {
        "task_id": f"soak-history-{n}",
        "symbols": [SYMBOLS[first], SYMBOLS[(first + 1) % len(SYMBOLS)]],
        "from": day,
        "to": day,
        "timeframe": "1m",
        "provider": "KIS" if n % 2 == 0 else "KIWOOM",
    }


def hhmm(minute: int) -> str:
    """``HH:MM`` of a minute of the day."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def closed_windows(now_s: int) -> list[tuple[int, int]]:
    """(start, end) minutes of the session's ``WINDOW_MIN``-minute windows that ended ``SETTLE_S`` or more
    before ``now_s`` (seconds since 00:00 KST), oldest first."""
    out = []
    for start in range(OPEN_MIN, CLOSE_MIN, WINDOW_MIN):
        end = min(start + WINDOW_MIN, CLOSE_MIN)
        if end * 60 + SETTLE_S <= now_s:
            out.append((start, end))
    return out


@dataclass
class VerificationPlan:
    """Which window of which symbol to verify next, pass after pass."""

    day: date
    symbols: tuple[str, ...] = SYMBOLS
    pass_no: int = 1
    done: set[tuple[int, str]] = field(default_factory=set)

    def next_task(self, now_s: int) -> dict[str, Any] | None:
        """The next task as of ``now_s`` (seconds since 00:00 KST on the clock); None before any window
        has closed."""
        windows = closed_windows(now_s)
        if not windows:
            return None
        todo = [(w, s) for w in windows for s in self.symbols if (w[0], s) not in self.done]
        if not todo:
            self.pass_no += 1
            self.done.clear()
            todo = [(w, s) for w in windows for s in self.symbols]
        (start, end), symbol = todo[0]
        self.done.add((start, symbol))
        window = f"{hhmm(start)}-{hhmm(end)}"
        return {
            "task_id": f"verify|{symbol}|{self.day.isoformat()}|{window}|r1|soak-p{self.pass_no}",
            "symbol": symbol,
            "day": self.day.isoformat(),
            "start": hhmm(start),
            "end": hhmm(end),
            "round": 1,
        }


def seconds_of_day(now: datetime) -> int:
    """Seconds since 00:00 of ``now``'s own wall time."""
    return now.hour * 3600 + now.minute * 60 + now.second


class WorkFeeder:
    """Publishes the history jobs and verification tasks for the length of the run."""

    def __init__(self, bootstrap: str, clock_now: ClockReader) -> None:
        self._bootstrap = bootstrap
        self._clock_now = clock_now
        self.published: Counter[str] = Counter()

    async def run(self, duration_s: float) -> None:
        """Publish on both schedules for ``duration_s`` seconds."""
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            start_now = await self._clock_now()
            plan = VerificationPlan(start_now.date())
            await asyncio.gather(
                self._history(producer, start_now.date(), duration_s),
                self._verification(producer, plan, duration_s),
            )
        finally:
            await producer.stop()

    async def _history(self, producer: AIOKafkaProducer, day: date, duration_s: float) -> None:
        start = time.monotonic()
        for n in range(int(duration_s / HISTORY_EVERY_S) + 1):
            await asyncio.sleep(max(0.0, start + n * HISTORY_EVERY_S - time.monotonic()))
            if time.monotonic() - start >= duration_s:
                return
            job = history_job(n, day)
            await producer.send_and_wait(HISTORY_TOPIC, orjson.dumps(job), key=job["task_id"].encode())
            self.published[HISTORY_TOPIC] += 1

    async def _verification(
        self, producer: AIOKafkaProducer, plan: VerificationPlan, duration_s: float
    ) -> None:
        start = time.monotonic()
        for n in range(int(duration_s / VERIFY_EVERY_S) + 1):
            await asyncio.sleep(max(0.0, start + n * VERIFY_EVERY_S - time.monotonic()))
            if time.monotonic() - start >= duration_s:
                return
            task = plan.next_task(seconds_of_day(await self._clock_now()))
            if task is None:
                continue
            await producer.send_and_wait(VERIFY_TOPIC, orjson.dumps(task), key=task["task_id"].encode())
            self.published[VERIFY_TOPIC] += 1
