"""Pacing on a manual clock: the slot log, the jitter budget and the limiter, with no services."""

from __future__ import annotations

import itertools
import logging
import random

import pytest
from prometheus_client import REGISTRY

from services.gateway.clock import ManualClock
from services.gateway.jitter import COLD_LAG_S, CONTENDED_FLOOR_S, CONTENDED_SENDS, JitterBudget, SlidingMax
from services.gateway.limiter import MIN_RATE_FACTOR, DomainLimiter, Slot
from services.gateway.slots import Ask, MemorySlots


def max_in_any_second(times: list[float]) -> int:
    """The most arrivals in any half-open second ``(t - 1, t]``, as the brokers count."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def limiter(
    clock: ManualClock, *, rate: float = 20, jitter_s: float = 0.02, slots: MemorySlots | None = None
) -> DomainLimiter:
    return DomainLimiter(
        "KIS", rate, jitter=JitterBudget(jitter_s, clock, cold_lag_s=0.0), clock=clock, shared=slots
    )


async def take(pace: DomainLimiter, clock: ManualClock) -> Slot:
    """Reserve a slot and move the clock to its start, as ``acquire`` would sleep there."""
    slot = await pace.reserve()
    await clock.advance(max(0.0, slot.start_s - clock.monotonic()))
    return slot


async def test_slots_space_sends_by_one_second_plus_jitter() -> None:
    """Back-to-back reservations are (1 s + J) / rate apart, so 21 sends span at least 1 s + J."""
    clock = ManualClock()
    pace = limiter(clock)
    starts = []
    for _ in range(60):
        slot = await take(pace, clock)
        starts.append(slot.start_s)
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(starts)}
    assert gaps == {round(1.02 / 20, 6)}
    assert all(starts[i + 20] - starts[i] >= 1.02 - 1e-9 for i in range(len(starts) - 20))


async def test_window_holds_whatever_the_reservation_pattern() -> None:
    """Reservations at random moments never put more than `limit` sends' arrival bounds in a second."""
    clock = ManualClock()
    store = MemorySlots(clock)
    rng = random.Random(3)
    for _ in range(400):
        store.reserve_now(Ask("KIS", 0.0, 5, 0.03, 0.0, str(rng.random())))
        await clock.advance(rng.choice([0.0, 0.001, 0.05, 0.3]))
    # Re-run the schedule: starts plus an arrival anywhere within the allowance stay within the limit.
    clock2 = ManualClock()
    store2 = MemorySlots(clock2)
    arrivals = []
    for i in range(400):
        reservation = store2.reserve_now(Ask("KIS", 0.0, 5, 0.03, 0.0, str(i)))
        start = clock2.monotonic() + reservation.wait_s
        arrivals.append(start + rng.uniform(0, 0.03))
        await clock2.advance(reservation.wait_s + rng.choice([0.0, 0.001, 0.05]))
    assert max_in_any_second(arrivals) <= 5


async def test_arrivals_with_jitter_stay_within_the_limit_at_full_use() -> None:
    """At full demand with arrivals delayed by up to J, the broker sees at most 20 in any second
    while the key is used at 1 / (1 + J) of its rate."""
    clock = ManualClock()
    pace = limiter(clock, jitter_s=0.05)
    rng = random.Random(11)
    arrivals = []
    for _ in range(400):
        slot = await take(pace, clock)
        await pace.sent(slot)
        arrivals.append(slot.start_s + rng.uniform(0, 0.05))
    assert max_in_any_second(arrivals) <= 20
    used = 400 / (arrivals[-1] - arrivals[0]) / 20
    assert used == pytest.approx(1 / 1.05, abs=0.01)


async def test_own_lag_widens_the_budget_and_late_sends_are_extended() -> None:
    """A send that leaves 80 ms after its slot widens J for the next ones and pushes the window back."""
    clock = ManualClock()
    store = MemorySlots(clock)
    pace = limiter(clock, rate=2, jitter_s=0.01, slots=store)
    first = await take(pace, clock)
    await clock.advance(0.08)  # the event loop stalled between the slot and the send
    await pace.sent(first)
    await clock.advance(0)  # the shared log is extended in the background
    assert pace.jitter.allowance_s() == pytest.approx(0.01 + 0.02)  # J plus the typical lag (a lone one)
    assert store.sends("KIS")[0] == pytest.approx(first.start_s + 0.09)
    second = await take(pace, clock)
    await pace.sent(second)
    third = await pace.reserve()
    # The first send may arrive as late as its start + 90 ms: the third waits a second after that.
    assert third.start_s >= first.start_s + 0.09 + 1.0 - 1e-9


async def test_late_sends_are_counted_each_and_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every send later than J is counted; the log says so at once, then at most once per interval with
    how many late sends it sums up and the worst lag among them."""
    clock = ManualClock()
    pace = limiter(clock, rate=1, jitter_s=0.01)
    before = REGISTRY.get_sample_value("apihub_sends_late_total", {"domain": "KIS"}) or 0.0
    lags = [0.05] + [0.02] * 30 + [0.09] + [0.03] * 9  # 41 sends a second apart, each later than J
    slots = await pace.reserve_run(len(lags))  # all reserved before any lag widened the budget
    with caplog.at_level(logging.WARNING, logger="services.gateway.limiter"):
        for slot, lag in zip(slots, lags, strict=True):
            await clock.advance(slot.earliest_s + lag - clock.monotonic())
            await pace.sent(slot)
    lines = [r.fields for r in caplog.records if r.msg == "limiter.send_late"]  # type: ignore[attr-defined]
    assert [(line["late_sends"], line["worst_lag_ms"]) for line in lines] == [
        (1, 50.0),  # the first at once
        (10, 20.0),  # then the next after 10 s, with the nine since the last line
        (10, 20.0),
        (10, 20.0),
        (10, 90.0),
    ]
    assert {line["domain"] for line in lines} == {"KIS"}
    after = REGISTRY.get_sample_value("apihub_sends_late_total", {"domain": "KIS"})
    assert after == before + len(lags)


async def test_budget_follows_typical_lag_and_peaks_while_contended() -> None:
    """Small own lags add their typical value and a lone pause only nudges it; when a fifth of the recent
    sends run later than a quarter of J the host is contended and twice the recent peak is added (at least
    the floor), a calm moment does not end that, and a calm stretch of some hundreds of sends does."""
    clock = ManualClock()
    budget = JitterBudget(0.02, clock, hold_s=5, cold_lag_s=0.0)
    assert budget.allowance_s() == 0.02
    for _ in range(200):
        budget.observe(0.001)
    assert budget.allowance_s() == pytest.approx(0.021, abs=1e-4)
    budget.observe(0.06)  # a lone pause (a garbage collection)
    for _ in range(10):
        budget.observe(0.006)  # and a short burst of late sends
    assert not budget.contended() and 0.021 < budget.allowance_s() < 0.04
    await clock.advance(6)
    for _ in range(100):
        budget.observe(0.006)  # every send late: the host is busy
    # twice the peak (12 ms) is less than the floor: the far side is presumed to stall 100 ms
    assert budget.contended() and budget.allowance_s() == pytest.approx(0.02 + CONTENDED_FLOOR_S)
    budget.observe(0.07)
    assert budget.contended() and budget.allowance_s() == pytest.approx(0.16)
    for _ in range(20):
        budget.observe(0.001)  # a calm moment on a busy host
    assert budget.contended() and budget.allowance_s() == pytest.approx(0.16)
    await clock.advance(6)
    for _ in range(CONTENDED_SENDS):
        budget.observe(0.001)
    assert not budget.contended() and budget.allowance_s() == pytest.approx(0.021, abs=1e-3)
    with pytest.raises(ValueError):
        JitterBudget(-0.001, clock)


async def test_budget_sees_contention_from_the_first_sends() -> None:
    """Before two hundred sends were seen the share is their plain average, so a gateway started on a busy
    host widens its budget within its first sends."""
    budget = JitterBudget(0.02, ManualClock(), cold_lag_s=0.0)
    budget.observe(0.01)
    assert not budget.contended()  # one late first send is no sign
    for _ in range(5):
        budget.observe(0.01)
    assert budget.contended() and budget.allowance_s() == pytest.approx(0.02 + CONTENDED_FLOOR_S)


async def test_a_cold_budget_trusts_its_first_sends_less() -> None:
    """Before anything was measured the budget presumes a cold process's lag (COLD_LAG_S, plus as much
    deviation); twenty-odd calm sends wear it off."""
    budget = JitterBudget(0.02, ManualClock())
    assert budget.allowance_s() == pytest.approx(0.02 + 2 * COLD_LAG_S)
    for _ in range(30):
        budget.observe(0.001)
    assert budget.allowance_s() < 0.02 + 0.01


async def test_sliding_max_default() -> None:
    """An empty window gives the default."""
    assert SlidingMax(ManualClock(), 1.0).value(default=7.0) == 7.0


async def test_local_log_guards_when_the_shared_store_is_gone() -> None:
    """With no shared store (Redis down) the process's own log still holds the window."""
    clock = ManualClock()
    pace = limiter(clock, rate=5, jitter_s=0.0)
    starts = [(await take(pace, clock)).start_s for _ in range(12)]
    assert all(starts[i + 5] - starts[i] >= 1.0 - 1e-9 for i in range(len(starts) - 5))


async def test_a_new_owner_continues_the_schedule() -> None:
    """A second limiter on the same store (a new owner after a crash) starts after the old one's window."""
    clock = ManualClock()
    store = MemorySlots(clock)
    old = limiter(clock, slots=store)
    starts = [(await take(old, clock)).start_s for _ in range(20)]
    new = limiter(clock, slots=store)  # fresh process state: its local log is empty
    first_new = (await new.reserve()).start_s
    assert first_new >= starts[0] + 1.02 - 1e-9
    assert new.next_slot_in_s() >= 0


async def test_aimd() -> None:
    """Throttle answers halve the pace down to a floor; successes win it back step by step."""
    clock = ManualClock()
    pace = limiter(clock, rate=5, jitter_s=0.0)
    pace.throttled()
    assert pace.interval_s == pytest.approx(0.4)
    for _ in range(5):
        pace.throttled()
    assert pace.rate_factor == MIN_RATE_FACTOR
    for _ in range(1000):
        pace.succeeded()
    assert pace.rate_factor == 1.0


def test_bad_rate() -> None:
    """A rate of zero is refused."""
    with pytest.raises(ValueError):
        limiter(ManualClock(), rate=0)


async def test_a_slot_kept_past_its_bound_is_not_usable() -> None:
    """A run's slots are usable while a send now would still arrive within the bound they were recorded
    with (start + the own-lag share of the allowance); one kept longer is wasted, never sent late."""
    clock = ManualClock()
    pace = limiter(clock, rate=1_000_000, slots=MemorySlots(clock))
    await clock.advance(1.0)
    run = await pace.reserve_run(3)
    assert len({s.member for s in run}) == 3 and run[0].start_s <= run[1].start_s < run[2].start_s
    assert all(pace.usable(s) for s in run)
    await clock.advance(run[2].start_s - clock.monotonic() + 0.001)  # 1 ms late: the budget has 0 own lag
    assert not pace.usable(run[2])
    assert pace.usable((await pace.reserve_run(1))[0])
