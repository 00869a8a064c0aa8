"""GCRA pacing with burst 0: exact spacing, deadline refusal, slow-down."""

from __future__ import annotations

import pytest

from services.gateway.limiter import Pacer


def test_spacing_is_exact() -> None:
    """Reservations made at once are spaced by the emission interval, margin included."""
    pacer = Pacer(20, safety_margin=0.0)
    starts = [pacer.reserve(now_s=100.0) for _ in range(5)]
    assert starts == pytest.approx([100.0, 100.05, 100.10, 100.15, 100.20])


def test_margin_widens_interval() -> None:
    """A safety margin of 2 % paces at 98 % of the nominal rate."""
    assert Pacer(20, safety_margin=0.02).interval_s == pytest.approx(1 / 19.6)


def test_deadline_refusal_keeps_state() -> None:
    """A reservation that would start after its deadline is refused and does not consume a slot."""
    pacer = Pacer(10, safety_margin=0.0)
    assert pacer.reserve(now_s=0.0) == 0.0
    assert pacer.reserve(deadline_s=0.05, now_s=0.0) is None
    assert pacer.reserve(now_s=0.0) == pytest.approx(0.1)
    assert pacer.wait_s(now_s=0.0) == pytest.approx(0.2)


def test_slow_down_pushes_next_slot() -> None:
    """After a throttle answer the next slot moves back by the given number of intervals."""
    pacer = Pacer(10, safety_margin=0.0)
    pacer.slow_down(2.0, now_s=5.0)
    assert pacer.reserve(now_s=5.0) == pytest.approx(5.2)


def test_bad_configuration() -> None:
    """Nonsense rates and margins are refused."""
    with pytest.raises(ValueError):
        Pacer(0)
    with pytest.raises(ValueError):
        Pacer(1, safety_margin=1.0)
