"""Scenario (Kafka, a): one broker of the three-node cluster killed with SIGKILL mid-run and restarted."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.settings import GatewaySettings
from tests.chaos.gateways import gateway_fleet
from tests.chaos.kafka_cluster import hub_topics, on_cluster, three_node_cluster
from tests.chaos.load import LoadPlan, conclude, drive
from tests.conftest import Services
from tests.integration.conftest import appkey

KILL_AT_S = 15.0
DOWN_S = 10.0


@pytest.mark.timeout(300)
async def test_kafka_broker_sigkill_and_restart(
    services: Services, gateway_settings: GatewaySettings, sandbox_url: str, unique: str
) -> None:
    """Two gateways and four callers at 80 % of the KIS key (an order every tenth request) on the three-node
    cluster (replication factor 3, min.insync.replicas=2, acks=all); 15 s into a 60 s run the broker leading
    the request partition every KIS request goes to (their key is the limit domain) is killed with SIGKILL
    and started again 10 s later: every request answered, no order twice, no arrival over the limit, and
    the cluster back in sync. Until the controller fences the dead broker (broker.session.timeout.ms, 9 s)
    that partition has no leader, so the gateways see a pause and then a backlog."""
    plan = LoadPlan(fraction=0.8, seconds=60, callers=4)
    notes: list[str] = []
    async with three_node_cluster() as cluster:
        async with (
            hub_topics(cluster, f"k{unique}") as topics,
            gateway_fleet(on_cluster(gateway_settings, cluster, topics), 2) as fleet,
        ):
            settings = on_cluster(gateway_settings, cluster, topics)

            async def kill_and_restart() -> None:
                await asyncio.sleep(KILL_AT_S)
                partition = await cluster.busiest_partition(topics[0])
                victim = await cluster.leader_of(topics[0], partition)
                await cluster.kill(victim)
                await asyncio.sleep(DOWN_S)
                started = time.monotonic()
                await cluster.start()
                ready_s = time.monotonic() - started
                in_sync_s = await cluster.in_sync(90)
                notes.append(
                    f"kafka-{victim} (leader of the request partition all KIS requests share) SIGKILLed at "
                    f"{KILL_AT_S:.0f} s, started "
                    f"{DOWN_S:.0f} s later: ready in {ready_s:.1f} s, every partition in sync "
                    f"{in_sync_s:.1f} s after that"
                )

            result = await drive(
                cluster.bootstrap, topics[0], topics[1], sandbox_url, appkey(settings), plan,
                during=kill_and_restart,
            )  # fmt: skip
            alive = fleet.alive()
        notes.append(f"{alive} of 2 gateways still running at the end")
    conclude(
        result,
        "kafka-broker-sigkill",
        f"Kafka: one of three brokers SIGKILLed at {KILL_AT_S:.0f} s, back {DOWN_S:.0f} s later",
        notes,
    )
    assert alive == 2
