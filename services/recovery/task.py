"""``RecoveryTask``: one window of one symbol-day whose trades are to be fetched again.

    {"task_id": "recover|005930|2026-11-27|10:00-10:05|r1", "symbol": "005930", "day": "2026-11-27",
     "start": "10:00", "end": "10:05", "round": 1, "reason": "gap"}

``start`` and ``end`` are KST wall times ``HH:MM`` (whole minutes), start inclusive and end exclusive, with
``start < end`` on the same day. ``round`` counts the repairs of this window (1 for the first). Unknown
fields and anything else out of shape make the record a ``MalformedTask`` (dead-lettered, never retried).
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hubclient.market import KST
from hubclient.models import JsonInt
from services.worker.task import MAX_JSON_INT, Task, TradingDay

#: KRX stock codes: six digits or capital letters (``005930``, ``0001A0``).
SYMBOL_PATTERN = r"^[0-9A-Z]{6}$"
#: A minute of the day, ``00:00`` to ``23:59``.
MINUTE_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def minute_of(text: str) -> time:
    """``HH:MM`` as a ``time`` (the pattern has been checked)."""
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


class RecoveryTask(Task):
    """A task on ``recovery.tasks``."""

    symbol: str = Field(pattern=SYMBOL_PATTERN, description="stock code")
    day: TradingDay = Field(description="trading day, YYYY-MM-DD (KST)")
    start: str = Field(pattern=MINUTE_PATTERN, description="first minute of the window, HH:MM KST")
    end: str = Field(pattern=MINUTE_PATTERN, description="minute after the window, HH:MM KST (exclusive)")
    round: JsonInt = Field(  # below 2^53 - 1: its re-verification, round + 1, must still be a JSON integer
        ge=1, lt=MAX_JSON_INT - 1, description="1 for the first repair of this window"
    )
    reason: Literal["gap", "mismatch"] = Field(description="what verification found in the window")

    @field_validator("day", mode="before")
    @classmethod
    def _iso_day(cls, value: Any) -> Any:
        # pydantic would also take epoch numbers and other spellings; the contract says YYYY-MM-DD
        if not isinstance(value, str) or not _DAY.fullmatch(value):
            raise ValueError("must be a day as YYYY-MM-DD")
        return value

    @model_validator(mode="after")
    def _window_runs_forward(self) -> RecoveryTask:
        if self.start >= self.end:
            raise ValueError(f"the window must start before it ends ({self.start}-{self.end})")
        return self

    @property
    def start_at(self) -> datetime:
        """The window's first instant (KST-aware)."""
        return datetime.combine(self.day, minute_of(self.start), KST)

    @property
    def end_at(self) -> datetime:
        """The instant just after the window (KST-aware, exclusive)."""
        return datetime.combine(self.day, minute_of(self.end), KST)

    @property
    def window(self) -> str:
        """``HH:MM-HH:MM``."""
        return f"{self.start}-{self.end}"
