"""The benchmark report says what ran before the first run."""

from __future__ import annotations

from tests.bench.report import Invocation, render


def invocation(warm_up: str) -> Invocation:
    """An invocation of no benchmark (the head of the report only)."""
    return Invocation(
        command="python -m tests.bench",
        names=[],
        runs=3,
        quick=False,
        commit="abc1234",
        changes=[],
        warm_up=warm_up,
    )


def test_the_warm_up_is_listed_with_the_run_facts() -> None:
    """The warm-up line sits in "This run"; an invocation without a warm-up has none."""
    text = render({}, invocation("30000 of 30000 requests through the raw echo at 900/s"), 10.0)
    run_facts = text.split("## This run", 1)[1]
    assert "- warm-up: 30000 of 30000 requests through the raw echo at 900/s" in run_facts
    assert "warm-up:" not in render({}, invocation(""), 10.0)
