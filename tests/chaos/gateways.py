"""Gateway processes for the fault scenarios: ``count`` instances of one configuration, killable one by one.

    async with gateway_fleet(settings, 3) as fleet:
        await fleet.crash(0)     # SIGKILL gateway 0 and start it again under the same instance id
    # every gateway stopped (SIGTERM, then SIGKILL) when the block ends

Each instance gets its own instance id (``<settings.instance_id>-<i>``), metrics port and log file in
``.local/test-logs/``; the environment is ``gateway_env`` of the integration fixtures plus ``extra_env``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from services.settings import GatewaySettings
from tests import processes
from tests.integration.conftest import gateway_env


class GatewayFleet:
    """Running gateway processes by index; ``crash`` replaces one, ``crashes`` counts them."""

    def __init__(self, settings: GatewaySettings, count: int, extra_env: Mapping[str, str]) -> None:
        self._envs = []
        for i in range(count):
            env = gateway_env(settings.model_copy(update={"instance_id": f"{settings.instance_id}-{i}"}))
            env.update(extra_env)
            self._envs.append(env)
        self.running: list[processes.GatewayProcess | None] = [None] * count
        self.crashes = 0

    def log_path(self, index: int) -> Path:
        """Where gateway ``index`` logs (appended across its restarts)."""
        return processes.LOG_DIR / f"chaos-{self._envs[index]['APIHUB_INSTANCE_ID']}.log"

    async def start(self, index: int) -> processes.GatewayProcess:
        """Start gateway ``index`` and wait until it consumes."""
        gateway = await processes.start_gateway(self._envs[index], log_path=self.log_path(index))
        self.running[index] = gateway
        return gateway

    async def crash(self, index: int, down_s: float = 0.0) -> None:
        """SIGKILL gateway ``index``, leave it down ``down_s`` seconds, start it again (same instance id)."""
        gateway = self.running[index]
        if gateway is not None:
            await gateway.kill()
            self.crashes += 1
        self.running[index] = None
        await asyncio.sleep(down_s)
        await self.start(index)

    def alive(self) -> int:
        """How many gateways of the fleet are running now."""
        return sum(g is not None and g.child.running for g in self.running)

    async def stop(self) -> None:
        """SIGTERM every running gateway (SIGKILL after a bound)."""
        await asyncio.gather(*(g.stop() for g in self.running if g is not None), return_exceptions=True)
        self.running = [None] * len(self.running)


@contextlib.asynccontextmanager
async def gateway_fleet(
    settings: GatewaySettings, count: int, extra_env: Mapping[str, str] | None = None
) -> AsyncIterator[GatewayFleet]:
    """``count`` gateways on ``settings`` for the length of the block."""
    fleet = GatewayFleet(settings, count, extra_env or {})
    try:
        for i in range(count):
            await fleet.start(i)
        yield fleet
    finally:
        await fleet.stop()
