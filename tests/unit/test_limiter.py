"""GCRA pacing with burst 0: exact spacing, deadline refusal, AIMD (the process-local part)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from services.gateway.limiter import MIN_RATE_FACTOR, DomainLimiter, Pacer


def test_pacer_pushes_back() -> None:
    """The local pacer keeps the next slot one interval after the latest reserved start."""
    pacer = Pacer(0.05)
    assert pacer.wait_s(now_s=100.0) == 0.0
    pacer.push_back(100.0)
    assert pacer.wait_s(now_s=100.0) == pytest.approx(0.05)
    pacer.push_back(99.0)  # an earlier start never pulls the schedule forward
    assert pacer.wait_s(now_s=100.0) == pytest.approx(0.05)


def test_margin_widens_interval() -> None:
    """A safety margin of 2 % paces at 98 % of the nominal rate."""
    assert DomainLimiter("KIS", 20, redis=None, safety_margin=0.02).interval_s == pytest.approx(1 / 19.6)


async def test_local_reservations_are_spaced() -> None:
    """Without Redis the limiter still spaces its own reservations by one interval each."""
    limiter = DomainLimiter("KIS", 10, redis=None, safety_margin=0.0)
    waits = [await limiter.reserve() for _ in range(4)]
    assert waits[0] == pytest.approx(0.0, abs=0.01)
    assert [round(b - a, 2) for a, b in itertools.pairwise(waits)] == [0.1, 0.1, 0.1]
    assert await limiter.reserve(max_wait_s=0.05) is None


def test_aimd() -> None:
    """Throttle answers halve the rate down to a floor; successes win it back step by step."""
    limiter = DomainLimiter("KIWOOM", 5, redis=None, safety_margin=0.0)
    limiter.throttled()
    assert limiter.interval_s == pytest.approx(0.4)
    for _ in range(5):
        limiter.throttled()
    assert limiter.rate_factor == MIN_RATE_FACTOR
    for _ in range(1000):
        limiter.succeeded()
    assert limiter.rate_factor == 1.0


def test_bad_configuration() -> None:
    """Nonsense rates and margins are refused."""
    with pytest.raises(ValueError):
        DomainLimiter("KIS", 0, redis=None)
    with pytest.raises(ValueError):
        DomainLimiter("KIS", 1, redis=None, safety_margin=1.0)


async def test_sliding_window_holds_late_bursts() -> None:
    """However the slots bunch up, no more than floor(rate) sends fall in any second (plus guard)."""
    limiter = DomainLimiter("KIS", 5, redis=None, window_guard_s=0.0)
    sent = []
    for _ in range(7):
        await limiter.before_send()
        sent.append(time.monotonic())
    assert sent[5] - sent[0] >= 1.0 - 0.005
    assert sent[6] - sent[1] >= 1.0 - 0.005


async def test_sent_moves_the_send_to_when_it_left() -> None:
    """A send that left late counts from when it left, so the window holds after an event-loop stall."""
    limiter = DomainLimiter("KIS", 2, redis=None, window_guard_s=0.0)
    first = await limiter.before_send()
    await limiter.before_send()
    await asyncio.sleep(0.2)  # the first request's headers leave only now
    await limiter.sent(first)
    assert limiter._local_window_wait() == pytest.approx(1.0, abs=0.05)
