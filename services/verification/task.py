"""``VerificationTask``: one symbol-day window to check, as read from ``verification.tasks``.

``{"task_id": "verify|005930|2026-11-26|10:00-10:30|r1", "symbol": "005930", "day": "2026-11-26",
"start": "10:00", "end": "10:30", "round": 1}``: times are KST ``HH:MM``, start inclusive and end
exclusive (the whole session with its 15:30 closing-auction bar is ``09:00``-``15:31``); ``round`` counts
the checks of this window (1 for a first check, one more after each repair). Unknown fields are refused,
as for every task.
"""

from __future__ import annotations

import re
from datetime import date

from pydantic import Field, field_validator, model_validator

from hubclient.models import JsonInt
from services.verification.minutes import Window, parse_hhmm
from services.worker.task import MAX_JSON_INT, Task, TradingDay

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class VerificationTask(Task):
    """Check the minutes ``start``-``end`` of ``symbol`` on ``day`` (KST)."""

    symbol: str = Field(pattern=r"^[0-9A-Z]{6}$", description="six-character stock code, e.g. 005930")
    day: TradingDay = Field(description="trading day, YYYY-MM-DD")
    start: str = Field(description="first minute, HH:MM (inclusive)")
    end: str = Field(description="end minute, HH:MM (exclusive)")
    round: JsonInt = Field(
        default=1, ge=1, lt=MAX_JSON_INT, description="1 for a first check, +1 after each repair"
    )

    @field_validator("day", mode="before")
    @classmethod
    def _day(cls, value: object) -> object:
        if isinstance(value, date):
            return value
        if not isinstance(value, str) or not _DAY.fullmatch(value):
            raise ValueError("must be a YYYY-MM-DD string")
        return value

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        parse_hhmm(value)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> VerificationTask:
        if parse_hhmm(self.start) >= parse_hhmm(self.end):
            raise ValueError("start must be before end")
        return self

    @property
    def window(self) -> Window:
        """The window's minutes."""
        return Window(parse_hhmm(self.start), parse_hhmm(self.end))
