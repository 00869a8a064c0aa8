"""Scenario (c): the gateways' Redis killed with SIGKILL mid-run and started again (empty) 5 s later."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from services.settings import GatewaySettings
from tests.chaos.gateways import gateway_fleet
from tests.chaos.load import LoadPlan, conclude, drive
from tests.chaos.sentinel import bindable
from tests.conftest import Services
from tests.integration.conftest import Topics, appkey
from tests.integration.test_resilience import private_redis

REDIS_PORTS = range(46380, 46400)  # this suite's range for Redis replicas and sentinels
KILL_AT_S = 15.0
DOWN_S = 5.0


@pytest.mark.timeout(240)
async def test_redis_sigkill_and_restart(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, sandbox_url: str, tmp_path: Path
) -> None:
    """Two gateways on a Redis of their own, both serving the KIS key (requests without a Kafka key reach
    every partition), asked for 120 % of it; 15 s into a 45 s run the Redis is killed with SIGKILL and
    started again, without its data, 5 s later: every request answered, no order twice, no arrival over
    the limit (each gateway keeps to its half while Redis is lost), and no second token (the gateways keep
    the one they hold)."""
    port = next(p for p in REDIS_PORTS if bindable(p))  # the range is ephemeral too: skip a held port
    redis_url = f"redis://127.0.0.1:{port}/0"
    settings = gateway_settings.model_copy(
        update={"redis": gateway_settings.redis.model_copy(update={"url": redis_url})}
    )
    plan = LoadPlan(fraction=1.2, seconds=45, callers=4, unkeyed=True)
    async with contextlib.AsyncExitStack() as stack:
        redis = await stack.enter_async_context(private_redis(port, str(tmp_path)))
        fleet = await stack.enter_async_context(gateway_fleet(settings, 2))

        async def kill_and_restart() -> None:
            await asyncio.sleep(KILL_AT_S)
            redis.kill()
            await redis.wait()
            await asyncio.sleep(DOWN_S)
            await stack.enter_async_context(private_redis(port, str(tmp_path)))

        result = await drive(
            services.kafka_bootstrap,
            topics.requests,
            topics.responses,
            sandbox_url,
            appkey(settings),
            plan,
            during=kill_and_restart,
        )
        alive = fleet.alive()
    conclude(
        result,
        "redis-restart",
        f"Redis SIGKILL at {KILL_AT_S:.0f} s, back empty {DOWN_S:.0f} s later, two gateways serving the key "
        "together at 120 % of it",
        [f"{alive} of 2 gateways still running at the end"],
    )
    assert alive == 2
    assert result.tokens_issued == 1, f"{result.tokens_issued} tokens issued (one expected)"
