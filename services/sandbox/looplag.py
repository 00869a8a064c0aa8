"""Event-loop lag of the sandbox process: how late its own loop wakes up, on the real monotonic clock.

The referee counts an arrival when its handler starts, so while the loop is stalled (GC, a busy core, a
blocking call) requests that already reached the socket wait and are then counted together, later than
they arrived. ``watch`` measures those stalls: it sleeps ``PERIOD_S`` (5 ms) in a loop and records each
wake-up's overshoot (actual sleep minus requested, clamped at 0) in a ``LoopLag``. A stall of X ms shows
up as one sample of about X ms, so ``max_ms`` bounds how far the referee's arrival times can trail the
socket.

Times come from ``time.monotonic_ns()``, never from the sandbox's simulated clock (tests freeze that one).

Memory is fixed: samples go into a histogram of ``len(EDGES_US) + 1`` buckets (0.1 ms wide up to 10 ms,
then 1 ms to 100 ms, 10 ms to 1 s, 100 ms to 10 s, and one overflow bucket), so ``p99_ms`` is the upper
edge of the bucket holding the 99th-percentile sample (nearest rank), never more than ``max_ms``.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from typing import Any

PERIOD_S = 0.005  # requested sleep between wake-ups
THRESHOLDS_MS = (10, 20, 50)  # reported as over_10ms, over_20ms, over_50ms (strictly greater)


def _edges_us() -> tuple[int, ...]:
    """Upper bucket edges in microseconds: 0.1 ms steps to 10 ms, then 1 ms, 10 ms, 100 ms steps to 10 s."""
    edges: list[int] = []
    for step_us, top_us in ((100, 10_000), (1_000, 100_000), (10_000, 1_000_000), (100_000, 10_000_000)):
        start = edges[-1] if edges else 0
        edges.extend(range(start + step_us, top_us + 1, step_us))
    return tuple(edges)


EDGES_US = _edges_us()


class LoopLag:
    """Overshoots of the loop-lag monitor's wake-ups since start or the last ``reset()``; fixed memory."""

    def __init__(self) -> None:
        self._buckets = [0] * (len(EDGES_US) + 1)
        self._samples = 0
        self._max_ns = 0
        self._over = [0] * len(THRESHOLDS_MS)
        self._thresholds_ns = tuple(ms * 1_000_000 for ms in THRESHOLDS_MS)

    def reset(self) -> None:
        """Forget every sample."""
        self._buckets = [0] * len(self._buckets)
        self._samples = 0
        self._max_ns = 0
        self._over = [0] * len(THRESHOLDS_MS)

    def record(self, lag_ns: int) -> None:
        """Record one wake-up that came ``lag_ns`` late (negative values count as 0)."""
        lag_ns = max(lag_ns, 0)
        self._samples += 1
        self._max_ns = max(self._max_ns, lag_ns)
        self._buckets[bisect_left(EDGES_US, math.ceil(lag_ns / 1000))] += 1
        for i, threshold_ns in enumerate(self._thresholds_ns):
            if lag_ns > threshold_ns:
                self._over[i] += 1

    def _percentile_ns(self, fraction: float) -> int:
        """Upper edge of the bucket holding the nearest-rank sample at ``fraction``, capped at the max."""
        if not self._samples:
            return 0
        rank = max(1, math.ceil(fraction * self._samples))
        seen = 0
        for index, count in enumerate(self._buckets):
            seen += count
            if seen >= rank:
                if index < len(EDGES_US):
                    return min(EDGES_US[index] * 1000, self._max_ns)
                break
        return self._max_ns

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view: ``{"max_ms", "p99_ms", "samples", "over_10ms", "over_20ms", "over_50ms"}``."""
        return {
            "max_ms": round(self._max_ns / 1e6, 3),
            "p99_ms": round(self._percentile_ns(0.99) / 1e6, 3),
            "samples": self._samples,
            **{f"over_{ms}ms": count for ms, count in zip(THRESHOLDS_MS, self._over, strict=True)},
        }


async def watch(lag: LoopLag, period_s: float = PERIOD_S) -> None:
    """Sleep ``period_s`` again and again, recording how late each wake-up is; runs until cancelled."""
    period_ns = round(period_s * 1e9)
    while True:
        started_ns = time.monotonic_ns()
        await asyncio.sleep(period_s)
        lag.record(time.monotonic_ns() - started_ns - period_ns)
