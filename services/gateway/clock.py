"""Time, passed in: the gateway reads clocks and sleeps only through a ``Clock``.

``SystemClock`` is the real one. ``ManualClock`` stands still until a test moves it with ``advance``,
waking every sleeper whose time has come, in order, so pacing, deadlines, retries and token expiry are
tested without waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds for intervals, wall seconds for deadlines and expiries, and sleeping."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The process's clocks and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back."""
        return time.monotonic()

    def time(self) -> float:
        """Epoch seconds."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (nothing for zero or less, but still a yield to the loop)."""
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told to; ``time() - monotonic()`` stays ``epoch_s``."""

    def __init__(self, epoch_s: float = 1_790_000_000.0) -> None:
        self._now = 0.0
        self._epoch_s = epoch_s
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        """The current reading."""
        return self._now

    def time(self) -> float:
        """The current reading as epoch seconds."""
        return self._epoch_s + self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until ``advance`` has moved the clock ``seconds`` further."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move the clock forward, waking sleepers one deadline at a time and letting them run."""
        target = self._now + seconds
        await _settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            wake_at, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake_at)
            if not future.done():
                future.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle(rounds: int = 20) -> None:
    """Let ready tasks run: a woken task may schedule others before it sleeps again."""
    for _ in range(rounds):
        await asyncio.sleep(0)
