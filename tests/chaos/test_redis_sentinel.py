"""Scenario (d): Redis behind Sentinel (primary, replica, three sentinels), the primary killed mid-run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.settings import GatewaySettings
from tests.chaos.gateways import gateway_fleet
from tests.chaos.load import LoadPlan, conclude, drive, key_counters
from tests.chaos.sentinel import HOST, MASTER, sentinel_group
from tests.conftest import Services
from tests.integration.conftest import Topics, appkey

KILL_AT_S = 20.0
RUN_S = 60.0


async def keys_on(port: int, prefix: str) -> int:
    """How many keys under ``prefix`` the Redis on ``port`` holds."""
    client = Redis(host=HOST, port=port, socket_timeout=2)
    try:
        return len([k async for k in client.scan_iter(match=f"{prefix}*", count=500)])
    finally:
        await client.aclose()


@pytest.mark.timeout(300)
async def test_sentinel_failover_keeps_pace_and_token(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, sandbox_url: str, tmp_path: Path
) -> None:
    """Two gateways reach Redis through three sentinels; 20 s into a 60 s run at 80 % of the KIS key the
    primary is killed with SIGKILL and the sentinels promote the replica: every request answered, no order
    twice, no arrival over the limit, one token issued in the whole run and none refused, and the gateways
    write to the promoted replica afterwards."""
    async with sentinel_group(tmp_path / "sentinel") as group:
        settings = gateway_settings.model_copy(
            update={
                "redis": gateway_settings.redis.model_copy(
                    update={
                        "url": "redis://127.0.0.1/0",
                        "sentinels": group.sentinels,
                        "sentinel_master": MASTER,
                    }
                )
            }
        )
        extra_env = {
            "APIHUB_REDIS__SENTINELS": json.dumps(group.sentinels),
            "APIHUB_REDIS__SENTINEL_MASTER": MASTER,
        }
        failover_s: list[float] = []
        plan = LoadPlan(fraction=0.8, seconds=RUN_S, callers=4)
        async with gateway_fleet(settings, 2, extra_env) as fleet:

            async def fail_over() -> None:
                await asyncio.sleep(KILL_AT_S)
                await group.kill_primary()
                failover_s.append(await group.wait_failover(timeout_s=30))

            result = await drive(
                services.kafka_bootstrap,
                topics.requests,
                topics.responses,
                sandbox_url,
                appkey(settings),
                plan,
                during=fail_over,
            )
            alive = fleet.alive()
        on_new_primary = await keys_on(group.primary_port, settings.redis.key_prefix)
        counters = await key_counters(sandbox_url, plan.environment, appkey(settings))
    promoted_at = KILL_AT_S + (failover_s[0] if failover_s else 0.0)
    after = result.ok_rate(promoted_at, RUN_S)
    conclude(
        result,
        "redis-sentinel-failover",
        f"Redis primary SIGKILL at {KILL_AT_S:.0f} s behind 3 sentinels, replica promoted, two gateways",
        [
            *group.events,
            f"{on_new_primary} keys of the run on the promoted primary at the end",
            f"ok answers/s from the promotion to the last send {after:.1f} (sent {plan.rate_per_s:.0f}/s)",
        ],
    )
    assert failover_s and alive == 2
    # The pace goes on after the failover (on a contended host the gateway widens its own budget, so the
    # rate may sit below the load's; it must not stall).
    assert after >= 0.5 * plan.rate_per_s, f"only {after:.1f} ok answers/s after the promotion"
    assert on_new_primary > 0, "the gateways wrote nothing to the promoted replica"
    refused = int(counters.get("token_refusals", 0))
    assert result.tokens_issued == 1 and refused == 0, f"{result.tokens_issued} issued, {refused} refused"
