"""Scenario (a): a gateway killed with SIGKILL every 10 s, four times, while two others keep running."""

from __future__ import annotations

import asyncio

import pytest

from services.settings import GatewaySettings
from tests.chaos.gateways import gateway_fleet
from tests.chaos.load import LoadPlan, conclude, drive
from tests.conftest import Services
from tests.integration.conftest import Topics, appkey

KILLS = 4
EVERY_S = 10.0


@pytest.mark.timeout(300)
async def test_gateway_sigkill_repeatedly(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, sandbox_url: str
) -> None:
    """Three gateways, one killed every 10 s (the next in turn, restarted at once), four callers at 80 % of
    the KIS key with an order every tenth request: every request answered, no order twice, no arrival over."""
    plan = LoadPlan(fraction=0.8, seconds=EVERY_S * (KILLS + 1), callers=4)
    async with gateway_fleet(gateway_settings, 3) as fleet:

        async def kill_in_turn() -> None:
            for round_ in range(KILLS):
                await asyncio.sleep(EVERY_S)
                await fleet.crash(round_ % 3)

        result = await drive(
            services.kafka_bootstrap,
            topics.requests,
            topics.responses,
            sandbox_url,
            appkey(gateway_settings),
            plan,
            during=kill_in_turn,
        )
        crashes = fleet.crashes
    assert crashes == KILLS
    conclude(
        result,
        "gateway-sigkill",
        f"SIGKILL of one of three gateways every {EVERY_S:.0f} s, {KILLS} times",
        [f"{crashes} gateways killed with SIGKILL and restarted under the same instance id"],
    )
