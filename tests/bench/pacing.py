"""Benchmark 1, pacing: three callers each demanding five times a 20 req/s KIS key. Also the core of
``pacing-jitter`` (50 ms of arrival jitter) and ``pacing-cpu`` (two busy processes), see ``Conditions``.

Hub: one gateway process, three ``HubClient``s (callers worker-1..3) each offering 100 req/s open loop with a
2 s deadline. The sandbox referee counts every arrival on the key; a sampler reads it once a second. Every
admitted request must be answered before its deadline: an answer after it (or none: ``HubTimeout``) is
counted as late.
Baselines, on keys of their own, after the hub run and under the same conditions (jitter, busy cores): the
client-side limiters of python-kis (fixed window, 19 a second) and krsec (token bucket, 15 req/s, burst 3),
each one library instance taking the same demand; for plain ``pacing`` also three workers each pacing itself
at the key's 20 req/s (the design the hub replaces).
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from hubclient import HubClient, HubError, HubTimeout
from tests.bench.baselines import KRSEC, OWN, PYTHON_KIS, Baseline, LibraryRun, run_baseline
from tests.bench.harness import (
    PRICE_TR,
    Bench,
    CpuMeter,
    KeyWatch,
    Topics,
    busy_cores,
    fake_credentials,
    free_port,
    gateway_env,
    gateways,
    log,
    metric_or_nan,
    now_ms,
    open_loop,
    percentile,
    referee,
    sandbox,
    watch,
)
from tests.bench.report import Headline, Measure, Result, Row, verdict
from tests.params import PRICE, distinct_price

LIMIT_PER_S = 20
DEMAND_FACTOR = 5
CALLERS = 3
DEADLINE_S = 2.0

TITLE = "Pacing: three callers, each demanding 5x a 20 req/s key"
GOAL = (
    "0 over-limit arrivals at the referee, >= 97 % of the limit used, 0 admitted requests answered after "
    "their deadline"
)
BASELINE = (
    "client-side limiters of the libraries the hub replaces on keys of their own: python-kis (19 per "
    "fixed 1 s window), krsec (token bucket 15 req/s, burst 3); also three workers with their own 20/s pacer"
)


@dataclass(frozen=True)
class Conditions:
    """What a pacing variant changes: sandbox arrival jitter (and the gateway told so), busy processes."""

    name: str = "pacing"
    title: str = TITLE
    goal: str = GOAL
    baseline_name: str = BASELINE
    jitter_ms: float = 0.0  # injected at the sandbox
    gateway_jitter_ms: float | None = None  # the gateway's APIHUB_KIS__ARRIVAL_JITTER_MS (None: its default)
    busy: int = 0
    utilisation_goal: float | None = 0.97  # None: reported, not part of the goal
    late_in_goal: bool = True
    baselines: tuple[Baseline, ...] = (PYTHON_KIS, KRSEC, OWN)


@dataclass(frozen=True)
class LateAnswer:
    """An answer that reached its caller after the caller's deadline."""

    answer: str  # status/reason
    gateway: str
    late_s: float  # how long after the deadline it arrived
    deadline_at: float  # time.monotonic() of the deadline


class HubLoad:
    """Callers' view of an open-loop load through the hub: answers by status, late answers (after the
    caller's deadline, or none before its timeout), latencies, and which gateway answered last."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.answers: Counter[str] = Counter()
        self.by_caller: Counter[str] = Counter()
        self.ok_ms: list[float] = []
        self.refused_ms: list[float] = []
        self.late = 0  # admitted and answered after the deadline, or not answered before the timeout
        self.late_answered = 0  # of which an answer did arrive, after the deadline
        self.late_details: list[LateAnswer] = []  # each answer that arrived after its deadline
        self.timeouts = 0
        self.timeout_deadlines: list[float] = []  # time.monotonic() when each HubTimeout came: its deadline
        self.sent = 0
        self.last_gateway = ""
        self.last_answer_at = 0.0  # time.monotonic()
        self.first_answer_by: dict[str, float] = {}  # gateway -> first answer's time.monotonic()
        self.answer_at: list[float] = []  # time.monotonic() of every answer, in order of arrival
        self.answer_by: list[str] = []  # the gateway that sent it

    def fire_for(self, client: HubClient, caller: str) -> Callable[[int], Coroutine[Any, Any, None]]:
        """A ``fire(i)`` for ``open_loop``: one request of ``caller``, recorded here."""

        async def fire(_: int) -> None:
            self.sent += 1
            t0_ms = now_ms()
            deadline_wall = time.time() + self.deadline_s
            try:
                response = await client.submit("KIS", PRICE_TR, distinct_price(), timeout=self.deadline_s)
            except HubTimeout:
                self.answers["HubTimeout"] += 1
                self.timeouts += 1
                self.timeout_deadlines.append(time.monotonic())
                self.late += 1
                return
            except HubError as exc:
                self.answers[type(exc).__name__] += 1
                return
            late_s = time.time() - deadline_wall
            now = time.monotonic()
            elapsed = now_ms() - t0_ms
            self.answers[f"{response.status.value}/{response.reason or '-'}"] += 1
            self.last_gateway, self.last_answer_at = response.gateway, now
            self.first_answer_by.setdefault(response.gateway, now)
            self.answer_at.append(now)
            self.answer_by.append(response.gateway)
            if late_s > 0:
                self.late += 1
                self.late_answered += 1
                answer = f"{response.status.value}/{response.reason or '-'}"
                self.late_details.append(LateAnswer(answer, response.gateway, late_s, now - late_s))
            if response.ok:
                self.by_caller[caller] += 1
                self.ok_ms.append(elapsed)
            elif response.reason == "deadline_unreachable":
                self.refused_ms.append(elapsed)

        return fire

    def first_answer_after(self, since: float, gateway: str | None = None) -> float | None:
        """``time.monotonic()`` of the first answer received after ``since`` (by ``gateway`` if given)."""
        start = bisect.bisect_right(self.answer_at, since)
        for i in range(start, len(self.answer_at)):
            if gateway is None or self.answer_by[i] == gateway:
                return self.answer_at[i]
        return None

    def answered_by_at(self, at: float) -> str:
        """The gateway of the answer received at ``at`` ('' if none)."""
        i = bisect.bisect_left(self.answer_at, at)
        return self.answer_by[i] if i < len(self.answer_at) and self.answer_at[i] == at else ""


def hub_clients(bench: Bench, topics: Topics, count: int = CALLERS) -> list[HubClient]:
    """``count`` HubClients, callers worker-1..N, on the benchmark's topics (not started)."""
    return [
        HubClient.connect(
            bench.stack.kafka,
            caller=f"worker-{i + 1}",
            request_topic=topics.requests,
            reply_topic=topics.responses,
        )
        for i in range(count)
    ]


def demand(
    load: HubLoad,
    clients: list[HubClient],
    duration_s: float,
    stop: asyncio.Event | None = None,
    rate: float = LIMIT_PER_S * DEMAND_FACTOR,
) -> asyncio.Future[list[float]]:
    """The pacing load: every client offering ``rate`` (default 5x the key's limit), open loop, random
    phases."""
    return asyncio.gather(
        *(
            open_loop(
                rate,
                duration_s,
                load.fire_for(c, f"worker-{i + 1}"),
                phase_s=random.random() / rate,
                drain_timeout_s=DEADLINE_S + 15,
                stop=stop,
            )
            for i, c in enumerate(clients)
        )
    )


@dataclass
class HubPhase:
    """What the hub phase measured."""

    key: KeyWatch
    load: HubLoad
    final: dict[str, Any]
    slowed: int
    jitter_gauge_s: float
    cpu: CpuMeter | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def run_hub(
    bench: Bench, url: str, duration_s: float, cond: Conditions, busy_pids: list[int]
) -> HubPhase:
    """The hub phase: one gateway, three callers at 5x the key for ``duration_s``."""
    credentials = fake_credentials()
    topics = await bench.topics("hub")
    instance_id = f"bench-{cond.name}-{bench.run_id}"
    extra: dict[str, object] = {}
    if cond.gateway_jitter_ms is not None:
        extra["kis__arrival_jitter_ms"] = cond.gateway_jitter_ms
    env = gateway_env(
        bench, topics, url, credentials, instance_id=instance_id, metrics_port=free_port(), **extra
    )
    load = HubLoad(DEADLINE_S)
    async with gateways(bench, [env]) as (gateway,), aiohttp.ClientSession() as session:
        clients = hub_clients(bench, topics)
        for client in clients:
            await client.start()
        try:
            await clients[0].execute("KIS", PRICE_TR, PRICE, timeout=30)  # token and connections warm
            await asyncio.sleep(1.2 + cond.jitter_ms / 1000)  # the warm-up call leaves the sliding window
            cpu = CpuMeter({"gateway": gateway.pid, **{f"busy-{i}": p for i, p in enumerate(busy_pids)}})
            cpu.start()
            key = await watch(
                session, url, credentials[0], duration_s, demand(load, clients, duration_s), LIMIT_PER_S
            )
            cpu.stop()
            final = await referee(session, url, credentials[0])
            jitter_gauge = await metric_or_nan(
                session, gateway.metrics_url, "apihub_pacing_jitter_seconds", domain="KIS"
            )
            extra["send_lag"] = await lag_summary(session, gateway.metrics_url)
            async with session.get(f"{url}/_sandbox/stats") as resp:
                extra["sandbox_loop_lag"] = (await resp.json()).get("loop_lag", {})
        finally:
            for client in clients:
                await client.stop()
    return HubPhase(
        key,
        load,
        final,
        count_events(bench.log_dir / f"{instance_id}.log", "limiter.slowed"),
        jitter_gauge,
        cpu,
        extra,
    )


async def lag_summary(session: aiohttp.ClientSession, metrics_url: str) -> str:
    """The gateway's own send lag (histogram apihub_send_lag_seconds): sends, and how many were late."""
    total = await metric_or_nan(session, metrics_url, "apihub_send_lag_seconds_count", domain="KIS")
    parts = [f"{total:.0f} sends"]
    for le, name in (("0.005", "5"), ("0.02", "20"), ("0.05", "50")):
        within = await metric_or_nan(
            session, metrics_url, "apihub_send_lag_seconds_bucket", domain="KIS", le=le
        )
        parts.append(f"{total - within:.0f} over {name} ms")
    return ", ".join(parts)


def loop_lag_text(loop_lag: dict[str, Any]) -> str:
    """The sandbox referee's own event-loop stalls, whole run (its handlers' delay; arrivals are timed by
    their receive stamps, so the count does not move with them)."""
    if not loop_lag:
        return "not reported"
    return (
        f"max {loop_lag.get('max_ms', 0):.1f} ms, p99 {loop_lag.get('p99_ms', 0):.1f} ms, "
        f"{loop_lag.get('over_20ms', 0)} over 20 ms, {loop_lag.get('over_50ms', 0)} over 50 ms"
    )


def count_events(log_path: Path, event: str) -> int:
    """How many log lines of one event the gateway wrote (0 without a log)."""
    needle = f'"event":"{event}"'
    try:
        with log_path.open(errors="replace") as lines:
            return sum(needle in line for line in lines)
    except OSError:
        return 0


def pct(value: float) -> str:
    """A share as ``97.7 %``."""
    return f"{value * 100:.1f} %"


def jitter_text(gauge_s: float) -> str:
    """The gateway's effective jitter budget as shown in the reports."""
    return "not exported by this gateway" if math.isnan(gauge_s) else f"{gauge_s * 1000:.1f} ms"


def baseline_rows(runs: list[LibraryRun]) -> list[Row]:
    """Rows describing each baseline's key and callers."""
    rows = []
    for b in runs:
        k = b.key
        rows.append(
            Row(
                f"baseline {b.name}: over-limit / utilisation / max in a 1 s window / calls sent, gave up",
                "-",
                f"{k.over_limit} / {pct(k.utilisation)} ({k.accepted} in {k.elapsed_s:.1f} s) / "
                f"{k.max_in_window} / {b.sent} sent, {b.gave_up} gave up at the limiter",
            )
        )
        rows.append(
            Row(f"baseline {b.name}: answers", "-", ", ".join(f"{c}: {n}" for c, n in b.codes.most_common(4)))
        )
    return rows


def baseline_measures(runs: list[LibraryRun]) -> list[Measure]:
    """Baseline measures for the worst/best aggregation (over-limit, utilisation)."""
    out = []
    for b in runs:
        out.append(
            Measure(f"{b.name} over-limit", b.key.over_limit, str(b.key.over_limit), True, side="baseline")
        )
        out.append(
            Measure(
                f"{b.name} utilisation", b.key.utilisation, pct(b.key.utilisation), False, side="baseline"
            )
        )
    return out


async def run_pacing(bench: Bench, cond: Conditions) -> Result:
    """Hub first, then the baselines side by side (on keys of their own), all under ``cond``."""
    hub_s = 8.0 if bench.quick else 60.0
    base_s = 6.0 if bench.quick else 30.0
    faults: dict[str, object] | None = {"arrival_jitter_ms": cond.jitter_ms} if cond.jitter_ms else None
    async with sandbox(bench, faults=faults) as url:
        busy_max_s = (
            hub_s + base_s + 120
        )  # the busy processes end by themselves even if we could not kill them
        async with busy_cores(bench, cond.busy, busy_max_s) as busy_pids:
            log(f"{cond.name}: hub, 3 callers x {LIMIT_PER_S * DEMAND_FACTOR} req/s for {hub_s:.0f} s")
            hub = await run_hub(bench, url, hub_s, cond, busy_pids)
            log(f"{cond.name}: baselines {', '.join(b.name for b in cond.baselines)} for {base_s:.0f} s")
            base_cpu = CpuMeter({f"busy-{i}": p for i, p in enumerate(busy_pids)})
            base_cpu.start()
            bases = list(
                await asyncio.gather(
                    *(run_baseline(url, b, base_s, deadline_s=DEADLINE_S) for b in cond.baselines)
                )
            )
            base_cpu.stop()
    return pacing_result(bench, cond, hub, bases, hub_s, base_s, base_cpu)


def pacing_result(
    bench: Bench,
    cond: Conditions,
    hub: HubPhase,
    bases: list[LibraryRun],
    hub_s: float,
    base_s: float,
    base_cpu: CpuMeter,
) -> Result:
    """The run's table, notes, headline and measures."""
    w, load = hub.key, hub.load
    if cond.jitter_ms and w.jittered == 0:
        raise RuntimeError("the sandbox was asked for arrival jitter but delayed no arrival")
    ok_total = sum(load.by_caller.values()) or 1
    shares = " / ".join(f"{load.by_caller[f'worker-{i + 1}'] / ok_total * 100:.1f}" for i in range(CALLERS))
    over_met = w.over_limit == 0 and w.over_limit_seconds == 0 and w.max_in_window <= LIMIT_PER_S
    use_goal = cond.utilisation_goal
    use_met = use_goal is None or w.utilisation >= use_goal
    late_met = not cond.late_in_goal or load.late == 0
    libs = "; ".join(f"{b.name}: {b.key.over_limit} over-limit, {pct(b.key.utilisation)} used" for b in bases)
    use_goal_text = f">= {use_goal * 100:.0f} %" if use_goal is not None else "(reported)"
    rows = [
        Row(
            "over-limit arrivals at the referee (EGW00201)",
            f"{w.over_limit}",
            "; ".join(f"{b.key.over_limit} ({b.name})" for b in bases),
            "0",
            verdict(w.over_limit == 0, f"{w.over_limit} over"),
        ),
        Row(
            "one-second intervals with over-limit arrivals (1 Hz referee samples)",
            f"{w.over_limit_seconds} of {w.samples}",
            "; ".join(f"{b.key.over_limit_seconds} of {b.key.samples} ({b.name})" for b in bases),
            "0",
            verdict(w.over_limit_seconds == 0, f"{w.over_limit_seconds} over"),
        ),
        Row(
            "largest count in any sliding one-second window (referee max_in_window, whole life of the key)",
            f"{w.max_in_window}",
            "; ".join(f"{b.key.max_in_window} ({b.name})" for b in bases),
            f"<= {LIMIT_PER_S}",
            verdict(w.max_in_window <= LIMIT_PER_S, f"{w.max_in_window} of {LIMIT_PER_S}"),
        ),
        Row(
            f"utilisation = accepted calls / ({LIMIT_PER_S} x duration)",
            f"{pct(w.utilisation)} ({w.accepted} in {w.elapsed_s:.1f} s)",
            "; ".join(f"{pct(b.key.utilisation)} ({b.name})" for b in bases),
            use_goal_text,
            verdict(use_met, f"{(w.utilisation - (use_goal or 0)) * 100:+.2f} points")
            if use_goal is not None
            else "-",
        ),
        Row(
            "admitted requests answered after their deadline (HubTimeout, or an answer after the caller's "
            "deadline)",
            f"{load.late} ({load.timeouts} HubTimeout, {load.late_answered} answered late)",
            "-",
            "0" if cond.late_in_goal else "(reported)",
            verdict(late_met, f"{load.late} late") if cond.late_in_goal else "-",
        ),
        Row("requests offered through the hub (3 callers)", f"{load.sent} ({load.sent / w.elapsed_s:.0f}/s)"),
        Row("answers", ", ".join(f"{k}: {v}" for k, v in load.answers.most_common())),
        Row("share of ok answers per caller (%)", shares, goal="about 33 each (round robin)"),
        Row(
            "latency of ok answers p50 / p99 (ms, caller side)",
            f"{percentile(load.ok_ms, 50):.0f} / {percentile(load.ok_ms, 99):.0f}",
            goal=f"< deadline {DEADLINE_S * 1000:.0f}",
        ),
        Row(
            "latency of deadline_unreachable refusals p50 / p99 (ms)",
            f"{percentile(load.refused_ms, 50):.1f} / {percentile(load.refused_ms, 99):.1f}",
            goal="fast",
        ),
        Row(
            "the gateway's jitter budget (gauge apihub_pacing_jitter_seconds{domain=KIS}, end of the run)",
            jitter_text(hub.jitter_gauge_s),
            f"sandbox arrival jitter {cond.jitter_ms:.0f} ms; gateway J {cond.gateway_jitter_ms:.0f} ms"
            if cond.jitter_ms and cond.gateway_jitter_ms is not None
            else "-",
        ),
        Row("the gateway's own send lag (slot to headers sent)", str(hub.extra.get("send_lag", "-"))),
        Row(
            "the referee's own event-loop stalls (sandbox loop_lag, whole run; arrivals are stamped)",
            loop_lag_text(hub.extra.get("sandbox_loop_lag", {})),
        ),
        Row(
            "arrivals the sandbox delayed by its arrival jitter (hub key, during the load)",
            f"{w.jittered} of {w.arrivals}",
            "; ".join(f"{b.key.jittered} of {b.key.arrivals} ({b.name})" for b in bases),
        ),
        Row("pace cut after throttle answers (limiter.slowed log events)", f"{hub.slowed}", goal="0"),
        Row(
            "token issuances / refusals on the hub's key (whole run)",
            f"{hub.final.get('tokens_issued', 0)} / {hub.final.get('token_refusals', 0)}",
        ),
        *baseline_rows(bases),
    ]
    if cond.busy and hub.cpu is not None:
        rows.append(
            Row("CPU during the hub load (busy processes and the gateway)", hub.cpu.busy(), base_cpu.busy())
        )
    notes = [
        f"Load: three HubClients (callers worker-1..3) each offering {LIMIT_PER_S * DEMAND_FACTOR} req/s "
        f"open loop (arrivals never wait for answers) of FHKST01010100 for {hub_s:.0f} s, deadline "
        f"{DEADLINE_S:.0f} s, through one gateway process at the default 20 req/s. What cannot make its "
        "deadline is refused at once with `deadline_unreachable`, as designed; such refusals are not "
        "admitted requests. An admitted request is late when the caller got no answer within its timeout "
        "(HubTimeout) or the answer came after the deadline the caller set.",
        "Utilisation counts the calls the referee accepted between two snapshots taken when the load starts "
        "and when it ends (the gateway was warmed by one call first, so the token issuance is outside).",
        f"Baselines ran for {base_s:.0f} s, after the hub and at the same time as each other, each on "
        "a key of its own against the same sandbox and under the same conditions, with the hub run's "
        f"demand (three callers x {LIMIT_PER_S * DEMAND_FACTOR} req/s, {DEADLINE_S:.0f} s deadline: a "
        "caller whose turn at the limiter comes after its deadline gives up without calling). "
        "python-kis: one library instance, at most 19 calls per fixed window of 1 s opened by the first "
        "call, then a wait to the window's end plus 50 ms; krsec: one instance, token bucket of 15 req/s "
        "holding at most 3 tokens; 'own 20/s x 3' (where run): three workers each with its own pacer at "
        "the key's 20 req/s. The library limiters are models of the libraries' behaviour written for "
        "this benchmark, not the libraries themselves.",
    ]
    if cond.jitter_ms:
        notes.append(
            "Arrival jitter: the sandbox delays every provider request by a uniform random "
            f"0-{cond.jitter_ms:.0f} ms before its referee counts it (fault `arrival_jitter_ms`, set "
            "through its admin API), for the hub and the baselines alike; the gateway was started with "
            f"APIHUB_KIS__ARRIVAL_JITTER_MS={cond.jitter_ms:g} so it knows the budget. The goal asks "
            f"{use_goal_text} of the key: with a budget J the most a sender can use without risking the "
            f"limit is limit / (1 s + J) = {1 / (1 + cond.jitter_ms / 1000) * 100:.1f} %."
        )
    if cond.busy:
        notes.append(
            f"CPU load: {cond.busy} busy processes (a Python loop each, normal priority, ended by a bound of "
            f"{hub_s + base_s + 120:.0f} s and killed when the benchmark ends) ran through the hub phase and "
            "the baselines; the CPU row shows how much of a core each got."
        )
    if load.late:
        notes.append(
            f"{load.late} admitted request(s) were answered after their deadline or not at all before the "
            "caller's timeout: the gateway admits a request when the wait at the current pace plus the call "
            "and the way back fits its deadline, so a stall near the deadline makes the answer late."
        )
    over_text = f"{w.over_limit} over-limit"
    headline_parts = [over_text, f"{pct(w.utilisation)} used", f"{load.late} late"]
    measures = [
        Measure("over-limit arrivals", w.over_limit, str(w.over_limit), True, "0", w.over_limit == 0),
        Measure(
            "utilisation",
            w.utilisation,
            pct(w.utilisation),
            False,
            use_goal_text,
            use_met if use_goal else None,
        ),
        Measure(
            "answered after deadline",
            load.late,
            str(load.late),
            True,
            "0" if cond.late_in_goal else "(reported)",
            load.late == 0 if cond.late_in_goal else None,
        ),
        *baseline_measures(bases),
    ]
    return Result(
        name=cond.name,
        title=cond.title,
        goal=cond.goal,
        baseline_name=cond.baseline_name,
        headline=Headline(
            figure=", ".join(headline_parts),
            baseline=libs,
            goal=f"0 over-limit, {use_goal_text}" + (", 0 late" if cond.late_in_goal else ""),
            met=over_met and use_met and late_met,
            margin=f"{w.over_limit} over-limit arrival(s) in {w.over_limit_seconds} window(s); utilisation "
            f"{pct(w.utilisation)}; {load.late} late",
        ),
        rows=rows,
        notes=notes,
        measures=measures,
    )


async def run(bench: Bench) -> Result:
    """Plain pacing: no jitter, no extra CPU load."""
    return await run_pacing(bench, Conditions())
