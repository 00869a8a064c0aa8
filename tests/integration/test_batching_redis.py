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
