"""The repair loop of ``make run`` (``apihub demo``): feed, history, verification, recovery, re-verification.

One run has its own topics (``demo-{run}.market.ticks``, ...) and starts its own three worker processes
(``apihub worker NAME``) on them, so every run starts from nothing and finds what it injected; the hub
(``api.requests``/``api.responses``) and the gateway are the stack's. The market feed publishes one
session of ``SYMBOLS`` with random gaps and corrupted trades; history-collector fills the minute candles;
every ``WINDOW_MINUTES`` window of every symbol is sent for verification; the workers find, repair and
re-verify on their own, and ``follow`` folds their results into the ``tally`` until the loop settles.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.demo.tally import LoopState, hhmm, injected_minutes, windows
from services.kafka_client import client_kwargs, security_env
from services.sandbox.feed import publish_day
from services.sandbox.settings import FeedSettings, SandboxSettings
from services.settings import ClientSettings, WorkerTopics
from services.topics import ensure_topics, load_topics
from services.worker.fleet import WorkerFleet

SYMBOLS = ("005930", "000660", "035420")
GAP_RATE = 0.02
CORRUPT_RATE = 0.002
SEED = 41
LOOP_TIMEOUT_S = 300.0
LOG_DIR = Path(".local/logs")


def run_topics(run: str) -> WorkerTopics:
    """The worker topics of one demo run."""
    declared = WorkerTopics()
    return WorkerTopics(**{name: f"demo-{run}.{topic}" for name, topic in declared.model_dump().items()})


async def publish(producer: AIOKafkaProducer, topic: str, key: str, value: dict[str, Any]) -> None:
    """One JSON task."""
    await producer.send_and_wait(topic, orjson.dumps(value), key=key.encode())


@dataclass
class RepairSummary:
    """The numbers of the repair-loop line."""

    injected: int
    found: int
    repaired: int
    verified: int
    windows: int
    seconds: float
    settled: bool
    run: str

    def line(self) -> str:
        """The summary line, in exactly the documented form."""
        return (
            f"repair loop: injected {self.injected}, found {self.found}, repaired {self.repaired}, "
            f"verified {self.verified} of {self.windows} windows"
        )


#: Something done to the running loop, e.g. a test killing a worker once the first results are in.
Chaos = Callable[[WorkerFleet, "LoopState"], Awaitable[None]]


async def run_repair_loop(
    settings: ClientSettings,
    *,
    run: str | None = None,
    chaos: Chaos | None = None,
    timeout_s: float = LOOP_TIMEOUT_S,
) -> RepairSummary:
    """Run the whole loop once on fresh topics and return its summary; ``chaos`` runs beside it."""
    run = run or uuid.uuid4().hex[:8]
    bootstrap = settings.kafka.bootstrap_servers
    security = client_kwargs(settings.kafka)  # every client of the loop connects as the demo's principal
    topics = run_topics(run)
    rename = {
        declared: mine
        for declared, mine in zip(
            WorkerTopics().model_dump().values(), topics.model_dump().values(), strict=True
        )
    }
    specs = [s for s in load_topics(rename=rename) if s.name in rename.values()]
    await ensure_topics(bootstrap, specs, client_kwargs=security)
    started = time.monotonic()
    base = SandboxSettings()
    feed = FeedSettings.model_validate(
        {
            **base.feed.model_dump(),
            "bootstrap_servers": bootstrap,
            "topic": topics.ticks,
            "symbols": list(SYMBOLS),
            "gap_rate": GAP_RATE,
            "corrupt_rate": CORRUPT_RATE,
            "seed": SEED,
            "speed": 0.0,
        }
    )
    report = await publish_day(base.model_copy(update={"feed": feed}), bootstrap, client_options=security)
    day = report.day.isoformat()
    state = LoopState(SYMBOLS)
    kafka = settings.kafka
    env = {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "APIHUB_KAFKA__REQUEST_TOPIC": kafka.request_topic,
        "APIHUB_KAFKA__RESPONSE_TOPIC": kafka.response_topic,
        "APIHUB_INSTANCE_ID": f"demo-{run}",
        **security_env(kafka),  # the workers run as the same principal (a child's environment only)
        **{f"APIHUB_TOPICS__{key.upper()}": value for key, value in topics.model_dump().items()},
    }
    fleet = WorkerFleet(env, log_dir=LOG_DIR, prefix=f"demo-{run}", group_suffix=f".demo-{run}")
    await fleet.start_all()
    try:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **security
        )
        await producer.start()
        try:
            job = f"history|demo-{run}"
            await publish(
                producer,
                topics.history_jobs,
                job,
                {"task_id": job, "symbols": list(SYMBOLS), "from": day, "to": day, "timeframe": "1m"},
            )
            for symbol in SYMBOLS:
                for start, end in windows():
                    task_id = f"verify|{symbol}|{day}|{hhmm(start)}-{hhmm(end)}|r1"
                    await publish(
                        producer,
                        topics.verification_tasks,
                        task_id,
                        {
                            "task_id": task_id,
                            "symbol": symbol,
                            "day": day,
                            "start": hhmm(start),
                            "end": hhmm(end),
                            "round": 1,
                        },
                    )
        finally:
            await producer.stop()
        deadline_s = started + timeout_s
        if chaos is None:
            await follow(bootstrap, topics, state, deadline_s, security)
        else:
            await asyncio.gather(follow(bootstrap, topics, state, deadline_s, security), chaos(fleet, state))
    finally:
        await fleet.stop()
    found = state.found()
    return RepairSummary(
        injected=len(injected_minutes(report)),
        found=len(found),
        repaired=len(found & state.repaired),
        verified=state.verified(),
        windows=len(SYMBOLS) * len(windows()),
        seconds=time.monotonic() - started,
        settled=state.settled(),
        run=run,
    )


async def follow(
    bootstrap: str,
    topics: WorkerTopics,
    state: LoopState,
    deadline_s: float,
    client_options: dict[str, Any] | None = None,
) -> None:
    """Read results and recovered windows until the loop settles or the deadline passes."""
    consumer = AIOKafkaConsumer(
        topics.verification_results,
        topics.ticks_recovered,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **(client_options or {}),
    )
    await consumer.start()
    try:
        while time.monotonic() < deadline_s and not state.settled():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    value = orjson.loads(record.value)
                    if record.topic == topics.ticks_recovered:
                        state.take_recovered(value)
                    else:
                        state.take_result(value)
    finally:
        await consumer.stop()


async def sandbox_stats(url: str | None) -> dict[str, Any]:
    """The sandbox referee's report per environment (``{}`` without a sandbox URL or on error)."""
    if not url:
        return {}
    import aiohttp  # the demo driver is no worker; it reads the referee like an operator would

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/_sandbox/stats", timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}
    environments: dict[str, Any] = body.get("environments", {})
    return environments


def pacing_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Calls per provider during the loop and the referee's pacing figures, one line per environment."""
    lines = []
    for name, now in sorted(after.items()):
        calls = now.get("requests", 0) - before.get(name, {}).get("requests", 0)
        if calls <= 0:
            continue
        most, limit, over = now.get("max_in_window", 0), now.get("rate_per_s"), now.get("over_limit", 0)
        lines.append(
            f"  {name:12} {calls:5d} calls; the sandbox referee counted at most {most} in any sliding "
            f"second (limit {limit}/s), {over} over the limit since it started"
        )
    return lines or ["  (the sandbox referee was not reachable: set SANDBOX_URL to see calls and pacing)"]


async def run_and_report(settings: ClientSettings, sandbox_url: str | None) -> int:
    """Run the loop, print its line, the calls and pacing per provider and where to look; 0 when all held."""
    before = await sandbox_stats(sandbox_url)
    summary = await run_repair_loop(settings)
    after = await sandbox_stats(sandbox_url)
    print(summary.line())
    print(f"  in {summary.seconds:.1f} s; calls per provider and their pacing:")
    print("\n".join(pacing_lines(before, after)))
    topics = run_topics(summary.run)
    print(
        "  in Kafka: "
        f"{topics.verification_results} (one result per verification), {topics.recovery_tasks}, "
        f"{topics.ticks_recovered}, {topics.candles}, {topics.history_progress}, {topics.dlq}"
    )
    if not summary.settled:
        print(
            f"  the loop had not settled after {LOOP_TIMEOUT_S:.0f} s; "
            f"see .local/logs/demo-{summary.run}-*.log"
        )
    ok = summary.settled and summary.injected == summary.found == summary.repaired
    return 0 if ok and summary.verified == summary.windows else 1
