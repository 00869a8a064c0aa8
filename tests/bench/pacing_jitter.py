"""Benchmark ``pacing-jitter``: ``pacing`` with 50 ms of arrival jitter between the sender and the referee.

The sandbox delays every provider request by a uniform random 0-50 ms before its referee counts it (fault
``arrival_jitter_ms``), so requests overtake each other on the way. The gateway is told the whole delay a
request may have before it is counted: the injected 50 ms plus 15 ms for the sandbox's own counting delay
on this busy host (its referee's event-loop stalls, reported as ``loop_lag``, which the plain ``pacing``
run covers with the 20 ms default for a broker on this host): ``APIHUB_KIS__ARRIVAL_JITTER_MS=65``. The
baselines (python-kis, krsec) run under the same jitter.
"""

from __future__ import annotations

from tests.bench.baselines import KRSEC, PYTHON_KIS
from tests.bench.harness import Bench
from tests.bench.pacing import Conditions, run_pacing
from tests.bench.report import Result

JITTER_MS = 50.0
GATEWAY_JITTER_MS = JITTER_MS + 15.0
TITLE = "Pacing with 50 ms arrival jitter: three callers, each demanding 5x a 20 req/s key"
GOAL = (
    "0 over-limit arrivals at the referee, >= 93 % of the limit used, 0 admitted requests answered after "
    "their deadline"
)
BASELINE = (
    "python-kis (19 per fixed 1 s window) and krsec (token bucket 15 req/s, burst 3) on keys of their own, "
    "same jitter"
)
CONDITIONS = Conditions(
    name="pacing-jitter",
    title=TITLE,
    goal=GOAL,
    baseline_name=BASELINE,
    jitter_ms=JITTER_MS,
    gateway_jitter_ms=GATEWAY_JITTER_MS,
    utilisation_goal=0.93,
    baselines=(PYTHON_KIS, KRSEC),
)


async def run(bench: Bench) -> Result:
    """One run of the pacing benchmark under arrival jitter."""
    return await run_pacing(bench, CONDITIONS)
