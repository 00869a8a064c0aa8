"""Each instance's quota of a key's limit while Redis is lost: how the group's leader shares it out, and
two gateways on one key through a Redis outage that ends with Redis back empty (manual clock)."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from redis.exceptions import ConnectionError as RedisConnectionError

from services.gateway.clock import ManualClock
from services.gateway.jitter import JitterBudget
from services.gateway.limiter import QUOTA_HOLD_S, DomainLimiter
from services.gateway.quota import GroupQuota, quota_data, with_quota
from services.gateway.slots import Ask, MemorySlots, Reservation
from tests.unit.test_pacing import max_in_any_second


@pytest.mark.parametrize(("limit", "serving"), [(20, 1), (20, 2), (20, 3), (5, 2), (5, 5), (2, 3), (5, 7)])
def test_the_quotas_of_the_instances_serving_add_up_to_the_limit(limit: int, serving: int) -> None:
    quotas = [GroupQuota(serving, rank).of(limit) for rank in range(serving)]
    assert sum(quotas) == limit  # more instances than calls a second: some have none
    assert max(quotas) - min(quotas) <= 1
    assert GroupQuota(serving, serving).of(limit) == 0  # given no partitions: no part


def test_a_member_learns_its_quota_and_ignores_other_bytes() -> None:
    quota = GroupQuota()
    quota.learn(quota_data(3, 2))
    assert (quota.serving, quota.rank) == (3, 2)
    for foreign in (b"", b"\x00\x01", b"xxxx\x00\x03\x00\x01", quota_data(2, 3)):
        quota.learn(foreign)
        assert (quota.serving, quota.rank) == (3, 2)


class Topics(ClusterMetadata):  # type: ignore[misc]
    """Cluster metadata knowing one thing, what the assignors ask: a topic's partitions."""

    def __init__(self, partitions: int) -> None:
        super().__init__()
        self._count = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._count))


def test_the_leader_ranks_the_members_given_partitions() -> None:
    """Three members over two partitions: two serve, ranked by member id; the third is told it has no
    part; each member learns its own from its assignment, and the assignment itself is the stock one."""
    leader = GroupQuota()
    assignor = with_quota(RoundRobinPartitionAssignor, leader)
    members = {m: ConsumerProtocolMemberMetadata(0, ["api.requests"], b"") for m in ("m-c", "m-a", "m-b")}
    assigned = assignor.assign(Topics(2), members)
    stock = RoundRobinPartitionAssignor.assign(Topics(2), members)
    assert {m: a.partitions() for m, a in assigned.items()} == {m: a.partitions() for m, a in stock.items()}
    learnt = {}
    for member, assignment in assigned.items():
        quota = GroupQuota()
        with_quota(RoundRobinPartitionAssignor, quota).on_assignment(assignment)
        learnt[member] = (quota.serving, quota.rank, quota.of(20))
    serving = sorted(m for m, a in stock.items() if a.partitions())
    assert {learnt[m] for m in serving} == {(2, 0, 10), (2, 1, 10)}
    [idle] = set(members) - set(serving)
    assert learnt[idle] == (2, 2, 0)
    assert assignor.name == "roundrobin"


class FlakyStore:
    """A shared store that can be lost (every call raises) and come back empty, as Redis restarted."""

    def __init__(self, clock: ManualClock) -> None:
        self._clock = clock
        self.store = MemorySlots(clock)
        self.down = False
        self.fails_after_s = 0.0  # how long a call to a lost store takes to fail (a socket timeout)

    def come_back_empty(self) -> None:
        self.down, self.store = False, MemorySlots(self._clock)

    async def _check(self) -> None:
        if self.down:
            await self._clock.sleep(self.fails_after_s)
            raise RedisConnectionError("Redis is gone")

    async def reserve(self, ask: Ask) -> Reservation:
        await self._check()
        return await self.store.reserve(ask)

    async def reserve_run(self, ask: Ask, members: list[str]) -> list[Reservation]:
        await self._check()
        return await self.store.reserve_run(ask, members)

    async def extend(self, domain: str, member: str, arrival_by: float) -> None:
        await self._check()
        await self.store.extend(domain, member, arrival_by)


LOST_AT, BACK_AT, END = 3.0, 8.0, 16.0


async def two_gateways_through_an_outage(
    quotas: tuple[GroupQuota, GroupQuota], second_idle: tuple[float, float] = (0.0, 0.0)
) -> list[list[float]]:
    """Two instances serving one key at full demand, each reserving its next slot when the last starts
    (the second none within ``second_idle``); Redis lost from 3 s and back empty at 8 s. Returns each
    instance's send starts."""
    clock = ManualClock()
    store = FlakyStore(clock)
    gateways = [
        DomainLimiter(
            "KIS", 20, jitter=JitterBudget(0.02, clock, cold_lag_s=0.0), clock=clock, shared=store, quota=q
        )
        for q in quotas
    ]
    ready = [0.0, 0.0001]
    starts: list[list[float]] = [[], []]
    while min(ready) < END:
        i = ready.index(min(ready))
        await clock.advance(ready[i] - clock.monotonic())
        now = clock.monotonic()
        if i == 1 and second_idle[0] <= now < second_idle[1]:
            ready[1] = second_idle[1]
            continue
        if LOST_AT <= now < BACK_AT:
            store.down = True
        elif now >= BACK_AT and store.down:
            store.come_back_empty()
        slot = await gateways[i].reserve()
        starts[i].append(slot.start_s)
        ready[i] = max(slot.start_s, now + 1e-6)
    return starts


async def test_two_gateways_keep_the_limit_through_a_redis_outage() -> None:
    """Each keeps to half the key while Redis is lost (after the slots reserved there have left the
    window) and for the hold after it is back empty; then Redis paces both as one again."""
    starts = await two_gateways_through_an_outage((GroupQuota(2, 0), GroupQuota(2, 1)))
    assert max_in_any_second([s for own in starts for s in own]) <= 20

    def rate(own: list[float], start: float, end: float) -> float:
        return sum(start <= s < end for s in own) / (end - start)

    quiet_end = LOST_AT + 2.1
    for own in starts:
        assert 9 <= rate(own, quiet_end, BACK_AT) <= 10  # its quota while Redis is lost
        assert rate(own, LOST_AT + 0.2, LOST_AT + 2.0) == 0  # Redis's slots leave the window first
    after_hold = BACK_AT + QUOTA_HOLD_S + 0.5
    assert 18 <= rate(starts[0] + starts[1], after_hold, END) <= 20  # one schedule again


async def test_an_instance_that_missed_the_outage_learns_redis_came_back_empty() -> None:
    """The second instance has nothing to send while Redis is down, so sees no failure; its first
    reservation after Redis came back empty finds the key's mark gone and keeps to its quota while the
    first instance's unrecorded sends are still in the window."""
    starts = await two_gateways_through_an_outage(
        (GroupQuota(2, 0), GroupQuota(2, 1)), second_idle=(LOST_AT - 0.5, BACK_AT)
    )
    assert max_in_any_second([s for own in starts for s in own]) <= 20
    assert sum(BACK_AT <= s < BACK_AT + 1 for s in starts[1]) <= 10


async def test_two_gateways_each_taking_the_whole_limit_would_break_it() -> None:
    """The same outage with each instance believing it is alone (the behaviour before quotas): the broker
    sees both at full pace."""
    starts = await two_gateways_through_an_outage((GroupQuota(), GroupQuota()))
    assert max_in_any_second([s for own in starts for s in own]) > 30


async def test_an_instance_alone_keeps_its_whole_limit_without_waiting() -> None:
    """Alone in the group its own log knows every send: Redis lost costs it nothing."""
    clock = ManualClock()
    store = FlakyStore(clock)
    pace = DomainLimiter(
        "KIS", 20, jitter=JitterBudget(0.02, clock, cold_lag_s=0.0), clock=clock, shared=store
    )
    starts = []
    for n in range(120):
        store.down = n >= 40
        slot = await pace.reserve()
        starts.append(slot.start_s)
        await clock.advance(slot.start_s - clock.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) == pytest.approx(1.02 / 20) and pace.limited
    assert max_in_any_second(starts) <= 20


async def test_the_quiet_after_a_loss_counts_from_the_failure_not_the_call() -> None:
    """A reservation whose call to Redis takes 2 s to fail (a socket timeout) still keeps the whole quiet
    after the failure: slots reserved there just before it may still be on their way."""
    clock = ManualClock()
    store = FlakyStore(clock)
    pace = DomainLimiter(
        "KIS",
        20,
        jitter=JitterBudget(0.02, clock, cold_lag_s=0.0),
        clock=clock,
        shared=store,
        quota=GroupQuota(2, 0),
    )
    await pace.reserve()
    store.down, store.fails_after_s = True, 2.0
    reserving = asyncio.ensure_future(pace.reserve())
    await clock.advance(2.0)
    slot = await reserving
    assert slot.start_s >= clock.monotonic() + pace.lost_quiet_s() - 1e-9
    assert pace.lost_quiet_s() == pytest.approx(2.02)
