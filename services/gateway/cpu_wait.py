"""How much of the time this process's event loop waited for a CPU: the host's contention, as Linux sees it.

A send that leaves late says the event loop was busy or was not running. Busy with the gateway's own
work (a burst of intake, many answers at once) is this process's matter: nothing slows the broker's side.
Not running because other processes held every core is the host's contention, and on a shared host that
stalls the broker's side too (the sandbox, a proxy on the same machine). Linux keeps, per thread, the time
it spent runnable but waiting on a run queue (the second field of ``/proc/thread-self/schedstat``); how
much of the wall time that grew by over the last ``WINDOW_S`` seconds tells the two apart.

``RunQueueWait.share()`` reads it at most every ``SAMPLE_EVERY_S`` seconds, from the thread that calls it
(the event loop's, where sends are measured), and keeps the readings of the last window. Where the kernel
does not keep it, or before two readings exist, the share is unknown (None) and the jitter budget judges by
lateness alone (jitter.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path

from services.gateway.clock import Clock

WINDOW_S = 10.0
SAMPLE_EVERY_S = 0.5
SCHEDSTAT = Path("/proc/thread-self/schedstat")

Reader = Callable[[], float | None]  # seconds the calling thread has waited for a CPU so far, or None


def thread_wait_s() -> float | None:
    """Seconds the calling thread has spent runnable but waiting for a CPU since it started, or None."""
    try:
        return int(SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class RunQueueWait:
    """The share of the last ``WINDOW_S`` seconds the event loop's thread waited for a CPU."""

    def __init__(self, clock: Clock, read: Reader = thread_wait_s) -> None:
        self._clock = clock
        self._read = read
        self._readings: deque[tuple[float, float]] = deque()  # (monotonic s, waited s), oldest first
        self._known = True

    def share(self) -> float | None:
        """Waited seconds per wall second over the window (0 to 1), or None when unknown."""
        if not self._known:
            return None
        now = self._clock.monotonic()
        readings = self._readings
        if not readings or now - readings[-1][0] >= SAMPLE_EVERY_S:
            waited = self._read()
            if waited is None:
                self._known = False
                return None
            readings.append((now, waited))
            while len(readings) > 2 and readings[1][0] <= now - WINDOW_S:
                readings.popleft()
        if len(readings) < 2:
            return None
        (first_s, first_waited), (last_s, last_waited) = readings[0], readings[-1]
        return min(1.0, max(0.0, (last_waited - first_waited) / (last_s - first_s)))
