"""Benchmark ``pool``: a credential pool of 20 keys at 20 req/s each behind one gateway, and shared reads.

Phase 1, pacing of the pool: one gateway process whose KIS pool is 20 members (no key of its own), three
``HubClient``s offering together 1.2 times the pool's 400 req/s, open loop, distinct reads (a symbol each),
2 s deadlines. The sandbox referee counts every arrival per appkey. Goal: 0 over-limit arrivals on every
key and >= 95 % of the pool's total rate used.

Phase 2, shared reads: one burst of identical reads sent at once, then (the baseline, same run) the same
burst of distinct reads. Goal: the identical burst reaches the sandbox as one upstream call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from hubclient.models import Status
from tests.bench.harness import (
    PRICE_TR,
    Bench,
    CpuMeter,
    fake_credentials,
    free_port,
    gateway_env,
    gateways,
    log,
    per_key,
    percentile,
    pool_gateway_env,
    pool_members,
    sandbox,
)
from tests.bench.pacing import HubLoad, demand, hub_clients, loop_lag_text
from tests.bench.report import Headline, Measure, Result, Row, verdict
from tests.params import PRICE, distinct_price

MEMBERS = 20
RATE_PER_S = 20
DEMAND_FACTOR = 1.2
DEADLINE_S = 2.0
UTILISATION_GOAL = 0.95
SHARED_BURST = 200

TITLE = "Credential pool: 20 keys at 20 req/s behind one gateway; shared reads"
GOAL = (
    "0 over-limit arrivals on every key at the referee, >= 95 % of the pool's total rate used; a burst of "
    "identical reads reaching the broker as one call"
)
BASELINE = "the same burst of reads made distinct (no sharing possible), same run"


async def _pacing_state(session: aiohttp.ClientSession, metrics_url: str) -> tuple[float, float, float]:
    """From the gateway's /metrics: the members' mean effective jitter budget (s) now, and over the whole
    run their sends and the sends more than 5 ms late (histogram apihub_send_lag_seconds)."""
    async with session.get(f"{metrics_url}/metrics") as resp:
        text = await resp.text()
    budgets: list[float] = []
    sends = within = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "apihub_pacing_jitter_seconds":
                budgets.append(sample.value)
            elif sample.name == "apihub_send_lag_seconds_count":
                sends += sample.value
            elif sample.name == "apihub_send_lag_seconds_bucket" and sample.labels.get("le") == "0.005":
                within += sample.value
    return (sum(budgets) / len(budgets) if budgets else float("nan")), sends, sends - within


async def _watch_pacing(
    session: aiohttp.ClientSession, metrics_url: str, every_s: float, budgets: list[float]
) -> None:
    """Sample the members' mean effective jitter budget every ``every_s`` until cancelled."""
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(aiohttp.ClientError):
            budgets.append((await _pacing_state(session, metrics_url))[0])


def _accepted(counters: dict[str, Any]) -> int:
    return int(counters.get("window_requests", 0)) - int(counters.get("over_limit", 0))


async def pool_phase(bench: Bench, url: str, duration_s: float) -> dict[str, Any]:
    """Phase 1; returns what the table needs."""
    members = pool_members(MEMBERS, RATE_PER_S)
    topics = await bench.topics("pool")
    env = pool_gateway_env(bench, topics, url, members, instance_id=f"bench-pool-{bench.run_id}")
    load = HubLoad(DEADLINE_S)
    rate = MEMBERS * RATE_PER_S * DEMAND_FACTOR / 3
    async with gateways(bench, [env]) as (gateway,), aiohttp.ClientSession() as session:
        clients = hub_clients(bench, topics)
        for client in clients:
            await client.start()
        try:
            # warm every member's token and connection (one read each), then let the window empty
            await asyncio.gather(
                *(clients[0].execute("KIS", PRICE_TR, distinct_price(), timeout=30) for _ in members)
            )
            await asyncio.sleep(1.2)
            before = await per_key(session, url, members)
            cpu = CpuMeter({"gateway": gateway.pid, "sandbox": bench.sandbox_pid or 0})
            cpu.start()
            budgets: list[float] = []
            watch = asyncio.create_task(_watch_pacing(session, gateway.metrics_url, 1.0, budgets))
            await demand(load, clients, duration_s, rate=rate)
            watch.cancel()
            cpu.stop()
            _, sends, late_sends = await _pacing_state(session, gateway.metrics_url)
            after = await per_key(session, url, members)
            async with session.get(f"{url}/_sandbox/stats") as resp:
                loop_lag = (await resp.json()).get("loop_lag", {})
        finally:
            for client in clients:
                await client.stop()
    over = [
        int(a.get("over_limit", 0)) - int(b.get("over_limit", 0)) for a, b in zip(after, before, strict=True)
    ]
    accepted = [_accepted(a) - _accepted(b) for a, b in zip(after, before, strict=True)]
    window = [int(a.get("max_in_window", 0)) for a in after]
    return {
        "over": over,
        "accepted": accepted,
        "max_in_window": window,
        "utilisation": sum(accepted) / (MEMBERS * RATE_PER_S * duration_s),
        "load": load,
        "cpu": cpu,
        "loop_lag": loop_lag,
        "budgets_ms": sorted(b * 1000 for b in budgets if b == b),
        "sends": (sends, late_sends),
        "stamped": sum(
            int(a.get("stamped", 0)) - int(b.get("stamped", 0)) for a, b in zip(after, before, strict=True)
        ),
        "window_requests": sum(
            int(a.get("window_requests", 0)) - int(b.get("window_requests", 0))
            for a, b in zip(after, before, strict=True)
        ),
    }


async def shared_phase(bench: Bench, url: str) -> dict[str, Any]:
    """Phase 2: identical burst, then distinct burst; upstream calls counted at the referee."""
    credentials = fake_credentials()
    topics = await bench.topics("shared")
    env = gateway_env(
        bench, topics, url, credentials, instance_id=f"bench-shared-{bench.run_id}", metrics_port=free_port()
    )
    calls: dict[str, int] = {}
    answers: dict[str, list[Any]] = {}
    async with gateways(bench, [env]), aiohttp.ClientSession() as session:
        (client,) = hub_clients(bench, topics, 1)
        await client.start()
        try:
            await client.execute("KIS", PRICE_TR, distinct_price(), timeout=30)  # token and connections warm
            makers: tuple[tuple[str, Callable[[], dict[str, str]]], ...] = (
                ("identical", lambda: PRICE),
                ("distinct", distinct_price),
            )
            for tag, params in makers:
                before = (await per_key(session, url, [{"appkey": credentials[0]}]))[0].get("requests", 0)
                answers[tag] = list(
                    await asyncio.gather(
                        *(client.submit("KIS", PRICE_TR, params(), timeout=60) for _ in range(SHARED_BURST))
                    )
                )
                after = (await per_key(session, url, [{"appkey": credentials[0]}]))[0].get("requests", 0)
                calls[tag] = int(after) - int(before)
        finally:
            await client.stop()
    return {"calls": calls, "answers": answers}


def _spread_text(values: list[float]) -> str:
    if not values:
        return "not sampled"
    return f"{values[0]:.0f} / {values[len(values) // 2]:.0f} / {values[-1]:.0f}"


async def run(bench: Bench) -> Result:
    """Both phases against one sandbox with its default per-key limit (20 req/s)."""
    duration_s = 6.0 if bench.quick else 30.0
    async with sandbox(bench) as url:
        log(f"pool: {MEMBERS} keys x {RATE_PER_S}/s, offered {DEMAND_FACTOR}x for {duration_s:.0f} s")
        pool = await pool_phase(bench, url, duration_s)
        log(f"pool: shared reads, {SHARED_BURST} identical then {SHARED_BURST} distinct")
        shared = await shared_phase(bench, url)
    over, load = pool["over"], pool["load"]
    over_total, worst_window = sum(over), max(pool["max_in_window"])
    use = pool["utilisation"]
    over_met = over_total == 0 and worst_window <= RATE_PER_S
    use_met = use >= UTILISATION_GOAL
    identical_ok = sum(r.status is Status.OK for r in shared["answers"]["identical"])
    shared_with = sum(r.shared_with is not None for r in shared["answers"]["identical"])
    shared_met = shared["calls"]["identical"] == 1 and identical_ok == SHARED_BURST
    rows = [
        Row(
            f"over-limit arrivals at the referee, all {MEMBERS} keys (EGW00201)",
            f"{over_total} (keys with any: {sum(o > 0 for o in over)})",
            "-",
            "0",
            verdict(over_total == 0, f"{over_total} over"),
        ),
        Row(
            "largest count in any sliding one-second window, worst key (referee max_in_window)",
            f"{worst_window}",
            "-",
            f"<= {RATE_PER_S}",
            verdict(worst_window <= RATE_PER_S, f"{worst_window} of {RATE_PER_S}"),
        ),
        Row(
            f"pool utilisation = accepted calls / ({MEMBERS} x {RATE_PER_S} x {duration_s:.0f} s)",
            f"{use * 100:.1f} % ({sum(pool['accepted'])} calls)",
            "-",
            f">= {UTILISATION_GOAL * 100:.0f} %",
            verdict(use_met, f"{(use - UTILISATION_GOAL) * 100:+.2f} points"),
        ),
        Row(
            "accepted calls per key: least / most",
            f"{min(pool['accepted'])} / {max(pool['accepted'])}",
        ),
        Row("requests offered (3 callers)", f"{load.sent} ({load.sent / duration_s:.0f}/s)"),
        Row("answers", ", ".join(f"{k}: {v}" for k, v in load.answers.most_common())),
        Row(
            "latency of ok answers p50 / p99 (ms, caller side)",
            f"{percentile(load.ok_ms, 50):.0f} / {percentile(load.ok_ms, 99):.0f}",
            goal=f"< deadline {DEADLINE_S * 1000:.0f}",
        ),
        Row("admitted requests answered after their deadline", f"{load.late}"),
        Row("CPU per ok answer (ms)", pool["cpu"].per_item_ms(sum(load.by_caller.values()))),
        Row("share of the run the gateway's event loop waited for a CPU (run queue)", pool["cpu"].waited()),
        Row(
            "the referee's own event-loop stalls, whole run (arrivals are timed by receive stamps, "
            "so a stall does not move them)",
            f"{loop_lag_text(pool['loop_lag'])}; "
            f"{pool['stamped']} of {pool['window_requests']} arrivals stamped",
        ),
        Row(
            "gateway: effective jitter budget J, members' mean sampled each second: min / median / max (ms)",
            _spread_text(pool["budgets_ms"]),
        ),
        Row(
            "gateway: sends, and sends more than 5 ms after their slot (own lag)",
            f"{pool['sends'][0]:.0f}, {pool['sends'][1]:.0f} late",
        ),
        Row(
            f"upstream calls for a burst of {SHARED_BURST} reads sent at once",
            f"{shared['calls']['identical']} (identical reads; {identical_ok} ok, {shared_with} shared_with)",
            f"{shared['calls']['distinct']} (distinct reads)",
            "1",
            verdict(shared_met, f"{shared['calls']['identical']} calls"),
        ),
    ]
    notes = [
        f"Pool: {MEMBERS} members in APIHUB_KIS__CREDENTIALS, each {RATE_PER_S} req/s (the sandbox's limit "
        "per appkey), no key of the gateway's own; requests name no credential, so the gateway picks the "
        "member whose slot comes soonest. Every member is warmed with one read first.",
        f"Load: 3 HubClients, {DEMAND_FACTOR}x the pool's {MEMBERS * RATE_PER_S} req/s together, open loop, "
        f"a distinct symbol per read, {DEADLINE_S:.0f} s deadlines; utilisation counts the calls the referee "
        f"accepted over the {duration_s:.0f} s of offered load.",
        "Referee: the sandbox counts each arrival at the kernel's receive stamp of its bytes (its own loop "
        "stalls do not bunch them); the gateway widens its jitter budget only while late sends coincide with "
        "its event loop waiting for a CPU (the run-queue row), i.e. a contended host.",
        "Shared reads: one HubClient sends the identical burst at once (same tr_id and params), then the "
        "same number of distinct reads; upstream calls are the referee's request count on the key in "
        "between.",
    ]
    headline = Headline(
        f"over-limit {over_total}; pool used {use * 100:.1f} %; "
        f"identical burst {shared['calls']['identical']} call",
        f"distinct burst {shared['calls']['distinct']} calls",
        "0 over; >= 95 %; 1 call",
        over_met and use_met and shared_met,
        f"{over_total} over-limit; use {use * 100 - 95:+.2f} points from 95 %; "
        f"{shared['calls']['identical']} upstream call(s) for the identical burst",
    )
    measures = [
        Measure("over-limit", over_total, str(over_total), True, "0", over_total == 0),
        Measure("pool used", use, f"{use * 100:.1f} %", False, ">= 95 %", use_met),
        Measure(
            "identical burst calls",
            shared["calls"]["identical"],
            str(shared["calls"]["identical"]),
            True,
            "1",
            shared_met,
        ),
        Measure(
            "distinct burst calls",
            shared["calls"]["distinct"],
            str(shared["calls"]["distinct"]),
            False,
            side="baseline",
        ),
    ]
    return Result("pool", TITLE, GOAL, BASELINE, headline, rows, notes, measures)
