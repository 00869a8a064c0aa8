"""``CommandBatcher`` on a real Redis: one pipeline per loop turn, each caller its own reply or error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import NoScriptError, RedisError

from services.gateway.batching import CommandBatcher
from tests.conftest import Services


class CountingRedis(Redis):
    """The real client, counting the pipelines made from it."""

    pipelines = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self.pipelines += 1
        return super().pipeline(transaction=transaction, shard_hint=shard_hint)


@pytest.fixture
async def redis(services: Services) -> AsyncIterator[CountingRedis]:
    """A counting Redis client for this test."""
    pool = ConnectionPool.from_url(services.redis_url)
    client = CountingRedis(connection_pool=pool)
    yield client
    await client.aclose()
    await pool.disconnect()


async def test_one_turns_commands_go_as_one_pipeline(redis: CountingRedis, unique: str) -> None:
    """Sixty commands issued in one turn travel together; every caller gets its own reply, and a failing
    command fails alone."""
    batcher = CommandBatcher(redis)
    keys = [f"test:{unique}:k{i}" for i in range(30)]
    await asyncio.gather(*(batcher.run(("SET", k, k.encode())) for k in keys))
    assert redis.pipelines == 1
    replies = await asyncio.gather(
        *(batcher.run(("GET", k)) for k in keys),
        batcher.run(("EVALSHA", "0" * 40, 0)),
        return_exceptions=True,
    )
    assert replies[:-1] == [k.encode() for k in keys]
    assert isinstance(replies[-1], NoScriptError)
    assert redis.pipelines == 2
    await redis.delete(*keys)


async def test_commands_queued_while_pipelines_are_out_wait_for_the_next(
    redis: CountingRedis, unique: str
) -> None:
    """With one pipeline allowed out, commands issued turn after turn meanwhile all go in the next one."""
    batcher = CommandBatcher(redis, max_in_flight=1)
    key = f"test:{unique}:counter"
    first = asyncio.ensure_future(batcher.run(("INCR", key)))
    await asyncio.sleep(0)  # run() queued the command and started the pipeline's task
    await asyncio.sleep(0)  # which took it: one turn, not two, before a pacer's reservation leaves
    assert redis.pipelines == 1
    later = []
    for _ in range(5):
        later.append(asyncio.ensure_future(batcher.run(("INCR", key))))
        await asyncio.sleep(0)
    assert await first == 1
    assert sorted(await asyncio.gather(*later)) == [2, 3, 4, 5, 6]
    assert redis.pipelines == 2
    await redis.delete(key)


async def test_a_lost_connection_fails_every_command_of_its_pipeline(unique: str) -> None:
    """Nothing listens: each command gets a ``RedisError`` of its own, and the batcher serves again."""
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry_on_error=[])
    try:
        batcher = CommandBatcher(client)
        results = await asyncio.gather(
            *(batcher.run(("GET", f"test:{unique}:{i}")) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RedisError) for r in results), results
        assert len({id(r) for r in results}) == 3
        with pytest.raises(RedisError):
            await batcher.run(("GET", f"test:{unique}:again"))
    finally:
        await client.aclose()


def _stacks(redis: Redis) -> list[list[tuple[Any, ...]]]:
    """Wrap ``redis.pipeline`` so the commands of each pipeline sent are noted (they still go to Redis)."""
    sent: list[list[tuple[Any, ...]]] = []
    make = redis.pipeline

    def noted(*args: Any, **kwargs: Any) -> Any:
        pipe = make(*args, **kwargs)
        execute = pipe.execute

        async def execute_noted(*a: Any, **k: Any) -> Any:
            sent.append([command[0] for command in pipe.command_stack])
            return await execute(*a, **k)

        pipe.execute = execute_noted  # type: ignore[method-assign]
        return pipe

    redis.pipeline = noted  # type: ignore[method-assign]
    return sent


async def test_runs_of_gets_and_sets_travel_as_one_command_each_in_order(
    redis: CountingRedis, unique: str
) -> None:
    """GETs in a row go as one MGET, SETs with an expiry in a row as one script call, anything else as it
    is; each caller gets its own reply, and a GET after a SET of the same key in the turn reads it."""
    sent = _stacks(redis)
    batcher = CommandBatcher(redis)
    key = f"test:{unique}:k"
    other = f"test:{unique}:other"
    replies = await asyncio.gather(
        batcher.run(("SET", key, b"one", "PX", 60_000)),
        batcher.run(("SET", other, b"two", "PX", 60_000)),
        batcher.run(("GET", key)),
        batcher.run(("GET", other)),
        batcher.run(("GET", f"test:{unique}:missing")),
        batcher.run(("SET", key, b"three", "PX", 60_000)),
        batcher.run(("INCR", f"test:{unique}:n")),
        batcher.run(("GET", key)),
    )
    assert replies == [True, True, b"one", b"two", None, True, 1, b"three"]
    assert [stack[0] for stack in sent[0]] == ["EVAL", "MGET", "SET", "INCR", "GET"]
    assert len(sent) == 1 and redis.pipelines == 1
    assert 0 < await redis.pttl(key) <= 60_000
    await redis.delete(key, other, f"test:{unique}:n")


async def test_a_run_of_sets_keeps_its_place_after_redis_lost_its_scripts(
    redis: CountingRedis, unique: str
) -> None:
    """A Redis that lost its scripts (a restart) still stores a run of SETs first: the GETs after it in
    the same turn read what it wrote."""
    batcher = CommandBatcher(redis)
    keys = [f"test:{unique}:s{i}" for i in range(3)]
    await redis.script_flush()
    replies = await asyncio.gather(
        *(batcher.run(("SET", k, k.encode(), "PX", 60_000)) for k in keys),
        *(batcher.run(("GET", k)) for k in keys),
    )
    assert replies == [True] * 3 + [k.encode() for k in keys]
    assert redis.pipelines == 1
    await redis.delete(*keys)
