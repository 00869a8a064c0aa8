"""The replay's own hub: a gateway started inside ``apihub replay`` that calls only the sandbox.

It reads its own request topic in its own consumer group and keeps its pacing, tokens and idempotency
records under its own Redis prefix, so neither a running gateway nor its limiter ever sees a replayed
request. Its credentials are made up for the run (the sandbox takes any of the brokers' shapes). Before
it starts, the URL is checked to be the sandbox (it answers ``/_sandbox/stats``); a broker does not.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from services.kafka_client import with_security
from services.replay import ReplayError
from services.replay.names import HubNames
from services.settings import GatewaySettings, KafkaSettings, KisSettings, KiwoomSettings, RedisSettings
from services.topics import ensure_topics, load_topics

SANDBOX_CHECK_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 30.0
# Each run is a new static member; a finished run's partitions pass to the next after this long (the
# broker's smallest session timeout by default), so back-to-back replays wait seconds, not the default 10.
SESSION_TIMEOUT_MS = 6_000


def is_sandbox_answer(status: int, body: object) -> bool:
    """True for the sandbox referee's answer (HTTP 200 with its ``environments``); a broker has none."""
    return status == 200 and isinstance(body, dict) and isinstance(body.get("environments"), dict)


async def check_sandbox(url: str) -> None:
    """Raise ``ReplayError`` unless ``url`` is the API Hub sandbox."""
    try:
        timeout = aiohttp.ClientTimeout(total=SANDBOX_CHECK_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{url.rstrip('/')}/_sandbox/stats") as resp,
        ):
            body = await resp.json(content_type=None) if resp.status == 200 else None
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ReplayError(f"the sandbox at {url} does not answer ({exc or type(exc).__name__})") from exc
    if not is_sandbox_answer(status, body):
        raise ReplayError(f"{url} is not the API Hub sandbox (no /_sandbox/stats); use --target hub --live")


def _fake_key() -> tuple[str, str]:
    # The brokers' shapes (36 and 180 characters); the sandbox accepts any, nothing else sees them.
    return "PS" + secrets.token_hex(17), secrets.token_urlsafe(135)[:180]


def gateway_settings(
    names: HubNames,
    *,
    bootstrap_servers: str,
    redis_url: str,
    sandbox_url: str,
    security: KafkaSettings | None = None,
) -> GatewaySettings:
    """The settings of the replay's gateway: the replay topics and group, the sandbox's real environments.

    Every group of settings is given whole, so an operator's ``APIHUB_KIS__*`` (a live broker's address or
    key) never reaches this gateway; of the operator's Kafka settings only ``security`` (how to connect:
    SASL/TLS and the principal, ``services.kafka_client.SECURITY_FIELDS``) is kept."""
    kis_key, kis_secret = _fake_key()
    kiwoom_key, kiwoom_secret = _fake_key()
    base = sandbox_url.rstrip("/")
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap_servers,
        request_topic=names.requests,
        response_topic=names.responses,
        dlq_topic=names.dlq,
        group_id=names.group_id,
        session_timeout_ms=SESSION_TIMEOUT_MS,
    )
    return GatewaySettings(
        kafka=kafka if security is None else with_security(kafka, security),
        redis=RedisSettings(url=redis_url, key_prefix=names.redis_prefix),
        kis=KisSettings(base_url=f"{base}/kis/real", appkey=kis_key, appsecret=kis_secret),
        kiwoom=KiwoomSettings(base_url=f"{base}/kiwoom/real", appkey=kiwoom_key, secretkey=kiwoom_secret),
        instance_id=f"replay-{socket.gethostname()}-{secrets.token_hex(3)}",
        log_level="WARNING",
        # The hub's caller permissions (APIHUB_PERMISSIONS_FILE) are not what a replay compares: the
        # replay's own gateway serves every call it is given (a recorded not_permitted then differs).
        permissions_file=None,
    )


async def ensure_hub_topics(
    bootstrap_servers: str, names: HubNames, client_options: dict[str, Any] | None = None
) -> None:
    """Create the replay topics when missing, configured like the audit topics they stand for
    (``client_options``: the connection's SASL/TLS, ``services.kafka_client.client_kwargs``)."""
    rename = {"api.requests": names.requests, "api.responses": names.responses, "api.requests.dlq": names.dlq}
    specs = [s for s in load_topics(rename=rename) if s.name in rename.values()]
    report = await ensure_topics(bootstrap_servers, specs, client_kwargs=client_options)
    if report.drift:
        raise ReplayError("the replay topics differ from their declaration: " + "; ".join(report.drift))


@asynccontextmanager
async def sandbox_hub(settings: GatewaySettings) -> AsyncIterator[None]:
    """A gateway on ``settings`` running until the block ends, in its group once this yields."""
    from services.gateway.app import GatewayApp  # the gateway's imports are only needed here

    async with GatewayApp(settings) as app:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while not app.consumer.joined:
            if time.monotonic() > deadline:
                raise ReplayError(f"the replay gateway did not join {settings.kafka.group_id} in time")
            await asyncio.sleep(0.1)
        yield
