"""``apihub history collect``: publish a history job, then follow its progress with a bar on stderr.

The command opens a reader on ``history.progress`` and ``workers.dlq`` at their ends (``read_committed``,
no consumer group), publishes the job to ``history.jobs`` (key = its fresh ``task_id``, ``deadline_ms`` =
now + ``--timeout``, so the worker gives up when the command does) and draws each ``job|{job_id}``
record as a bar until the job is ``done`` (exit 0), a dead letter for it appears (exit 1, its reason
printed) or the timeout passes (exit 2). Arguments are checked with the worker's own ``HistoryJob`` rules
before anything is sent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.history.job import HistoryJob, parse_job
from services.history.records import job_key
from services.kafka_client import client_kwargs
from services.settings import WorkerSettings
from services.worker.errors import MalformedTask
from services.worker.reader import open_reader

EXIT_DONE, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2
BAR_WIDTH = 30
POLL_MS = 200
QUIET_S = 10.0  # no word of the job this long: say what may be wrong (the wait goes on)


def new_job_id() -> str:
    """A fresh job id (``history-`` and 32 hex digits)."""
    return f"history-{uuid.uuid4().hex}"


def make_job(
    symbols: list[str],
    first: date,
    last: date,
    timeframe: str,
    provider: str,
    *,
    timeout_s: float,
    job_id: str | None = None,
    now_s: float | None = None,
) -> HistoryJob:
    """The job the arguments describe, due ``timeout_s`` from now; ``MalformedTask`` names a bad one."""
    wall = time.time() if now_s is None else now_s
    value = {
        "task_id": job_id or new_job_id(),
        "deadline_ms": int((wall + timeout_s) * 1000),
        "symbols": symbols,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "timeframe": timeframe,
        "provider": provider,
    }
    try:
        return parse_job(orjson.dumps(value))
    except MalformedTask as exc:  # the task's wording, minus pydantic's prefixes, for a person
        text = str(exc).replace("(the record): ", "").replace("Value error, ", "")
        raise MalformedTask(text) from exc


def render_bar(progress: dict[str, Any], width: int = BAR_WIDTH) -> str:
    """One line for a ``kind: "job"`` record: a bar of the pieces finished (fetched or held), the counts."""
    total = int(progress.get("total", 0))
    finished = int(progress.get("done", 0)) + int(progress.get("skipped", 0))
    filled = width if total == 0 else min(width, width * finished // total)
    bar = "#" * filled + "-" * (width - filled)
    held, candles, calls = progress.get("skipped", 0), progress.get("candles", 0), progress.get("calls", 0)
    state = progress.get("state", "?")
    return f"[{bar}] {finished}/{total} pieces ({held} held), {candles} candles, {calls} calls, {state}"


@dataclass
class Outcome:
    """How following a job ended: the exit code, the last job record seen, and the error if it failed."""

    code: int
    progress: dict[str, Any] | None = None
    error: str = ""


class JobFollower:
    """Reads the job's progress records and dead letters from the end of both topics."""

    def __init__(self, settings: WorkerSettings, job_id: str) -> None:
        self._settings = settings
        self._job_id = job_id
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Assign every partition of both topics at their current end (resolved before the job is sent)."""
        topics = self._settings.topics
        consumer = await open_reader(
            self._settings.kafka.bootstrap_servers,
            [topics.history_progress, topics.dlq],
            client_id="apihub-history-collect",
            client_options=client_kwargs(self._settings.kafka),
        )
        try:
            partitions = sorted(consumer.assignment())
            await consumer.seek_to_end(*partitions)
            for tp in partitions:
                await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def follow(
        self,
        timeout_s: float,
        on_progress: Callable[[dict[str, Any]], None],
        on_quiet: Callable[[], None] = lambda: None,
    ) -> Outcome:
        """Until the job is done, dead-lettered or ``timeout_s`` seconds have passed; ``on_quiet`` once when
        ``QUIET_S`` passed without a word of it."""
        if self._consumer is None:
            raise RuntimeError("start the JobFollower before following")
        topics = self._settings.topics
        key = job_key(self._job_id)
        deadline = time.monotonic() + timeout_s
        quiet_at: float | None = time.monotonic() + QUIET_S
        last: dict[str, Any] | None = None
        while (left_s := deadline - time.monotonic()) > 0:
            if quiet_at is not None and last is None and time.monotonic() >= quiet_at:
                on_quiet()
                quiet_at = None
            batch = await self._consumer.getmany(timeout_ms=max(1, min(POLL_MS, int(left_s * 1000))))
            for records in batch.values():
                for record in records:
                    name = record.key.decode(errors="replace") if record.key else ""
                    if record.topic == topics.history_progress and name == key and record.value:
                        last = orjson.loads(record.value)
                        on_progress(last)
                        if last.get("state") == "done":
                            return Outcome(EXIT_DONE, last)
                    elif record.topic == topics.dlq and name == self._job_id and record.value:
                        letter = orjson.loads(record.value)
                        return Outcome(EXIT_FAILED, last, f"{letter.get('reason')}: {letter.get('error')}")
        return Outcome(EXIT_TIMEOUT, last, f"no end within {timeout_s:g} s")


async def publish(settings: WorkerSettings, job: HistoryJob) -> None:
    """Send ``job`` to ``history.jobs`` (key = its ``task_id``) and wait for the broker's acknowledgement."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        client_id="apihub-history-collect",
        **client_kwargs(settings.kafka),
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topics.history_jobs, orjson.dumps(job.as_json()), key=job.task_id.encode()
        )
    finally:
        await producer.stop()


async def collect(settings: WorkerSettings, job: HistoryJob, timeout_s: float, stream: TextIO) -> int:
    """Publish ``job``, draw its progress on ``stream``; the exit code is 0 done, 1 failed, 2 timeout."""
    follower = JobFollower(settings, job.task_id)
    await follower.start()
    live = stream.isatty()
    drawn = ""

    def draw(progress: dict[str, Any]) -> None:
        nonlocal drawn
        line = render_bar(progress)
        if line != drawn:
            stream.write(f"\r{line}" if live else f"{line}\n")
            stream.flush()
            drawn = line

    def quiet() -> None:
        stream.write(
            f"no progress after {QUIET_S:g} s: is history-collector running (make up starts it, "
            f"apihub status shows it)? Still waiting, up to --timeout {timeout_s:g} s\n"
        )
        stream.flush()

    try:
        await publish(settings, job)
        stream.write(f"job {job.task_id} sent to {settings.topics.history_jobs}\n")
        outcome = await follower.follow(timeout_s, draw, quiet)
    finally:
        await follower.stop()
    if live and drawn:
        stream.write("\n")
    if outcome.code == EXIT_DONE:
        stream.write(f"done: job {job.task_id}\n")
    elif outcome.code == EXIT_FAILED:
        stream.write(f"failed: job {job.task_id} was dead-lettered: {outcome.error}\n")
    else:
        stream.write(f"timeout: job {job.task_id}: {outcome.error}\n")
    stream.flush()
    return outcome.code


def run_collect(settings: WorkerSettings, job: HistoryJob, timeout_s: float, stream: TextIO) -> int:
    """``collect`` in its own event loop (for the command line)."""
    return asyncio.run(collect(settings, job, timeout_s, stream))
