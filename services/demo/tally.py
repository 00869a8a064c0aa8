"""The repair loop's bookkeeping: the session's windows, what the feed damaged, what the workers reported.

Counts are in damaged symbol-minutes, the unit verification judges:

- injected: minutes the feed left out or published a corrupted trade in (the feed's own report);
- found: minutes the first verification of each window reported as a problem;
- repaired: found minutes covered by a recovered window on ``market.ticks.recovered``;
- verified: windows whose every minute is, in the end, confirmed by a verification result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hubclient.market import KST
from services.sandbox.feed import FeedReport

WINDOW_MINUTES = 30
FIRST_MINUTE = 9 * 60  # 09:00
LAST_MINUTE = 15 * 60 + 30  # 15:30, the closing auction's bar


def hhmm(minute: int) -> str:
    """Minutes since midnight as HH:MM."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def minute_of(text: str) -> int:
    """HH:MM (or HH:MM:SS) as minutes since midnight."""
    return int(text[:2]) * 60 + int(text[3:5])


def windows() -> list[tuple[int, int]]:
    """The session's verification windows, [start, end) in minutes; the last one takes the 15:30 bar."""
    starts = list(range(FIRST_MINUTE, LAST_MINUTE, WINDOW_MINUTES))
    return [(s, LAST_MINUTE + 1 if s == starts[-1] else s + WINDOW_MINUTES) for s in starts]


def injected_minutes(report: FeedReport) -> set[tuple[str, int]]:
    """(symbol, minute) the feed damaged: every minute of a gap, the minute of every corrupted trade."""
    damaged: set[tuple[str, int]] = set()
    for symbol, gaps in report.skipped_by_gap.items():
        for gap in gaps:
            damaged.update((symbol, m) for m in range(minute_of(gap.start), minute_of(gap.end)))
    for symbol, items in report.corrupted.items():
        for item in items:
            local = datetime.fromtimestamp(item.ts_ms / 1000, tz=KST)
            damaged.add((symbol, local.hour * 60 + local.minute))
    return damaged


@dataclass
class LoopState:
    """What the results and recovered windows said so far, for the windows of ``symbols``."""

    symbols: tuple[str, ...]

    first: dict[tuple[str, int], set[int]] = field(default_factory=dict)  # window -> problem minutes
    confirmed: dict[tuple[str, int], set[int]] = field(default_factory=dict)  # window -> confirmed minutes
    bad_later: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    repaired: set[tuple[str, int]] = field(default_factory=set)
    results: int = 0

    def window_of(self, symbol: str, minute: int) -> tuple[str, int]:
        """The demo window holding ``minute``."""
        for start, end in windows():
            if start <= minute < end:
                return symbol, start
        raise ValueError(f"{hhmm(minute)} is outside the session")

    def take_result(self, value: dict[str, Any]) -> None:
        """Fold one verification result in."""
        self.results += 1
        symbol, start, end = value["symbol"], minute_of(value["start"]), minute_of(value["end"])
        bad = {
            m for p in value.get("problems", []) for m in range(minute_of(p["start"]), minute_of(p["end"]))
        }
        for minute in range(start, end):
            window = self.window_of(symbol, minute)
            if minute in bad:
                self.bad_later.setdefault(window, set()).add(minute)
            else:
                self.confirmed.setdefault(window, set()).add(minute)
                self.bad_later.get(window, set()).discard(minute)
        if value.get("round") == 1:
            self.first[(symbol, start)] = bad

    def take_recovered(self, value: dict[str, Any]) -> None:
        """Fold one recovered window in."""
        symbol = value["symbol"]
        self.repaired.update((symbol, m) for m in range(minute_of(value["start"]), minute_of(value["end"])))

    def found(self) -> set[tuple[str, int]]:
        """(symbol, minute) the first verification reported."""
        return {(symbol, m) for (symbol, _), minutes in self.first.items() for m in minutes}

    def verified(self) -> int:
        """Windows every minute of which is confirmed and none still reported bad."""
        count = 0
        for start, end in windows():
            for symbol in self.symbols:
                window = (symbol, start)
                if not self.bad_later.get(window) and self.confirmed.get(window, set()) >= set(
                    range(start, end)
                ):
                    count += 1
        return count

    def settled(self) -> bool:
        """Every first result is in and no window still has a minute reported bad."""
        return len(self.first) == len(self.symbols) * len(windows()) and not any(self.bad_later.values())
