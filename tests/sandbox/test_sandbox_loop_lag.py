"""The sandbox's event-loop lag monitor: wake-up overshoots on the real clock, reported as loop_lag."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.sandbox.app import LOOP_LAG_TASK
from services.sandbox.looplag import EDGES_US, LoopLag
from tests.sandbox.sandbox_kit import Sandbox, SandboxFactory

KEYS = {"max_ms", "p99_ms", "samples", "over_10ms", "over_20ms", "over_50ms"}
MS = 1_000_000  # nanoseconds


def _monitors() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == LOOP_LAG_TASK]


async def _block_loop(sandbox: Sandbox, seconds: float) -> None:
    """Block the shared event loop for ``seconds`` once the monitor is sleeping, then let it record."""
    assert (await sandbox.loop_lag(min_samples=1))["samples"] >= 1, "monitor never woke up"
    time.sleep(seconds)  # noqa: ASYNC251 - the stall under test
    await sandbox.loop_lag(min_samples=(await sandbox.loop_lag())["samples"] + 1)


async def test_stats_report_loop_lag_on_the_real_clock(sandbox: Sandbox) -> None:
    """Stats have a top-level loop_lag object whose samples grow while the simulated clock is frozen."""
    assert sandbox.state.clock.rate == 0.0
    lag = await sandbox.loop_lag(min_samples=3)
    assert set(lag) == KEYS
    assert lag["samples"] >= 3
    assert 0.0 <= lag["p99_ms"] <= lag["max_ms"]
    assert all(isinstance(lag[key], int) for key in ("samples", "over_10ms", "over_20ms", "over_50ms"))


async def test_blocking_call_shows_as_lag(sandbox: Sandbox) -> None:
    """A 60 ms blocking sleep in the loop serving the sandbox shows as max_ms >= 50 and over_50ms >= 1."""
    await _block_loop(sandbox, 0.06)
    lag = await sandbox.loop_lag()
    assert lag["max_ms"] >= 50.0
    assert lag["over_50ms"] >= 1 and lag["over_20ms"] >= 1 and lag["over_10ms"] >= 1
    assert lag["p99_ms"] <= lag["max_ms"]


async def test_reset_clears_loop_lag(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /_sandbox/reset forgets the loop-lag samples together with the referee's counters: what stats
    report afterwards is made of the samples taken since the reset alone (on a busy host those may hold a
    stall of their own, so they are compared, not presumed small)."""
    monitored = sandbox.state.referee.loop_lag
    since_reset: list[int] = []
    record, reset = monitored.record, monitored.reset

    def recording(lag_ns: int) -> None:
        since_reset.append(lag_ns)
        record(lag_ns)

    def resetting() -> None:
        since_reset.clear()
        reset()

    monkeypatch.setattr(monitored, "record", recording)
    monkeypatch.setattr(monitored, "reset", resetting)
    await _block_loop(sandbox, 0.06)
    before = await sandbox.loop_lag()
    assert before["over_50ms"] >= 1 and before["max_ms"] >= 50.0
    await sandbox.reset()
    lag = await sandbox.loop_lag(min_samples=1)  # the monitor still feeds what stats report
    assert lag["samples"] >= 1
    expected = LoopLag()
    for lag_ns in since_reset[: lag["samples"]]:  # the samples the report was made of, in order
        expected.record(lag_ns)
    assert lag == expected.snapshot()


async def test_monitor_runs_with_the_app_only(make_sandbox: SandboxFactory) -> None:
    """The monitor task starts with the app and is gone once the app is cleaned up."""
    before = len(_monitors())
    sandbox = await make_sandbox()
    await sandbox.loop_lag(min_samples=1)
    assert len(_monitors()) == before + 1
    await sandbox.client.close()
    assert len(_monitors()) == before


def test_loop_lag_histogram_percentile_and_thresholds() -> None:
    """p99 is the nearest-rank bucket's upper edge capped at max; thresholds are strict; memory is fixed."""
    lag = LoopLag()
    assert lag.snapshot() == dict.fromkeys(KEYS, 0) | {"max_ms": 0.0, "p99_ms": 0.0}
    for _ in range(99):
        lag.record(1 * MS)
    lag.record(70 * MS)
    snap = lag.snapshot()
    assert (snap["samples"], snap["max_ms"], snap["p99_ms"]) == (100, 70.0, 1.0)
    assert (snap["over_10ms"], snap["over_20ms"], snap["over_50ms"]) == (1, 1, 1)
    lag.record(70 * MS)  # two of 101 now above 1 ms: rank 100 falls in the 70 ms bucket
    assert lag.snapshot()["p99_ms"] == 70.0
    lag.reset()
    lag.record(10 * MS)  # exactly 10 ms is not over 10 ms
    lag.record(-5 * MS)  # an early wake-up counts as no lag
    assert lag.snapshot() == {
        "max_ms": 10.0,
        "p99_ms": 10.0,
        "samples": 2,
        "over_10ms": 0,
        "over_20ms": 0,
        "over_50ms": 0,
    }
    lag.reset()
    for _ in range(10):
        lag.record(30_000 * MS)  # beyond the last edge: overflow bucket, p99 is the max
    assert lag.snapshot()["p99_ms"] == 30_000.0
    assert len(EDGES_US) < 500 and EDGES_US[-1] == 10_000_000
