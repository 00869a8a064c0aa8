"""Keys and values of what the history-collector writes (``docs/WORKERS.md``, "Records").

- ``market.candles``, key ``005930|1m|2026-11-27T09:05`` or ``005930|1d|2026-11-27``: ``symbol, timeframe,
  start, open, high, low, close, volume, provider, tr_id``.
- ``history.progress``, key ``005930|1m|2026-11-27``: ``kind: "day", symbol, timeframe, day, candles,
  closed, provider, job_id``. A ``1d`` piece writes one per calendar day of its range (``candles`` 0 or 1).
- ``history.progress``, key ``job|{job_id}``: ``kind: "job", job_id, total, done, skipped, candles, calls,
  state`` (``running``, ``done``).

Values carry no time of collection, so a piece fetched again writes the very same candle records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from hubclient.market import KST, Candle, Timeframe

JobState = Literal["running", "done"]


def candle_key(candle: Candle) -> str:
    """``symbol|timeframe|start``: the start minute for ``1m``, the day for ``1d`` (KST)."""
    start = candle.start.astimezone(KST)
    at = f"{start:%Y-%m-%dT%H:%M}" if candle.timeframe == "1m" else f"{start:%Y-%m-%d}"
    return f"{candle.symbol}|{candle.timeframe}|{at}"


def candle_value(candle: Candle) -> dict[str, Any]:
    """The candle as written: ``start`` in ISO 8601 with its +09:00 offset, prices KRW, volume shares."""
    return {
        "symbol": candle.symbol,
        "timeframe": candle.timeframe,
        "start": candle.start.astimezone(KST).isoformat(),
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "volume": candle.volume,
        "provider": candle.provider.value,
        "tr_id": candle.tr_id,
    }


def progress_key(symbol: str, timeframe: Timeframe, day: date) -> str:
    """``symbol|timeframe|day``: the progress record of one symbol-day."""
    return f"{symbol}|{timeframe}|{day.isoformat()}"


@dataclass(frozen=True, slots=True)
class DayHeld:
    """One symbol-day's progress: how many candles were written, whether the day can still change, and
    which broker's answers they are (``Provider`` value)."""

    symbol: str
    timeframe: Timeframe
    day: date
    candles: int
    closed: bool
    provider: str

    @property
    def key(self) -> str:
        """Its ``history.progress`` key."""
        return progress_key(self.symbol, self.timeframe, self.day)

    def value(self, job_id: str) -> dict[str, Any]:
        """Its ``history.progress`` value (``kind: "day"``)."""
        return {
            "kind": "day",
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "day": self.day.isoformat(),
            "candles": self.candles,
            "closed": self.closed,
            "provider": self.provider,
            "job_id": job_id,
        }


def job_key(job_id: str) -> str:
    """``job|{job_id}``: the progress record of a whole job."""
    return f"job|{job_id}"


@dataclass(slots=True)
class JobTally:
    """A job's counts: pieces in all, fetched (``done``), skipped as held; candles written; broker calls."""

    job_id: str
    total: int
    done: int = 0
    skipped: int = 0
    candles: int = 0
    calls: int = 0

    def value(self, state: JobState) -> dict[str, Any]:
        """The ``kind: "job"`` progress value in ``state``."""
        return {
            "kind": "job",
            "job_id": self.job_id,
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "candles": self.candles,
            "calls": self.calls,
            "state": state,
        }
