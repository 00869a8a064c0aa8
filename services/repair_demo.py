"""The repair loop of ``make run`` (``apihub demo``): feed, history, verification, recovery, re-verification.

One run has its own topics (``demo-{run}.market.ticks``, ...) and starts its own three worker processes
(``apihub worker NAME``) on them, so every run starts from nothing and finds what it injected; the hub
(``api.requests``/``api.responses``) and the gateway are the stack's. The market feed publishes one
session of ``SYMBOLS`` with random gaps and corrupted trades; history-collector fills the minute candles;
every ``WINDOW_MINUTES`` window of every symbol is sent for verification; the workers find, repair and
re-verify on their own. Counts are in damaged symbol-minutes, the unit verification judges:

- injected: minutes the feed left out or published a corrupted trade in (the feed's own plan);
- found: minutes the first verification of each window reported as a problem;
- repaired: problem minutes covered by a recovered window on ``market.ticks.recovered``;
- verified: windows whose every minute is, in the end, confirmed by a verification result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hubclient.market import KST
from services.sandbox.feed import FeedReport, publish_day
from services.sandbox.settings import FeedSettings, SandboxSettings
from services.settings import ClientSettings, WorkerTopics
from services.topics import ensure_topics, load_topics
from services.worker.main import WORKERS

SYMBOLS = ("005930", "000660", "035420")
WINDOW_MINUTES = 30
FIRST_MINUTE = 9 * 60  # 09:00
LAST_MINUTE = 15 * 60 + 30  # 15:30, the closing auction's bar
GAP_RATE = 0.02
CORRUPT_RATE = 0.002
SEED = 41
LOOP_TIMEOUT_S = 300.0
LOG_DIR = Path(".local/logs")


def hhmm(minute: int) -> str:
    """Minutes since midnight as HH:MM."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def minute_of(text: str) -> int:
    """HH:MM (or HH:MM:SS) as minutes since midnight."""
    return int(text[:2]) * 60 + int(text[3:5])


def windows() -> list[tuple[int, int]]:
    """The session's verification windows, [start, end) in minutes; the last one takes the 15:30 bar."""
    starts = list(range(FIRST_MINUTE, LAST_MINUTE, WINDOW_MINUTES))
    return [
        (s, min(s + WINDOW_MINUTES, LAST_MINUTE + 1) if s == starts[-1] else s + WINDOW_MINUTES)
        for s in starts
    ]


def run_topics(run: str) -> WorkerTopics:
    """The worker topics of one demo run."""
    declared = WorkerTopics()
    return WorkerTopics(**{name: f"demo-{run}.{topic}" for name, topic in declared.model_dump().items()})


def injected_minutes(report: FeedReport) -> set[tuple[str, int]]:
    """(symbol, minute) the feed damaged: every minute of a gap, the minute of every corrupted trade."""
    damaged: set[tuple[str, int]] = set()
    for symbol, gaps in report.skipped_by_gap.items():
        for gap in gaps:
            damaged.update((symbol, m) for m in range(minute_of(gap.start), minute_of(gap.end)))
    for symbol, items in report.corrupted.items():
        for item in items:
            local = datetime.fromtimestamp(item.ts_ms / 1000, tz=KST)
            damaged.add((symbol, local.hour * 60 + local.minute))
    return damaged


@dataclass
class LoopState:
    """What the results and recovered windows said so far."""

    first: dict[tuple[str, int], set[int]] = field(default_factory=dict)  # window -> problem minutes
    confirmed: dict[tuple[str, int], set[int]] = field(default_factory=dict)  # window -> confirmed minutes
    bad_later: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    repaired: set[tuple[str, int]] = field(default_factory=set)
    results: int = 0

    def window_of(self, symbol: str, minute: int) -> tuple[str, int]:
        """The demo window holding ``minute``."""
        for start, end in windows():
            if start <= minute < end:
                return symbol, start
        raise ValueError(f"{hhmm(minute)} is outside the session")

    def take_result(self, value: dict[str, Any]) -> None:
        """Fold one verification result in."""
        self.results += 1
        symbol, start, end = value["symbol"], minute_of(value["start"]), minute_of(value["end"])
        bad = {
            m for p in value.get("problems", []) for m in range(minute_of(p["start"]), minute_of(p["end"]))
        }
        for minute in range(start, end):
            window = self.window_of(symbol, minute)
            if minute in bad:
                self.bad_later.setdefault(window, set()).add(minute)
            else:
                self.confirmed.setdefault(window, set()).add(minute)
                self.bad_later.get(window, set()).discard(minute)
        if value.get("round") == 1:
            self.first[(symbol, start)] = bad

    def take_recovered(self, value: dict[str, Any]) -> None:
        """Fold one recovered window in."""
        symbol = value["symbol"]
        self.repaired.update((symbol, m) for m in range(minute_of(value["start"]), minute_of(value["end"])))

    def found(self) -> set[tuple[str, int]]:
        """(symbol, minute) the first verification reported."""
        return {(symbol, m) for (symbol, _), minutes in self.first.items() for m in minutes}

    def verified(self) -> int:
        """Windows every minute of which is confirmed and none still reported bad."""
        count = 0
        for start, end in windows():
            for symbol in SYMBOLS:
                window = (symbol, start)
                if not self.bad_later.get(window) and self.confirmed.get(window, set()) >= set(
                    range(start, end)
                ):
                    count += 1
        return count

    def settled(self) -> bool:
        """Every first result is in and no window still has a minute reported bad."""
        return len(self.first) == len(SYMBOLS) * len(windows()) and not any(self.bad_later.values())


def _log_file(name: str) -> BinaryIO:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return (LOG_DIR / name).open("ab")


@contextlib.asynccontextmanager
async def worker_processes(bootstrap: str, topics: WorkerTopics, run: str) -> AsyncIterator[list[Any]]:
    """The three workers as ``apihub worker NAME`` processes on this run's topics; stopped on exit."""
    children = []
    for name in WORKERS:
        env = {
            **os.environ,
            "APIHUB_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "APIHUB_GROUP_ID": f"{name}.demo-{run}",
            "APIHUB_INSTANCE_ID": f"demo-{run}",
            "APIHUB_HEALTH_PORT": "0",
            **{f"APIHUB_TOPICS__{key.upper()}": value for key, value in topics.model_dump().items()},
        }
        log = _log_file(f"demo-{run}-{name}.log")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "worker", name, env=env, stdout=log, stderr=log
        )
        children.append((child, log))
    try:
        yield [child for child, _ in children]
    finally:
        for child, log in children:
            if child.returncode is None:
                child.terminate()
                try:
                    await asyncio.wait_for(child.wait(), 20)
                except TimeoutError:
                    child.kill()
                    await child.wait()
            log.close()


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


async def run_repair_loop(settings: ClientSettings, *, run: str | None = None) -> RepairSummary:
    """Run the whole loop once on fresh topics and return its summary."""
    run = run or uuid.uuid4().hex[:8]
    bootstrap = settings.kafka.bootstrap_servers
    topics = run_topics(run)
    rename = {
        declared: mine
        for declared, mine in zip(
            WorkerTopics().model_dump().values(), topics.model_dump().values(), strict=True
        )
    }
    await ensure_topics(bootstrap, [s for s in load_topics(rename=rename) if s.name in rename.values()])
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
    report = await publish_day(base.model_copy(update={"feed": feed}), bootstrap)
    day = report.day.isoformat()
    state = LoopState()
    async with worker_processes(bootstrap, topics, run):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
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
        await follow(bootstrap, topics, state, started + LOOP_TIMEOUT_S)
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


async def follow(bootstrap: str, topics: WorkerTopics, state: LoopState, deadline_s: float) -> None:
    """Read results and recovered windows until the loop settles or the deadline passes."""
    consumer = AIOKafkaConsumer(
        topics.verification_results,
        topics.ticks_recovered,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
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
