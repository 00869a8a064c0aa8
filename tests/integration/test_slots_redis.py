"""The shared slot log in Redis: several gateway instances reserving at once keep the window exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from services.gateway.clock import SystemClock
from services.gateway.jitter import JitterBudget
from services.gateway.limiter import DomainLimiter
from services.gateway.slots import Ask, RedisSlots, log_key, shared_name
from services.gateway.token_store import fingerprint
from tests.conftest import Services


@pytest.fixture
async def redis(services: Services) -> AsyncIterator[Redis]:
    """A Redis client for this test."""
    client = Redis.from_url(services.redis_url)
    yield client
    await client.aclose()


async def test_instances_share_one_window(redis: Redis, unique: str) -> None:
    """Three limiters on one Redis log, reserving as fast as they can, record starts that leave any
    limit + 1 of them at least 1 s + J apart, in Redis's own clock."""
    clock = SystemClock()
    store = RedisSlots(redis, key_prefix=f"test:{unique}:")
    limiters = [
        DomainLimiter("KIS", 10, jitter=JitterBudget(0.02, clock, cold_lag_s=0.0), clock=clock, shared=store)
        for _ in range(3)
    ]
    starts: list[float] = []

    async def reserve(limiter: DomainLimiter, count: int) -> None:
        for _ in range(count):
            slot = await limiter.reserve()
            assert slot.shared_start is not None
            starts.append(slot.shared_start)

    await asyncio.gather(*(reserve(limiter, 12) for limiter in limiters))
    starts.sort()
    assert len(starts) == 36
    # The first allowance also holds each instance's typical own lag (none yet): J = 20 ms exactly.
    assert all(starts[i + 10] - starts[i] >= 1.02 - 1e-6 for i in range(len(starts) - 10))
    assert starts[-1] - starts[0] < 3 * 1.02 + 0.5  # and no slower than the pace


async def test_one_key_known_by_two_names_shares_one_window(redis: Redis, unique: str) -> None:
    """Two instances that call one appkey by different names (KIS and KIS/k1) reserve in the one log named
    by the key, in Redis: their starts together keep the window, and the log is under the key's name."""
    clock = SystemClock()
    store = RedisSlots(redis, key_prefix=f"test:{unique}:")
    name = shared_name("KIS", "PS-one-key")
    limiters = [
        DomainLimiter(
            domain,
            10,
            jitter=JitterBudget(0.02, clock, cold_lag_s=0.0),
            clock=clock,
            shared=store,
            shared_name=name,
        )
        for domain in ("KIS", "KIS/k1")
    ]
    starts: list[float] = []

    async def reserve(limiter: DomainLimiter) -> None:
        for _ in range(15):
            slot = await limiter.reserve()
            assert slot.shared_start is not None
            starts.append(slot.shared_start)

    await asyncio.gather(*(reserve(limiter) for limiter in limiters))
    starts.sort()
    assert all(starts[i + 10] - starts[i] >= 1.02 - 1e-6 for i in range(len(starts) - 10))
    assert await redis.zcard(log_key(f"test:{unique}:", name)) == 30
    assert name == f"KIS/{fingerprint('PS-one-key')}"


async def test_a_late_send_pushes_the_window_back(redis: Redis, unique: str) -> None:
    """Extending a recorded send's arrival bound (a late send) moves the next window in Redis too."""
    store = RedisSlots(redis, key_prefix=f"test:{unique}:")
    first = await store.reserve(Ask("KIS", 0.0, 1, 0.01, 0.0, "a"))
    await store.extend("KIS", "a", first.start + 0.3)
    await store.extend("KIS", "a", first.start + 0.1)  # never lowered
    second = await store.reserve(Ask("KIS", 0.0, 1, 0.01, 0.0, "b"))
    assert second.start == pytest.approx(first.start + 1.3, abs=1e-6)
    await store.extend("KIS", "missing", first.start + 5)  # an entry not in the log is not added
    third = await store.reserve(Ask("KIS", 0.0, 1, 0.01, 0.0, "c"))
    assert third.start == pytest.approx(second.start + 1.01, abs=1e-6)


async def test_reservations_of_many_domains_share_a_round_trip(redis: Redis, unique: str) -> None:
    """Twenty pool members reserving at the same moment make one pipeline, and each domain's log holds
    exactly its own send."""
    store = RedisSlots(redis, key_prefix=f"test:{unique}:")
    pipelines: list[int] = []
    make = redis.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        pipelines.append(1)
        return make(*args, **kwargs)

    redis.pipeline = counted  # type: ignore[method-assign]
    domains = [f"KIS:m{i}" for i in range(20)]
    reservations = await asyncio.gather(
        *(store.reserve(Ask(d, 0.05, 20, 0.02, 0.0, f"{d}-a")) for d in domains)
    )
    assert len(pipelines) == 1
    assert all(r.wait_s == 0 for r in reservations)
    for domain, reservation in zip(domains, reservations, strict=True):
        log = await redis.zrange(f"test:{unique}:pace:{{{domain}}}:log", 0, -1, withscores=True)
        assert log == [(f"{domain}-a".encode(), pytest.approx((reservation.start + 0.02) * 1e6, abs=1))]


async def test_a_redis_that_lost_its_scripts_still_reserves(redis: Redis, unique: str) -> None:
    """After Redis forgot its scripts (a restart), a reservation loads the script again and is recorded
    once."""
    store = RedisSlots(redis, key_prefix=f"test:{unique}:")
    await store.reserve(Ask("KIS", 0.0, 1, 0.0, 0.0, "a"))
    await redis.script_flush()
    with pytest.raises(NoScriptError):
        await redis.evalsha(store._script.sha, 0)
    second = await store.reserve(Ask("KIS", 0.0, 1, 0.0, 0.0, "b"))
    assert second.wait_s == pytest.approx(1.0, abs=0.05)  # the window of one holds "a": "b" waits a second
    assert await redis.zcard(f"test:{unique}:pace:{{KIS}}:log") == 2


async def test_a_run_in_redis_is_that_many_reservations_in_a_row(redis: Redis, unique: str) -> None:
    """One ``reserve_run`` records every member in Redis's log with the starts single reservations
    would get: on the grid, and the limit + 1st a second after the first one's arrival bound."""
    store = RedisSlots(redis, key_prefix=f"test:{unique}:")
    ask = Ask("KIS", 0.001, 3, 0.02, 0.0, "unused")
    run = await store.reserve_run(ask, ["a", "b", "c", "d", "e"])
    assert [r.member for r in run] == ["a", "b", "c", "d", "e"]
    starts = [r.start for r in run]
    assert starts[1] == starts[0]  # an idle domain's grid starts at now: the second slot too (GCRA)
    assert starts[2] - starts[1] == pytest.approx(0.001, abs=1e-6)
    assert starts[3] == pytest.approx(starts[0] + 0.02 + 1.0, abs=1e-6)
    assert starts[4] == pytest.approx(starts[1] + 0.02 + 1.0, abs=1e-6)
    logged = await redis.zrange(f"test:{unique}:pace:{{KIS}}:log", 0, -1)
    assert sorted(logged) == [b"a", b"b", b"c", b"d", b"e"]
    after = await store.reserve(Ask("KIS", 0.001, 3, 0.02, 0.0, "f"))  # the next single one follows on
    assert after.start == pytest.approx(starts[2] + 0.02 + 1.0, abs=1e-6)


async def test_a_domain_redis_lost_is_fresh_again(redis: Redis, unique: str) -> None:
    """The first reservation of a domain finds it fresh, the next not; once Redis lost the domain's keys
    (here deleted, as a restart without data would) the next is fresh again."""
    prefix = f"test:{unique}:"
    store = RedisSlots(redis, key_prefix=prefix)

    async def fresh(member: str) -> bool:
        (reservation,) = await store.reserve_run(Ask("KIS", 0.05, 20, 0.02, 0.0, member), [member])
        return reservation.fresh

    assert [await fresh("a"), await fresh("b")] == [True, False]
    keys = [key async for key in redis.scan_iter(f"{prefix}pace:*")]
    assert sorted(k.decode().rsplit(":", 1)[1] for k in keys) == ["log", "seen", "tat"]
    assert await redis.pttl(f"{prefix}pace:{{KIS}}:seen") == -1  # no expiry: only lost data removes it
    await redis.delete(*keys)
    assert [await fresh("c"), await fresh("d")] == [True, False]
