"""The jitter budget: how late after its recorded slot a send may reach the broker's counter.

Each send is recorded before it leaves with the moment it may start; it reaches the broker's counter
somewhat later. Part of that delay the gateway can see: its own lag between the slot and the moment the
request's headers left (a late event-loop wake-up, a busy core, connection set-up). The rest it cannot:
the network, the broker's accept queue, the broker's own stalls. ``J`` (``arrival_jitter_ms``) budgets
what cannot be seen.

A new send is recorded with the allowance ``J`` plus the own lag a send usually has (a moving average
plus one mean deviation); a send that turns out later than that is extended to its measured lag plus
``J`` once its headers left, so the budget each send takes is what it needed, not a worst case. When
``CONTENDED_LATE`` of the last ``RECENT_SENDS`` sends ran later than ``LATE_SHARE_OF_J`` of ``J``, the
host is contended (a lone pause, a garbage collection, is not), and the far side is presumed to stall as
long again (on a shared host it does, and the broker's process, busier than ours, often longer): every
new send then gets ``J`` plus twice the peak own lag of the last ``hold_s`` seconds, and the host stays
contended until ``hold_s`` seconds after the last time the sign was seen, so a busy host that
momentarily looks calm does not drop the wide budget while its far side still stalls. The allowance
never goes below ``J``; it is the effective J, exported as the metric ``apihub_pacing_jitter_seconds``.
"""

from __future__ import annotations

from collections import deque

from services.gateway.clock import Clock

HOLD_S = 10.0
CONTENDED_PEAK_FACTOR = 2.0  # our own peak lag, and as much again for the far side on the same host
LAG_WEIGHT = 0.125  # of the newest lag in the moving average and deviation
LATE_SHARE_OF_J = 0.25  # a send this late (a quarter of J, 5 ms at 20 ms) counts as late
RECENT_SENDS = 20  # the sends the sign of contention looks at (one second at 20 req/s)
CONTENDED_LATE = 6  # late sends among them that mark the host contended


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
    """The setting, the typical own lag and the recent peak own lag."""

    def __init__(self, setting_s: float, clock: Clock, *, hold_s: float = HOLD_S) -> None:
        if setting_s < 0:
            raise ValueError("the jitter budget cannot be negative")
        self.setting_s = setting_s
        self._clock = clock
        self._hold_s = hold_s
        self._peak = SlidingMax(clock, hold_s)
        self._mean_s = 0.0
        self._deviation_s = 0.0
        self._recent_late: deque[bool] = deque(maxlen=RECENT_SENDS)
        self._contended_until = float("-inf")

    def observe(self, lag_s: float) -> None:
        """One send's own lag: seconds from its slot to its headers leaving."""
        lag_s = max(0.0, lag_s)
        self._peak.observe(lag_s)
        self._deviation_s += LAG_WEIGHT * (abs(lag_s - self._mean_s) - self._deviation_s)
        self._mean_s += LAG_WEIGHT * (lag_s - self._mean_s)
        self._recent_late.append(lag_s > LATE_SHARE_OF_J * self.setting_s)
        if sum(self._recent_late) >= CONTENDED_LATE:
            self._contended_until = self._clock.monotonic() + self._hold_s

    def typical_lag_s(self) -> float:
        """The own lag a send usually has: the moving average plus one mean deviation."""
        return self._mean_s + self._deviation_s

    def peak_lag_s(self) -> float:
        """The largest own lag seen within the hold time."""
        return self._peak.value()

    def contended(self) -> bool:
        """True while many recent sends ran late by a good part of the budget, and ``hold_s`` after."""
        return self._clock.monotonic() < self._contended_until

    def allowance_s(self) -> float:
        """Seconds a send recorded now may take to reach the broker's counter: the effective J."""
        if self.contended():
            return self.setting_s + CONTENDED_PEAK_FACTOR * self.peak_lag_s()
        return self.setting_s + self.typical_lag_s()
