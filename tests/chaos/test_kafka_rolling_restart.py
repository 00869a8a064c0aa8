"""Scenario (Kafka, b): a rolling restart of all three brokers of the cluster mid-run."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.settings import GatewaySettings
from tests.chaos.gateways import gateway_fleet
from tests.chaos.kafka_cluster import NODES, hub_topics, on_cluster, three_node_cluster
from tests.chaos.load import LoadPlan, conclude, drive
from tests.conftest import Services
from tests.integration.conftest import appkey

START_AT_S = 5.0


@pytest.mark.timeout(300)
async def test_kafka_rolling_restart(
    services: Services, gateway_settings: GatewaySettings, sandbox_url: str, unique: str
) -> None:
    """Two gateways and four callers at 80 % of the KIS key (an order every tenth request) on the three-node
    cluster; from 5 s into a 75 s run each broker in turn is stopped with SIGTERM, started again and the
    next one waits until every partition is back in sync, as an operator rolls an upgrade: every request
    answered, no order twice, no arrival over the limit."""
    plan = LoadPlan(fraction=0.8, seconds=75, callers=4)
    notes: list[str] = []
    async with three_node_cluster() as cluster:
        async with (
            hub_topics(cluster, f"r{unique}") as topics,
            gateway_fleet(on_cluster(gateway_settings, cluster, topics), 2) as fleet,
        ):
            settings = on_cluster(gateway_settings, cluster, topics)

            async def roll() -> None:
                await asyncio.sleep(START_AT_S)
                began = time.monotonic()
                steps = []
                for node in NODES:
                    started = time.monotonic()
                    await cluster.restart(node)
                    restart_s = time.monotonic() - started
                    in_sync_s = await cluster.in_sync(90)
                    steps.append(f"kafka-{node} {restart_s:.1f} s + in sync {in_sync_s:.1f} s")
                notes.append(
                    f"rolling restart from {START_AT_S:.0f} s, {time.monotonic() - began:.0f} s in all: "
                    + ", ".join(steps)
                )

            result = await drive(
                cluster.bootstrap, topics[0], topics[1], sandbox_url, appkey(settings), plan, during=roll
            )
            alive = fleet.alive()
        notes.append(f"{alive} of 2 gateways still running at the end")
    conclude(result, "kafka-rolling-restart", "Kafka: rolling restart of all three brokers (SIGTERM)", notes)
    assert alive == 2
