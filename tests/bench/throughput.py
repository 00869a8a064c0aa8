"""Benchmark 4, throughput: a burst through one gateway process with limits off, next to a raw Kafka echo.

Four ``HubClient``s send a burst of requests, each keeping a window of requests pending, and the rate of
answers is measured at the callers; the CPU each process spends is read from ``/proc``. The same clients
and burst go first to the raw aiokafka echo process (no HTTP, no Redis), then to the gateway (limits off),
and last a direct aiohttp burst measures the sandbox's own ceiling.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import aiohttp

from hubclient import HubClient, HubError
from tests.bench.echo import echo_process
from tests.bench.harness import (
    NO_LIMIT,
    PRICE_TR,
    Bench,
    CpuMeter,
    DirectKis,
    Topics,
    fake_credentials,
    gateways,
    log,
    per_key,
    percentile,
    pool_gateway_env,
    pool_members,
    sandbox,
    stack_pids,
)
from tests.bench.report import Headline, Measure, Result, Row, verdict
from tests.params import PRICE, distinct_price

CLIENTS = 4
GOAL_PER_S = 3000
GOAL_RATIO = 0.35
MEMBERS = 20
BURST_TIMEOUT_S = 150
WINDOW = 50  # pending requests per client (aiokafka producers slow down with thousands of concurrent sends)
SANDBOX_CONCURRENCY = 64

TITLE = "Throughput: one gateway process, 20 credentials, limits off"
GOAL = f">= {GOAL_PER_S:,} responses/s and >= {GOAL_RATIO} x a raw aiokafka echo measured in the same run"
BASELINE = "raw aiokafka produce-consume-produce echo (same clients, same burst, same run)"


class Burst:
    """What one burst measured: answers by status and the time of each ok answer."""

    def __init__(self) -> None:
        self.answers: Counter[str] = Counter()
        self.done_s: list[float] = []
        self.started = 0.0
        self.queued_ms: list[float] = []  # each ok answer's timing, as the gateway stamped it
        self.upstream_ms: list[float] = []

    @property
    def ok(self) -> int:
        """Answers with status ok."""
        return len(self.done_s)

    @property
    def elapsed_s(self) -> float:
        """From the first send to the last ok answer."""
        return max(self.done_s, default=self.started) - self.started

    @property
    def rate(self) -> float:
        """Ok answers per second over the whole burst."""
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def steady_rate(self) -> float:
        """Ok answers per second between the 10th and the 90th percentile of answer times."""
        if len(self.done_s) < 10:
            return self.rate
        t10, t90 = percentile(self.done_s, 10), percentile(self.done_s, 90)
        return 0.8 * len(self.done_s) / (t90 - t10) if t90 > t10 else 0.0


async def burst(
    bench: Bench, topics: Topics, total: int, window: int = WINDOW, cpu: CpuMeter | None = None
) -> Burst:
    """``total`` requests from ``CLIENTS`` clients, each keeping ``window`` pending (a new request as soon as
    one is answered); waits (bounded) for every answer."""
    result = Burst()
    clients = [
        HubClient.connect(
            bench.stack.kafka,
            caller=f"burst-{i + 1}",
            request_topic=topics.requests,
            reply_topic=topics.responses,
            max_pending=window,
        )
        for i in range(CLIENTS)
    ]
    for client in clients:
        await client.start()
    issued = 0
    try:
        await asyncio.gather(*(c.execute("KIS", PRICE_TR, PRICE, timeout=60) for c in clients))  # warm

        async def sender(client: HubClient) -> None:
            nonlocal issued
            while issued < total:
                issued += 1
                try:
                    response = await client.submit("KIS", PRICE_TR, distinct_price(), timeout=BURST_TIMEOUT_S)
                except HubError as exc:
                    result.answers[type(exc).__name__] += 1
                    continue
                result.answers[f"{response.status.value}/{response.reason or '-'}"] += 1
                if response.ok:
                    result.done_s.append(time.monotonic())
                    if response.timing is not None:
                        result.queued_ms.append(response.timing.queued_ms)
                        result.upstream_ms.append(response.timing.upstream_ms)

        if cpu is not None:
            cpu.start()
        result.started = time.monotonic()
        tasks = [asyncio.create_task(sender(c)) for c in clients for _ in range(window)]
        _, late = await asyncio.wait(tasks, timeout=BURST_TIMEOUT_S + 10)
        if cpu is not None:
            cpu.stop()
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for client in clients:
            await client.stop()
    return result


async def sandbox_ceiling(url: str, total: int) -> tuple[float, Counter[str]]:
    """Calls per second the sandbox serves to a direct aiohttp client with 64 connections."""
    codes: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=SANDBOX_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        direct = DirectKis(session, url, fake_credentials())
        await direct.issue_token()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                try:
                    status, code = await direct.price()
                    codes[f"{status}/{code}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    codes[type(exc).__name__] += 1

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(SANDBOX_CONCURRENCY))), 120)
        return total / (time.monotonic() - started), codes


def host_room(
    hub_cpu: CpuMeter, echo_cpu: CpuMeter, hub_ok: int, echo_ok: int, echo_rate: float, cores: int
) -> str:
    """What this host leaves for a gateway: everything but the gateway at its CPU per response, Kafka and
    the load generator at their (lower, better batched) per-message CPU of the echo run: a best case."""
    per = {name: used / max(hub_ok, 1) * 1000 for name, used in hub_cpu.used_s.items() if name != "gateway"}
    for name in ("kafka", "load generator"):
        if name in echo_cpu.used_s:
            per[name] = min(per.get(name, 0.0), echo_cpu.used_s[name] / max(echo_ok, 1) * 1000)
    others_ms = sum(per.values())
    free_rate = cores * 1000 / others_ms if others_ms else 0.0
    free_ratio = free_rate / echo_rate if echo_rate else 0.0
    needs = [
        f"{label}: {cores * 1000 / rate - others_ms:.2f} ms"
        for label, rate in (
            (f"{GOAL_PER_S:,}/s", GOAL_PER_S),
            (f"{GOAL_RATIO} x echo", GOAL_RATIO * echo_rate),
        )
        if rate
    ]
    return (
        f"This host's room for a gateway: the other processes need at least {others_ms:.2f} ms of CPU per "
        f"response ({', '.join(f'{n} {v:.2f}' for n, v in sorted(per.items(), key=lambda kv: -kv[1]))}; "
        f"Kafka and the load generator at the echo run's per-message CPU when lower), so even a gateway "
        f"costing nothing could answer at most {free_rate:.0f}/s ({free_ratio:.2f} x echo) on these {cores} "
        f"cores; the CPU per response left to the gateway for each goal ({'; '.join(needs)}; negative: "
        "out of reach on this host whatever the gateway does)."
    )


async def run(bench: Bench) -> Result:
    """Echo, hub, then the sandbox's ceiling, each with the same burst size."""
    total = 2_000 if bench.quick else 20_000
    members = pool_members(MEMBERS, NO_LIMIT)
    async with sandbox(bench, kis_real_rate_per_s=NO_LIMIT) as url:
        echo_topics = await bench.topics("echo")
        log(f"throughput: {total} requests to the raw echo")
        async with echo_process(
            bench.stack.kafka, echo_topics.requests, echo_topics.group_id, bench.log_dir / "echo.log"
        ) as echo_pid:
            echo_cpu = CpuMeter({"echo": echo_pid, "load generator": os.getpid(), **stack_pids()})
            echo = await burst(bench, echo_topics, total, cpu=echo_cpu)
        log(f"throughput: echo {echo.rate:.0f}/s; {total} requests through the gateway")
        topics = await bench.topics("hub")
        env = pool_gateway_env(
            bench,
            topics,
            url,
            members,
            instance_id=f"bench-throughput-{bench.run_id}",
            kis__rate_per_s=NO_LIMIT,
            max_backlog=total + 100,
        )
        async with gateways(bench, [env]) as (gateway,):
            assert bench.sandbox_pid is not None
            hub_cpu = CpuMeter(
                {
                    "gateway": gateway.pid,
                    "sandbox": bench.sandbox_pid,
                    "load generator": os.getpid(),
                    **stack_pids(),
                }
            )
            hub = await burst(bench, topics, total, cpu=hub_cpu)
        async with aiohttp.ClientSession() as session:
            keys = await per_key(session, url, members)
        counters = {
            "requests": sum(int(k.get("requests", 0)) for k in keys),
            "over_limit": sum(int(k.get("over_limit", 0)) for k in keys),
            "keys_used": sum(int(k.get("requests", 0)) > 0 for k in keys),
        }
        log(f"throughput: hub {hub.rate:.0f}/s; sandbox ceiling with {total // 4} direct calls")
        ceiling, ceiling_codes = await sandbox_ceiling(url, total // 4)
    ratio = hub.rate / echo.rate if echo.rate else 0.0
    met = hub.rate >= GOAL_PER_S and ratio >= GOAL_RATIO
    rows = [
        Row(
            "responses per second, whole burst (first send to last answer)",
            f"{hub.rate:.0f}",
            f"{echo.rate:.0f} (raw echo)",
            f">= {GOAL_PER_S}",
            verdict(met, f"{hub.rate / GOAL_PER_S * 100:.0f} % of the goal"),
        ),
        Row(
            "responses per second, steady part (10th to 90th percentile of answers)",
            f"{hub.steady_rate:.0f}",
            f"{echo.steady_rate:.0f} (raw echo)",
        ),
        Row(
            "hub / echo",
            f"{ratio:.2f}",
            "1.00",
            f">= {GOAL_RATIO}",
            verdict(ratio >= GOAL_RATIO, f"{ratio:.2f}"),
        ),
        Row(
            "ok answers / burst; time to the last answer",
            f"{hub.ok} / {total}; {hub.elapsed_s:.1f} s",
            f"{echo.ok} / {total}; {echo.elapsed_s:.1f} s",
        ),
        Row(
            "answers",
            ", ".join(f"{k}: {v}" for k, v in hub.answers.most_common()),
            ", ".join(f"{k}: {v}" for k, v in echo.answers.most_common()),
        ),
        Row(
            "upstream calls the sandbox received from the gateway (referee)",
            f"{counters['requests']} over {counters['keys_used']} of {MEMBERS} keys "
            f"(over limit: {counters['over_limit']})",
        ),
        Row(
            "CPU per response, ms (process: user + system)",
            hub_cpu.per_item_ms(hub.ok),
            echo_cpu.per_item_ms(echo.ok),
        ),
        Row("CPU busy during the burst", hub_cpu.busy(), echo_cpu.busy()),
        Row(
            "median ms of an ok answer in its pacer's queue / upstream (the gateway's timing)",
            f"{percentile(hub.queued_ms, 50):.1f} / {percentile(hub.upstream_ms, 50):.1f}"
            if hub.queued_ms
            else "-",
        ),
        Row(
            f"sandbox ceiling: direct aiohttp, {SANDBOX_CONCURRENCY} connections, {total // 4} calls",
            f"{ceiling:.0f} calls/s",
            ", ".join(f"{k}: {v}" for k, v in ceiling_codes.most_common(3)),
        ),
    ]
    cores = os.cpu_count() or 1
    machine_busy = sum(hub_cpu.used_s.values()) / (hub_cpu.wall_s * cores) if hub_cpu.wall_s else 0.0
    gateway_ms = hub_cpu.used_s.get("gateway", 0.0) / max(hub.ok, 1) * 1000
    total_ms = sum(hub_cpu.used_s.values()) / max(hub.ok, 1) * 1000
    if hub.rate >= 0.8 * ceiling:
        bottleneck = f"the sandbox (its ceiling is {ceiling:.0f} calls/s)"
    elif machine_busy >= 0.85:
        bottleneck = (
            f"the machine's CPU: the processes together kept {machine_busy * 100:.0f} % of the {cores} "
            f"cores busy, spending {total_ms:.1f} ms of CPU per response, of which the gateway "
            f"{gateway_ms:.2f} ms"
        )
    elif hub_cpu.wall_s and hub_cpu.used_s.get("gateway", 0.0) / hub_cpu.wall_s < 0.7:
        gateway_busy = hub_cpu.used_s.get("gateway", 0.0) / hub_cpu.wall_s
        bottleneck = (
            f"latency, not CPU: the gateway was {gateway_busy * 100:.0f} % busy while the median answer "
            f"waited {percentile(hub.queued_ms, 50):.0f} ms in its pacer's queue (a pacer reserves one slot "
            "per Redis round trip; see docs/SCALING.md)"
        )
    else:
        bottleneck = f"the gateway process ({gateway_ms:.2f} ms of CPU per response)"
    room = host_room(hub_cpu, echo_cpu, hub.ok, echo.ok, echo.rate, cores)
    notes = [
        f"Burst: {total} FHKST01010100 requests from {CLIENTS} HubClients in the benchmark process, each "
        f"keeping {WINDOW} requests pending (a new one as soon as one is answered; {BURST_TIMEOUT_S} s "
        "timeout), after one warm-up call per client. A burst with all requests pending at once measures "
        "aiokafka's producer instead (every sender blocked on a full batch wakes at each drain, so "
        "thousands of concurrent sends slow to a crawl: 20,000 at once gave the echo under 200/s in a "
        "trial). Limits off: the sandbox's KIS real limit and the gateway's `kis.rate_per_s` are "
        "1,000,000; `max_backlog` is raised to the burst size; read-ahead stays at its default.",
        f"Credentials: a pool of {MEMBERS} KIS keys (APIHUB_KIS__CREDENTIALS, each with the 1,000,000 "
        "limit), no key of the gateway's own; the reads name no credential, so they share one partition "
        "key (`KIS`), one request partition, and the gateway spreads them over the members.",
        "Baseline: the same clients and burst against a raw aiokafka echo process (orjson parse, answer on "
        "the reply partition, acknowledge, commit; no HTTP, no Redis), measured in the same run just "
        "before.",
        f"Bottleneck in this run: {bottleneck}. At {gateway_ms:.2f} ms of CPU per response one gateway "
        f"process cannot exceed about {1000 / gateway_ms if gateway_ms else 0:.0f} responses/s even with a "
        f"core of its own; 3,000/s would need at most {1000 / GOAL_PER_S:.2f} ms per response "
        f"({gateway_ms * GOAL_PER_S / 1000:.1f}x less) or several processes, and a domain is served by one "
        "process. Where the gateway's time goes: docs/SCALING.md.",
        room,
    ]
    return Result(
        name="throughput",
        title=TITLE,
        goal=GOAL,
        baseline_name=BASELINE,
        headline=Headline(
            figure=f"{hub.rate:.0f} responses/s ({ratio:.2f} x echo)",
            baseline=f"echo {echo.rate:.0f}/s; sandbox ceiling {ceiling:.0f}/s",
            goal=f">= {GOAL_PER_S:,}/s",
            met=met,
            margin=f"{hub.rate - GOAL_PER_S:+.0f}/s, {ratio:.2f} x echo",
        ),
        rows=rows,
        notes=notes,
        measures=[
            Measure("responses/s", hub.rate, f"{hub.rate:.0f}", False, f">= {GOAL_PER_S}", met),
            Measure("hub / echo", ratio, f"{ratio:.2f}", False, f">= {GOAL_RATIO}", ratio >= GOAL_RATIO),
            Measure("echo responses/s", echo.rate, f"{echo.rate:.0f}", False, side="baseline"),
        ],
    )
