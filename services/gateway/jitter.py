"""The jitter budget: how late after its recorded slot a send may reach the broker's counter.

Each send is recorded before it leaves with the moment it may start; it reaches the broker's counter
somewhat later. Part of that delay the gateway can see: its own lag between the slot and the moment the
request's headers left (a late event-loop wake-up, a busy core, connection set-up). The rest it cannot:
the network, the broker's accept queue, the broker's own stalls. ``J`` (``arrival_jitter_ms``) budgets
what cannot be seen; the allowance of a send is ``J`` plus the largest own lag measured within the last
``hold_s`` seconds, so a gateway that starts lagging widens its budget by what it measures and never
goes below the setting. A send whose own lag was larger than its allowance assumed is extended in the
log by the limiter once the lag is known.
"""

from __future__ import annotations

from collections import deque

from services.gateway.clock import Clock

HOLD_S = 10.0


class SlidingMax:
    """The largest value observed within the last ``hold_s`` seconds (O(1) amortised)."""

    def __init__(self, clock: Clock, hold_s: float) -> None:
        self._clock = clock
        self._hold_s = hold_s
        self._peaks: deque[tuple[float, float]] = deque()  # (seen at, value), values decreasing

    def observe(self, value: float) -> None:
        """Add one observation."""
        while self._peaks and self._peaks[-1][1] <= value:
            self._peaks.pop()
        self._peaks.append((self._clock.monotonic(), value))

    def value(self, default: float = 0.0) -> float:
        """The maximum within the hold time, or ``default`` when nothing was observed in it."""
        horizon = self._clock.monotonic() - self._hold_s
        while self._peaks and self._peaks[0][0] < horizon:
            self._peaks.popleft()
        return self._peaks[0][1] if self._peaks else default


class JitterBudget:
    """The setting plus a sliding maximum of the measured own lag."""

    def __init__(self, setting_s: float, clock: Clock, *, hold_s: float = HOLD_S) -> None:
        if setting_s < 0:
            raise ValueError("the jitter budget cannot be negative")
        self.setting_s = setting_s
        self._lag = SlidingMax(clock, hold_s)

    def observe(self, lag_s: float) -> None:
        """One send's own lag: seconds from its slot to its headers leaving."""
        self._lag.observe(max(0.0, lag_s))

    def own_lag_s(self) -> float:
        """The largest own lag seen within the hold time."""
        return self._lag.value()

    def allowance_s(self) -> float:
        """Seconds a send recorded now may take to reach the broker's counter: the effective J."""
        return self.setting_s + self.own_lag_s()
