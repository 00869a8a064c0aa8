"""The sandbox's simulated clock: wall time in KST for the market and tokens, a monotonic source for limits.

Default: at start-up the simulated time is the latest weekday (today in KST, or the previous Friday at a
weekend) at ``clock_start_time_kst`` (15:30:00, so the whole session's minute data exists) and it then
advances at ``clock_rate`` simulated seconds per real second. ``clock_start`` pins an exact instant instead.

``set()`` and ``advance()`` move the wall time (``POST /_sandbox/clock``). The monotonic source used by the
rate limiter and the token-issuance interval moves with every *forward* jump and never backwards, so a test
can expire a one-second window or a 60 s issuance interval without sleeping, and setting the clock back
never un-expires anything. With ``rate == 0`` both stand still, which makes bursts deterministic.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, timezone
from datetime import time as TimeOfDay
from typing import Any

KST = timezone(timedelta(hours=9), "KST")
CLOCK_END = datetime(2100, 1, 1, tzinfo=KST)  # the clock is set, advanced or started before this only
MAX_CLOCK_RATE = 86_400.0  # a simulated day per real second, at start-up as through POST /_sandbox/clock


def first_instant(day: date) -> datetime:
    """00:00 KST of ``day``: the earliest the clock may show when ``day`` is the market's first day."""
    return datetime(day.year, day.month, day.day, tzinfo=KST)


def within(at: datetime, earliest: datetime) -> bool:
    """Whether the clock may show ``at`` when the market's first instant is ``earliest``: the start-up
    instant (``clock_start``) and every move of ``POST /_sandbox/clock`` are held to the same range."""
    return earliest <= at < CLOCK_END


def range_text(earliest: datetime) -> str:
    """The range ``within`` allows, as the refusals name it."""
    bounds = f"[{earliest.isoformat()}, {CLOCK_END.isoformat()})"
    return f"{bounds} (from the market's first day to the end of 2099 KST)"


_TIME_OF_DAY = re.compile(r"(\d{2}):(\d{2})(?::(\d{2}))?")


def time_of_day(text: str) -> TimeOfDay:
    """``HH:MM`` or ``HH:MM:SS`` (24-hour) as a time, else ValueError saying the form: the setting
    ``clock_start_time_kst`` is checked with this as the sandbox starts, not when the clock is made."""
    found = _TIME_OF_DAY.fullmatch(text)
    if found:
        hour, minute, second = (int(part) for part in found.groups(default="0"))
        if hour < 24 and minute < 60 and second < 60:
            return TimeOfDay(hour, minute, second)
    raise ValueError("not a time of day: HH:MM or HH:MM:SS, 24-hour, from 00:00 to 23:59:59")


def _default_start(start_time_kst: str, real_now: datetime) -> datetime:
    """Latest weekday (KST) at the given HH:MM or HH:MM:SS."""
    local = real_now.astimezone(KST)
    day = local.date()
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return datetime.combine(day, time_of_day(start_time_kst), tzinfo=KST)


def as_kst(value: datetime) -> datetime:
    """The same instant in KST; a naive value is read as KST wall time."""
    if value.tzinfo is None:
        return value.replace(tzinfo=KST)
    return value.astimezone(KST)


class SimClock:
    """Simulated wall clock (KST) plus a monotonic reading that only moves forward."""

    def __init__(self, start: datetime | None = None, rate: float = 1.0, start_time_kst: str = "15:30:00"):
        initial = as_kst(start) if start is not None else _default_start(start_time_kst, datetime.now(KST))
        self._initial = initial
        self._initial_rate = rate
        # integer nanoseconds, so forward jumps add up exactly and window edges are not lost to rounding
        self._anchor_real_ns = time.monotonic_ns()
        self._anchor_sim = initial
        self._anchor_mono_ns = 0
        self._reanchored = False  # no jump or rate change yet: the rate held before the start too
        self._rate = rate

    def _elapsed_sim_ns(self) -> int:
        return int((time.monotonic_ns() - self._anchor_real_ns) * self._rate)

    def now(self) -> datetime:
        """Simulated wall time, timezone-aware KST."""
        return self._anchor_sim + timedelta(microseconds=self._elapsed_sim_ns() // 1000)

    def today(self) -> date:
        """Simulated calendar date in KST."""
        return self.now().date()

    def monotonic_ns(self) -> int:
        """Simulated monotonic nanoseconds; advances with time and forward jumps only."""
        return self._anchor_mono_ns + self._elapsed_sim_ns()

    def monotonic_ns_ago(self, real_ns: int) -> int:
        """The monotonic reading ``real_ns`` real nanoseconds ago (a kernel receive stamp's age), never
        before the last jump or rate change (the simulated time before it is not kept)."""
        ago_ns = max(real_ns, 0)
        if self._reanchored:
            ago_ns = min(ago_ns, time.monotonic_ns() - self._anchor_real_ns)
        return self.monotonic_ns() - int(ago_ns * self._rate)

    def monotonic(self) -> float:
        """Simulated monotonic seconds; advances with time and forward jumps only."""
        return self.monotonic_ns() / 1e9

    @property
    def rate(self) -> float:
        """Simulated seconds per real second (0 = frozen)."""
        return self._rate

    def _reanchor(self, sim: datetime, mono_ns: int) -> None:
        self._reanchored = True
        self._anchor_real_ns = time.monotonic_ns()
        self._anchor_sim = sim
        self._anchor_mono_ns = mono_ns

    def set(self, now: datetime | None = None, rate: float | None = None) -> None:
        """Jump to ``now`` (naive = KST) and/or change the rate; monotonic time follows forward jumps only."""
        if rate is not None and rate < 0:
            raise ValueError("rate must be >= 0")
        current = self.now()
        mono_ns = self.monotonic_ns()
        target = as_kst(now) if now is not None else current
        jump_ns = (target - current) // timedelta(microseconds=1) * 1000
        self._reanchor(target, mono_ns + max(jump_ns, 0))
        if rate is not None:
            self._rate = rate

    def advance(self, seconds: float) -> None:
        """Move simulated time forward by ``seconds`` (must be >= 0)."""
        if seconds < 0:
            raise ValueError("advance_s must be >= 0; use set(now=...) to go back")
        self.set(now=self.now() + timedelta(seconds=seconds))

    def reset(self) -> None:
        """Back to the start-up instant and rate (monotonic time keeps going forward)."""
        self._reanchor(self._initial, self.monotonic_ns())
        self._rate = self._initial_rate

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view for ``GET /_sandbox/clock``."""
        now = self.now()
        return {
            "now": now.isoformat(),
            "today": now.date().isoformat(),
            "rate": self._rate,
            "monotonic_s": round(self.monotonic(), 6),
        }
