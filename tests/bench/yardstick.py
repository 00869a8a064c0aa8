"""A fixed piece of CPU work timed before every run, so a slow host shows next to the figures it made.

The machine is shared and its speed swings: the same code measured 177 to 272 us per request within an
hour. The load average says how many processes wanted a core, not how fast a core was; this says the
latter. The work is the kind the services do per message (building a dict of strings, JSON both ways,
looking keys up), timed in this process's CPU seconds (user + system), so waiting for a core does not
count; a host twice as slow shows twice the milliseconds.
"""

from __future__ import annotations

import statistics
import time

import orjson

ROUNDS = 2_000
REPEATS = 5
_FIELDS = [f"field_{i:02d}" for i in range(40)]


def _work() -> int:
    total = 0
    for n in range(ROUNDS):
        record = {name: f"{n * 31 + i:08d}" for i, name in enumerate(_FIELDS)}
        parsed = orjson.loads(orjson.dumps(record))
        total += sum(len(parsed[name]) for name in _FIELDS[::4])
    return total


def yardstick_ms(repeats: int = REPEATS) -> float:
    """Median CPU milliseconds of ``repeats`` rounds of the fixed work: lower means a faster host."""
    times = []
    for _ in range(max(1, repeats)):
        started = time.process_time()
        _work()
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times)
