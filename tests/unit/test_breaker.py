"""The circuit breaker: opens after consecutive failures, probes once, never sticks half-open."""

from __future__ import annotations

from services.gateway.breaker import BreakerState, CircuitBreaker


def test_opens_after_threshold_and_closes_after_a_good_probe() -> None:
    """Five failures open it; after open_s one probe goes through; its success closes it."""
    breaker = CircuitBreaker(failure_threshold=5, open_s=10)
    for _ in range(4):
        breaker.record_failure(now_s=0)
    assert breaker.allow(now_s=0)
    breaker.record_failure(now_s=0)
    assert breaker.state is BreakerState.OPEN and not breaker.allow(now_s=5)
    assert breaker.retry_after_s(now_s=5) == 5
    assert breaker.allow(now_s=10) and not breaker.allow(now_s=10.1)  # exactly one probe
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow(now_s=11)


def test_failed_probe_reopens() -> None:
    """A probe that fails opens the breaker again for a full period."""
    breaker = CircuitBreaker(failure_threshold=1, open_s=10)
    breaker.record_failure(now_s=0)
    assert breaker.allow(now_s=10)
    breaker.record_failure(now_s=10)
    assert breaker.state is BreakerState.OPEN and not breaker.allow(now_s=15)


def test_lost_probe_does_not_stick() -> None:
    """A probe whose request never reported back is replaced after another open period."""
    breaker = CircuitBreaker(failure_threshold=1, open_s=10)
    breaker.record_failure(now_s=0)
    assert breaker.allow(now_s=10)
    assert not breaker.allow(now_s=15)
    assert breaker.allow(now_s=20)


def test_a_probe_that_was_not_sent_lets_the_next_call_probe() -> None:
    """A probe let through but never sent (its read answered from its record, expired, withdrawn) hands the
    probe on at once instead of holding the breaker half-open for another period; a closed breaker is
    not changed by an unsent call."""
    breaker = CircuitBreaker(failure_threshold=1, open_s=10)
    breaker.unused()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(now_s=0)
    assert breaker.allow(now_s=10)
    breaker.unused()
    assert breaker.allow(now_s=10.1) and not breaker.allow(now_s=10.2)
