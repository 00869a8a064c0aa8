"""The jitter budget: how late after its recorded slot a send may reach the broker's counter.

Each send is recorded before it leaves with the moment it may start; it reaches the broker's counter
somewhat later. Part of that delay the gateway can see: its own lag between the slot and the moment the
request's headers left (a late event-loop wake-up, a busy core, connection set-up). The rest it cannot:
the network, the broker's accept queue, the broker's own stalls. ``J`` (``arrival_jitter_ms``) budgets
what cannot be seen.

A new send is recorded with the allowance ``J`` plus the own lag a send usually has (a moving average
plus one mean deviation, starting from ``COLD_LAG_S`` each before anything was measured, so a gateway
started under load does not trust its first, coldest sends); a send that turns out later than that is
extended to its measured lag plus ``J`` once its headers left, so the budget each send takes is what it
needed, not a worst case. When
``CONTENDED_SHARE`` of the recent sends (an average over the last ``CONTENDED_SENDS``, ten seconds at 20
req/s) ran later than ``LATE_SHARE_OF_J`` of ``J`` *and* the host's cores are contended (the event loop's
thread waited for a CPU at least ``CONTENDED_WAIT_SHARE`` of the last ten seconds, cpu_wait.py; where that
is unknown, lateness alone decides), the far side is presumed to stall as long again (on a shared host it
does, and the broker's process, busier than ours, often longer): every new send then gets ``J`` plus
twice the peak own lag of the last ``hold_s`` seconds, and never less than ``J`` plus
``CONTENDED_FLOOR_S`` (100 ms: with both cores of this host busy the sandbox's own loop stalls up to
some 95 ms while ours stalls half that). Late sends on a host with cores to spare are this process's own
work (a burst of intake, many answers at once): they are measured and extended like any late send, but
nothing slows the far side, so they do not widen the budget of the sends after them. The long average
keeps the state steady: a busy
host runs about a third of its sends late, a calm one well under a tenth, and the average of two hundred
sends moves by a few hundredths, so it neither flickers off under load nor turns on by chance. Until two
hundred sends were seen it is the plain average of those seen and ``CALM_PRIOR_SENDS`` calm ones, so a
gateway started on a busy host widens its budget within its first sends and one late first send does
not. The allowance never goes below ``J``; it is the effective J, exported as the metric
``apihub_pacing_jitter_seconds``.
"""

from __future__ import annotations

from collections import deque

from services.gateway.clock import Clock
from services.gateway.cpu_wait import RunQueueWait

HOLD_S = 10.0
CONTENDED_PEAK_FACTOR = 2.0  # our own peak lag, and as much again for the far side on the same host
CONTENDED_FLOOR_S = 0.1  # the far side's stall presumed at least while the host is contended
LAG_WEIGHT = 0.125  # of the newest lag in the moving average and deviation
COLD_LAG_S = 0.05  # the own lag presumed before the first measurement
LATE_SHARE_OF_J = 0.25  # a send this late (a quarter of J, 5 ms at 20 ms) counts as late
CONTENDED_SENDS = 200  # the sends the share of late ones is averaged over (ten seconds at 20 req/s)
CONTENDED_SHARE = 0.2  # a fifth of them late: the host is contended
CALM_PRIOR_SENDS = 20  # calm sends the average starts with, so one early late send is no sign
CONTENDED_WAIT_SHARE = 0.25  # the event loop waited for a CPU a quarter of the time: the cores are contended


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

    def __init__(
        self,
        setting_s: float,
        clock: Clock,
        *,
        hold_s: float = HOLD_S,
        cold_lag_s: float = COLD_LAG_S,
        run_queue: RunQueueWait | None = None,
    ) -> None:
        if setting_s < 0:
            raise ValueError("the jitter budget cannot be negative")
        self.setting_s = setting_s
        self._run_queue = run_queue  # None: the host's contention is unknown, lateness alone decides
        self._cores_busy = True  # as far as known: read again with every send
        self._peak = SlidingMax(clock, hold_s)
        # Cold start: before any measurement the own lag is presumed COLD_LAG_S (plus as much deviation),
        # as a fresh process's first sends run late (first connections, imports, a burst of intake);
        # the moving average wears it off within some twenty sends.
        self._mean_s = cold_lag_s
        self._deviation_s = cold_lag_s
        self._late_share = 0.0
        self._sends = 0

    def observe(self, lag_s: float) -> None:
        """One send's own lag: seconds from its slot to its headers leaving."""
        lag_s = max(0.0, lag_s)
        self._peak.observe(lag_s)
        self._deviation_s += LAG_WEIGHT * (abs(lag_s - self._mean_s) - self._deviation_s)
        self._mean_s += LAG_WEIGHT * (lag_s - self._mean_s)
        late = 1.0 if lag_s > LATE_SHARE_OF_J * self.setting_s else 0.0
        self._sends += 1
        self._late_share += (late - self._late_share) / min(self._sends + CALM_PRIOR_SENDS, CONTENDED_SENDS)
        if self._run_queue is not None:
            waited = self._run_queue.share()
            self._cores_busy = waited is None or waited >= CONTENDED_WAIT_SHARE

    def typical_lag_s(self) -> float:
        """The own lag a send usually has: the moving average plus one mean deviation."""
        return self._mean_s + self._deviation_s

    def peak_lag_s(self) -> float:
        """The largest own lag seen within the hold time."""
        return self._peak.value()

    def contended(self) -> bool:
        """True while many of the recent sends ran late by a good part of the budget and the host's cores
        are contended (or that is unknown)."""
        return self._late_share >= CONTENDED_SHARE and self._cores_busy

    def allowance_s(self) -> float:
        """Seconds a send recorded now may take to reach the broker's counter: the effective J."""
        if self.contended():
            return self.setting_s + max(CONTENDED_PEAK_FACTOR * self.peak_lag_s(), CONTENDED_FLOOR_S)
        return self.setting_s + self.typical_lag_s()
