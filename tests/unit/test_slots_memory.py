"""The process's own slot log: its expiry index gives exactly the starts of a scan of the whole log."""

from __future__ import annotations

import random

from services.gateway.clock import ManualClock
from services.gateway.slots import WINDOW_S, Ask, MemorySlots


class _ScanLog:
    """The reference: every question answered by scanning and sorting the whole log."""

    def __init__(self) -> None:
        self.tat = 0.0
        self.bounds: dict[str, float] = {}

    def window_start(self, now: float, limit: int) -> float:
        self.bounds = {m: b for m, b in self.bounds.items() if b > now - WINDOW_S}
        if len(self.bounds) < limit:
            return 0.0
        return sorted(self.bounds.values())[len(self.bounds) - limit] + WINDOW_S

    def reserve(self, now: float, ask: Ask) -> float:
        start = max(now + max(0.0, ask.not_before_s), self.tat, self.window_start(now, ask.limit))
        self.tat = max(self.tat, now - ask.interval_s) + ask.interval_s
        self.bounds[ask.member] = start + ask.allowance_s
        return start

    def extend(self, member: str, bound: float) -> None:
        if member in self.bounds:
            self.bounds[member] = max(self.bounds[member], bound)


async def test_matches_a_full_scan_under_random_reservations_and_extensions() -> None:
    """Reservations, extensions (raised, lowered, of unknown members) and time steps in a random mix give
    the same starts, window starts (asked several times between changes) and logs as a scan of the whole
    log each time."""
    rng = random.Random(11)
    clock = ManualClock()
    slots = MemorySlots(clock)
    reference = _ScanLog()
    members: list[str] = []
    for step in range(3000):
        roll = rng.random()
        if roll < 0.5:
            member = f"m{step}"
            members.append(member)
            ask = Ask("KIS", rng.choice([0.0, 0.001, 0.05]), rng.choice([1, 3, 20]), 0.02, 0.0, member)
            got = slots.reserve_now(ask)
            want = reference.reserve(clock.monotonic(), ask)
            assert got.start == want
        elif roll < 0.7 and members:
            member = rng.choice([*members[-30:], "unknown"])
            bound = clock.monotonic() + rng.uniform(-0.5, 1.5)
            await slots.extend("KIS", member, bound)
            reference.extend(member, bound)
        else:
            await clock.advance(rng.uniform(0.0, 0.3))
        for limit in rng.sample([1, 3, 20, 3, 1], 3):  # asked again before the log changes: from memory
            assert slots.window_start("KIS", limit) == reference.window_start(clock.monotonic(), limit)
        assert slots.sends("KIS") == sorted(reference.bounds.values())


async def test_an_extended_send_outlives_its_first_bound() -> None:
    """A send whose bound was raised stays in the log until the raised bound is a second old."""
    clock = ManualClock()
    slots = MemorySlots(clock)
    first = slots.reserve_now(Ask("KIS", 0.0, 1, 0.0, 0.0, "a"))
    await slots.extend("KIS", "a", first.start + 0.5)
    await clock.advance(1.2)
    assert slots.window_start("KIS", 1) == first.start + 1.5
    await clock.advance(0.4)
    assert slots.window_start("KIS", 1) == 0.0
    assert slots.sends("KIS") == []


async def test_a_run_is_the_same_as_that_many_reservations_in_a_row() -> None:
    """``reserve_run`` records one slot per member exactly as single reservations at that instant would:
    the grid's interval apart, and the limit + 1st a second after the first one's bound."""
    for interval, limit in ((0.001, 3), (0.05, 20), (0.0, 1)):
        clock = ManualClock()
        run, single = MemorySlots(clock), MemorySlots(clock)
        ask = Ask("KIS", interval, limit, 0.02, 0.0, "unused")
        members = [f"m{i}" for i in range(7)]
        got = [r.start for r in await run.reserve_run(ask, members)]
        want = [single.reserve_now(Ask("KIS", interval, limit, 0.02, 0.0, m)).start for m in members]
        assert got == want
        assert run.sends("KIS") == single.sends("KIS")
        if limit < len(members):
            assert got[limit] >= got[0] + 0.02 + WINDOW_S
