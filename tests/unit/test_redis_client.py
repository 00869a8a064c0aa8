"""Redis settings (Sentinel addresses from the environment) and the one builder of Redis clients."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool

from services.redis_client import BlockingSentinelPool, redis_client, sentinel_connection_kwargs
from services.settings import GatewaySettings, RedisSettings


@pytest.mark.parametrize(
    "value",
    [
        "127.0.0.1:26379,127.0.0.1:26380, 10.0.0.3:26381",
        '["127.0.0.1:26379", "127.0.0.1:26380", "10.0.0.3:26381"]',
    ],
)
def test_sentinels_from_the_environment_as_json_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("APIHUB_REDIS__SENTINELS", value)
    monkeypatch.setenv("APIHUB_REDIS__SENTINEL_MASTER", "apihub")
    redis = GatewaySettings().redis
    assert redis.sentinels == ["127.0.0.1:26379", "127.0.0.1:26380", "10.0.0.3:26381"]
    assert redis.sentinel_addresses == [("127.0.0.1", 26379), ("127.0.0.1", 26380), ("10.0.0.3", 26381)]
    assert redis.sentinel_master == "apihub"


def test_without_sentinels_the_url_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIHUB_REDIS__SENTINELS", raising=False)
    redis = GatewaySettings().redis
    assert redis.sentinels == [] and redis.sentinel_master == "mymaster"


@pytest.mark.parametrize("bad", ["127.0.0.1", "host:port", ":26379", "h:0", "h:70000"])
def test_a_sentinel_must_be_host_and_port(bad: str) -> None:
    with pytest.raises(ValidationError, match="host:port"):
        RedisSettings(sentinels=[bad])


def test_plain_client_is_a_blocking_pool_on_the_url() -> None:
    client = redis_client(RedisSettings(url="redis://127.0.0.1:6390/3"), connections=7, wait_s=0.5)
    pool = client.connection_pool
    assert type(pool) is BlockingConnectionPool
    assert pool.max_connections == 7 and pool.timeout == 0.5
    assert pool.connection_kwargs["port"] == 6390 and pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["socket_timeout"] == 2.0


def test_sentinel_client_asks_the_sentinels_for_the_named_primary() -> None:
    settings = RedisSettings(
        url="redis://user:pw@ignored:1/2",
        sentinels=["127.0.0.1:26379", "127.0.0.1:26380"],
        sentinel_master="m",
    )
    client = redis_client(settings, connections=4, wait_s=1)
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelPool)
    assert isinstance(pool, SentinelConnectionPool) and isinstance(pool, BlockingConnectionPool)
    assert pool.service_name == "m" and pool.is_master
    assert pool.max_connections == 4 and pool.timeout == 1
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (2, "user", "pw")
    assert "host" not in kwargs
    sentinels = pool.sentinel_manager.sentinels
    ports = [s.connection_pool.connection_kwargs["port"] for s in sentinels]
    assert ports == [26379, 26380]


def test_sentinel_connection_kwargs_keep_tls_and_drop_the_address() -> None:
    assert sentinel_connection_kwargs("rediss://:secret@h:6379/1") == {
        "db": 1,
        "password": "secret",
        "ssl": True,
    }
    assert sentinel_connection_kwargs("redis://h:6379") == {}
