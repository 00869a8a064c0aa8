"""Benchmark ``pacing-kill``: the pacing load while the gateway that owns the KIS partition is SIGKILLed and
restarted, five times.

Two gateway processes in one consumer group (``APIHUB_KAFKA__SESSION_TIMEOUT_MS`` passed explicitly); the KIS
limit domain lives in one partition, so one of them owns it: the one named in the latest answer. Load as in
``pacing`` (three HubClients, each 100 req/s open loop) but with a 15 s deadline, so a request sent while
the partition has no live owner can still be answered by the restarted one. Five cycles of: find the owner,
SIGKILL it, start it again 5 s later under the same ``APIHUB_INSTANCE_ID``, wait for answers to flow again,
3 s of steady state. Goals: 0 over-limit arrivals at the referee over the whole run, and every request
whose deadline comes while an owner runs answered (``ok``, ``expired``, ``rejected``) before that deadline.
A request whose deadline comes while the partition has no live owner (from the kill to the restarted
owner's first answer, plus ``OUTAGE_GRACE_S`` for the answer's way to its caller) cannot be answered in
time by anyone: it is counted apart, whether its answer comes late or not at all.

Baselines, at the same time on keys of their own, under the same crashes: python-kis and krsec limiters in a
process that dies at each kill (calls waiting at its limiter are lost) and comes back with fresh limiters
when the gateway is restarted.
"""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp

from hubclient import HubClient
from tests.bench.baselines import KRSEC, PYTHON_KIS, LibraryRun, Lifecycle, run_baseline
from tests.bench.harness import (
    PRICE_TR,
    SESSION_TIMEOUT_MS,
    Bench,
    GatewayGroup,
    fake_credentials,
    log,
    metric_or_nan,
    pair_envs,
    referee,
    sandbox,
    watch,
)
from tests.bench.pacing import (
    LIMIT_PER_S,
    HubLoad,
    LateAnswer,
    baseline_measures,
    baseline_rows,
    demand,
    hub_clients,
    jitter_text,
    pct,
)
from tests.bench.report import Headline, Measure, Result, Row, verdict
from tests.params import PRICE

CYCLES = 5
OUTAGE_GRACE_S = 0.5
KILL_DEADLINE_S = 15.0  # the callers' timeout here: longer than an outage, as in production
DOWN_S = 5.0
STEADY_S = 3.0
RECOVERY_BOUND_S = 40.0
MAX_LATE_SHOWN = 5  # late answers described one by one in the report

TITLE = "Pacing through crashes: the owning gateway SIGKILLed and restarted five times under 5x demand"
GOAL = (
    "0 over-limit arrivals at the referee over the whole run; every request whose deadline comes while an "
    "owner runs answered before that deadline"
)
BASELINE = (
    "python-kis (19 per fixed 1 s window) and krsec (token bucket 15 req/s, burst 3) on keys of their own, "
    "their process crashing and restarting with the gateway"
)


async def fresh_owner(load: HubLoad, names: set[str], timeout_s: float = 20) -> str:
    """The gateway named in an answer received in the last second (waits, bounded, for one)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if load.last_gateway in names and time.monotonic() - load.last_answer_at < 1.0:
            return load.last_gateway
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no fresh answer from {sorted(names)} in {timeout_s:.0f} s")


async def run(bench: Bench) -> Result:
    """Two gateways, the load, the kill cycles and the crashing baselines at the same time."""
    cycles = 2 if bench.quick else CYCLES
    credentials = fake_credentials()
    cycle_log: list[str] = []
    outages: list[tuple[float, float]] = []  # (kill, first answer after the restart), time.monotonic()
    lifecycle = Lifecycle()
    async with sandbox(bench) as url:
        topics = await bench.topics("hub")
        envs = pair_envs(bench, topics, url, credentials, "kill")
        group = GatewayGroup(bench)
        clients: list[HubClient] = []
        try:
            await asyncio.gather(*(group.start(env) for env in envs.values()))
            clients = hub_clients(bench, topics)
            for client in clients:
                await client.start()
            await clients[0].execute("KIS", PRICE_TR, PRICE, timeout=30)  # token and connections warm
            await asyncio.sleep(1.2)
            load = HubLoad(KILL_DEADLINE_S)
            stop = asyncio.Event()
            max_s = cycles * (DOWN_S + STEADY_S + RECOVERY_BOUND_S + 25) + 10
            async with aiohttp.ClientSession() as session:
                hub_task = asyncio.ensure_future(
                    watch(
                        session,
                        url,
                        credentials[0],
                        max_s,
                        demand(load, clients, max_s, stop),
                        LIMIT_PER_S,
                        stop,
                    )
                )
                base_tasks = [
                    asyncio.ensure_future(
                        run_baseline(
                            url, b, max_s, deadline_s=KILL_DEADLINE_S, stop=stop, lifecycle=lifecycle
                        )
                    )
                    for b in (PYTHON_KIS, KRSEC)
                ]
                try:
                    await asyncio.sleep(STEADY_S)
                    for cycle in range(1, cycles + 1):
                        owner = await fresh_owner(load, set(envs))
                        killed_at = await group.kill(owner)
                        lifecycle.crash()
                        await asyncio.sleep(DOWN_S)
                        await group.start(envs[owner])
                        lifecycle.restart()
                        ready_s = time.monotonic() - killed_at
                        answered = await first_answer_after(load, killed_at + 0.25, RECOVERY_BOUND_S)
                        outages.append((killed_at, time.monotonic() if math.isnan(answered) else answered))
                        gap = "none" if math.isnan(answered) else f"{answered - killed_at:.1f} s"
                        cycle_log.append(
                            f"cycle {cycle}: killed {owner}, restarted and ready {ready_s:.1f} s after the "
                            f"kill, first answer {gap} after the kill"
                        )
                        log(f"pacing-kill: {cycle_log[-1]}")
                        await asyncio.sleep(STEADY_S)
                finally:
                    stop.set()
                hub = await asyncio.wait_for(hub_task, KILL_DEADLINE_S + 60)
                bases: list[LibraryRun] = list(await asyncio.wait_for(asyncio.gather(*base_tasks), 60))
                final = await referee(session, url, credentials[0])
                jitter = math.nan
                for process in group.current.values():
                    jitter = await metric_or_nan(
                        session, process.metrics_url, "apihub_pacing_jitter_seconds", domain="KIS"
                    )
        finally:
            for client in clients:
                await client.stop()
            await group.stop_all()
    over = int(final.get("over_limit", 0))
    # A request whose deadline came while its partition had no live owner cannot be answered in time by
    # anyone (the restarted owner answers it on reading it, after its deadline); every other one must be.
    in_outage = sum(outage_of(at, outages) is not None for at in load.timeout_deadlines)
    unanswered = load.timeouts - in_outage
    late_in_outage = sum(outage_of(late.deadline_at, outages) is not None for late in load.late_details)
    late = load.late_answered - late_in_outage
    met = over == 0 and unanswered == 0 and late == 0
    answered_total = sum(v for k, v in load.answers.items() if k != "HubTimeout")
    rows = [
        Row(
            "over-limit arrivals at the referee, whole run (EGW00201)",
            f"{over}",
            "; ".join(f"{b.key.over_limit} ({b.name})" for b in bases),
            "0",
            verdict(met, f"{over} over"),
        ),
        Row(
            "largest count in any sliding one-second window (referee max_in_window, whole run)",
            f"{final.get('max_in_window', 0)}",
            "; ".join(f"{b.key.max_in_window} ({b.name})" for b in bases),
            f"<= {LIMIT_PER_S}",
        ),
        Row(
            "one-second intervals with over-limit arrivals (1 Hz referee samples, during the load)",
            f"{hub.over_limit_seconds} of {hub.samples}",
            "; ".join(f"{b.key.over_limit_seconds} of {b.key.samples} ({b.name})" for b in bases),
        ),
        Row(
            f"utilisation during the load (outages included: {cycles} x about {DOWN_S:.0f} s down)",
            f"{pct(hub.utilisation)} ({hub.accepted} in {hub.elapsed_s:.1f} s)",
            "; ".join(f"{pct(b.key.utilisation)} ({b.name})" for b in bases),
        ),
        Row("requests sent through the hub (3 callers)", f"{load.sent}"),
        Row("answers by status", ", ".join(f"{k}: {v}" for k, v in load.answers.most_common())),
        Row(
            "requests with no answer before their caller's timeout (HubTimeout)",
            f"{load.timeouts} of {load.sent}",
            "; ".join(f"{b.lost} lost in crashes ({b.name})" for b in bases),
        ),
        Row(
            "... of which the deadline came while the partition had no live owner (kill to first answer)",
            f"{in_outage}",
        ),
        Row(
            "... of which the deadline came while an owner was running (must be 0)",
            f"{unanswered}",
            goal="0",
            verdict=verdict(unanswered == 0, f"{unanswered} unanswered"),
        ),
        Row("answers received after the caller's deadline", f"{load.late_answered} of {answered_total}"),
        Row("... of which the deadline came while the partition had no live owner", f"{late_in_outage}"),
        Row(
            "... of which the deadline came while an owner was running (must be 0)",
            f"{late}",
            goal="0",
            verdict=verdict(late == 0, f"{late} late"),
        ),
        *(
            Row(f"... late answer {i}", late_text(late, outages))
            for i, late in enumerate(load.late_details[:MAX_LATE_SHOWN], start=1)
        ),
        Row("the gateway's jitter budget (apihub_pacing_jitter_seconds{domain=KIS})", jitter_text(jitter)),
        Row(
            "token issuances / refusals on the hub's key (whole run)",
            f"{final.get('tokens_issued', 0)} / {final.get('token_refusals', 0)}",
        ),
        *baseline_rows(bases),
    ]
    notes = [
        "Two gateway processes in one consumer group, "
        f"APIHUB_KAFKA__SESSION_TIMEOUT_MS={SESSION_TIMEOUT_MS}; load as in `pacing`: three HubClients "
        f"each offering 100 req/s open loop, but with a {KILL_DEADLINE_S:.0f} s deadline. Each cycle: "
        "the owner of the KIS partition "
        "(the gateway named in the latest answer) gets SIGKILL, is started again "
        f"{DOWN_S:.0f} s later with the same environment and APIHUB_INSTANCE_ID (static membership: it "
        "takes its partitions back without waiting for the session timeout), then "
        f"{STEADY_S:.0f} s of steady state once answers flow again.",
        "While the partition has no live owner, requests wait in Kafka; the restarted gateway inherits them "
        "(and those the killed one had read but not answered), answers the ones whose deadline has passed at "
        "once and serves the rest by priority and deadline.",
        *cycle_log,
        "Baselines ran at the same time on keys of their own: python-kis and krsec limiter models (see "
        "`pacing`), each in a 'process' that dies at every kill (calls waiting at its limiter are lost, "
        "nothing is sent while down) and restarts with fresh limiters when the gateway restarts.",
    ]
    return Result(
        name="pacing-kill",
        title=TITLE,
        goal=GOAL,
        baseline_name=BASELINE,
        headline=Headline(
            figure=f"{over} over-limit in {cycles} kills; {unanswered} of {load.sent} unanswered in time "
            f"with an owner running ({in_outage} more whose deadline fell in an outage)",
            baseline="; ".join(f"{b.name}: {b.key.over_limit} over-limit" for b in bases),
            goal="0 over-limit, 0 unanswered in time",
            met=met,
            margin=f"{over} over-limit arrival(s); {unanswered} unanswered, {late} late",
        ),
        rows=rows,
        notes=notes,
        measures=[
            Measure("over-limit arrivals", over, str(over), True, "0", over == 0),
            Measure(
                "no answer in time with an owner running",
                unanswered,
                f"{unanswered} of {load.sent}",
                True,
                "0",
                unanswered == 0,
            ),
            Measure("answered after a deadline with an owner running", late, str(late), True, "0", late == 0),
            Measure("no answer, deadline in an outage", in_outage, f"{in_outage} of {load.sent}", True),
            Measure("answered late, deadline in an outage", late_in_outage, str(late_in_outage), True),
            Measure("utilisation", hub.utilisation, pct(hub.utilisation), False),
            *baseline_measures(bases),
        ],
    )


async def first_answer_after(load: HubLoad, since: float, timeout_s: float) -> float:
    """``time.monotonic()`` of the first answer received after ``since``; NaN if none within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = load.first_answer_after(since)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            return math.nan
        await asyncio.sleep(0.05)


def outage_of(at: float, outages: list[tuple[float, float]]) -> int | None:
    """The number (from 1) of the outage ``at`` (``time.monotonic()``) fell in, or None while an owner ran."""
    for cycle, (kill, back) in enumerate(outages, start=1):
        if kill <= at <= back + OUTAGE_GRACE_S:
            return cycle
    return None


def late_text(late: LateAnswer, outages: list[tuple[float, float]]) -> str:
    """One late answer: what it was, who sent it, how late, and where its deadline fell among the outages."""
    cycle = outage_of(late.deadline_at, outages)
    if cycle is not None:
        where = f"in outage {cycle} ({late.deadline_at - outages[cycle - 1][0]:.2f} s after the kill)"
    else:
        where = "before the first kill"
        for n, (_, back) in enumerate(outages, start=1):
            if back <= late.deadline_at:
                where = f"{late.deadline_at - back:.2f} s after outage {n}'s first answer"
    late_ms = late.late_s * 1000
    return f"{late.answer} from {late.gateway}, {late_ms:.0f} ms after its deadline, which fell {where}"
