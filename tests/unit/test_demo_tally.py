"""The repair loop's bookkeeping (``services.demo.tally``): windows, injected, found, repaired, verified."""

from __future__ import annotations

import itertools
from datetime import date, datetime
from typing import Any

import pytest

from hubclient.market import KST
from services.demo.tally import LoopState, hhmm, injected_minutes, minute_of, windows
from services.sandbox.feed import Corruption, FeedReport, GapReport

SYMBOL = "005930"
OTHER = "000660"


def result(
    symbol: str, start: str, end: str, problems: list[tuple[str, str]], round_no: int = 1
) -> dict[str, Any]:
    """A verification result value as the worker writes it."""
    return {
        "symbol": symbol,
        "start": start,
        "end": end,
        "round": round_no,
        "problems": [{"start": s, "end": e} for s, e in problems],
    }


def test_clock_texts() -> None:
    """Minutes and HH:MM(:SS) convert both ways."""
    assert hhmm(9 * 60 + 5) == "09:05"
    assert minute_of("15:30") == minute_of("15:30:59") == 930


def test_windows_cover_the_session_and_the_last_takes_the_closing_bar() -> None:
    """Thirteen half-hour windows from 09:00; the last ends after the 15:30 bar."""
    spans = windows()
    assert len(spans) == 13
    assert spans[0] == (540, 570)
    assert spans[-1] == (900, 931)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_injected_minutes_from_gaps_and_corruptions() -> None:
    """Every minute of a gap and the minute of each corrupted trade are damaged."""
    report = FeedReport(date(2026, 11, 26), "market.ticks")
    report.skipped_by_gap[SYMBOL] = [GapReport("10:00:00", "10:03:00")]
    at = datetime(2026, 11, 26, 11, 15, 42, tzinfo=KST)
    report.corrupted[OTHER] = [
        Corruption(OTHER, 7, "zero_price", int(at.timestamp() * 1000), 0, 10, 70000, 10)
    ]
    assert injected_minutes(report) == {(SYMBOL, 600), (SYMBOL, 601), (SYMBOL, 602), (OTHER, 675)}


def test_window_of_a_minute_outside_the_session_is_refused() -> None:
    """08:59 belongs to no window."""
    with pytest.raises(ValueError, match="08:59"):
        LoopState((SYMBOL,)).window_of(SYMBOL, 8 * 60 + 59)


def test_found_repaired_and_verified_follow_the_results() -> None:
    """A problem found in round 1 is counted found; once recovered and re-verified clean the window counts."""
    state = LoopState((SYMBOL,))
    state.take_result(result(SYMBOL, "10:00", "10:30", [("10:05", "10:07")]))
    assert state.found() == {(SYMBOL, 605), (SYMBOL, 606)}
    assert state.verified() == 0 and not state.settled()
    state.take_recovered({"symbol": SYMBOL, "start": "10:05", "end": "10:07"})
    assert state.repaired == {(SYMBOL, 605), (SYMBOL, 606)}
    state.take_result(result(SYMBOL, "10:00", "10:30", [], round_no=2))
    assert state.verified() == 1
    assert state.found() == {(SYMBOL, 605), (SYMBOL, 606)}  # a later round does not rewrite what was found
    assert state.results == 2


def test_settled_needs_every_first_result_and_nothing_still_bad() -> None:
    """Settled once every window has its first result and no minute is still reported bad."""
    state = LoopState((SYMBOL,))
    for start, end in windows():
        state.take_result(result(SYMBOL, hhmm(start), hhmm(end), []))
    assert state.settled() and state.verified() == len(windows())
    state.take_result(result(SYMBOL, "09:00", "09:30", [("09:10", "09:11")], round_no=2))
    assert not state.settled() and state.verified() == len(windows()) - 1
