"""Scenario (b): each worker (history, verification, recovery) killed with SIGKILL in the middle of its work,
while four callers load the hub at 80 % of the KIS key."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from services.demo.repair import run_repair_loop, run_topics
from services.demo.tally import LoopState
from services.settings import GatewaySettings
from services.worker.fleet import WorkerFleet
from tests.chaos.gateways import gateway_fleet
from tests.chaos.load import LoadPlan, LoadResult, conclude, drive
from tests.conftest import Services
from tests.integration.conftest import Topics, appkey
from tests.integration.test_repair_loop import assert_complete, client_settings, read_topic

LOOP_TIMEOUT_S = 170.0
WORKERS = ("history-collector", "verification-worker", "recovery-worker")


async def outputs_twice(bootstrap: str, run: str) -> tuple[list[str], int]:
    """Output records of the run committed more than once: keys seen twice on the result topics, ``day``
    records seen twice on the progress topic, and any dead letter (as problems); and, apart, how many job
    progress records repeat the one before them under the same key (a job redone from the start after a
    kill re-commits its ``running`` checkpoint: the same state again under a compacted key)."""
    topics = run_topics(run)
    problems: list[str] = []
    for topic in (topics.candles, topics.verification_results, topics.recovery_tasks, topics.ticks_recovered):
        keys = Counter(key for key, _ in await read_topic(bootstrap, topic))
        twice = [key for key, count in keys.items() if count > 1]
        if not keys or twice:
            problems.append(f"{topic}: {len(keys)} keys, twice: {twice[:3]}")
    progress = await read_topic(bootstrap, topics.history_progress)
    days = Counter((k, v) for k, v in progress if orjson.loads(v).get("kind") == "day")
    problems += [f"progress day record twice: {k}" for (k, _), n in days.items() if n > 1]
    last: dict[str, bytes] = {}
    repeated = 0
    for key, value in progress:
        if orjson.loads(value).get("kind") == "job":
            repeated += last.get(key) == value
            last[key] = value
    letters = [value[:200] for _, value in await read_topic(bootstrap, topics.dlq)]
    problems += [f"dead letter: {letter!r}" for letter in letters]
    return problems, repeated


async def job_done(bootstrap: str, run: str, timeout_s: float) -> float:
    """Wait until the run's history job committed its ``done`` record; returns the seconds waited."""
    started = time.monotonic()
    topic = run_topics(run).history_progress
    while time.monotonic() - started < timeout_s:
        for _, value in await read_topic(bootstrap, topic):
            data = orjson.loads(value)
            if data.get("kind") == "job" and data.get("state") == "done":
                return time.monotonic() - started
        await asyncio.sleep(1.0)
    raise AssertionError(f"the history job of {run} was not done within {timeout_s:.0f} s")


def answered_by(log: Path) -> Counter[str]:
    """Answers the gateway logged per caller so far."""
    counts: Counter[str] = Counter()
    if not log.exists():
        return counts
    for line in log.read_bytes().splitlines():
        if b'"request.answered"' in line:
            counts[str(orjson.loads(line).get("caller"))] += 1
    return counts


async def busy(log: Path, caller: str, at_least: int, timeout_s: float) -> int:
    """Wait until ``caller`` has had ``at_least`` answers and got another within the last half second (it is
    in the middle of a task: a task makes several calls); returns its answers so far."""
    deadline = time.monotonic() + timeout_s
    before = await asyncio.to_thread(answered_by, log)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = await asyncio.to_thread(answered_by, log)
        if now[caller] >= at_least and now[caller] > before[caller]:
            return now[caller]
        before = now
    raise AssertionError(f"{caller} made no calls within {timeout_s:.0f} s (answers {before[caller]})")


@pytest.mark.timeout(300)
async def test_each_worker_sigkilled_mid_task(
    services: Services, topics: Topics, gateway_settings: GatewaySettings, sandbox_url: str
) -> None:
    """The repair loop with each of its three workers killed with SIGKILL while it is calling the hub (and
    started again), beside 60 s of load: the loop completes (every injected minute found, repaired and
    verified), no worker output twice and no dead letter, and the load's zeros hold."""
    kills: list[str] = []
    run = uuid.uuid4().hex[:8]
    plan = LoadPlan(fraction=0.8, seconds=60, callers=4, timeout_s=90)
    # ok answers are logged at debug: the gateway logs them here, so each worker's calls can be seen
    async with gateway_fleet(gateway_settings, 1, {"APIHUB_LOG_LEVEL": "DEBUG"}) as fleet_of_one:
        log = fleet_of_one.log_path(0)
        load = asyncio.create_task(
            drive(
                services.kafka_bootstrap,
                topics.requests,
                topics.responses,
                sandbox_url,
                appkey(gateway_settings),
                plan,
            )
        )

        async def chaos(fleet: WorkerFleet, state: LoopState) -> None:
            for name in WORKERS:
                answers = await busy(log, name, at_least=3, timeout_s=120)
                await fleet.restart(name)  # SIGKILL, then started again under the same name
                kills.append(f"{name} after {answers} answers")
            await job_done(services.kafka_bootstrap, run, timeout_s=120)  # the redone job completes too

        summary = await run_repair_loop(
            client_settings(gateway_settings), run=run, chaos=chaos, timeout_s=LOOP_TIMEOUT_S
        )
        result: LoadResult = await load
    problems, repeated = await outputs_twice(gateway_settings.kafka.bootstrap_servers, summary.run)
    conclude(
        result,
        "worker-sigkill",
        "SIGKILL of history, verification and recovery workers mid-task, repair loop beside the load",
        [
            "killed: " + ", ".join(kills),
            summary.line() + f" in {summary.seconds:.0f} s",
            f"{len(problems)} output record(s) twice or dead-lettered; "
            f"{repeated} job checkpoint(s) re-committed unchanged by a redone job",
            "the workers' own KIS calls come on top of the load (above the key's rate, answers may wait)",
        ],
    )
    assert len(kills) == len(WORKERS), kills
    assert_complete(summary)
    assert problems == [], problems
