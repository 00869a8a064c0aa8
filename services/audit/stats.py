"""Latency percentiles and the status mix of a set of exchanges."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from services.audit.join import OUTCOMES, Exchange

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0 < p <= 100) by nearest rank: the smallest value with at least p % of the
    values at or below it. None for no values."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Summary:
    """What a set of exchanges adds up to."""

    total: int
    outcomes: dict[str, int]  # outcome -> count, in OUTCOMES order, only those present
    latency_ms: dict[int, float | None]  # percentile -> request-to-answer time in the log (ms)
    upstream_ms: dict[int, float | None]  # percentile -> the gateway's upstream time (ms)
    answered: int
    extra_answers: int

    def share(self, outcome: str) -> float:
        """The share of ``outcome`` in percent (0 for an empty set)."""
        return 100.0 * self.outcomes.get(outcome, 0) / self.total if self.total else 0.0


def summarize(exchanges: Sequence[Exchange]) -> Summary:
    """Counts by outcome and the p50/p95/p99 of latency (answered only) and of upstream time."""
    counts = Counter(e.outcome for e in exchanges)
    latencies = [float(e.latency_ms) for e in exchanges if e.latency_ms is not None]
    upstream = [e.upstream_ms for e in exchanges if e.upstream_ms is not None]
    return Summary(
        total=len(exchanges),
        outcomes={o: counts[o] for o in OUTCOMES if counts[o]},
        latency_ms={p: percentile(latencies, p) for p in PERCENTILES},
        upstream_ms={p: percentile(upstream, p) for p in PERCENTILES},
        answered=len(latencies),
        extra_answers=sum(e.extra_answers for e in exchanges),
    )
