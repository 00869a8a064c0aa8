"""Integration fixtures: isolated topics, a sandbox process and gateways built per test."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiokafka import ConsumerRecord

from services.gateway.app import GatewayApp
from services.sandbox.referee import appkey_label
from services.settings import (
    GatewaySettings,
    KafkaSettings,
    KisSettings,
    KiwoomSettings,
    RedisSettings,
    WorkerTopics,
)
from services.topics import ensure_topics, load_topics
from services.worker.reader import open_reader, read_to_end
from tests import processes
from tests.conftest import Services
from tests.processes import free_port

__all__ = ["free_port"]  # re-exported for the test modules


@dataclass(frozen=True)
class Topics:
    """This test's own copies of the declared topics."""

    requests: str
    responses: str
    dlq: str
    group_id: str


def fake_credentials() -> tuple[str, str]:
    """An appkey and secret of the brokers' shapes (36 and 180 characters); the sandbox accepts any."""
    return "PS" + secrets.token_hex(17), secrets.token_urlsafe(135)[:180]


@pytest.fixture
async def topics(services: Services, unique: str) -> Topics:
    """Request, response and DLQ topics private to this test."""
    names = {
        "api.requests": f"t{unique}.requests",
        "api.responses": f"t{unique}.responses",
        "api.requests.dlq": f"t{unique}.dlq",
    }
    specs = [s for s in load_topics(rename=names) if s.name in names.values()]
    await ensure_topics(services.kafka_bootstrap, specs)
    return Topics(names["api.requests"], names["api.responses"], names["api.requests.dlq"], f"gw-{unique}")


@asynccontextmanager
async def sandbox_server(faults: dict[str, object] | None = None) -> AsyncIterator[str]:
    """``apihub sandbox`` as its own process, as remote as a real broker: its arrival clock (the referee's)
    does not share an event loop with the gateway or the test's load. ``faults`` go through its admin API.
    Its log is kept in ``.local/test-logs/``."""
    log_path = processes.LOG_DIR / f"sandbox-{uuid.uuid4().hex[:10]}.log"
    async with processes.sandbox(faults=faults, log_path=log_path) as running:
        yield running.url


@pytest.fixture(scope="session")
async def sandbox_url() -> AsyncIterator[str]:
    """A sandbox process on a free loopback port for the whole session."""
    async with sandbox_server() as url:
        yield url


async def referee(sandbox_url: str, environment: str, appkey: str) -> dict[str, Any]:
    """The sandbox referee's counters for one appkey in one environment (``kis/real`` ...)."""
    async with aiohttp.ClientSession() as session, session.get(f"{sandbox_url}/_sandbox/stats") as resp:
        stats = await resp.json()
    counters: dict[str, Any] = stats["environments"][environment]["appkeys"].get(appkey_label(appkey), {})
    return counters


GatewayFactory = Callable[..., AbstractAsyncContextManager[GatewayApp]]


async def private_worker_topics(bootstrap: str, prefix: str, *fields: str) -> WorkerTopics:
    """``WorkerTopics`` whose ``fields`` name this test's own copies (``{prefix}.{declared name}``),
    created now with their declared partitions and config; the other fields keep the declared names."""
    declared = WorkerTopics()
    rename = {getattr(declared, field): f"{prefix}.{getattr(declared, field)}" for field in fields}
    specs = [s for s in load_topics(rename=rename) if s.name in rename.values()]
    assert len(specs) == len(fields), f"not all of {fields} are declared in schemas/topics.yaml"
    await ensure_topics(bootstrap, specs)
    return declared.model_copy(update={field: rename[getattr(declared, field)] for field in fields})


async def read_committed(
    bootstrap: str, topic: str, *, count: int | None = None, timeout_s: float = 30
) -> list[ConsumerRecord[bytes, bytes]]:
    """Committed records of ``topic`` (all partitions) from the beginning: the first ``count`` (waiting for
    them up to ``timeout_s``), or without ``count`` every one up to the end offsets taken now."""
    consumer = await open_reader(bootstrap, [topic], client_id="test-reader")
    try:
        if count is None:
            return await read_to_end(consumer, timeout_s)
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(timeout_s):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


def appkey(settings: GatewaySettings, provider: str = "KIS") -> str:
    """The appkey the gateway uses for ``provider`` (the referee counts per appkey)."""
    key = settings.kis.appkey if provider == "KIS" else settings.kiwoom.appkey
    assert key is not None
    return key.get_secret_value()


def gateway_env(settings: GatewaySettings) -> dict[str, str]:
    """The ``APIHUB_*`` environment of a gateway process with these settings (and a free metrics port)."""
    assert settings.kis.appsecret is not None and settings.kiwoom.secretkey is not None
    return {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "APIHUB_KAFKA__REQUEST_TOPIC": settings.kafka.request_topic,
        "APIHUB_KAFKA__RESPONSE_TOPIC": settings.kafka.response_topic,
        "APIHUB_KAFKA__DLQ_TOPIC": settings.kafka.dlq_topic,
        "APIHUB_KAFKA__GROUP_ID": settings.kafka.group_id,
        "APIHUB_REDIS__URL": settings.redis.url,
        "APIHUB_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "APIHUB_KIS__BASE_URL": settings.kis.base_url,
        "APIHUB_KIS__APPKEY": appkey(settings),
        "APIHUB_KIS__APPSECRET": settings.kis.appsecret.get_secret_value(),
        "APIHUB_KIWOOM__BASE_URL": settings.kiwoom.base_url,
        "APIHUB_KIWOOM__APPKEY": appkey(settings, "KIWOOM"),
        "APIHUB_KIWOOM__SECRETKEY": settings.kiwoom.secretkey.get_secret_value(),
        "APIHUB_INSTANCE_ID": settings.instance_id,
        "APIHUB_METRICS_HOST": "127.0.0.1",
        "APIHUB_METRICS_PORT": str(free_port()),
    }


@asynccontextmanager
async def gateway_process(settings: GatewaySettings) -> AsyncIterator[processes.GatewayProcess]:
    """``apihub gateway`` as a separate OS process (so it can be killed with SIGKILL), ready when it
    yields; stopped (SIGTERM, then SIGKILL) when the block ends. Its log is kept in ``.local/test-logs/``."""
    log_path = processes.LOG_DIR / f"gateway-{settings.instance_id}.log"
    async with processes.gateway(gateway_env(settings), log_path=log_path) as gateway:
        yield gateway


@pytest.fixture
def gateway_settings(services: Services, topics: Topics, sandbox_url: str, unique: str) -> GatewaySettings:
    """Settings of a gateway wired to this test's topics, its own Redis prefix and fresh sandbox keys."""
    kis_key, kis_secret = fake_credentials()
    kw_key, kw_secret = fake_credentials()
    return GatewaySettings(
        kafka=KafkaSettings(
            bootstrap_servers=services.kafka_bootstrap,
            request_topic=topics.requests,
            response_topic=topics.responses,
            dlq_topic=topics.dlq,
            group_id=topics.group_id,
        ),
        redis=RedisSettings(url=services.redis_url, key_prefix=f"test:{unique}:"),
        kis=KisSettings(base_url=f"{sandbox_url}/kis/real", appkey=kis_key, appsecret=kis_secret),
        kiwoom=KiwoomSettings(base_url=f"{sandbox_url}/kiwoom/real", appkey=kw_key, secretkey=kw_secret),
        instance_id=f"gw-{unique}-1",
    )


@pytest.fixture
def gateway(gateway_settings: GatewaySettings) -> GatewayFactory:
    """Start a gateway (``async with gateway(**overrides) as app``) on this test's settings."""

    @asynccontextmanager
    async def run(**overrides: object) -> AsyncIterator[GatewayApp]:
        settings = gateway_settings.model_copy(update=overrides)
        async with GatewayApp(settings) as app:
            yield app

    return run
