"""history-collector on real Kafka, a sandbox process and a gateway.

Jobs cover past days (KST), whose sessions are closed for the worker's wall clock and whole in the sandbox
(its clock starts at 15:30 of the latest weekday). The worker runs in this process for the plain runs, and
as ``apihub worker history-collector`` for the crash, so that SIGKILL leaves an open transaction behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime, timedelta
from typing import Any

import orjson
import pytest

from hubclient.market import KST
from services.history.collect import EXIT_DONE, EXIT_FAILED, EXIT_TIMEOUT, collect, make_job, publish
from services.history.records import job_key
from services.sandbox.market import Market
from services.sandbox.settings import SandboxSettings
from services.settings import GatewaySettings, KafkaSettings, WorkerSettings, WorkerTopics
from services.worker.main import run_worker
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import (
    GatewayFactory,
    Topics,
    free_port,
    private_worker_topics,
    read_committed,
    referee,
)

SYMBOLS = ["005930", "000660"]


@pytest.fixture
async def worker_topics(services: Services, unique: str) -> WorkerTopics:
    """This test's own copies of the topics the history-collector reads and writes."""
    fields = ("history_jobs", "history_progress", "candles", "dlq")
    return await private_worker_topics(services.kafka_bootstrap, f"h{unique}", *fields)


@pytest.fixture
def worker_settings(
    services: Services, topics: Topics, worker_topics: WorkerTopics, unique: str
) -> WorkerSettings:
    """A history-collector wired to this test's hub topics and worker topics."""
    return WorkerSettings(
        kafka=KafkaSettings(
            bootstrap_servers=services.kafka_bootstrap,
            request_topic=topics.requests,
            response_topic=topics.responses,
            session_timeout_ms=6000,
        ),
        topics=worker_topics,
        group_id=f"history-{unique}",
        instance_id=f"history-{unique}",
        health_port=free_port(),
        task_deadline_s=120,
    )


def worker_env(settings: WorkerSettings) -> dict[str, str]:
    """The ``APIHUB_*`` environment of a worker or ``apihub history`` process with these settings."""
    kafka, topics = settings.kafka, settings.topics
    return {
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "APIHUB_KAFKA__REQUEST_TOPIC": kafka.request_topic,
        "APIHUB_KAFKA__RESPONSE_TOPIC": kafka.response_topic,
        "APIHUB_KAFKA__SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
        "APIHUB_TOPICS__HISTORY_JOBS": topics.history_jobs,
        "APIHUB_TOPICS__HISTORY_PROGRESS": topics.history_progress,
        "APIHUB_TOPICS__CANDLES": topics.candles,
        "APIHUB_TOPICS__DLQ": topics.dlq,
        "APIHUB_GROUP_ID": settings.group_id or "history-collector",
        "APIHUB_INSTANCE_ID": settings.instance_id,
        "APIHUB_HEALTH_PORT": str(settings.health_port),
        "APIHUB_TASK_DEADLINE_S": str(settings.task_deadline_s),
    }


def past_days(count: int) -> tuple[date, date]:
    """The ``count`` calendar days before today (KST): closed for the worker, whole in the sandbox."""
    last = datetime.now(KST).date() - timedelta(days=1)
    return last - timedelta(days=count - 1), last


def expected_minutes(first: date, last: date) -> dict[str, tuple[int, int, int, int, int]]:
    """The sandbox market's own minute bars of ``SYMBOLS`` over the days, by candle key."""
    settings = SandboxSettings()
    market = Market(settings.market_seed, settings.market_history_start, settings.market_holidays)
    out = {}
    for symbol in SYMBOLS:
        for day in market.trading_days(first, last):
            for bar in market.minute_bars(symbol, day):
                key = f"{symbol}|1m|{bar.start:%Y-%m-%dT%H:%M}"
                out[key] = (bar.open, bar.high, bar.low, bar.close, bar.volume)
    return out


async def job_progress(settings: WorkerSettings, job_id: str) -> dict[str, Any] | None:
    """The latest committed ``job|{job_id}`` record, or None."""
    found = None
    for record in await read_committed(settings.kafka.bootstrap_servers, settings.topics.history_progress):
        if record.key == job_key(job_id).encode():
            found = orjson.loads(record.value)
    return found


async def wait_progress(
    settings: WorkerSettings, job_id: str, until: Callable[[dict[str, Any]], bool], timeout_s: float = 45
) -> dict[str, Any]:
    """Poll the job's committed record until ``until(record)`` holds; returns that record."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = await job_progress(settings, job_id)
        if progress and until(progress):
            return progress
        await asyncio.sleep(0.2)
    raise TimeoutError(f"job {job_id}: its progress did not get there within {timeout_s} s")


def candles_by_key(records: list[Any]) -> dict[str, tuple[int, int, int, int, int]]:
    """Candle records by key as (open, high, low, close, volume)."""
    out = {}
    for record in records:
        v = orjson.loads(record.value)
        out[record.key.decode()] = (v["open"], v["high"], v["low"], v["close"], v["volume"])
    return out


@contextlib.asynccontextmanager
async def worker_in_process(settings: WorkerSettings) -> AsyncIterator[None]:
    """``run_worker("history-collector")`` in this event loop, ready (consuming) when the block starts."""
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker("history-collector", settings, stop))
    ready = asyncio.create_task(processes.wait_http_ok(f"http://127.0.0.1:{settings.health_port}/readyz", 30))
    try:
        await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            ready.cancel()
            running.result()  # the worker's own error
            raise RuntimeError("the worker stopped before it was ready")
        ready.result()
        yield
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


def kis_key(settings: GatewaySettings) -> str:
    """The KIS appkey the gateway uses (the sandbox's referee counts by it)."""
    assert settings.kis.appkey is not None
    return settings.kis.appkey.get_secret_value()


async def test_job_writes_the_sandbox_minutes_and_a_second_run_calls_nothing(
    worker_settings: WorkerSettings,
    gateway: GatewayFactory,
    gateway_settings: GatewaySettings,
    sandbox_url: str,
) -> None:
    """The candles equal the sandbox's minute bars; the same job again (by the CLI) makes no upstream call."""
    first, last = past_days(5)
    expected = expected_minutes(first, last)
    async with gateway(), worker_in_process(worker_settings):
        job = make_job(SYMBOLS, first, last, "1m", "KIS", timeout_s=50)
        stream = io.StringIO()
        assert await collect(worker_settings, job, 50, stream) == EXIT_DONE, stream.getvalue()
        assert "pieces" in stream.getvalue() and "done: job" in stream.getvalue()
        records = await read_committed(
            worker_settings.kafka.bootstrap_servers, worker_settings.topics.candles
        )
        keys = [r.key.decode() for r in records]
        assert len(keys) == len(set(keys)) == len(expected)
        assert candles_by_key(records) == expected
        calls_before = (await referee(sandbox_url, "kis/real", kis_key(gateway_settings)))["by_tr_id"]
        assert calls_before.get("FHKST03010230", 0) >= 2 * 4

        command = await asyncio.create_subprocess_exec(
            *processes.apihub_argv(
                "history",
                "collect",
                "--symbols",
                *SYMBOLS,
                "--from",
                str(first),
                "--to",
                str(last),
                "--timeframe",
                "1m",
                "--timeout",
                "40",
            ),
            cwd=processes.REPO,
            env=processes.clean_env(worker_env(worker_settings)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(command.communicate(), 60)
        assert command.returncode == 0, err.decode()[-2000:]
        assert f"{2 * 5}/{2 * 5} pieces ({2 * 5} held), 0 candles, 0 calls, done" in err.decode()
        calls_after = (await referee(sandbox_url, "kis/real", kis_key(gateway_settings)))["by_tr_id"]
    assert calls_after == calls_before, "a second run of past days makes no upstream call"


async def test_worker_killed_mid_job_resumes_without_duplicates(
    worker_settings: WorkerSettings, gateway: GatewayFactory, gateway_settings: GatewaySettings, unique: str
) -> None:
    """SIGKILL mid-job, restart: the job ends with every candle once and the checkpointed pieces skipped."""
    first, last = past_days(10)
    expected = expected_minutes(first, last)
    env = worker_env(worker_settings)
    argv = processes.apihub_argv("worker", "history-collector")
    log_path = processes.LOG_DIR / f"history-{unique}.log"
    ready = f"http://127.0.0.1:{worker_settings.health_port}/readyz"
    slow_kis = gateway_settings.kis.model_copy(
        update={"rate_per_s": 8.0}
    )  # 4 pages a symbol-day: ~2 a second
    async with gateway(kis=slow_kis):
        worker = await processes.start("history-collector", argv, env=env, log_path=log_path, ready_url=ready)
        try:
            job = make_job(SYMBOLS, first, last, "1m", "KIS", timeout_s=55)
            await publish(worker_settings, job)
            # two symbol-days of candles committed: the kill lands mid-job, after real checkpoints
            before_kill = await wait_progress(worker_settings, job.task_id, lambda p: p["candles"] >= 2 * 391)
            await worker.kill()
            assert before_kill["done"] + before_kill["skipped"] < before_kill["total"], "killed mid-job"
            worker = await processes.start(
                "history-collector", argv, env=env, log_path=log_path, ready_url=ready
            )
            final = await wait_progress(worker_settings, job.task_id, lambda p: p["state"] == "done")
        finally:
            await worker.stop()
    assert final["skipped"] >= before_kill["done"] and final["done"] + final["skipped"] == final["total"]
    records = await read_committed(worker_settings.kafka.bootstrap_servers, worker_settings.topics.candles)
    keys = [r.key.decode() for r in records]
    assert len(keys) == len(set(keys)), "no candle record twice"
    assert candles_by_key(records) == expected


async def test_collect_exits_1_for_a_dead_lettered_job_and_2_at_its_timeout(
    worker_settings: WorkerSettings, gateway: GatewayFactory
) -> None:
    """A job the broker refuses ends the command with 1 and the dead letter's reason; no answer at all, 2."""
    first, last = past_days(1)
    unanswered = make_job(SYMBOLS, first, last, "1d", "KIS", timeout_s=1.5)
    stream = io.StringIO()
    assert await collect(worker_settings, unanswered, 1.5, stream) == EXIT_TIMEOUT  # no worker yet
    assert "timeout: job" in stream.getvalue()
    async with gateway(), worker_in_process(worker_settings):
        refused = make_job(["999999"], first, last, "1d", "KIWOOM", timeout_s=30)  # unknown to Kiwoom
        stream = io.StringIO()
        assert await collect(worker_settings, refused, 30, stream) == EXIT_FAILED, stream.getvalue()
    assert "was dead-lettered: refused:business_error" in stream.getvalue()
