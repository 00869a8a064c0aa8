"""The hub calls of a recovery: the trades that cover a window, from Kiwoom or, failing that, from KIS.

1. Kiwoom ``ka10079`` with ``tic_scope=1`` (one trade a row) and ``upd_stkpc_tp=0`` (prices as traded, as
   the feed publishes them) lists trades newest first, today's and then earlier days' back about a week,
   900 rows a page. ``paginate`` follows ``cont-yn``/``next-key`` page by page, each page joined to the
   run (``tape.join_page``), until the run goes back past the window's start; at most ``max_pages`` pages
   and ``max_walk_s`` seconds (never past the task's deadline). A walk the broker ends before that covers
   the window only when it got back to the window's day; otherwise the task fails as ``out_of_range``.
2. When Kiwoom refuses for good (a non-retriable error: a broker error, a malformed page, a paging bound)
   and the window is today's, KIS ``FHKST01010300`` (the day's latest 30 trades) is asked instead; it
   serves only when those trades reach back past the window's start (``tape.latest_cover``).

Every call goes as priority ``normal`` through the worker's ``Retrier``, inside the task's deadline. A
retriable error of any page (a timeout, a rejection for load) starts the walk again from the newest page:
``paginate`` cannot resume from a continuation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import date
from typing import cast

from hubclient import ApiResponse, HubClient, Priority, Provider, paginate
from hubclient.market import Tick, kis_trades, kiwoom_ticks
from services.logs import log_event
from services.recovery.tape import holds_day, join_page, latest_cover, walk_reached
from services.recovery.task import RecoveryTask
from services.worker.errors import TaskFailed
from services.worker.retry import Retrier

logger = logging.getLogger(__name__)

KIWOOM_TICKS = "ka10079"
KIS_LATEST = "FHKST01010300"
#: Pages of one ka10079 walk at most (a week of the sandbox's busiest symbol at 900 rows a page fits).
DEFAULT_MAX_PAGES = 100
#: Seconds one ka10079 walk may take at most, retries not included.
DEFAULT_MAX_WALK_S = 120.0


def kiwoom_params(symbol: str) -> dict[str, str]:
    """ka10079 body: one trade per row, prices as traded."""
    return {"stk_cd": symbol, "tic_scope": "1", "upd_stkpc_tp": "0"}


def kis_params(symbol: str) -> dict[str, str]:
    """FHKST01010300 query on the KRX market."""
    return {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": symbol}


@dataclass(frozen=True, slots=True)
class Fetched:
    """Trades covering a window, newest first, where they came from and the pages it took (all tries)."""

    provider: Provider
    tr_id: str
    run: list[Tick]
    pages: int


class TradeFetcher:
    """Fetches the trades that cover a task's window through the hub."""

    def __init__(
        self,
        hub: HubClient,
        retrier: Retrier,
        *,
        today: Callable[[], date],
        max_pages: int = DEFAULT_MAX_PAGES,
        max_walk_s: float = DEFAULT_MAX_WALK_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hub = hub
        self._retrier = retrier
        self._today = today
        self._max_pages = max_pages
        self._max_walk_s = max_walk_s
        self._monotonic = monotonic

    async def fetch(self, task: RecoveryTask, deadline_s: float) -> Fetched:
        """The trades covering ``task``'s window; ``TaskFailed`` when neither broker can give them before
        ``deadline_s`` (monotonic seconds)."""
        pages_seen = 0

        async def walk(timeout_s: float) -> list[Tick]:
            nonlocal pages_seen
            run: list[Tick] = []
            max_s = min(self._max_walk_s, deadline_s - self._monotonic())
            pages = cast(  # paginate is an async generator; closing it ends the walk at once
                AsyncGenerator[ApiResponse, None],
                paginate(
                    self._hub,
                    Provider.KIWOOM,
                    KIWOOM_TICKS,
                    kiwoom_params(task.symbol),
                    timeout=timeout_s,
                    max_pages=self._max_pages,
                    max_s=max_s,
                    priority=Priority.NORMAL,
                ),
            )
            try:
                async for page in pages:
                    pages_seen += 1
                    run = join_page(run, kiwoom_ticks(page.data, symbol=task.symbol))
                    if walk_reached(run, task.start_at):
                        return run
            finally:
                await pages.aclose()
            if not holds_day(run, task.day):
                oldest = run[-1].time.isoformat() if run else "nothing"
                raise TaskFailed(
                    f"{KIWOOM_TICKS} holds no trades of {task.day.isoformat()} (its oldest: {oldest})",
                    reason="out_of_range",
                )
            return run

        try:
            run = await self._retrier.call(KIWOOM_TICKS, deadline_s, walk)
            return Fetched(Provider.KIWOOM, KIWOOM_TICKS, run, pages_seen)
        except TaskFailed as refused:
            if not refused.reason.startswith("refused") or task.day != self._today():
                raise
            log_event(
                logger,
                "recovery.fallback",
                logging.WARNING,
                task_id=task.task_id,
                symbol=task.symbol,
                tr_id=KIS_LATEST,
                reason=refused.reason,
                error=str(refused),
            )
            latest = await self._latest(task, deadline_s)
            if not latest_cover(latest, task.start_at):
                raise TaskFailed(
                    f"{refused}; and {KIS_LATEST}'s latest trades begin at {latest[-1].time:%H:%M:%S}, "
                    f"after the window's start {task.start}",
                    reason=refused.reason,
                ) from refused
            return Fetched(Provider.KIS, KIS_LATEST, latest, pages_seen + 1)

    async def _latest(self, task: RecoveryTask, deadline_s: float) -> list[Tick]:
        """Today's latest trades from KIS, newest first."""

        async def call(timeout_s: float) -> list[Tick]:
            response = await self._hub.execute(
                Provider.KIS, KIS_LATEST, kis_params(task.symbol), timeout=timeout_s, priority=Priority.NORMAL
            )
            return kis_trades(response.data, symbol=task.symbol, day=task.day)

        return await self._retrier.call(KIS_LATEST, deadline_s, call)
