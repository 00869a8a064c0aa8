"""Benchmark ``scale``: one, two and four gateway processes over a pool of 40 credentials, limits off.

The request topic has 8 partitions; every gateway has the same 40 KIS keys. The callers name a credential
per request (round robin over the 40), so requests are keyed by 40 limit domains spread over the
partitions, and each gateway serves the domains of the partitions it owns. The same burst goes through
1, 2 and 4 gateways in one run; the sandbox's own ceiling (direct calls) is measured in the same run.
Goal: throughput grows with processes until the sandbox is the limit, reported as the ratio of 4 processes
to 1 (a machine whose cores are full before the sandbox is reported, not counted as met).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter

from hubclient import HubClient, HubError
from tests.bench.harness import (
    NO_LIMIT,
    PRICE_TR,
    Bench,
    CpuMeter,
    gateways,
    log,
    pool_gateway_env,
    pool_members,
    sandbox,
    stack_pids,
)
from tests.bench.report import Headline, Measure, Result, Row, verdict
from tests.bench.throughput import sandbox_ceiling
from tests.params import distinct_price

MEMBERS = 40
PARTITIONS = 8
PROCESSES = (1, 2, 4)
CLIENTS = 4
WINDOW = 50
TIMEOUT_S = 150

TITLE = "Scale: 1, 2 and 4 gateway processes over 40 credentials, limits off"
GOAL = (
    "throughput grows with processes until the sandbox is the limit: 4 / 1 processes >= 1.5, or 4 processes "
    "at >= 80 % of the sandbox's ceiling (a machine whose cores are already full does not count as met)"
)
BASELINE = "the sandbox's own ceiling: direct aiohttp calls, same run"


async def burst(
    bench: Bench, topics_requests: str, topics_responses: str, total: int
) -> tuple[float, Counter[str]]:
    """``total`` reads naming the 40 members in turn, ``CLIENTS`` clients each keeping ``WINDOW`` pending."""
    answers: Counter[str] = Counter()
    names = itertools.cycle([f"m{i:02d}" for i in range(MEMBERS)])
    clients = [
        HubClient.connect(
            bench.stack.kafka,
            caller=f"scale-{i + 1}",
            request_topic=topics_requests,
            reply_topic=topics_responses,
            max_pending=WINDOW,
        )
        for i in range(CLIENTS)
    ]
    for client in clients:
        await client.start()
    issued = ok = 0
    try:
        # warm: every member's token once, through whichever gateway owns it
        await asyncio.gather(
            *(
                clients[0].execute("KIS", PRICE_TR, distinct_price(), credential=f"m{i:02d}", timeout=60)
                for i in range(MEMBERS)
            )
        )

        async def sender(client: HubClient) -> None:
            nonlocal issued, ok
            while issued < total:
                issued += 1
                try:
                    response = await client.submit(
                        "KIS", PRICE_TR, distinct_price(), credential=next(names), timeout=TIMEOUT_S
                    )
                except HubError as exc:
                    answers[type(exc).__name__] += 1
                    continue
                answers[f"{response.status.value}/{response.reason or '-'}"] += 1
                ok += int(response.ok)

        started = time.monotonic()
        tasks = [asyncio.create_task(sender(c)) for c in clients for _ in range(WINDOW)]
        _, late = await asyncio.wait(tasks, timeout=TIMEOUT_S + 10)
        elapsed = time.monotonic() - started
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for client in clients:
            await client.stop()
    return ok / elapsed if elapsed else 0.0, answers


async def run(bench: Bench) -> Result:
    """The same burst through 1, 2 and 4 gateways, then the sandbox's ceiling."""
    total = 2_000 if bench.quick else 12_000
    members = pool_members(MEMBERS, NO_LIMIT)
    rates: dict[int, float] = {}
    answers: dict[int, Counter[str]] = {}
    busy: dict[int, str] = {}
    async with sandbox(bench, kis_real_rate_per_s=NO_LIMIT) as url:
        for count in PROCESSES:
            topics = await bench.topics(f"p{count}", request_partitions=PARTITIONS)
            envs = [
                pool_gateway_env(
                    bench,
                    topics,
                    url,
                    members,
                    instance_id=f"bench-scale-{bench.run_id}-{count}-{i}",
                    kis__rate_per_s=NO_LIMIT,
                    max_backlog=total + 100,
                )
                for i in range(count)
            ]
            log(f"scale: {total} reads through {count} gateway(s)")
            async with gateways(bench, envs) as running:
                assert bench.sandbox_pid is not None
                cpu = CpuMeter(
                    {
                        **{f"gateway-{i + 1}": g.pid for i, g in enumerate(running)},
                        "sandbox": bench.sandbox_pid,
                        "load generator": os.getpid(),
                        **stack_pids(),
                    }
                )
                cpu.start()
                rates[count], answers[count] = await burst(bench, topics.requests, topics.responses, total)
                cpu.stop()
                busy[count] = cpu.busy()
            log(f"scale: {count} gateway(s) {rates[count]:.0f} responses/s")
        ceiling, _ = await sandbox_ceiling(url, total // 4)
    growth = rates[4] / rates[1] if rates[1] else 0.0
    limited = rates[4] >= 0.8 * ceiling
    met = growth >= 1.5 or limited
    rows = [
        Row(
            f"responses/s with {n} gateway process(es)", f"{rates[n]:.0f}", f"{ceiling:.0f} (sandbox ceiling)"
        )
        for n in PROCESSES
    ]
    rows += [
        Row(
            "4 processes / 1 process",
            f"{growth:.2f}",
            "-",
            ">= 1.5, or the sandbox's ceiling reached",
            verdict(met, f"{growth:.2f}x; {rates[4] / ceiling * 100:.0f} % of the sandbox's ceiling"),
        ),
        *(
            Row(f"answers, {n} process(es)", ", ".join(f"{k}: {v}" for k, v in answers[n].most_common()))
            for n in PROCESSES
        ),
        *(Row(f"CPU busy, {n} process(es)", busy[n]) for n in PROCESSES),
    ]
    cores = os.cpu_count() or 1
    notes = [
        f"Burst: {total} reads from {CLIENTS} HubClients ({WINDOW} pending each), naming the {MEMBERS} pool "
        f"members in turn, so requests are keyed by {MEMBERS} limit domains over {PARTITIONS} request "
        "partitions; every gateway holds the whole pool (1,000,000 req/s each: limits off) and serves the "
        "domains of its partitions. Each process count gets fresh topics and a fresh group.",
        f"This machine has {cores} cores shared by Kafka, Redis, the sandbox, the load generator and the "
        "gateways: more processes than cores add contention, not capacity, so growth here is bounded by the "
        "machine before the design (see docs/SCALING.md for the per-process and per-partition figures).",
    ]
    return Result(
        "scale",
        TITLE,
        GOAL,
        BASELINE,
        Headline(
            " / ".join(f"{n}: {rates[n]:.0f}/s" for n in PROCESSES) + f"; 4/1 {growth:.2f}",
            f"sandbox ceiling {ceiling:.0f}/s",
            ">= 1.5x, or the ceiling",
            met,
            f"{growth:.2f}x",
        ),
        rows,
        notes,
        [
            Measure("4 / 1 processes", growth, f"{growth:.2f}", False, ">= 1.5 or ceiling", met),
            *(Measure(f"{n} process(es) responses/s", rates[n], f"{rates[n]:.0f}", False) for n in PROCESSES),
            Measure("sandbox ceiling", ceiling, f"{ceiling:.0f}", False, side="baseline"),
        ],
    )
