"""Benchmark ``failover``: from a SIGKILL of the gateway that owns the KIS partition to the next owner's
first answer, under a steady light load.

Two gateway processes in one consumer group (``APIHUB_KAFKA__SESSION_TIMEOUT_MS`` passed explicitly), one
``HubClient`` sending 10 req/s open loop with a 40 s timeout (longer than any takeover, so there is always
work waiting and every request can still be answered). The owner is the gateway named in the latest answer.

(a) The owner is SIGKILLed and started again at once under the same ``APIHUB_INSTANCE_ID`` (static
    membership: it should get its partitions back without a rebalance); measured from the new process's
    start to its first answer. Goal <= 3 s.
(b) The owner is SIGKILLed and stays down; the other instance takes over once the group's session timeout
    has expired; measured from the kill to the other's first answer. Goal <= session timeout + 2 s.

Baseline, in the same run: the same load, kills and restart against two raw aiokafka echo processes
(``tests/bench/echo.py``), plain group members without static membership, with the same session timeout:
the floor Kafka's group protocol sets without the gateway's own work.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hubclient import HubClient
from tests import processes
from tests.bench.echo import start_echo
from tests.bench.harness import (
    PRICE_TR,
    SESSION_TIMEOUT_MS,
    Bench,
    GatewayGroup,
    Topics,
    fake_credentials,
    log,
    open_loop,
    pair_envs,
    sandbox,
)
from tests.bench.pacing import HubLoad
from tests.bench.report import Headline, Measure, Result, Row, verdict
from tests.params import PRICE

LOAD_PER_S = 10.0
TIMEOUT_S = 40.0
RESTART_GOAL_S = 3.0
TAKEOVER_SLACK_S = 2.0
STALE_GUARD_S = 0.25  # answers received this soon after a kill were produced before it (reply fetch: 50 ms)
SETTLE_S = 3.0

TITLE = "Failover: from a SIGKILL of the owning gateway to the next owner's first answer"
GOAL = (
    f"(a) restarted under the same instance id: first answer <= {RESTART_GOAL_S:.0f} s after the new "
    f"process starts; (b) left down: the other instance's first answer <= session timeout "
    f"({SESSION_TIMEOUT_MS / 1000:.0f} s) + {TAKEOVER_SLACK_S:.0f} s after the kill"
)
BASELINE = (
    "two raw aiokafka echo processes, plain group members (no static membership), same session timeout, "
    "same kills, restart and load"
)


@dataclass
class Side:
    """One side's timings (seconds; NaN when the awaited answer never came within the bound)."""

    name: str
    owner_a: str = ""
    restart_s: float = math.nan  # (a) new process start -> its first answer (hub) / first answer (echo)
    restart_from_kill_s: float = math.nan  # (a) kill -> that answer
    restart_answered_by: str = ""
    ready_s: float = math.nan  # (a) new process start -> ready (/readyz 200, or the echo's "ready")
    owner_b: str = ""
    takeover_s: float = math.nan  # (b) kill -> the other's first answer
    load: HubLoad = field(default_factory=lambda: HubLoad(TIMEOUT_S))


Starter = Callable[[str], Awaitable[processes.Child]]


class Members:
    """Two killable group members of one side, by name: start (ready), kill, stop all."""

    def __init__(self, names: list[str], start: Starter) -> None:
        self.names = names
        self._start = start
        self.running: dict[str, processes.Child] = {}
        self._all: list[processes.Child] = []

    async def start(self, name: str) -> processes.Child:
        """Start member ``name`` and return once it is ready (``child.started`` is its spawn time)."""
        child = await self._start(name)
        self.running[name] = child
        self._all.append(child)
        return child

    async def kill(self, name: str) -> float:
        """SIGKILL member ``name``; returns the ``time.monotonic()`` of the signal."""
        child = self.running.pop(name)
        killed_at = time.monotonic()
        await child.kill()
        return killed_at

    async def stop_all(self) -> None:
        """Stop every member ever started that still runs."""
        await asyncio.gather(*(c.stop(15) for c in self._all), return_exceptions=True)


async def fresh_owner(load: HubLoad, names: list[str], timeout_s: float = 20) -> str:
    """The member named in an answer received in the last second (waits, bounded, for one)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if load.last_gateway in names and time.monotonic() - load.last_answer_at < 1.0:
            return load.last_gateway
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no answer from {names} in {timeout_s:.0f} s (last: {load.last_gateway!r})")


async def first_answer(load: HubLoad, since: float, gateway: str | None, timeout_s: float) -> float:
    """``time.monotonic()`` of the first answer received after ``since`` (by ``gateway`` if given), looked
    up in the answers already recorded and then awaited; NaN if none came within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = load.first_answer_after(since, gateway)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            return math.nan
        await asyncio.sleep(0.02)


async def drive(side: Side, members: Members, client: HubClient, *, same_id_answers: bool) -> None:
    """The two cases against one side, under the steady load. With ``same_id_answers`` case (a) waits for
    an answer by the restarted member itself (the hub: static membership), otherwise by any member."""
    load = side.load
    stop = asyncio.Event()
    max_s = 2 * (SESSION_TIMEOUT_MS / 1000 + 40) + 60
    loop_task = asyncio.ensure_future(
        open_loop(
            LOAD_PER_S, max_s, load.fire_for(client, "steady"), stop=stop, drain_timeout_s=TIMEOUT_S + 5
        )
    )
    bound_s = SESSION_TIMEOUT_MS / 1000 + 30
    try:
        # (a) kill the owner and start it again at once under the same name
        owner = side.owner_a = await fresh_owner(load, members.names)
        killed_at = await members.kill(owner)
        child = await members.start(owner)  # answers arriving meanwhile are recorded by the load
        side.ready_s = time.monotonic() - child.started
        since = max(child.started, killed_at + STALE_GUARD_S)
        answered = await first_answer(load, since, owner if same_id_answers else None, bound_s)
        side.restart_s = answered - child.started
        side.restart_from_kill_s = answered - killed_at
        side.restart_answered_by = load.answered_by_at(answered)
        log(f"failover ({side.name}): (a) {owner} restarted, first answer after {side.restart_s:.2f} s")
        await asyncio.sleep(SETTLE_S)
        # (b) kill the owner and leave it down
        owner = side.owner_b = await fresh_owner(load, members.names)
        (other,) = [n for n in members.names if n != owner]
        killed_at = await members.kill(owner)
        answered = await first_answer(load, killed_at, other, bound_s)
        side.takeover_s = answered - killed_at
        log(f"failover ({side.name}): (b) {owner} down, {other} answered after {side.takeover_s:.2f} s")
    finally:
        stop.set()
        await asyncio.wait_for(loop_task, TIMEOUT_S + 15)


async def run_side(bench: Bench, side: Side, topics: Topics, members: Members, *, hub: bool) -> None:
    """Start both members, warm up, drive the two cases; every member stopped in a ``finally``."""
    try:
        await asyncio.gather(*(members.start(n) for n in members.names))
        client = HubClient.connect(
            bench.stack.kafka, caller="steady", request_topic=topics.requests, reply_topic=topics.responses
        )
        async with client:
            await client.execute("KIS", PRICE_TR, PRICE, timeout=30)  # token, connections, leaders warm
            await drive(side, members, client, same_id_answers=hub)
    finally:
        await members.stop_all()


def hub_members(bench: Bench, url: str, topics: Topics) -> Members:
    """Two gateways in one group, named by their instance ids, the session timeout passed explicitly."""
    credentials = fake_credentials()
    envs = pair_envs(bench, topics, url, credentials, "failover")
    group = GatewayGroup(bench)

    async def start(instance_id: str) -> processes.Child:
        return (await group.start(envs[instance_id])).child

    return Members(list(envs), start)


def echo_members(bench: Bench, topics: Topics) -> Members:
    """Two echo processes ``echo-a`` and ``echo-b`` in one group (plain members, same session timeout)."""

    async def start(name: str) -> processes.Child:
        return await start_echo(
            bench.stack.kafka,
            topics.requests,
            topics.group_id,
            bench.log_dir / f"{name}.log",
            name=name,
            session_timeout_ms=SESSION_TIMEOUT_MS,
        )

    return Members(["echo-a", "echo-b"], start)


def _s(value: float) -> str:
    return "no answer" if math.isnan(value) else f"{value:.2f} s"


async def run(bench: Bench) -> Result:
    """The hub's two cases, then the echo baseline's, each against its own topics."""
    hub, echo = Side("hub"), Side("echo baseline")
    async with sandbox(bench) as url:
        topics = await bench.topics("hub")
        log("failover: two gateways, 10 req/s; (a) kill + restart, (b) kill, no restart")
        await run_side(bench, hub, topics, hub_members(bench, url, topics), hub=True)
    echo_topics = await bench.topics("echo")
    log("failover: baseline, two echo processes")
    await run_side(bench, echo, echo_topics, echo_members(bench, echo_topics), hub=False)
    session_s = SESSION_TIMEOUT_MS / 1000
    takeover_goal = session_s + TAKEOVER_SLACK_S
    a_met = not math.isnan(hub.restart_s) and hub.restart_s <= RESTART_GOAL_S
    b_met = not math.isnan(hub.takeover_s) and hub.takeover_s <= takeover_goal
    rows = [
        Row(
            "(a) restart under the same instance id: new process start -> its first answer",
            _s(hub.restart_s),
            f"{_s(echo.restart_s)} (first answer by either echo after the restart)",
            f"<= {RESTART_GOAL_S:.0f} s",
            verdict(a_met, f"{hub.restart_s - RESTART_GOAL_S:+.2f} s"),
        ),
        Row(
            "(a) kill -> that answer; new process start -> ready",
            f"{_s(hub.restart_from_kill_s)}; {_s(hub.ready_s)}",
            f"{_s(echo.restart_from_kill_s)}; {_s(echo.ready_s)}",
        ),
        Row(
            "(a) instance killed / instance that answered",
            f"{hub.owner_a} / {hub.restart_answered_by}",
            f"{echo.owner_a} / {echo.restart_answered_by}",
        ),
        Row(
            f"(b) no restart: kill -> the other instance's first answer (session timeout {session_s:.0f} s)",
            _s(hub.takeover_s),
            _s(echo.takeover_s),
            f"<= {takeover_goal:.0f} s",
            verdict(b_met, f"{hub.takeover_s - takeover_goal:+.2f} s"),
        ),
        Row("(b) instance killed", hub.owner_b, echo.owner_b),
        Row(
            "answers to the steady load (whole run)",
            ", ".join(f"{k}: {v}" for k, v in hub.load.answers.most_common()),
            ", ".join(f"{k}: {v}" for k, v in echo.load.answers.most_common()),
        ),
    ]
    notes = [
        f"Load: one HubClient, {LOAD_PER_S:.0f} req/s of FHKST01010100 open loop, each with a "
        f"{TIMEOUT_S:.0f} s timeout, all in the KIS limit domain (one partition, so one owner). The owner "
        "is the instance named in the latest answer. Both gateways run with "
        f"APIHUB_KAFKA__SESSION_TIMEOUT_MS={SESSION_TIMEOUT_MS}.",
        "(a) The owner gets SIGKILL and is started again at once with the same environment (the same "
        "APIHUB_INSTANCE_ID); the time runs from the new process's start (the spawn) to the first answer it "
        f"sends. Answers received less than {STALE_GUARD_S} s after the kill are not counted: they were "
        "produced by the killed process before it died (no Python process starts, joins and answers that "
        "fast).",
        f"(b) {SETTLE_S:.0f} s later the owner (the restarted one, if it took its partition back) gets "
        "SIGKILL and stays down; the time runs from the kill to the first answer by the other instance, "
        "which gets the partition once the group coordinator has given up on the dead member.",
        "Baseline: the same load, kills and restart against two raw aiokafka echo processes "
        "(tests/bench/echo.py) with the same session timeout but no static membership, as a plain consumer "
        "would be; in (a) the first answer by either echo counts (without static membership the partition "
        "may move).",
    ]
    return Result(
        name="failover",
        title=TITLE,
        goal=GOAL,
        baseline_name=BASELINE,
        headline=Headline(
            figure=f"(a) restart -> answer {_s(hub.restart_s)}, (b) takeover {_s(hub.takeover_s)}",
            baseline=f"echo: (a) {_s(echo.restart_s)}, (b) {_s(echo.takeover_s)}",
            goal=f"(a) <= {RESTART_GOAL_S:.0f} s, (b) <= {takeover_goal:.0f} s",
            met=a_met and b_met,
            margin=f"(a) {hub.restart_s - RESTART_GOAL_S:+.2f} s, "
            f"(b) {hub.takeover_s - takeover_goal:+.2f} s",
        ),
        rows=rows,
        notes=notes,
        measures=[
            Measure(
                "(a) restart -> first answer (s)",
                hub.restart_s,
                _s(hub.restart_s),
                True,
                f"<= {RESTART_GOAL_S:.0f} s",
                a_met,
            ),
            Measure(
                "(b) kill -> takeover answer (s)",
                hub.takeover_s,
                _s(hub.takeover_s),
                True,
                f"<= {takeover_goal:.0f} s",
                b_met,
            ),
            Measure(
                "echo (a) restart -> first answer (s)",
                echo.restart_s,
                _s(echo.restart_s),
                True,
                side="baseline",
            ),
            Measure(
                "echo (b) kill -> takeover answer (s)",
                echo.takeover_s,
                _s(echo.takeover_s),
                True,
                side="baseline",
            ),
        ],
    )
