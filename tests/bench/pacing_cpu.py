"""Benchmark ``pacing-cpu``: ``pacing`` while two busy processes load both cores of the machine.

Two ``python -c`` busy loops at normal priority (bounded in time, killed when the benchmark ends) run through
the hub phase and the baselines, so the gateway, the sandbox, Kafka and Redis all compete for the CPU. Goal:
still 0 over-limit arrivals; utilisation and late answers are reported.
"""

from __future__ import annotations

from tests.bench.baselines import KRSEC, PYTHON_KIS
from tests.bench.harness import Bench
from tests.bench.pacing import Conditions, run_pacing
from tests.bench.report import Result

BUSY = 2
TITLE = "Pacing under CPU load: three callers at 5x a 20 req/s key, two busy processes"
GOAL = "0 over-limit arrivals at the referee (utilisation and late answers reported)"
BASELINE = (
    "python-kis (19 per fixed 1 s window) and krsec (token bucket 15 req/s, burst 3) on keys of their own, "
    "same CPU load"
)
CONDITIONS = Conditions(
    name="pacing-cpu",
    title=TITLE,
    goal=GOAL,
    baseline_name=BASELINE,
    busy=BUSY,
    utilisation_goal=None,
    late_in_goal=False,
    baselines=(PYTHON_KIS, KRSEC),
)


async def run(bench: Bench) -> Result:
    """One run of the pacing benchmark with both cores busy."""
    return await run_pacing(bench, CONDITIONS)
