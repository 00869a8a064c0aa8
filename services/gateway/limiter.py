"""Exact pacing per limit domain: GCRA with burst 0 and a safety margin.

Each reservation gets a start time at least one emission interval after the previous one, so the
upstream never sees two calls closer than ``1 / (rate * (1 - margin))`` seconds apart, whatever the
jitter of the event loop. A reservation that cannot start before the request's deadline is refused at
once, so the caller hears ``deadline_unreachable`` instead of waiting for a useless answer.
"""

from __future__ import annotations

import time


class Pacer:
    """One limit domain's theoretical arrival time (TAT)."""

    def __init__(self, rate_per_s: float, *, safety_margin: float = 0.02) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if not 0 <= safety_margin < 1:
            raise ValueError("safety_margin must be in [0, 1)")
        self.interval_s = 1.0 / (rate_per_s * (1.0 - safety_margin))
        self._tat_s = 0.0  # monotonic seconds

    def reserve(self, deadline_s: float | None = None, now_s: float | None = None) -> float | None:
        """Reserve the next slot; returns its start (monotonic seconds) or None if past ``deadline_s``."""
        now = time.monotonic() if now_s is None else now_s
        start = max(now, self._tat_s)
        if deadline_s is not None and start > deadline_s:
            return None
        self._tat_s = start + self.interval_s
        return start

    def wait_s(self, now_s: float | None = None) -> float:
        """How long a reservation made now would wait."""
        now = time.monotonic() if now_s is None else now_s
        return max(0.0, self._tat_s - now)

    def slow_down(self, factor: float = 2.0, *, now_s: float | None = None) -> None:
        """Push the next slot back by ``factor`` intervals after a throttle answer from the broker."""
        now = time.monotonic() if now_s is None else now_s
        self._tat_s = max(self._tat_s, now) + self.interval_s * factor
