"""``BackfillManager``: the recovery-worker's handler for the runtime's ``TaskLoop``.

For each ``RecoveryTask`` it fetches the trades covering the window (``fetch.TradeFetcher``), keeps those in
``[start, end)`` numbered within their second (``tape.window_trades``) and adds to the task's outputs the
window on ``market.ticks.recovered`` (several records when its trades pass ``records.WINDOW_BYTES``) and
the next round's verification task on ``verification.tasks``. The runtime commits them with the task's
offset in one transaction, so a redone task writes the same keys and values again. It holds nothing
between tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime

from hubclient import HubClient
from hubclient.market import KST
from services.logs import log_event
from services.recovery.fetch import DEFAULT_MAX_PAGES, TradeFetcher
from services.recovery.records import (
    reverify_task_id,
    reverify_value,
    window_key,
    window_records,
    window_value,
)
from services.recovery.tape import window_trades
from services.recovery.task import RecoveryTask
from services.settings import WorkerSettings
from services.worker.outputs import Outputs
from services.worker.retry import Retrier
from services.worker.task import Task, parse_task, refuse_future_day

logger = logging.getLogger(__name__)

NAME = "recovery-worker"


def kst_today() -> date:
    """Today's date in KST by this host's clock."""
    return datetime.now(KST).date()


class BackfillManager:
    """Refetches the trades of a window and asks for it to be verified again."""

    name = NAME

    def __init__(
        self,
        settings: WorkerSettings,
        hub: HubClient,
        *,
        retrier: Retrier | None = None,
        today: Callable[[], date] = kst_today,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        self.task_topic = settings.topics.recovery_tasks
        self._settings = settings
        retrier = retrier or Retrier(NAME, call_timeout_s=settings.call_timeout_s)
        self._today = today
        self._fetcher = TradeFetcher(hub, retrier, today=today, max_pages=max_pages)

    async def start(self) -> None:
        """Nothing to load: every task stands alone."""

    async def stop(self) -> None:
        """Nothing to release."""

    def parse(self, value: bytes | None) -> RecoveryTask:
        """The ``RecoveryTask`` in a record's value; ``MalformedTask`` otherwise."""
        return parse_task(RecoveryTask, value)

    async def handle(self, task: Task, out: Outputs) -> None:
        """Fetch the window's trades and add the window's records and the re-verification task to ``out``."""
        if not isinstance(task, RecoveryTask):
            raise TypeError(f"{NAME} handles RecoveryTask, not {type(task).__name__}")
        refuse_future_day(task.day, self._today())
        deadline_s = task.deadline_s(self._settings.task_deadline_s)
        fetched = await self._fetcher.fetch(task, deadline_s)
        trades = window_trades(fetched.run, task.start_at, task.end_at)
        topics = self._settings.topics
        records = window_records(task, trades)
        for record in records:
            window = window_value(record, fetched.provider.value, fetched.tr_id)
            out.add(topics.ticks_recovered, window_key(record), window)
        out.add(topics.verification_tasks, reverify_task_id(task), reverify_value(task))
        log_event(
            logger,
            "recovery.window",
            task_id=task.task_id,
            symbol=task.symbol,
            day=task.day.isoformat(),
            window=task.window,
            provider=fetched.provider.value,
            tr_id=fetched.tr_id,
            trades=len(trades),
            records=len(records),
            pages=fetched.pages,
        )


def build(settings: WorkerSettings, hub: HubClient) -> BackfillManager:
    """The recovery-worker's handler (``apihub worker recovery-worker``)."""
    return BackfillManager(settings, hub)
