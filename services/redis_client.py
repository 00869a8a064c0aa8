"""The one place a service builds its Redis client: directly from ``url``, or through Redis Sentinel.

    redis = redis_client(settings.redis, connections=64, wait_s=5)

Both kinds sit on a *blocking* pool of ``connections`` (a caller waits up to ``wait_s`` for a free one
instead of being refused) with socket timeouts, so a silent Redis turns into errors the caller can fall back
from. With ``sentinels`` set, the pool asks the sentinels for the primary of ``sentinel_master`` when it
connects and again whenever a connection to the old primary fails or answers read-only (after a failover),
so a promoted replica is found without a restart; ``url`` then only gives the database, credentials and TLS.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from services.settings import RedisSettings

TIMEOUT_S = 2.0  # socket connect and read timeout of every Redis (and Sentinel) connection
_FROM_URL = ("db", "username", "password")  # what a sentinel-managed connection takes from ``url``


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel-managed pool that makes callers wait for a connection, like ``BlockingConnectionPool``."""


def _timeouts() -> dict[str, Any]:
    return {"socket_timeout": TIMEOUT_S, "socket_connect_timeout": TIMEOUT_S}


def sentinel_connection_kwargs(url: str) -> dict[str, Any]:
    """The database, credentials and TLS flag of ``url`` (its host and port are the sentinels' to give)."""
    parsed: dict[str, Any] = dict(parse_url(url))
    kwargs = {k: parsed[k] for k in _FROM_URL if parsed.get(k) is not None}
    if url.startswith("rediss://"):
        kwargs["ssl"] = True
    return kwargs


def redis_client(settings: RedisSettings, *, connections: int, wait_s: float) -> Redis:
    """A client on a blocking pool of ``connections``, through Sentinel when ``settings.sentinels`` is set."""
    if not settings.sentinels:
        pool = BlockingConnectionPool.from_url(
            settings.url, max_connections=connections, timeout=wait_s, **_timeouts()
        )
        return Redis.from_pool(pool)
    sentinel = Sentinel(settings.sentinel_addresses, sentinel_kwargs=_timeouts())  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(
        settings.sentinel_master,
        redis_class=Redis,
        connection_pool_class=BlockingSentinelPool,
        max_connections=connections,
        timeout=wait_s,
        **_timeouts(),
        **sentinel_connection_kwargs(settings.url),
    )
    return client
