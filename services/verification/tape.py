"""``TickBook``: the collected trades of every symbol-day, in memory, and the minute bars they make.

Two sources fill it (values as in ``docs/WORKERS.md``):

- feed records (``market.ticks``): ``symbol, day (YYYYMMDD), seq, time_kst, price, volume``; one trade
  each, deduplicated by ``(symbol, day, seq)`` (the first copy stays), in tape order by ``seq``;
- recovered windows (``market.ticks.recovered``): ``kind: "window", symbol, day, start, end, ticks:
  [{time_kst, n, price, volume}]``. A window replaces, for every minute in its ``[start, end)``, whatever
  the feed delivered: those minutes are built from the window's trades only, in tape order by
  ``(time_kst, n)`` (duplicates of one ``(time_kst, n)`` dropped). A later window with the same
  ``(symbol, day, start, end)`` replaces the earlier one; where windows with different bounds overlap,
  the one read last owns the minute. A window too large for one record comes in parts: records with
  ``part`` (1 to ``parts``), ``parts``, the same bounds and ``task_id``, each holding a run of its trades.
  It is read when its last missing part is (its trades are all the parts' trades), and until then its
  minutes stay as they were.

A record that cannot be read is counted in ``malformed`` and otherwise ignored, so one bad message never
stops the worker. The book is pure: ``TickStore`` feeds it from Kafka, giving each record's Kafka timestamp,
and has it ``forget`` the symbol-days no record has been written for since a cutoff: the topics keep a week,
so a book that kept every day it ever read would grow for as long as the worker runs (a busy feed is
millions of trades a day) while a restarted worker would know only that week anyway.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

import orjson

from hubclient.market import KST
from services.verification.minutes import MinuteBar, Window, bars_from_trades, parse_hhmm

#: One trade of a recovered window: (second of day, n, price KRW, volume shares).
RecoveredTrade = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class RecoveredWindow:
    """One recovered window of a symbol-day; ``arrival`` orders windows by when they were read."""

    window: Window
    arrival: int
    trades: tuple[RecoveredTrade, ...]  # sorted by (second, n), one per (second, n)


#: The parts of one window read so far, by ``(window, task_id, parts)``: part number -> its trades.
PartsRead = dict[tuple[Window, str, int], dict[int, tuple[RecoveredTrade, ...]]]


@dataclass
class _SymbolDay:
    feed: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # seq -> (second, price, volume)
    windows: dict[Window, RecoveredWindow] = field(default_factory=dict)
    parts: PartsRead = field(default_factory=dict)  # windows in parts not yet read whole
    written_ms: int = 0  # the newest Kafka timestamp of its records read (0: none given)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} is not an integer")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is not a string")
    return value


def _day(value: Any) -> date:
    """A day as ``YYYYMMDD`` (the feed) or ``YYYY-MM-DD``."""
    text = _text(value, "day")
    if len(text) == 8 and text.isdigit():
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    return date.fromisoformat(text)


def _second(value: Any, day: date) -> int | None:
    """Second of ``day`` (KST) of an ISO ``time_kst`` (or a bare ``HH:MM:SS``); None for another day."""
    text = _text(value, "time_kst")
    if len(text) <= 8:
        clock = time.fromisoformat(text)
        return clock.hour * 3600 + clock.minute * 60 + clock.second
    instant = datetime.fromisoformat(text)
    local = instant.astimezone(KST) if instant.tzinfo is not None else instant
    if local.date() != day:
        return None
    return local.hour * 3600 + local.minute * 60 + local.second


def _tape_order(trades: Iterable[RecoveredTrade]) -> tuple[RecoveredTrade, ...]:
    """``trades`` sorted by ``(second, n)``, the first of each ``(second, n)`` kept."""
    kept: dict[tuple[int, int], RecoveredTrade] = {}
    for trade in trades:
        kept.setdefault((trade[0], trade[1]), trade)
    return tuple(kept[key] for key in sorted(kept))


def _object(raw: bytes | None) -> Mapping[str, Any]:
    if not raw:
        raise ValueError("no value")
    value = orjson.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


class TickBook:
    """Trades by ``(symbol, day)`` from the feed and from recovered windows."""

    def __init__(self) -> None:
        self._days: dict[tuple[str, date], _SymbolDay] = {}
        self._arrivals = itertools.count(1)
        self.feed_records = 0
        self.recovered_records = 0
        self.malformed = 0

    def _symbol_day(self, symbol: str, day: date) -> _SymbolDay:
        return self._days.setdefault((symbol, day), _SymbolDay())

    def add_feed(self, raw: bytes | None, written_ms: int = 0) -> bool:
        """Read one ``market.ticks`` value written at ``written_ms`` (its Kafka timestamp); False when it is
        malformed (counted)."""
        try:
            value = _object(raw)
            symbol, day = _text(value.get("symbol"), "symbol"), _day(value.get("day"))
            seq = _int(value.get("seq"), "seq")
            second = _second(value.get("time_kst"), day)
            price, volume = _int(value.get("price"), "price"), _int(value.get("volume"), "volume")
            if second is None:
                raise ValueError("time_kst is not on the record's day")
        except (ValueError, TypeError, orjson.JSONDecodeError):
            self.malformed += 1
            return False
        held = self._symbol_day(symbol, day)
        held.feed.setdefault(seq, (second, price, volume))
        held.written_ms = max(held.written_ms, written_ms)
        self.feed_records += 1
        return True

    def add_recovered(self, raw: bytes | None, written_ms: int = 0) -> bool:
        """Read one ``market.ticks.recovered`` value written at ``written_ms`` (its Kafka timestamp); False
        when it is malformed (counted)."""
        try:
            value = _object(raw)
            if value.get("kind") != "window":
                raise ValueError("kind is not 'window'")
            symbol, day = _text(value.get("symbol"), "symbol"), _day(value.get("day"))
            start, end = _text(value.get("start"), "start"), _text(value.get("end"), "end")
            window = Window(parse_hhmm(start), parse_hhmm(end))
            part, parts = _int(value.get("part", 1), "part"), _int(value.get("parts", 1), "parts")
            if not 1 <= part <= parts:
                raise ValueError(f"part {part} of {parts}")
            task_id = _text(value.get("task_id"), "task_id") if parts > 1 else ""
            ticks = value.get("ticks")
            if not isinstance(ticks, list):
                raise ValueError("ticks is not a list")
            trades = self._recovered_trades(ticks, day)
        except (ValueError, TypeError, orjson.JSONDecodeError):
            self.malformed += 1
            return False
        held = self._symbol_day(symbol, day)
        held.written_ms = max(held.written_ms, written_ms)
        self.recovered_records += 1
        if parts > 1:
            read = held.parts.setdefault((window, task_id, parts), {})
            read[part] = trades
            if len(read) < parts:
                return True
            del held.parts[(window, task_id, parts)]
            trades = _tape_order(trade for number in sorted(read) for trade in read[number])
        held.windows[window] = RecoveredWindow(window, next(self._arrivals), trades)
        return True

    @staticmethod
    def _recovered_trades(ticks: Iterable[Any], day: date) -> tuple[RecoveredTrade, ...]:
        trades: list[RecoveredTrade] = []
        for tick in ticks:
            if not isinstance(tick, dict):
                raise ValueError("a tick is not an object")
            second = _second(tick.get("time_kst"), day)
            n = _int(tick.get("n", 0), "n")
            price, volume = _int(tick.get("price"), "price"), _int(tick.get("volume"), "volume")
            if second is not None:
                trades.append((second, n, price, volume))
        return _tape_order(trades)

    def forget(self, written_before_ms: int) -> int:
        """Drop every symbol-day whose newest record was written before ``written_before_ms`` (epoch ms);
        returns how many were dropped."""
        old = [key for key, held in self._days.items() if held.written_ms < written_before_ms]
        for key in old:
            del self._days[key]
        return len(old)

    def symbol_days(self) -> list[tuple[str, date]]:
        """Every (symbol, day) with trades or windows, sorted."""
        return sorted(self._days)

    def bars(self, symbol: str, day: date, window: Window) -> dict[int, MinuteBar]:
        """Minute bars of ``window`` built from the collected trades (recovered windows first)."""
        held = self._days.get((symbol, day))
        if held is None:
            return {}
        owner: dict[int, RecoveredWindow] = {}
        for recovered in sorted(held.windows.values(), key=lambda w: w.arrival):
            first, last = max(recovered.window.start, window.start), min(recovered.window.end, window.end)
            for minute in range(first, last):
                owner[minute] = recovered
        feed = (
            (second // 60, price, volume)
            for _, (second, price, volume) in sorted(held.feed.items())
            if second // 60 in window and second // 60 not in owner
        )
        bars = bars_from_trades(feed)
        for recovered in {w.arrival: w for w in owner.values()}.values():
            bars.update(
                bars_from_trades(
                    (second // 60, price, volume)
                    for second, _, price, volume in recovered.trades
                    if owner.get(second // 60) is recovered
                )
            )
        return dict(sorted(bars.items()))
