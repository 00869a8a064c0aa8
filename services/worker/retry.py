"""Hub calls retried with backoff inside a task's deadline; what is retried is the error's ``retriable``.

``backoff_s(attempt)`` is the pure policy: 0.25 s doubled per attempt, at most ``MAX_BACKOFF_S``.
``Retrier.call`` runs one hub call (a coroutine factory given the seconds it may take), retries it while
the error is ``retriable`` and the task's deadline leaves room for another try, counts each retry in
``apihub_worker_retries_total{worker, reason}`` and raises ``TaskFailed`` with the last error otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hubclient import HubError
from services.logs import log_event
from services.worker.errors import TaskFailed
from services.worker.metrics import RETRIES

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 5.0
MIN_CALL_S = 1.0  # a try with less time than this left is not worth the broker's budget


def backoff_s(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * float(2 ** max(0, attempt - 1)))


def error_reason(error: HubError) -> str:
    """A short machine-readable word for a hub error (its ``reason`` when it has one)."""
    reason = getattr(error, "reason", None)
    return str(reason) if reason else type(error).__name__


class Retrier:
    """Retries of one worker's hub calls until a deadline (monotonic seconds)."""

    def __init__(
        self,
        worker: str,
        *,
        call_timeout_s: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._worker = worker
        self._call_timeout_s = call_timeout_s
        self._sleep = sleep
        self._monotonic = monotonic

    async def call(self, what: str, deadline_s: float, make: Callable[[float], Awaitable[T]]) -> T:
        """``await make(timeout_s)`` until it succeeds, a non-retriable error, or the deadline."""
        attempt = 0
        while True:
            left_s = deadline_s - self._monotonic()
            if left_s < MIN_CALL_S:
                raise TaskFailed(
                    f"{what}: the task's deadline passed before a call could be made", reason="gave_up"
                )
            try:
                return await make(min(self._call_timeout_s, left_s))
            except HubError as exc:
                attempt += 1
                reason = error_reason(exc)
                wait_s = backoff_s(attempt)
                if not exc.retriable:
                    raise TaskFailed(f"{what}: {exc}", reason=f"refused:{reason}") from exc
                if deadline_s - self._monotonic() - wait_s < MIN_CALL_S:
                    raise TaskFailed(
                        f"{what}: still failing after {attempt} attempt(s) at the task's deadline: {exc}",
                        reason=f"gave_up:{reason}",
                    ) from exc
                RETRIES.labels(self._worker, reason).inc()
                log_event(
                    logger,
                    "worker.retry",
                    logging.WARNING,
                    worker=self._worker,
                    call=what,
                    attempt=attempt,
                    reason=reason,
                    wait_s=wait_s,
                )
                await self._sleep(wait_s)
