"""Scheduler: strict priority with reserved shares, round robin across callers, EDF within a caller."""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections import Counter

import pytest

from hubclient.models import ApiRequest, Priority, Provider
from services.gateway.errors import BacklogFull
from services.gateway.scheduler import Queued, Scheduler

INT, N, B = Priority.INTERACTIVE, Priority.NORMAL, Priority.BULK
_ids = itertools.count(1)


def item(caller: str = "worker", priority: Priority = N, deadline_ms: int = 1_000_000) -> Queued:
    """A queued request with a fresh id."""
    request = ApiRequest(
        request_id=str(uuid.UUID(int=next(_ids))),
        provider=Provider.KIS,
        tr_id="FHKST01010100",
        caller=caller,
        priority=priority,
        deadline_ms=deadline_ms,
        created_at_ms=1,
        reply_topic="api.responses",
        reply_partition=0,
    )
    return Queued(request, enqueued_s=0.0)


def fill(sched: Scheduler[Queued], count: int, caller: str, priority: Priority) -> list[Queued]:
    """Push ``count`` requests of one caller and class; returns them."""
    items = [item(caller, priority) for _ in range(count)]
    for it in items:
        sched.push(it)
    return items


def drain(sched: Scheduler[Queued], pops: int | None = None) -> list[Queued]:
    """Pop ``pops`` requests (or everything)."""
    out: list[Queued] = []
    while pops is None or len(out) < pops:
        got = sched.pop()
        if got is None:
            break
        out.append(got)
    return out


def test_strict_priority_order() -> None:
    """Without reserved shares every interactive request goes before every normal before every bulk."""
    sched: Scheduler[Queued] = Scheduler(reserved_share={})
    for priority in (B, N, INT, B, INT, N, INT):
        sched.push(item(priority=priority))
    assert [q.request.priority for q in drain(sched)] == [INT, INT, INT, N, N, B, B]
    assert sched.pop() is None
    assert len(sched) == 0


def test_reserved_share_for_bulk_under_interactive_load() -> None:
    """Under interactive load bulk gets exactly every 20th slot (5 %), and everything once it is alone."""
    sched: Scheduler[Queued] = Scheduler()
    fill(sched, 1000, "ui", INT)
    fill(sched, 1000, "backfill", B)
    first = drain(sched, 200)
    bulk_positions = [n for n, q in enumerate(first, 1) if q.request.priority is B]
    assert 10 <= len(bulk_positions) <= 11
    assert bulk_positions == list(range(20, 201, 20))
    while sched.depth(INT):
        first.append(drain(sched, 1)[0])
    assert sum(q.request.priority is B for q in first) == len(first) // 20
    assert all(q.request.priority is B for q in drain(sched))


def test_reserved_shares_with_three_classes() -> None:
    """With every class loaded, normal gets about 10 % and bulk about 5 % of the slots."""
    sched: Scheduler[Queued] = Scheduler()
    for priority in (INT, N, B):
        fill(sched, 1000, priority.value, priority)
    served = Counter(q.request.priority for q in drain(sched, 200))
    assert 19 <= served[N] <= 21
    assert 9 <= served[B] <= 11
    assert served[INT] == 200 - served[N] - served[B]


def test_normal_above_bulk_when_interactive_is_idle() -> None:
    """With interactive empty, normal takes the slots bulk's share leaves and bulk never starves."""
    sched: Scheduler[Queued] = Scheduler()
    fill(sched, 500, "svc", N)
    fill(sched, 500, "backfill", B)
    served = Counter(q.request.priority for q in drain(sched, 200))
    assert served[B] == 10
    assert served[N] == 190


@pytest.mark.parametrize("seed", range(6))
def test_reserved_share_guarantee_in_every_window(seed: int) -> None:
    """In any k pops with a class never empty it gets at least floor(s*k)-1 and fewer than s*k+2 slots."""
    rng = random.Random(seed)
    shares = {N: rng.choice([0.05, 0.1, 0.2, 0.3]), B: rng.choice([0.01, 0.05, 0.1, 0.25])}
    sched: Scheduler[Queued] = Scheduler(reserved_share=shares)
    for priority in (INT, N, B):
        fill(sched, 600, priority.value, priority)
    order = [q.request.priority for q in drain(sched, 500)]
    assert min(sched.depth(p) for p in (INT, N, B)) > 0  # every class stayed backlogged throughout
    for cls, share in shares.items():
        prefix = [0, *itertools.accumulate(p is cls for p in order)]
        for start in range(len(order)):
            for end in range(start + 1, len(order) + 1):
                k, got = end - start, prefix[end] - prefix[start]
                assert math.floor(share * k + 1e-9) - 1 <= got < share * k + 2, (cls, start, k, got)


def test_drr_small_caller_is_not_starved() -> None:
    """A bulk caller with 10 requests finishes within 20 pops next to one with 1000."""
    sched: Scheduler[Queued] = Scheduler()
    fill(sched, 1000, "big", B)
    fill(sched, 10, "small", B)
    first = drain(sched, 20)
    assert sum(q.request.caller == "small" for q in first) == 10
    assert sched.callers(B) == ["big"]
    assert sched.depth(B) == 990


def test_drr_alternates_and_new_caller_joins_at_back() -> None:
    """Callers take turns of one request; a newcomer waits for one turn of each caller already queued."""
    sched: Scheduler[Queued] = Scheduler()
    fill(sched, 5, "a", N)
    fill(sched, 5, "b", N)
    assert [q.request.caller for q in drain(sched, 3)] == ["a", "b", "a"]
    fill(sched, 5, "c", N)
    assert sched.callers(N) == ["b", "a", "c"]
    assert [q.request.caller for q in drain(sched, 6)] == ["b", "a", "c", "b", "a", "c"]


def test_caller_weight_and_quantum() -> None:
    """A caller with weight 3 takes three requests per turn; the quantum scales every turn."""
    sched: Scheduler[Queued] = Scheduler(caller_weights={"heavy": 3})
    fill(sched, 9, "heavy", B)
    fill(sched, 9, "light", B)
    assert "".join(q.request.caller[0] for q in drain(sched, 8)) == "hhhlhhhl"
    sched2: Scheduler[Queued] = Scheduler(quantum=2)
    fill(sched2, 4, "a", B)
    fill(sched2, 4, "b", B)
    assert "".join(q.request.caller for q in drain(sched2)) == "aabbaabb"


def test_edf_within_caller_ties_by_arrival() -> None:
    """A caller's requests leave earliest deadline first, equal deadlines in arrival order."""
    sched: Scheduler[Queued] = Scheduler()
    items = [item(deadline_ms=d) for d in (500, 100, 300, 100, 200)]
    for it in items:
        sched.push(it)
    assert drain(sched) == [items[1], items[3], items[4], items[2], items[0]]


def test_backlog_full_total_and_per_class() -> None:
    """Pushing beyond the total or a class limit raises a retriable BacklogFull naming the depth."""
    sched: Scheduler[Queued] = Scheduler(max_backlog=3, max_backlog_per_class={B: 1})
    sched.push(item(priority=B))
    with pytest.raises(BacklogFull, match="1 of 1") as class_full:
        sched.push(item(priority=B))
    assert class_full.value.retriable is True
    assert class_full.value.reason == "backlog_full"
    sched.push(item(priority=INT))
    sched.push(item(priority=N))
    with pytest.raises(BacklogFull, match="3 of 3"):
        sched.push(item(priority=INT))
    assert len(sched) == 3
    assert sched.pop() is not None
    sched.push(item(priority=INT))
    assert len(sched) == 3


def test_duplicate_request_id_is_refused() -> None:
    """The same request id cannot be queued twice (remove and membership rely on it)."""
    sched: Scheduler[Queued] = Scheduler()
    it = item()
    sched.push(it)
    assert it.request.request_id in sched
    with pytest.raises(ValueError, match="already queued"):
        sched.push(Queued(it.request))
    assert len(sched) == 1


def test_drop_expired() -> None:
    """Requests whose deadline is at or before now leave, earliest first; the rest stay schedulable."""
    sched: Scheduler[Queued] = Scheduler()
    late = item("a", B, deadline_ms=5000)
    gone = [
        item("a", B, deadline_ms=1000),
        item("b", INT, deadline_ms=2000),
        item("b", INT, deadline_ms=1500),
    ]
    for it in (late, *gone):
        sched.push(it)
    assert sched.drop_expired(999) == []
    assert sched.drop_expired(2000) == [gone[0], gone[2], gone[1]]
    assert len(sched) == 1
    assert sched.depth(INT) == 0
    assert sched.callers(INT) == []
    assert sched.drop_expired(2000) == []
    assert drain(sched) == [late]


def test_drop_expired_skips_popped_and_removed() -> None:
    """Requests already popped or removed are never returned as expired."""
    sched: Scheduler[Queued] = Scheduler()
    a, b, c = item(deadline_ms=10), item(deadline_ms=20), item(deadline_ms=30)
    for it in (a, b, c):
        sched.push(it)
    assert sched.pop() is a
    assert sched.remove(b.request.request_id)
    assert sched.drop_expired(100) == [c]
    assert len(sched) == 0


def test_remove() -> None:
    """A withdrawn request is never popped, an emptied caller leaves the rotation, removing twice is False."""
    sched: Scheduler[Queued] = Scheduler()
    a1, a2 = item("a"), item("a")
    b1 = item("b")
    for it in (a1, b1, a2):
        sched.push(it)
    assert sched.remove(b1.request.request_id) is True
    assert sched.remove(b1.request.request_id) is False
    assert sched.remove(str(uuid.UUID(int=0))) is False
    assert sched.callers(N) == ["a"]
    assert sched.remove(a1.request.request_id) is True
    assert drain(sched) == [a2]
    assert sched.callers(N) == []


def test_mass_withdrawal_keeps_deadline_order() -> None:
    """Withdrawing most of one caller's queue leaves the rest served earliest deadline first."""
    sched: Scheduler[Queued] = Scheduler()
    rng = random.Random(11)
    items = [item("a", B, rng.randrange(1, 10**6)) for _ in range(300)]
    for it in items:
        sched.push(it)
    kept = items[::5]
    for it in items:
        if it not in kept:
            assert sched.remove(it.request.request_id)
    assert sched.depth(B) == len(kept)
    out = drain(sched)
    assert sorted(q.request.request_id for q in out) == sorted(q.request.request_id for q in kept)
    assert [q.request.deadline_ms for q in out] == sorted(q.request.deadline_ms for q in kept)


def test_estimate_grows_with_backlog() -> None:
    """The estimate never falls as requests are added, and counts higher classes in full."""
    sched: Scheduler[Queued] = Scheduler()
    last = {p: sched.estimated_wait_slots(p) for p in (INT, N, B)}
    assert last == {INT: 0, N: 0, B: 0}
    rng = random.Random(7)
    for _ in range(300):
        sched.push(item(rng.choice("xyz"), rng.choice([INT, N, B])))
        now = {p: sched.estimated_wait_slots(p) for p in (INT, N, B)}
        assert all(now[p] >= last[p] for p in now)
        last = now
    assert last[N] >= sched.depth(INT) + sched.depth(N)
    assert last[INT] >= sched.depth(INT)


def test_interactive_estimate_counts_bulk_only_by_its_share() -> None:
    """100 interactive ahead of 10,000 bulk: the interactive estimate is about 100/0.95, not 10,100."""
    sched: Scheduler[Queued] = Scheduler(max_backlog=20_000)
    fill(sched, 100, "ui", INT)
    fill(sched, 10_000, "backfill", B)
    estimate = sched.estimated_wait_slots(INT)
    assert 100 <= estimate <= math.ceil(102 / 0.95)
    assert sched.estimated_wait_slots(B) <= 20 * (10_000 + 2)
    alone: Scheduler[Queued] = Scheduler()
    fill(alone, 1000, "ui", INT)
    assert alone.estimated_wait_slots(B) == 39  # its share alone: 2 / 0.05 - 1, though bulk is empty
    fresh_bulk = sched.estimated_wait_slots(B, caller="newcomer")
    assert fresh_bulk < 60  # a new bulk caller waits one round of one caller, at 5 %


def test_estimate_uses_round_robin_and_deadline() -> None:
    """With a caller, others count only for the rounds it needs; the earliest deadline jumps its own queue."""
    sched: Scheduler[Queued] = Scheduler(reserved_share={})
    for n in range(50):
        sched.push(item("big", N, deadline_ms=10_000 + n))
    for n in range(3):
        sched.push(item("small", N, deadline_ms=10_000 + n))
    assert sched.estimated_wait_slots(N) == 53
    assert sched.estimated_wait_slots(N, caller="small") == 3 + 4
    assert sched.estimated_wait_slots(N, deadline_ms=5_000, caller="small") == 1
    assert sched.estimated_wait_slots(N, caller="new") == 2


@pytest.mark.parametrize("seed", range(40))
def test_estimate_is_an_upper_bound(seed: int) -> None:
    """With no further arrivals, a new request is served no later than the estimate said."""
    rng = random.Random(seed)
    sched: Scheduler[Queued] = Scheduler(
        reserved_share={N: rng.choice([0.0, 0.1, 0.3]), B: rng.choice([0.0, 0.05, 0.2])},
        caller_weights={"w2": 2},
        quantum=rng.choice([1, 1, 2]),
    )
    callers = ["a", "b", "c", "w2"]
    for _ in range(rng.randrange(0, 400)):
        sched.push(item(rng.choice(callers), rng.choice([INT, N, B]), rng.randrange(1, 1000)))
    drain(sched, rng.randrange(0, 50))  # leave credits and turns mid-way
    probe = item(rng.choice([*callers, "new"]), rng.choice([INT, N, B]), rng.randrange(1, 1000))
    p = probe.request
    bounds = [
        sched.estimated_wait_slots(p.priority),
        sched.estimated_wait_slots(p.priority, caller=p.caller),
        sched.estimated_wait_slots(p.priority, p.deadline_ms, caller=p.caller),
    ]
    sched.push(probe)
    before = drain(sched).index(probe)
    assert all(before <= bound for bound in bounds), (before, bounds)


@pytest.mark.parametrize("seed", range(5))
def test_every_request_leaves_exactly_once(seed: int) -> None:
    """Under a seeded random mix of push, pop, remove and drop_expired, each request leaves exactly once."""
    rng = random.Random(seed)
    sched: Scheduler[Queued] = Scheduler(max_backlog=500, max_backlog_per_class={B: 300})
    queued: dict[str, Queued] = {}
    left: Counter[str] = Counter()
    pushed = 0
    now_ms = 0
    for _ in range(6000):
        action = rng.random()
        if action < 0.55:
            it = item(rng.choice("abcdefg"), rng.choice([INT, N, B]), now_ms + rng.randrange(1, 5000))
            try:
                sched.push(it)
            except BacklogFull:
                assert len(sched) == 500 or sched.depth(B) == 300
                continue
            queued[it.request.request_id] = it
            pushed += 1
        elif action < 0.85:
            got = sched.pop()
            assert (got is None) == (not queued)
            if got is not None:
                assert queued.pop(got.request.request_id) is got
                left[got.request.request_id] += 1
        elif action < 0.95 and queued:
            rid = rng.choice(list(queued))
            assert sched.remove(rid)
            del queued[rid]
            left[rid] += 1
        else:
            now_ms += rng.randrange(0, 400)
            for it in sched.drop_expired(now_ms):
                assert it.request.deadline_ms <= now_ms
                assert queued.pop(it.request.request_id) is it
                left[it.request.request_id] += 1
        assert len(sched) == len(queued)
        assert sum(sched.depth(p) for p in (INT, N, B)) == len(queued)
    for it in drain(sched):
        assert queued.pop(it.request.request_id) is it
        left[it.request.request_id] += 1
    assert not queued
    assert len(left) == pushed
    assert set(left.values()) == {1}


def test_ten_thousand_bulk_requests() -> None:
    """10,000 queued bulk requests of two callers drain in deadline order per caller, alternating callers."""
    sched: Scheduler[Queued] = Scheduler(max_backlog=20_000)
    rng = random.Random(3)
    for n in range(10_000):
        sched.push(item("ab"[n % 2], B, rng.randrange(1, 10**9)))
    out = drain(sched)
    assert len(out) == 10_000
    assert [q.request.caller for q in out[:6]] == ["a", "b", "a", "b", "a", "b"]
    for caller in "ab":
        deadlines = [q.request.deadline_ms for q in out if q.request.caller == caller]
        assert deadlines == sorted(deadlines)


def test_bad_configuration() -> None:
    """Nonsense limits, shares, quanta and weights are refused."""
    with pytest.raises(ValueError):
        Scheduler(max_backlog=0)
    with pytest.raises(ValueError):
        Scheduler(quantum=0)
    with pytest.raises(ValueError):
        Scheduler(reserved_share={N: 0.6, B: 0.4})
    with pytest.raises(ValueError):
        Scheduler(reserved_share={INT: 0.1})
    with pytest.raises(ValueError):
        Scheduler(reserved_share={B: -0.1})
    with pytest.raises(ValueError):
        Scheduler(caller_weights={"x": 0})
