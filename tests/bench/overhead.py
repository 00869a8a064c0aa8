"""Benchmark 3, overhead: the latency the hub adds over a direct aiohttp call to the same sandbox endpoint.

Limits off (sandbox KIS real limit and the gateway's ``kis.rate_per_s`` raised far beyond the load). Direct:
one aiohttp session with its own token calling FHKST01010100. Hub: a ``HubClient`` through one gateway
process. Echo: the same ``HubClient`` calls to a raw aiokafka echo process (the Kafka floor). All at 50 req/s
open loop, in alternating blocks (direct, echo, hub, direct, ...) so drifts of the noisy machine fall on
all alike.
"""

from __future__ import annotations

import aiohttp

from hubclient import HubClient, HubError
from tests.bench.echo import echo_process
from tests.bench.harness import (
    NO_LIMIT,
    PRICE,
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
from tests.bench.report import Headline, Result, Row, verdict

RATE_PER_S = 50.0
GOAL_P50_MS = 5.0
GOAL_P99_MS = 25.0


async def run(bench: Bench) -> Result:
    """Alternate direct and hub blocks; compare their latency percentiles."""
    blocks, block_s = (1, 3.0) if bench.quick else (4, 5.0)
    direct_ms: list[float] = []
    hub_ms: list[float] = []
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

                async def direct_call(_: int, record: bool = True) -> None:
                    t0 = now_ms()
                    try:
                        status, _code = await direct.price()
                    except (aiohttp.ClientError, TimeoutError):
                        failures["direct"] += 1
                        return
                    if status == 200 and record:
                        direct_ms.append(now_ms() - t0)
                    elif status != 200:
                        failures["direct"] += 1

                async def hub_call(_: int, record: bool = True) -> None:
                    t0 = now_ms()
                    try:
                        response = await client.submit("KIS", PRICE_TR, PRICE, timeout=10)
                    except HubError:
                        failures["hub"] += 1
                        return
                    elapsed = now_ms() - t0
                    if response.ok and record:
                        hub_ms.append(elapsed)
                        upstream_ms.append(response.timing.upstream_ms)
                        outside_ms.append(elapsed - response.timing.upstream_ms)
                    elif not response.ok:
                        failures["hub"] += 1

                async def echo_call(_: int, record: bool = True) -> None:
                    t0 = now_ms()
                    try:
                        response = await echo_client.submit("KIS", PRICE_TR, PRICE, timeout=10)
                    except HubError:
                        failures["echo"] += 1
                        return
                    if response.ok and record:
                        echo_ms.append(now_ms() - t0)

                async def warm_echo(i: int) -> None:
                    await echo_call(i, record=False)

                async def warm_direct(i: int) -> None:
                    await direct_call(i, record=False)

                async def warm_hub(i: int) -> None:
                    await hub_call(i, record=False)

                await open_loop(RATE_PER_S, 1.0, warm_direct)  # connections, token, JIT-free paths warm
                await open_loop(RATE_PER_S, 1.0, warm_hub)
                await open_loop(RATE_PER_S, 1.0, warm_echo)
                log(
                    f"overhead: {blocks} x {block_s:.0f} s each of direct, echo, hub at {RATE_PER_S:.0f} "
                    "req/s"
                )
                for _ in range(blocks):
                    await open_loop(RATE_PER_S, block_s, direct_call)
                    await open_loop(RATE_PER_S, block_s, echo_call)
                    await open_loop(RATE_PER_S, block_s, hub_call)
    d50, d99 = percentile(direct_ms, 50), percentile(direct_ms, 99)
    h50, h99 = percentile(hub_ms, 50), percentile(hub_ms, 99)
    add50, add99 = h50 - d50, h99 - d99
    e50, e99 = percentile(echo_ms, 50), percentile(echo_ms, 99)
    met = add50 <= GOAL_P50_MS and add99 <= GOAL_P99_MS
    rows = [
        Row(
            "latency p50 (ms)",
            f"{h50:.2f}",
            f"{d50:.2f}",
            "-",
        ),
        Row("latency p99 (ms)", f"{h99:.2f}", f"{d99:.2f}", "-"),
        Row(
            "added p50 = hub p50 - direct p50 (ms)",
            f"{add50:.2f}",
            "0",
            f"<= {GOAL_P50_MS:.0f}",
            verdict(add50 <= GOAL_P50_MS, f"{add50 - GOAL_P50_MS:+.1f} ms"),
        ),
        Row(
            "added p99 = hub p99 - direct p99 (ms)",
            f"{add99:.2f}",
            "0",
            f"<= {GOAL_P99_MS:.0f}",
            verdict(add99 <= GOAL_P99_MS, f"{add99 - GOAL_P99_MS:+.1f} ms"),
        ),
        Row(
            "per hub request: end-to-end minus its upstream call, p50 / p99 (ms)",
            f"{percentile(outside_ms, 50):.2f} / {percentile(outside_ms, 99):.2f}",
            "-",
            "(another view of the added time)",
        ),
        Row(
            "the gateway's own upstream call p50 / p99 (ms, timing.upstream_ms)",
            f"{percentile(upstream_ms, 50):.2f} / {percentile(upstream_ms, 99):.2f}",
            f"{d50:.2f} / {d99:.2f} (direct call)",
        ),
        Row(
            "raw Kafka request/reply floor: HubClient to the echo process, p50 / p99 (ms)",
            f"{e50:.2f} / {e99:.2f}",
            "-",
            "(no HTTP, no Redis)",
        ),
        Row(
            "the gateway's share: hub - echo - direct, at p50 / p99 (ms)",
            f"{h50 - e50 - d50:.2f} / {h99 - e99 - d99:.2f}",
        ),
        Row(
            "samples (ok answers) / failures",
            f"{len(hub_ms)} / {failures['hub']} (echo {len(echo_ms)} / {failures['echo']})",
            f"{len(direct_ms)} / {failures['direct']}",
        ),
        Row("p90 (ms)", f"{percentile(hub_ms, 90):.2f}", f"{percentile(direct_ms, 90):.2f}"),
    ]
    notes = [
        f"{blocks} alternating blocks of {block_s:.0f} s per side at {RATE_PER_S:.0f} req/s open loop "
        "(after 1 s of unmeasured warm-up each), FHKST01010100 against the same sandbox process; the "
        "sandbox KIS real limit and the gateway's `kis.rate_per_s` are raised to 1,000,000 so no pacing "
        "wait is included.",
        "Latency is measured in the load generator from the call to its answer: for the hub, "
        "HubClient.submit (produce with acknowledgement, the gateway's intake, idempotency lookup, limiter "
        "reservation and window check in Redis, the HTTP call, the idempotency record, the reply produce "
        "and its fetch).",
        "Added latency is the difference of the percentiles (the goal's definition); the per-request view "
        "subtracts each hub request's own upstream time from its end-to-end time.",
        "The echo side (a third alternating block) sends the same HubClient requests to a raw aiokafka echo "
        "process that answers on the reply partition at once: it is the floor any Kafka request/reply design "
        "pays on this machine (two produces with acknowledgement and two fetches), so 'hub - echo - direct' "
        "is what the gateway's own work (Redis round trips, scheduling, validation, logging) adds.",
    ]
    floor_gap = e50 - GOAL_P50_MS
    if add50 > GOAL_P50_MS:
        notes.append(
            f"Why the p50 goal is missed by {add50 - GOAL_P50_MS:.1f} ms: the Kafka request/reply floor "
            f"alone (echo p50 {e50:.1f} ms) is {'above' if floor_gap > 0 else 'within'} the 5 ms budget on "
            f"this machine, and the gateway's own work adds {h50 - e50 - d50:.1f} ms at p50 on top of the "
            "HTTP call. Each of the two hops waits for its produce to be acknowledged (idempotent "
            "producers, acks=all) and for a fetch from the broker."
        )
    return Result(
        name="overhead",
        title="Overhead: latency added over a direct call, limits off",
        goal=f"added p50 <= {GOAL_P50_MS:.0f} ms and added p99 <= {GOAL_P99_MS:.0f} ms "
        f"at {RATE_PER_S:.0f} req/s",
        baseline_name="a direct aiohttp call to the same sandbox endpoint (FHKST01010100), same rate, "
        "alternating blocks",
        headline=Headline(
            figure=f"added p50 {add50:.1f} ms, p99 {add99:.1f} ms",
            baseline=f"direct p50 {d50:.1f} ms, p99 {d99:.1f} ms",
            goal=f"<= {GOAL_P50_MS:.0f} / {GOAL_P99_MS:.0f} ms",
            met=met,
            margin=f"p50 {add50 - GOAL_P50_MS:+.1f} ms, p99 {add99 - GOAL_P99_MS:+.1f} ms",
        ),
        rows=rows,
        notes=notes,
    )
