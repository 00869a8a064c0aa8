"""Benchmark 3, overhead: the latency the hub adds over a direct aiohttp call to the same sandbox endpoint,
computed per request.

Limits off (sandbox KIS real limit and the gateway's ``kis.rate_per_s`` raised far beyond the load). Each hub
request (a ``HubClient`` through one gateway process) is paired with a direct call (one aiohttp session with
its own token, FHKST01010100) made right next to it: the two alternate one by one, 10 ms apart, the order
inside a pair swapped every pair, 50 pairs a second open loop. The added latency of a request is its hub
end-to-end time minus its paired direct call's; the goal is on the percentiles of those differences
(percentiles are never subtracted). Afterwards, for information, the same ``HubClient`` calls go to a raw
aiokafka echo process (the Kafka floor).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from hubclient import HubClient, HubError
from tests.bench.echo import echo_process
from tests.bench.harness import (
    NO_LIMIT,
    PRICE_TR,
    Bench,
    DirectKis,
    fake_credentials,
    free_port,
    gateway_env,
    gateways,
    log,
    now_ms,
    open_loop,
    percentile,
    sandbox,
)
from tests.bench.report import Headline, Measure, Result, Row, verdict
from tests.params import distinct_price

PAIRS_PER_S = 50.0  # hub requests per second (and as many direct calls)
GOAL_P50_MS = 5.0
GOAL_P99_MS = 25.0

TITLE = "Overhead: latency added per request over a direct call made next to it, limits off"
GOAL = (
    f"per-request added latency (hub end-to-end minus its paired direct call) p50 <= {GOAL_P50_MS:.0f} ms "
    f"and p99 <= {GOAL_P99_MS:.0f} ms at {PAIRS_PER_S:.0f} req/s"
)
BASELINE = "a direct aiohttp call to the same sandbox endpoint (FHKST01010100), alternating with the hub call"


def _fmt(values: list[float]) -> str:
    return f"{percentile(values, 50):.2f} / {percentile(values, 99):.2f}"


async def run(bench: Bench) -> Result:
    """Alternate hub and direct calls one by one; the added latency is taken per pair."""
    pairs_s = 5.0 if bench.quick else 20.0
    echo_s = 3.0 if bench.quick else 5.0
    hub_ms: dict[int, float] = {}
    direct_ms: dict[int, float] = {}
    outside_ms: list[float] = []  # per hub request: end-to-end minus the gateway's own upstream call
    upstream_ms: list[float] = []
    echo_ms: list[float] = []
    failures = {"direct": 0, "hub": 0, "echo": 0}
    async with sandbox(bench, kis_real_rate_per_s=NO_LIMIT) as url:
        topics = await bench.topics("hub")
        env = gateway_env(
            bench,
            topics,
            url,
            fake_credentials(),
            instance_id=f"bench-overhead-{bench.run_id}",
            metrics_port=free_port(),
            kis__rate_per_s=NO_LIMIT,
        )
        echo_topics = await bench.topics("echo")
        async with (
            gateways(bench, [env]),
            echo_process(
                bench.stack.kafka, echo_topics.requests, echo_topics.group_id, bench.log_dir / "echo.log"
            ),
            aiohttp.ClientSession() as session,
        ):
            direct = DirectKis(session, url, fake_credentials())
            status, code = await direct.issue_token()
            if status != 200:
                raise RuntimeError(f"direct token refused: {status} {code}")
            client = HubClient.connect(
                bench.stack.kafka,
                caller="overhead",
                request_topic=topics.requests,
                reply_topic=topics.responses,
            )
            echo_client = HubClient.connect(
                bench.stack.kafka,
                caller="overhead",
                request_topic=echo_topics.requests,
                reply_topic=echo_topics.responses,
            )
            async with client, echo_client:

                async def direct_call(pair: int, record: bool) -> None:
                    t0 = now_ms()
                    try:
                        status, _code = await direct.price()
                    except (aiohttp.ClientError, TimeoutError):
                        failures["direct"] += int(record)
                        return
                    if status != 200:
                        failures["direct"] += int(record)
                    elif record:
                        direct_ms[pair] = now_ms() - t0

                async def hub_call(pair: int, record: bool) -> None:
                    t0 = now_ms()
                    try:
                        response = await client.submit("KIS", PRICE_TR, distinct_price(), timeout=10)
                    except HubError:
                        failures["hub"] += int(record)
                        return
                    elapsed = now_ms() - t0
                    if not response.ok:
                        failures["hub"] += int(record)
                    elif record:
                        hub_ms[pair] = elapsed
                        upstream_ms.append(response.timing.upstream_ms)
                        outside_ms.append(elapsed - response.timing.upstream_ms)

                def alternate(record: bool) -> Callable[[int], Coroutine[Any, Any, None]]:
                    async def fire(i: int) -> None:
                        pair, second = divmod(i, 2)
                        hub_first = pair % 2 == 0  # swap the order every pair: no side always goes first
                        if (second == 0) == hub_first:
                            await hub_call(pair, record)
                        else:
                            await direct_call(pair, record)

                    return fire

                async def echo_call(_: int) -> None:
                    t0 = now_ms()
                    try:
                        response = await echo_client.submit("KIS", PRICE_TR, distinct_price(), timeout=10)
                    except HubError:
                        failures["echo"] += 1
                        return
                    if response.ok:
                        echo_ms.append(now_ms() - t0)

                # connections, token and code paths warm, unmeasured
                await open_loop(2 * PAIRS_PER_S, 2.0, alternate(record=False))
                log(f"overhead: {pairs_s:.0f} s of hub/direct pairs at {PAIRS_PER_S:.0f} pairs/s")
                await open_loop(2 * PAIRS_PER_S, pairs_s, alternate(record=True))
                log(f"overhead: {echo_s:.0f} s of echo calls (the Kafka floor, information)")
                await open_loop(PAIRS_PER_S, 1.0, echo_call)
                echo_ms.clear()
                await open_loop(PAIRS_PER_S, echo_s, echo_call)
    pairs = sorted(set(hub_ms) & set(direct_ms))
    added = [hub_ms[p] - direct_ms[p] for p in pairs]
    hub_all, direct_all = list(hub_ms.values()), list(direct_ms.values())
    add50, add99 = percentile(added, 50), percentile(added, 99)
    d50, d99 = percentile(direct_all, 50), percentile(direct_all, 99)
    e50 = percentile(echo_ms, 50)
    offered = round(PAIRS_PER_S * pairs_s)
    complete = not math.isnan(add50) and len(pairs) >= 0.99 * offered
    p50_met = complete and add50 <= GOAL_P50_MS
    p99_met = complete and add99 <= GOAL_P99_MS
    rows = [
        Row(
            "added latency per request p50 (ms): hub end-to-end minus its paired direct call",
            f"{add50:.2f}",
            "0",
            f"<= {GOAL_P50_MS:.0f}",
            verdict(p50_met, f"{add50 - GOAL_P50_MS:+.1f} ms"),
        ),
        Row(
            "added latency per request p99 (ms)",
            f"{add99:.2f}",
            "0",
            f"<= {GOAL_P99_MS:.0f}",
            verdict(p99_met, f"{add99 - GOAL_P99_MS:+.1f} ms"),
        ),
        Row(
            "added latency per request p90 / max (ms)",
            f"{percentile(added, 90):.2f} / {max(added, default=math.nan):.2f}",
        ),
        Row("end-to-end latency p50 / p99 (ms)", _fmt(hub_all), _fmt(direct_all)),
        Row(
            "pairs with both calls ok / pairs offered; failures",
            f"{len(pairs)} / {offered}; hub {failures['hub']}",
            f"direct {failures['direct']}",
            ">= 99 % of the pairs",
            verdict(complete, f"{len(pairs)} of {offered}"),
        ),
        Row(
            "per hub request: end-to-end minus its own upstream call (timing.upstream_ms), p50 / p99 (ms)",
            _fmt(outside_ms),
            "-",
            "(another view of the added time)",
        ),
        Row("the gateway's own upstream call p50 / p99 (ms, timing.upstream_ms)", _fmt(upstream_ms)),
        Row(
            "raw Kafka request/reply floor: HubClient to the echo process, p50 / p99 (ms)",
            _fmt(echo_ms),
            "-",
            "(no HTTP, no Redis; information)",
        ),
    ]
    notes = [
        f"{pairs_s:.0f} s of pairs at {PAIRS_PER_S:.0f} pairs/s (after 2 s of unmeasured warm-up): a hub "
        "request and a direct call of FHKST01010100 to the same sandbox process, started 10 ms apart, hub "
        "first in even pairs and direct first in odd ones, open loop (a call never waits for the previous "
        "answer). The sandbox KIS real limit and the gateway's `kis.rate_per_s` are raised to 1,000,000 so "
        "no pacing wait is included.",
        "Added latency is computed per request: each hub request's end-to-end time (HubClient.submit to the "
        "response: produce with acknowledgement, the gateway's intake, idempotency lookup, limiter and "
        "window in Redis, the HTTP call, the idempotency record, the reply produce and its fetch) minus "
        "the time of the direct call paired with it. The percentiles are those of the differences; a pair "
        "with a failed side is left out and counted.",
        "The echo phase (after the pairs) sends the same HubClient requests to a raw aiokafka echo process "
        "that answers on the reply partition at once: the floor any Kafka request/reply design pays on this "
        "machine (two produces with acknowledgement and two fetches).",
    ]
    if not p50_met and not math.isnan(e50):
        notes.append(
            f"The Kafka request/reply floor alone (echo p50 {e50:.1f} ms) takes "
            f"{e50 / GOAL_P50_MS * 100:.0f} % of the {GOAL_P50_MS:.0f} ms p50 budget on this machine."
        )
    return Result(
        name="overhead",
        title=TITLE,
        goal=GOAL,
        baseline_name=BASELINE,
        headline=Headline(
            figure=f"added p50 {add50:.1f} ms, p99 {add99:.1f} ms (per request)",
            baseline=f"direct p50 {d50:.1f} ms, p99 {d99:.1f} ms",
            goal=f"<= {GOAL_P50_MS:.0f} / {GOAL_P99_MS:.0f} ms",
            met=p50_met and p99_met,
            margin=f"p50 {add50 - GOAL_P50_MS:+.1f} ms, p99 {add99 - GOAL_P99_MS:+.1f} ms; "
            f"{len(pairs)} of {offered} pairs",
        ),
        rows=rows,
        notes=notes,
        measures=[
            Measure("added p50 (ms)", add50, f"{add50:.2f}", True, f"<= {GOAL_P50_MS:.0f}", p50_met),
            Measure("added p99 (ms)", add99, f"{add99:.2f}", True, f"<= {GOAL_P99_MS:.0f}", p99_met),
            Measure("direct p50 (ms)", d50, f"{d50:.2f}", True, side="baseline"),
            Measure("direct p99 (ms)", d99, f"{d99:.2f}", True, side="baseline"),
        ],
    )
