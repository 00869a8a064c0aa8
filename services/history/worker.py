"""The history-collector's ``Handler``: a job on ``history.jobs`` becomes candles on ``market.candles``.

For each job: catch up with ``history.progress``, cut the job into pieces (``plan.pieces``), publish the
job's ``running`` record, then for each piece either skip it (every day of it is closed in the book: no
upstream call) or fetch it (``fetch.fetch_piece``) and add its candles, one ``kind: "day"`` record per day
and the job's record, then ``checkpoint()``: a piece is committed whole or not at all, and after a crash
the restarted worker skips what was checkpointed. Weekend days of a ``1m`` job are recorded as closed with
no candles and no call; a weekday without rows (a holiday) is asked once and recorded the same way. The
job's ``done`` record is committed by the runtime together with the task's offset.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from hubclient import HubClient
from hubclient.market import KST, Candle
from services.history.fetch import fetch_piece
from services.history.job import HistoryJob, parse_job
from services.history.plan import Piece, chart_tr_id, is_closed, pieces, trades_on
from services.history.progress import ProgressBook, ProgressReader, ProgressSource
from services.history.records import DayHeld, JobTally, candle_key, candle_value, job_key, progress_key
from services.kafka_client import client_kwargs
from services.logs import log_event
from services.settings import WorkerSettings
from services.worker.outputs import Outputs
from services.worker.retry import Retrier
from services.worker.task import Task

logger = logging.getLogger(__name__)

NAME = "history-collector"


def kst_now() -> datetime:
    """The wall clock in KST."""
    return datetime.now(KST)


class HistoryCollector:
    """Collects candle history job by job; see the module docstring."""

    name = NAME

    def __init__(
        self,
        settings: WorkerSettings,
        hub: HubClient,
        source: ProgressSource,
        *,
        now: Callable[[], datetime] = kst_now,
        retrier: Retrier | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task_topic = settings.topics.history_jobs
        self._settings = settings
        self._hub = hub
        self._source = source
        self._now = now
        self._monotonic = monotonic
        self._retrier = retrier or Retrier(NAME, call_timeout_s=settings.call_timeout_s, monotonic=monotonic)
        self.book = ProgressBook()

    async def start(self) -> None:
        """Open the progress reader and read what is held."""
        await self._source.start()
        read = await self._source.catch_up(self.book)
        log_event(logger, "history.progress_loaded", records=read, days=len(self.book))

    async def stop(self) -> None:
        """Close the progress reader."""
        await self._source.stop()

    def parse(self, value: bytes | None) -> Task:
        """The ``HistoryJob`` in a record; ``MalformedTask`` otherwise."""
        return parse_job(value)

    async def handle(self, task: Task, out: Outputs) -> None:
        """Collect one job; see the module docstring."""
        if not isinstance(task, HistoryJob):
            raise TypeError(f"the history-collector handles HistoryJob, not {type(task).__name__}")
        deadline_s = task.deadline_s(self._settings.task_deadline_s, monotonic_s=self._monotonic())
        await self._source.catch_up(self.book)
        plan = pieces(task, self._now().astimezone(KST).date())
        tally = JobTally(task.task_id, total=len(plan))
        progress_topic = self._settings.topics.history_progress
        out.add(progress_topic, job_key(task.task_id), tally.value("running"))
        await out.checkpoint()
        for piece in plan:
            pending = [
                day
                for day in piece.days()
                if not self.book.closed(progress_key(piece.symbol, piece.timeframe, day), task.provider.value)
            ]
            if not pending:
                tally.skipped += 1
                continue
            span = Piece(piece.symbol, piece.timeframe, min(pending), max(pending))
            held = await self._collect(task, span, deadline_s, tally, out)
            out.add(progress_topic, job_key(task.task_id), tally.value("running"))
            await out.checkpoint()
            for day in held:
                self.book.note(day)
        out.add(progress_topic, job_key(task.task_id), tally.value("done"))
        log_event(
            logger,
            "history.job_done",
            job_id=task.task_id,
            total=tally.total,
            done=tally.done,
            skipped=tally.skipped,
            candles=tally.candles,
            calls=tally.calls,
        )

    async def _collect(
        self, job: HistoryJob, piece: Piece, deadline_s: float, tally: JobTally, out: Outputs
    ) -> list[DayHeld]:
        """Fetch ``piece`` and add its candles and day records to ``out``; returns the days it holds now."""
        now = self._now()
        candles: list[Candle] = []
        if piece.timeframe == "1d" or trades_on(piece.first):
            tr_id = chart_tr_id(job.provider, piece.timeframe, piece.last, now.astimezone(KST).date())
            fetched = await fetch_piece(
                self._hub, self._retrier, piece, job.provider, tr_id, deadline_s, monotonic=self._monotonic
            )
            candles, tally.calls = fetched.candles, tally.calls + fetched.calls
        topics = self._settings.topics
        for candle in candles:
            out.add(topics.candles, candle_key(candle), candle_value(candle))
        per_day = Counter(candle.start.astimezone(KST).date() for candle in candles)
        held = [
            DayHeld(piece.symbol, piece.timeframe, day, per_day[day], is_closed(day, now), job.provider.value)
            for day in piece.days()
        ]
        for day in held:
            out.add(topics.history_progress, day.key, day.value(job.task_id))
        tally.done += 1
        tally.candles += len(candles)
        log_event(
            logger,
            "history.piece",
            logging.DEBUG,
            job_id=job.task_id,
            piece=piece.label(),
            candles=len(candles),
        )
        return held


def build(settings: WorkerSettings, hub: HubClient) -> HistoryCollector:
    """The history-collector of a worker process (``apihub worker history-collector``)."""
    reader = ProgressReader(
        settings.kafka.bootstrap_servers,
        settings.topics.history_progress,
        client_options=client_kwargs(settings.kafka),
    )
    return HistoryCollector(settings, hub, reader)
