"""Minutes of a KST trading day: ``HH:MM`` labels, a ``Window`` of them, and ``MinuteBar`` built from trades.

A minute is an ``int``, minutes since 00:00 KST of its day (``570`` is ``09:30``). A bar is labelled by its
start minute, as both brokers label theirs; the closing auction's trades at 15:30:00 form the ``15:30`` bar,
so a window covering the whole session is ``09:00``-``15:31``. Prices are KRW, volumes shares, both ``int``.

``bars_from_trades`` aggregates trades given in tape order: open = the minute's first trade, close = its
last, high and low the extremes, volume the sum. ``bars_from_candles`` keeps the broker candles of one day
inside a window. Both are pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from hubclient.market import KST, Candle

#: The compared fields of a bar, in the order results name them.
FIELDS = ("open", "high", "low", "close", "volume")
MINUTES_PER_DAY = 24 * 60

_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def parse_hhmm(text: str) -> int:
    """Minutes since 00:00 of an ``HH:MM`` label, ``00:00`` to ``23:59``; ``ValueError`` otherwise."""
    match = _HHMM.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an HH:MM time")
    return int(match.group(1)) * 60 + int(match.group(2))


def hhmm(minute: int) -> str:
    """The ``HH:MM`` label of a minute of the day."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True, slots=True)
class Window:
    """Minutes ``start`` (inclusive) to ``end`` (exclusive) of one day."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= MINUTES_PER_DAY:
            raise ValueError(f"not a window: {self.start}-{self.end}")

    def __contains__(self, minute: object) -> bool:
        return isinstance(minute, int) and self.start <= minute < self.end

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def label(self) -> str:
        """``HH:MM-HH:MM``."""
        return f"{hhmm(self.start)}-{hhmm(self.end)}"


@dataclass(frozen=True, slots=True)
class MinuteBar:
    """One minute's OHLCV: prices KRW, volume shares."""

    minute: int
    open: int
    high: int
    low: int
    close: int
    volume: int

    def values(self) -> tuple[int, int, int, int, int]:
        """(open, high, low, close, volume), in ``FIELDS`` order."""
        return self.open, self.high, self.low, self.close, self.volume


def bars_from_trades(trades: Iterable[tuple[int, int, int]]) -> dict[int, MinuteBar]:
    """Bars by minute from ``(minute, price, volume)`` trades given in tape order."""
    bars: dict[int, MinuteBar] = {}
    for minute, price, volume in trades:
        bar = bars.get(minute)
        if bar is None:
            bars[minute] = MinuteBar(minute, price, price, price, price, volume)
        else:
            bars[minute] = MinuteBar(
                minute,
                bar.open,
                max(bar.high, price),
                min(bar.low, price),
                price,
                bar.volume + volume,
            )
    return bars


def bars_from_candles(candles: Iterable[Candle], day: date, window: Window) -> dict[int, MinuteBar]:
    """The ``1m`` candles of ``day`` that start inside ``window``, as bars by minute (first one wins)."""
    bars: dict[int, MinuteBar] = {}
    for candle in candles:
        start = candle.start.astimezone(KST)
        minute = start.hour * 60 + start.minute
        if candle.timeframe != "1m" or start.date() != day or minute not in window:
            continue
        bars.setdefault(
            minute, MinuteBar(minute, candle.open, candle.high, candle.low, candle.close, candle.volume)
        )
    return bars
