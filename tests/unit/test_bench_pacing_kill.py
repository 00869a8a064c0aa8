"""The pacing-kill benchmark's bookkeeping: which deadlines fell in an outage, and how a late answer reads."""

from __future__ import annotations

from tests.bench.pacing import LateAnswer
from tests.bench.pacing_kill import OUTAGE_GRACE_S, late_text, outage_of

OUTAGES = [(10.0, 16.0), (25.0, 31.5)]  # (kill, first answer after it), time.monotonic()


def test_a_deadline_between_a_kill_and_the_first_answer_after_it_is_in_that_outage() -> None:
    assert outage_of(10.0, OUTAGES) == 1
    assert outage_of(16.0 + OUTAGE_GRACE_S, OUTAGES) == 1  # the answer's way to its caller
    assert outage_of(28.0, OUTAGES) == 2


def test_a_deadline_while_an_owner_runs_is_in_no_outage() -> None:
    assert outage_of(9.99, OUTAGES) is None
    assert outage_of(16.0 + OUTAGE_GRACE_S + 0.01, OUTAGES) is None
    assert outage_of(40.0, OUTAGES) is None


def test_a_late_answer_says_what_it_was_and_where_its_deadline_fell() -> None:
    in_outage = LateAnswer("rejected/deadline_unreachable", "gw-a", 0.002, 16.1)
    assert late_text(in_outage, OUTAGES) == (
        "rejected/deadline_unreachable from gw-a, 2 ms after its deadline, which fell in outage 1 "
        "(6.10 s after the kill)"
    )
    running = LateAnswer("ok/-", "gw-b", 0.05, 33.0)
    assert late_text(running, OUTAGES).endswith("which fell 1.50 s after outage 2's first answer")
    early = LateAnswer("ok/-", "gw-b", 0.05, 3.0)
    assert late_text(early, OUTAGES).endswith("which fell before the first kill")
