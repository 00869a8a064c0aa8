"""Before the first benchmark: a burst through the raw echo, so that Kafka is warm when measuring starts.

A Kafka started by ``make bench`` a moment before spends its first minute or so compiling its hot paths
(the JVM's JIT), and on two cores that CPU is taken from the gateway: the first ``pacing`` run after a
fresh start measured 95.0-95.7 % of the limit in four tries of five (97.5 % once, in an earlier
``make bench``), with 172-265 of its sends more than 5 ms after their slot, against 97.4 % and 55-101
such sends once Kafka had served some traffic. A burst of few large batches did not help (20,000
requests, 50 pending per client: 97.5 % and 95.9 %); many small requests did (one or four pending per
client: 97.3, 97.4, 97.4 and 97.2 % in four tries after a fresh start). The warm-up sends them to the
echo process on private topics and measures nothing; it runs once per invocation, before any run, for
about 30 s.
"""

from __future__ import annotations

from tests.bench.echo import echo_process
from tests.bench.harness import Bench, Stack, log
from tests.bench.throughput import burst

REQUESTS = 30_000
QUICK_REQUESTS = 2_000
WINDOW = 4  # requests pending per client: many small produce and fetch requests, like the benchmarks'


async def warm_up(stack: Stack, quick: bool) -> str:
    """Send the warm-up burst; returns what was done, for the report."""
    bench = Bench(stack, "warmup", quick)
    total = QUICK_REQUESTS if quick else REQUESTS
    try:
        topics = await bench.topics("echo")
        async with echo_process(stack.kafka, topics.requests, topics.group_id, bench.log_dir / "echo.log"):
            result = await burst(bench, topics, total, window=WINDOW)
    finally:
        await bench.cleanup()
    line = f"{result.ok} of {total} requests through the raw echo at {result.rate:.0f}/s before the first run"
    log(f"warm-up: {line}")
    return line
