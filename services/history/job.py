"""``HistoryJob``: the task on ``history.jobs``, and ``parse_job`` turning a record into one.

    {"task_id": "h-1", "symbols": ["005930", "000660"], "from": "2026-11-23", "to": "2026-11-27",
     "timeframe": "1m", "provider": "KIS"}

``from`` and ``to`` are KST trading days (``YYYY-MM-DD``, both included, ``from <= to``); ``symbols`` are
1 to 100 six-character KRX codes (duplicates are dropped, first one kept); ``timeframe`` is ``1m`` (minute
bars) or ``1d`` (daily bars); ``provider`` is ``KIS`` (default) or ``KIWOOM``. A ``1m`` job spans at most
``MAX_MINUTE_DAYS`` calendar days (the brokers keep about a year of minute bars), a ``1d`` job
``MAX_DAILY_DAYS`` (each of its calendar days is a progress record per symbol, so an unbounded range would
write one for every day since year 1). Anything else, unknown fields included, is a ``MalformedTask``
naming the field.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from hubclient.models import Provider
from services.worker.task import Task, TradingDay, parse_task

#: Longest ``1m`` job, in calendar days from ``from`` to ``to`` inclusive.
MAX_MINUTE_DAYS = 366
#: Longest ``1d`` job, in calendar days: about ten years.
MAX_DAILY_DAYS = 3_660
#: Most symbols in one job.
MAX_SYMBOLS = 100
SYMBOL_PATTERN = re.compile(r"[0-9A-Z]{6}")

Timeframe = Literal["1m", "1d"]


class HistoryJob(Task):
    """One history job: which symbols, which days, which bars, from which broker."""

    symbols: list[str] = Field(min_length=1, max_length=MAX_SYMBOLS, description="six-character KRX codes")
    first_day: TradingDay = Field(alias="from", strict=True, description="first KST day, YYYY-MM-DD")
    last_day: TradingDay = Field(alias="to", strict=True, description="last KST day, YYYY-MM-DD (inclusive)")
    timeframe: Timeframe
    provider: Provider = Provider.KIS

    @field_validator("symbols")
    @classmethod
    def _codes(cls, symbols: list[str]) -> list[str]:
        bad = [code for code in symbols if not SYMBOL_PATTERN.fullmatch(code)]
        if bad:
            raise ValueError(f"not six-character codes: {bad[:5]}")
        return list(dict.fromkeys(symbols))

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.first_day > self.last_day:
            raise ValueError(f"from ({self.first_day}) is after to ({self.last_day})")
        days = (self.last_day - self.first_day).days + 1
        longest = MAX_MINUTE_DAYS if self.timeframe == "1m" else MAX_DAILY_DAYS
        if days > longest:
            raise ValueError(f"a {self.timeframe} job spans at most {longest} days, this one {days}")
        return self

    def as_json(self) -> dict[str, object]:
        """The task as it travels on ``history.jobs`` (``from``/``to`` by their wire names)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_job(value: bytes | None) -> HistoryJob:
    """The job in a record's value; ``MalformedTask`` naming the first problem otherwise."""
    return parse_task(HistoryJob, value)
