"""The event loop's wait for a CPU (the host's contention) and what it does to the jitter budget."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from services.gateway.clock import ManualClock
from services.gateway.cpu_wait import SAMPLE_EVERY_S, WINDOW_S, RunQueueWait, thread_wait_s
from services.gateway.jitter import CONTENDED_FLOOR_S, CONTENDED_WAIT_SHARE, JitterBudget


class Waits:
    """A reader whose total grows as the test says."""

    def __init__(self) -> None:
        self.total_s: float | None = 0.0

    def __call__(self) -> float | None:
        return self.total_s


async def test_share_is_the_wait_per_wall_second_over_the_window() -> None:
    clock, waits = ManualClock(), Waits()
    run_queue = RunQueueWait(clock, waits)
    assert run_queue.share() is None  # one reading says nothing yet
    await clock.advance(1.0)
    waits.total_s = 0.25
    assert run_queue.share() == pytest.approx(0.25)
    await clock.advance(SAMPLE_EVERY_S / 2)
    waits.total_s = 5.0  # not read again this soon
    assert run_queue.share() == pytest.approx(0.25)
    for _ in range(int(2 * WINDOW_S)):  # twenty calm seconds: the busy second leaves the window
        await clock.advance(1.0)
        run_queue.share()
    assert run_queue.share() == pytest.approx(0.0)


def test_an_unknown_wait_stays_unknown() -> None:
    waits = Waits()
    waits.total_s = None
    run_queue = RunQueueWait(ManualClock(), waits)
    assert run_queue.share() is None and run_queue.share() is None


def test_the_kernel_counts_a_thread_kept_from_its_cpu() -> None:
    """With more busy processes than cores beside it, a busy thread waits a good part of the time."""
    before = thread_wait_s()
    assert before is not None  # Linux keeps schedstat
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", "import time\nend = time.time() + 0.8\nwhile time.time() < end: pass"]
        )
        for _ in range(3)
    ]
    try:
        started = time.monotonic()
        while time.monotonic() - started < 0.6:
            pass
    finally:
        for hog in hogs:
            hog.wait(5)
    waited = thread_wait_s()
    assert waited is not None and waited - before > 0.05


async def test_late_sends_widen_the_budget_only_on_a_contended_host() -> None:
    """Every send 10 ms late: with the loop's thread rarely waiting for a CPU the lateness is the process's
    own work and the budget stays J plus the typical lag; once it waits a quarter of the time or more the host
    is contended and the far side is presumed to stall too."""
    clock, waits = ManualClock(), Waits()
    budget = JitterBudget(0.02, clock, cold_lag_s=0.0, run_queue=RunQueueWait(clock, waits))
    for _ in range(100):
        await clock.advance(0.05)
        waits.total_s = (waits.total_s or 0.0) + 0.05 * CONTENDED_WAIT_SHARE / 2
        budget.observe(0.01)
    assert not budget.contended() and budget.allowance_s() < 0.02 + 0.015
    for _ in range(200):
        await clock.advance(0.05)
        waits.total_s = (waits.total_s or 0.0) + 0.05 * CONTENDED_WAIT_SHARE * 3
        budget.observe(0.01)
    assert budget.contended() and budget.allowance_s() == pytest.approx(0.02 + CONTENDED_FLOOR_S)
