"""The benchmark report says what ran before the first run and how fast the host was at each run."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from tests.bench import yardstick
from tests.bench.report import Headline, Invocation, Result, render
from tests.bench.yardstick import yardstick_ms


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


def test_each_run_shows_the_cpu_yardstick_taken_at_its_start() -> None:
    """The run table has the yardstick of each run, and '-' for a run without one."""
    runs = [
        Result(
            name="throughput",
            title="Throughput",
            goal="fast",
            baseline_name="echo",
            headline=Headline("2000/s", "echo 9000/s", ">= 3000/s", False, "-1000/s"),
            rows=[],
            run=n,
            yardstick_ms=ms,
        )
        for n, ms in ((1, 24.46), (2, None))
    ]
    text = render({"throughput": runs}, invocation(""), 10.0)
    runs_table = text.split("| CPU yardstick at start |", 1)[1]
    table = [line for line in runs_table.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert "| 24.5 ms |" in table[0] and "| - |" in table[1]


class WorkClock:
    """A process CPU clock that moves 1 ms for every record the work serialises and at no other time: what
    ``time.process_time`` would read on a host whose speed never changes."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def process_time(self) -> float:
        return self.now_s

    def dumps(self, value: object) -> bytes:
        self.now_s += 0.001
        return orjson.dumps(value)


def test_the_yardstick_counts_cpu_time_of_a_fixed_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """More rounds of the work take proportionally more CPU (it measures work, not a constant), read on the
    process's CPU clock. The real CPU time of a round swings on a loaded host (four times the rounds took
    2.3 to 3.7 times the CPU ms on a busy 2-core machine), so the proportion is taken on a clock that
    moves with the work alone."""
    assert yardstick_ms(repeats=1) > 0  # the real clock
    clock = WorkClock()
    monkeypatch.setattr(yardstick, "time", SimpleNamespace(process_time=clock.process_time))
    monkeypatch.setattr(yardstick, "orjson", SimpleNamespace(dumps=clock.dumps, loads=orjson.loads))
    one = yardstick_ms(repeats=3)
    monkeypatch.setattr(yardstick, "ROUNDS", yardstick.ROUNDS * 4)
    four = yardstick_ms(repeats=3)
    assert one == pytest.approx(yardstick.ROUNDS / 4)  # 1 ms a round
    assert four == pytest.approx(4 * one)
