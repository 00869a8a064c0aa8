"""``Task``: the fields every worker task shares, and ``parse_task`` turning a record into one.

A task is a JSON object. ``task_id`` names it (outputs derive their idempotent keys from it or from what
they describe); ``deadline_ms`` (epoch ms) bounds the time spent on it, hub retries included; without
one the worker's ``task_deadline_s`` applies from the moment it starts. A ``deadline_ms`` more than
``MAX_TASK_S`` (a day, the longest ``apihub history collect --timeout``) ahead counts as a day: one written
in microseconds (about 1.7e15, below 2**53) lies 50,000 years ahead, and a retriable error that does not
clear (a revoked app key's ``token_unavailable``) would be retried for as long while every later task of
the partition waits. Unknown fields are refused, so a
typo is a clear dead letter rather than a silently ignored option; an integer field takes a JSON integer
below 2**53 (not a string, not a boolean).
"""

from __future__ import annotations

import time
from datetime import date
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from hubclient.models import JsonInt
from services.worker.errors import MalformedTask, TaskFailed

#: Integers a task may hold: JSON's safe range (any larger is no count or time a task could mean, and a
#: 64-bit writer refuses past it).
MAX_JSON_INT = 2**53
#: Longest a task may take, seconds from its start, whatever its ``deadline_ms`` says; also the longest
#: timeout the command line takes (``apihub history collect --timeout``, ``apihub call --timeout``).
MAX_TASK_S = 86_400.0
#: The Korea Stock Exchange's first session: no broker has a bar or a trade before it (and a day before
#: year 1000 would not even write as the brokers' eight-digit ``YYYYMMDD``).
FIRST_TRADING_DAY = date(1956, 3, 3)


def _traded_era(day: date) -> date:
    if day < FIRST_TRADING_DAY:
        raise ValueError(f"is before the first trading day ({FIRST_TRADING_DAY.isoformat()})")
    return day


#: A day a task may name: ``FIRST_TRADING_DAY`` or later.
TradingDay = Annotated[date, AfterValidator(_traded_era)]


class Task(BaseModel):
    """Fields of every task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str = Field(min_length=1, max_length=200)
    deadline_ms: JsonInt | None = Field(
        default=None, gt=0, lt=MAX_JSON_INT, description="epoch ms after which the task is given up"
    )

    def deadline_s(
        self, default_s: float, *, now_s: float | None = None, monotonic_s: float | None = None
    ) -> float:
        """The task's deadline on the monotonic clock: its ``deadline_ms``, else ``default_s`` from now;
        never more than ``MAX_TASK_S`` from now."""
        wall = time.time() if now_s is None else now_s
        mono = time.monotonic() if monotonic_s is None else monotonic_s
        if self.deadline_ms is None:
            return mono + default_s
        return mono + min(self.deadline_ms / 1000 - wall, MAX_TASK_S)


T = TypeVar("T", bound=Task)


def refuse_future_day(day: date, today: date) -> None:
    """Raise ``TaskFailed`` (``future_day``) for a window of a day after ``today`` (KST): it has no trades
    yet, and a verdict or a recovered window written now would stand for minutes still to be traded."""
    if day > today:
        raise TaskFailed(
            f"{day.isoformat()} is after today ({today.isoformat()}, KST): its windows can be checked or "
            "recovered once they are traded",
            reason="future_day",
        )


def parse_task(model: type[T], value: bytes | None) -> T:
    """The task in ``value``; ``MalformedTask`` naming the first problem otherwise."""
    if not value:
        raise MalformedTask("the record has no value")
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "(the record)"
        raise MalformedTask(f"{where}: {first.get('msg', 'invalid')}") from exc
