"""Out-of-order completion commits only the contiguous completed prefix."""

from __future__ import annotations

from aiokafka import TopicPartition

from services.gateway.offsets import OffsetTracker

TP = TopicPartition("api.requests", 0)


def test_prefix_commit() -> None:
    """A later offset finishing first does not move the position past an unfinished earlier one."""
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(TP, offset)
    tracker.completed(TP, 12)
    assert tracker.commits_due() == {}
    tracker.completed(TP, 10)
    assert tracker.commits_due() == {TP: 11}
    tracker.committed({TP: 11})
    assert tracker.commits_due() == {}
    tracker.completed(TP, 11)
    assert tracker.commits_due() == {TP: 13}
    assert tracker.in_flight(TP) == 0


def test_gaps_in_offsets() -> None:
    """Offsets missing from the log (compaction, markers) do not block the prefix."""
    tracker = OffsetTracker()
    for offset in (5, 9):
        tracker.started(TP, offset)
    tracker.completed(TP, 5)
    tracker.completed(TP, 9)
    assert tracker.commits_due() == {TP: 10}


def test_forget_revoked() -> None:
    """A revoked partition's late completions are ignored."""
    tracker = OffsetTracker()
    tracker.started(TP, 0)
    tracker.forget([TP])
    tracker.completed(TP, 0)
    assert tracker.commits_due() == {} and tracker.total_in_flight() == 0


def test_out_of_order_start_keeps_prefix_sound() -> None:
    """An earlier offset started after later ones (a re-fetch) still blocks the commit until it completes."""
    tracker = OffsetTracker()
    for offset in (5, 6, 3, 4):
        tracker.started(TP, offset)
    tracker.completed(TP, 5)
    tracker.completed(TP, 6)
    assert tracker.commits_due() == {}
    tracker.completed(TP, 3)
    tracker.completed(TP, 4)
    assert tracker.commits_due() == {TP: 7}
