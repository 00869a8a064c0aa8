"""The whole repair loop on real Kafka, Redis, sandbox and gateway, with the workers as processes.

The feed injects gaps and corrupted trades; history-collector, verification-worker and recovery-worker
(``apihub worker NAME``) must find every damaged minute, repair it and verify every window again, with no
over-limit arrival at the sandbox's referee, and with no output record written twice, also when a worker
and the gateway are killed with SIGKILL mid-run and started again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from services.demo.repair import RepairSummary, run_repair_loop, run_topics
from services.demo.tally import LoopState
from services.settings import ClientSettings, GatewaySettings
from services.worker.fleet import WorkerFleet
from tests.integration.conftest import GatewayFactory, appkey, gateway_process, read_committed, referee

LOOP_TIMEOUT_S = 240.0


async def read_topic(bootstrap: str, topic: str) -> list[tuple[str, bytes]]:
    """Every committed record of ``topic`` as (key, value), read to its end."""
    records = await read_committed(bootstrap, topic)
    return [(r.key.decode(), r.value) for r in records if r.key is not None and r.value]


async def assert_no_duplicates(bootstrap: str, run: str) -> None:
    """Every output record of the run was committed once: keys unique on the result topics, (key, value)
    unique on the progress topic (its job records are updated under one key by design)."""
    topics = run_topics(run)
    for topic in (topics.candles, topics.verification_results, topics.recovery_tasks, topics.ticks_recovered):
        keys = Counter(key for key, _ in await read_topic(bootstrap, topic))
        assert keys, f"{topic} is empty"
        twice = [key for key, count in keys.items() if count > 1]
        assert not twice, f"{topic} holds {len(twice)} key(s) twice, e.g. {twice[:3]}"
    progress = Counter(await read_topic(bootstrap, topics.history_progress))
    assert progress and max(progress.values()) == 1
    letters = [value[:300] for _, value in await read_topic(bootstrap, topics.dlq)]
    assert letters == [], f"dead letters: {letters}"


def client_settings(settings: GatewaySettings) -> ClientSettings:
    """The demo driver's settings: the test's Kafka and hub topics."""
    return ClientSettings(kafka=settings.kafka)


async def assert_referee_clean(sandbox_url: str, settings: GatewaySettings) -> None:
    """Neither of the gateway's keys got an arrival over its limit."""
    for environment, provider, limit in (("kis/real", "KIS", 20), ("kiwoom/real", "KIWOOM", 5)):
        counters = await referee(sandbox_url, environment, appkey(settings, provider))
        assert counters.get("requests", 0) > 0, f"no call reached {environment}"
        assert counters["over_limit"] == 0 and counters["max_in_window"] <= limit, counters


def assert_complete(summary: RepairSummary) -> None:
    """Every injected minute found and repaired, every window verified."""
    assert summary.settled, summary
    assert summary.injected > 0
    assert summary.injected == summary.found == summary.repaired, summary
    assert summary.verified == summary.windows, summary


async def test_repair_loop_finds_repairs_and_verifies_everything(
    gateway: GatewayFactory, gateway_settings: GatewaySettings, sandbox_url: str
) -> None:
    """Gaps and corrupted trades are all found, repaired and re-verified; no output twice; limits held."""
    async with gateway():
        summary = await run_repair_loop(client_settings(gateway_settings), timeout_s=LOOP_TIMEOUT_S)
    assert_complete(summary)
    await assert_no_duplicates(gateway_settings.kafka.bootstrap_servers, summary.run)
    await assert_referee_clean(sandbox_url, gateway_settings)


async def wait_for(state: LoopState, results: int, timeout_s: float = 120) -> None:
    """Until ``results`` verification results were folded in (bounded)."""
    deadline = time.monotonic() + timeout_s
    while state.results < results and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert state.results >= results, f"only {state.results} results after {timeout_s:.0f} s"


async def wait_settled(state: LoopState, timeout_s: float) -> None:
    """Until the loop settled, or ``timeout_s`` (the summary then says it did not)."""
    deadline = time.monotonic() + timeout_s
    while not state.settled() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


async def test_repair_loop_survives_sigkill_of_a_worker_and_of_the_gateway(
    gateway_settings: GatewaySettings, sandbox_url: str
) -> None:
    """A worker and then the gateway killed with SIGKILL mid-run and started again: the same complete
    result, no output record twice, no arrival over a limit."""
    killed: list[str] = []
    async with gateway_process(gateway_settings) as first:

        async def chaos(fleet: WorkerFleet, state: LoopState) -> None:
            await wait_for(state, 4)
            await fleet.restart("verification-worker")
            killed.append("verification-worker")
            await wait_for(state, 12)
            await fleet.restart("recovery-worker")
            killed.append("recovery-worker")
            await first.kill()
            killed.append("gateway")
            await asyncio.sleep(2)
            async with gateway_process(gateway_settings):  # the same instance id: a restarted pod
                await wait_settled(state, LOOP_TIMEOUT_S)

        summary = await run_repair_loop(
            client_settings(gateway_settings), chaos=chaos, timeout_s=LOOP_TIMEOUT_S
        )
    assert killed == ["verification-worker", "recovery-worker", "gateway"]
    assert_complete(summary)
    await assert_no_duplicates(gateway_settings.kafka.bootstrap_servers, summary.run)
    await assert_referee_clean(sandbox_url, gateway_settings)
