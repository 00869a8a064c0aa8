"""A circuit breaker per provider: stop calling a broker that keeps failing, probe it now and then.

Closed: calls flow. After ``failure_threshold`` consecutive failures (no answer, or 5xx without an
envelope) it opens for ``open_s`` seconds, during which calls are refused without touching the network.
Then one probe is let through (half-open): success closes it, failure opens it again.
``counts_against_health`` says which answers are such failures: never a business error, a 4xx about
the request, or a refusal of the gateway's own (those never reach ``record_failure``).
"""

from __future__ import annotations

import time
from enum import StrEnum


def counts_against_health(http_status: int | None) -> bool:
    """True when an answer without a usable envelope says the broker is unwell: no HTTP status at all
    (no answer, a dropped connection) or a 5xx; a 4xx speaks of the request, not of the broker."""
    return http_status is None or http_status >= 500 or http_status < 400


class BreakerState(StrEnum):
    """Where the breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one provider."""

    def __init__(self, *, failure_threshold: int = 5, open_s: float = 10.0) -> None:
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._probe_at = 0.0

    def allow(self, now_s: float | None = None) -> bool:
        """True when a call may be made now."""
        now = time.monotonic() if now_s is None else now_s
        if self.state is BreakerState.OPEN and now - self._opened_at >= self.open_s:
            self.state = BreakerState.HALF_OPEN
            self._probing = False
        if self.state is BreakerState.CLOSED:
            return True
        # A probe that never reported back (its process was stopped mid-call) must not hold the breaker
        # forever.
        if self.state is BreakerState.HALF_OPEN and (
            not self._probing or now - self._probe_at >= self.open_s
        ):
            self._probing = True
            self._probe_at = now
            return True
        return False

    def unused(self) -> None:
        """A call ``allow`` let through was not sent after all (its request was answered otherwise, expired
        or withdrawn): if it was the half-open probe, the next call may probe at once."""
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False

    def retry_after_s(self, now_s: float | None = None) -> float:
        """Seconds until the next probe may go."""
        now = time.monotonic() if now_s is None else now_s
        return max(0.0, self._opened_at + self.open_s - now) if self.state is BreakerState.OPEN else 0.0

    def record_success(self) -> None:
        """A call got a usable answer."""
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._probing = False

    def record_failure(self, now_s: float | None = None) -> None:
        """A call got no usable answer."""
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self.state = BreakerState.OPEN
            self._opened_at = time.monotonic() if now_s is None else now_s
            self._probing = False
