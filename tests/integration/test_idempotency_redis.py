"""Idempotency records in Redis: the record semantics hold while lookups and writes travel in batches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from hubclient.models import ApiResponse, Status
from services.gateway.idempotency import INFLIGHT, IdempotencyStore, Record
from tests.conftest import Services
from tests.processes import free_port

TTL_MS = 60_000
PRINT = "0123456789abcdef01234567"  # a request's fingerprint


@pytest.fixture
async def redis(services: Services) -> AsyncIterator[Redis]:
    """A Redis client for this test."""
    client = Redis.from_url(services.redis_url)
    yield client
    await client.aclose()


def _response(request_id: str | None = None) -> ApiResponse:
    return ApiResponse(request_id=request_id or str(uuid.uuid4()), status=Status.OK, gateway="test", data={})


def _count_pipelines(redis: Redis) -> list[int]:
    """Wrap ``redis.pipeline`` so each pipeline's size is noted (the commands still go to Redis)."""
    sizes: list[int] = []
    make = redis.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        pipe = make(*args, **kwargs)
        execute = pipe.execute

        async def execute_counted(*a: Any, **k: Any) -> Any:
            sizes.append(len(pipe.command_stack))
            return await execute(*a, **k)

        pipe.execute = execute_counted  # type: ignore[method-assign]
        return pipe

    redis.pipeline = counted  # type: ignore[method-assign]
    return sizes


async def test_record_semantics(redis: Redis, unique: str) -> None:
    """A first delivery finds nothing, an in-flight mark reads as a record without a response, a second
    mark finds the first and a stored response, which replaces the mark and is never displaced by a later
    mark nor removed by a clear; each lives as long as its writer asked."""
    store = IdempotencyStore(redis, key_prefix=f"test:{unique}:")
    response = _response()
    rid = response.request_id
    assert await store.lookup(rid) is None
    assert await store.mark_inflight(rid, TTL_MS, PRINT) is None  # marked
    record = await store.lookup(rid)
    assert record is not None and record.response is None
    assert await redis.get(f"test:{unique}:idem:{rid}") == INFLIGHT + b":" + PRINT.encode()
    assert TTL_MS - 1000 < await redis.pttl(f"test:{unique}:idem:{rid}") <= TTL_MS  # the mark's own lifetime
    assert (
        await store.mark_inflight(rid, TTL_MS, PRINT) == record
    )  # another delivery's mark is there: not this one's
    await store.clear_inflight(rid, PRINT)
    assert await store.lookup(rid) is None
    assert await store.mark_inflight(rid, TTL_MS, PRINT) is None
    await store.store(rid, response, 30_000, PRINT)
    assert await store.mark_inflight(rid, TTL_MS, PRINT) == Record(
        response, PRINT
    )  # kept: the response stays
    await store.clear_inflight(rid, PRINT)  # only an in-flight mark is ever cleared
    record = await store.lookup(rid)
    assert record is not None and record.response == response
    assert 29_000 < await redis.pttl(f"test:{unique}:idem:{rid}") <= 30_000  # as long as it was asked


async def test_a_record_that_no_longer_reads_stands_for_an_unknown_answer(redis: Redis, unique: str) -> None:
    """A stored answer another version wrote in a shape this one refuses reads as an earlier delivery
    whose answer is unknown (an order is then unknown_outcome, a read served again), not as an error
    that ended every redelivery internal_error."""
    store = IdempotencyStore(redis, key_prefix=f"test:{unique}:")
    rid = str(uuid.uuid4())
    await redis.set(f"test:{unique}:idem:{rid}", b'{"request_id": "x", "a_field_from_the_future": 1}')
    assert await store.lookup(rid) == Record(None)
    assert await store.mark_inflight(rid, TTL_MS, PRINT) == Record(None)  # and it is not overwritten


async def test_records_carry_their_requests_fingerprint(redis: Redis, unique: str) -> None:
    """A mark and an answer read back with the fingerprint they were written with; another request's
    clear leaves a mark alone; what an older version wrote (a bare mark, a bare answer) reads without one."""
    store = IdempotencyStore(redis, key_prefix=f"test:{unique}:")
    response = _response()
    rid = response.request_id
    assert await store.mark_inflight(rid, TTL_MS, PRINT) is None
    await store.clear_inflight(rid, "another-request")
    assert await store.lookup(rid) == Record(None, PRINT)  # not this one's mark to clear
    await store.store(rid, response, TTL_MS, PRINT)
    assert await store.lookup(rid) == Record(response, PRINT)
    older = str(uuid.uuid4())
    await redis.set(f"test:{unique}:idem:{older}", INFLIGHT)
    assert await store.lookup(older) == Record(None)
    await redis.set(f"test:{unique}:idem:{older}", response.to_json())
    assert await store.lookup(older) == Record(response)


async def test_concurrent_requests_share_round_trips(redis: Redis, unique: str) -> None:
    """200 requests looking up and storing their records at once share one round trip and one command
    each time, and every one of them reads its own record back."""
    sizes = _count_pipelines(redis)
    store = IdempotencyStore(redis, key_prefix=f"test:{unique}:")
    responses = [_response() for _ in range(200)]
    firsts = await asyncio.gather(*(store.lookup(r.request_id) for r in responses))
    assert firsts == [None] * 200
    await asyncio.gather(*(store.store(r.request_id, r, TTL_MS, PRINT) for r in responses))
    records = await asyncio.gather(*(store.lookup(r.request_id) for r in responses))
    assert [r.response if r else None for r in records] == responses
    assert sizes == [1, 1, 1]  # each time one turn of the loop: one pipeline of one MGET or script call


async def test_a_cancelled_caller_leaves_the_others_served(redis: Redis, unique: str) -> None:
    """A lookup whose caller gave up before its batch left is dropped; the rest of the batch is served."""
    store = IdempotencyStore(redis, key_prefix=f"test:{unique}:")
    stored = _response()
    await store.store(stored.request_id, stored, TTL_MS, PRINT)
    gone = asyncio.create_task(store.lookup(str(uuid.uuid4())))
    kept = asyncio.create_task(store.lookup(stored.request_id))
    await asyncio.sleep(0)  # both queued, the batch not sent yet
    gone.cancel()
    record = await asyncio.wait_for(kept, 5)
    assert record is not None and record.response == stored
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_unreachable_redis_fails_each_command() -> None:
    """With Redis gone every queued command raises a ``RedisError`` of its own, and the next batch still
    tries again."""
    client = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        store = IdempotencyStore(client, key_prefix="test:gone:")
        results = await asyncio.gather(
            *(store.lookup(str(uuid.uuid4())) for _ in range(5)),
            store.store("gone", _response(), TTL_MS, PRINT),
            return_exceptions=True,
        )
        assert all(isinstance(r, RedisError) for r in results)
        assert len({id(r) for r in results}) == 6
        with pytest.raises(RedisError):
            await store.lookup(str(uuid.uuid4()))
    finally:
        await client.aclose()
