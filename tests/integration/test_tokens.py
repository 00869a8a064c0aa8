"""Tokens across instances: one issuance per credential, contention visible, no stale overwrite."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from hubclient.models import Provider
from services.gateway.clock import SystemClock
from services.gateway.dispatcher import HttpDispatcher
from services.gateway.providers.base import TokenGrant
from services.gateway.providers.kis import KisAdapter
from services.gateway.token_store import RedisTokenStore, Stored
from services.gateway.tokens import TokenManager
from services.settings import KisSettings
from tests.conftest import Services
from tests.integration.conftest import fake_credentials, referee


@pytest.fixture
async def redis(services: Services) -> AsyncIterator[Redis]:
    """A Redis client for this test."""
    client = Redis.from_url(services.redis_url)
    yield client
    await client.aclose()


def store(settings: KisSettings, redis: Redis, prefix: str) -> RedisTokenStore:
    """The shared token store the gateway instances of one test use."""
    assert settings.appkey is not None
    return RedisTokenStore(
        redis,
        key_prefix=prefix,
        appkeys={Provider.KIS: settings.appkey.get_secret_value()},
        clock=SystemClock(),
    )


async def managers(
    count: int, settings: KisSettings, redis: Redis, prefix: str
) -> tuple[list[TokenManager], list[HttpDispatcher]]:
    """``count`` independent token managers, as ``count`` gateway instances would hold."""
    out, dispatchers = [], []
    for _ in range(count):
        dispatcher = HttpDispatcher({Provider.KIS: settings})
        await dispatcher.start()
        dispatchers.append(dispatcher)
        assert settings.appkey is not None
        out.append(
            TokenManager(
                {Provider.KIS: KisAdapter(settings)},
                dispatcher,
                store(settings, redis, prefix),
                clock=SystemClock(),
            )
        )
    return out, dispatchers


async def test_twenty_cold_instances_issue_once(
    sandbox_url: str, redis: Redis, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Twenty instances starting cold at once share one issuance; the waiting is logged as contention."""
    key, secret = fake_credentials()
    settings = KisSettings(base_url=f"{sandbox_url}/kis/real", appkey=key, appsecret=secret)
    tms, dispatchers = await managers(20, settings, redis, f"test:{unique}:")
    try:
        with caplog.at_level(logging.WARNING, logger="services.gateway.tokens"):
            tokens = await asyncio.gather(*(tm.get(Provider.KIS) for tm in tms))
    finally:
        await asyncio.gather(*(d.stop() for d in dispatchers))
    assert len(set(tokens)) == 1
    counters = await referee(sandbox_url, "kis/real", key)
    assert counters["tokens_issued"] == 1 and counters["token_refusals"] == 0
    contention = [r for r in caplog.records if r.getMessage() == "redlock.contention"]
    assert contention, "the 19 instances that waited must say so"
    fields = contention[0].fields  # type: ignore[attr-defined]
    assert {"lock", "provider", "waited_ms", "holder_ttl_ms"} <= set(fields)
    assert fields["provider"] == "KIS" and key not in fields["lock"]


async def test_late_writer_does_not_overwrite(sandbox_url: str, redis: Redis, unique: str) -> None:
    """A refresher holding an older generation cannot replace the newer token in Redis."""
    key, secret = fake_credentials()
    settings = KisSettings(base_url=f"{sandbox_url}/kis/real", appkey=key, appsecret=secret)
    (tm,), dispatchers = await managers(1, settings, redis, f"test:{unique}:")
    try:
        fresh = await tm.get(Provider.KIS)
        shared = store(settings, redis, f"test:{unique}:")
        stored = await shared.load(Provider.KIS)
        assert stored is not None and stored.grant.access_token == fresh
        late = Stored(TokenGrant("late-token", time.time() + 3600), stored.generation)
        assert not await shared.write(Provider.KIS, late)
        after = await shared.load(Provider.KIS)
        assert after is not None and after.grant.access_token == fresh
        newer = Stored(TokenGrant("newer-token", time.time() + 7200), stored.generation + 1)
        assert await shared.write(Provider.KIS, newer)
        newest = await shared.load(Provider.KIS)
        assert newest is not None and newest.grant.access_token == "newer-token"
    finally:
        await asyncio.gather(*(d.stop() for d in dispatchers))


async def test_restart_reuses_the_shared_token(sandbox_url: str, redis: Redis, unique: str) -> None:
    """A new process finds the token in Redis and issues nothing; a rejected one is dropped everywhere."""
    key, secret = fake_credentials()
    settings = KisSettings(base_url=f"{sandbox_url}/kis/real", appkey=key, appsecret=secret)
    (first,), d1 = await managers(1, settings, redis, f"test:{unique}:")
    (second,), d2 = await managers(1, settings, redis, f"test:{unique}:")
    try:
        token = await first.get(Provider.KIS)
        assert await second.get(Provider.KIS) == token
        assert (await referee(sandbox_url, "kis/real", key))["tokens_issued"] == 1
        await second.invalidate(Provider.KIS, token)
        assert await store(settings, redis, f"test:{unique}:").load(Provider.KIS) is None
        assert not second.cached_valid(Provider.KIS)
    finally:
        await asyncio.gather(*(d.stop() for d in d1 + d2))
