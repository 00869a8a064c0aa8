"""The throughput benchmark's bound for this host: what the other processes leave to a gateway."""

from __future__ import annotations

from tests.bench.harness import CpuMeter
from tests.bench.throughput import host_room


def meter(used_s: dict[str, float]) -> CpuMeter:
    """A meter as if a burst had used ``used_s`` CPU seconds per process."""
    cpu = CpuMeter({})
    cpu.used_s = used_s
    return cpu


def test_the_room_counts_everything_but_the_gateway_at_its_best_per_message_cost() -> None:
    """1,000 answers: sandbox 0.4 ms and Redis 0.1 ms each; Kafka 0.3 ms in the hub run but 0.1 ms per
    echo message (the lower one counts), the load generator 0.1 ms in both: 0.7 ms, so 2 cores answer at
    most 2,857/s with a free gateway, leaving -0.03 ms for 3,000/s and 0.01 ms for 0.35 x 8,000/s."""
    hub = meter({"gateway": 0.9, "sandbox": 0.4, "kafka": 0.3, "load generator": 0.1, "redis": 0.1})
    echo = meter({"echo": 0.2, "kafka": 0.2, "load generator": 0.3})
    text = host_room(hub, echo, hub_ok=1_000, echo_ok=2_000, echo_rate=8_000, cores=2)
    assert "at least 0.70 ms" in text
    assert "sandbox 0.40, kafka 0.10, load generator 0.10, redis 0.10" in text
    assert "at most 2857/s (0.36 x echo)" in text
    assert "3,000/s: -0.03 ms" in text and "0.35 x echo: 0.01 ms" in text
