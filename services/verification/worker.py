"""``VerificationConsumer``: the verification-worker's handler, and ``build`` for ``apihub worker``.

For each task (one symbol-day window): catch the collected trades up to the end of ``market.ticks`` and
``market.ticks.recovered`` as of the task's start, fetch the window's minute bars from KIS and Kiwoom at
the same time (each walk retried with backoff inside the task's deadline), judge the minutes
(``policy.judge``) and add one result and a recovery task per problem to the task's outputs, which the
runtime commits with the task's offset in one transaction. A broker that keeps failing gives the task up
(``TaskFailed``, dead-lettered by the runtime); a verdict is never written on partial data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import date, datetime
from typing import Any

from aiokafka.errors import KafkaError

from hubclient import HubClient
from hubclient.market import KST
from services.kafka_client import client_kwargs
from services.logs import log_event
from services.settings import WorkerSettings
from services.verification import records
from services.verification.brokers import MinuteQuery, Walk, fetch_bars, kis_walk, kiwoom_walk
from services.verification.minutes import MinuteBar
from services.verification.policy import Verdict, judge
from services.verification.task import VerificationTask
from services.verification.tick_store import TickSource, TickStore
from services.worker.errors import MalformedTask, TaskFailed
from services.worker.outputs import Outputs
from services.worker.retry import Retrier
from services.worker.runtime import Handler
from services.worker.task import Task, parse_task, refuse_future_day

logger = logging.getLogger(__name__)

NAME = "verification-worker"
#: Longest wait for the collected trades to catch up before a task is given up, seconds.
CATCH_UP_S = 30.0


def kst_today() -> date:
    """Today's date by the KST wall clock."""
    return datetime.now(KST).date()


async def together(*coros: Coroutine[Any, Any, Any]) -> list[Any]:
    """Run ``coros`` at once; the first failure cancels the rest and is raised as it is (no group)."""
    tasks = [asyncio.create_task(coro) for coro in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class VerificationConsumer:
    """Checks windows of collected minutes against KIS and Kiwoom (the ``Handler`` of the worker)."""

    name = NAME

    def __init__(
        self,
        settings: WorkerSettings,
        hub: HubClient,
        *,
        ticks: TickSource | None = None,
        today: Callable[[], date] = kst_today,
        retrier: Retrier | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        topics = settings.topics
        self.task_topic = topics.verification_tasks
        self._settings = settings
        self._hub = hub
        self._ticks: TickSource = ticks or TickStore(
            settings.kafka.bootstrap_servers,
            feed_topic=topics.ticks,
            recovered_topic=topics.ticks_recovered,
            client_id=f"{NAME}-ticks",
            client_options=client_kwargs(settings.kafka),
        )
        self._today = today
        self._retrier = retrier or Retrier(NAME, call_timeout_s=settings.call_timeout_s)
        self._monotonic = monotonic

    async def start(self) -> None:
        """Start reading the collected trades, and read what the topics hold before the first task.

        After a restart the book is empty and the topics hold a week of trades, minutes of reading for a
        busy feed, while a task's own catch-up has ``CATCH_UP_S`` at most: the first tasks would each read
        30 s more and be dead-lettered ``ticks_behind`` one after another. So the backlog is read here, in
        turns of ``CATCH_UP_S`` (each keeps what it read), before the worker is ready."""
        await self._ticks.start()
        read = 0
        while True:
            try:
                read += await self._ticks.catch_up(CATCH_UP_S)
            except TaskFailed as behind:
                if isinstance(behind.__cause__, KafkaError):  # said as any worker's start without Kafka is
                    raise behind.__cause__ from None
                if behind.reason != "ticks_behind":
                    raise
                log_event(logger, "verification.ticks_loading", logging.INFO, error=str(behind))
                continue
            break
        log_event(logger, "verification.ticks_loaded", records=read)

    async def stop(self) -> None:
        """Stop reading them."""
        await self._ticks.stop()

    def parse(self, value: bytes | None) -> VerificationTask:
        """The task in a ``verification.tasks`` value; ``MalformedTask`` otherwise."""
        return parse_task(VerificationTask, value)

    async def handle(self, task: Task, out: Outputs) -> None:
        """Verify one window and add its result (and recovery tasks) to ``out``."""
        if not isinstance(task, VerificationTask):
            raise MalformedTask(f"not a verification task: {type(task).__name__}")
        today = self._today()
        refuse_future_day(task.day, today)
        deadline_s = task.deadline_s(self._settings.task_deadline_s)
        if deadline_s <= self._monotonic():  # said as the retrier says it, not as a catch-up cut to nothing
            raise TaskFailed("the task's deadline passed before it could start", reason="gave_up")
        query = MinuteQuery(task.symbol, task.day, task.window, today=task.day == today)
        catch_up_s = min(CATCH_UP_S, deadline_s - self._monotonic())
        _, kis, kiwoom = await together(
            self._ticks.catch_up(catch_up_s),
            self._fetch(kis_walk(query), query, deadline_s),
            self._fetch(kiwoom_walk(query), query, deadline_s),
        )
        verdict = judge(query.window, self._ticks.bars(task.symbol, task.day, query.window), kis, kiwoom)
        topics = self._settings.topics
        out.add(topics.verification_results, task.task_id, records.result(task, verdict))
        for recovery in records.recovery_tasks(task, verdict):
            out.add(topics.recovery_tasks, recovery["task_id"], recovery)
        self._log(task, verdict)

    def _fetch(
        self, walk: Walk, query: MinuteQuery, deadline_s: float
    ) -> Coroutine[Any, Any, dict[int, MinuteBar]]:
        """The window's bars from one broker, the walk retried while its errors are retriable."""

        def attempt(timeout_s: float) -> Awaitable[dict[int, MinuteBar]]:
            max_s = max(timeout_s, deadline_s - self._monotonic())
            return fetch_bars(self._hub, walk, query, timeout_s=timeout_s, max_s=max_s)

        return self._retrier.call(f"{walk.provider} {walk.tr_id}", deadline_s, attempt)

    @staticmethod
    def _log(task: VerificationTask, verdict: Verdict) -> None:
        log_event(
            logger,
            "verification.checked",
            task_id=task.task_id,
            symbol=task.symbol,
            day=task.day.isoformat(),
            window=task.window.label,
            round=task.round,
            status=verdict.status,
            minutes=verdict.minutes,
            problems=len(verdict.problems),
            disagreements=len(verdict.disagreements),
        )


def build(settings: WorkerSettings, hub: HubClient) -> Handler:
    """The verification-worker's handler (``apihub worker verification-worker``)."""
    return VerificationConsumer(settings, hub)
