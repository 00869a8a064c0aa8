"""Read the audit topics over a range and join them: what ``apihub audit`` shows and ``apihub replay``
re-sends.

Requests are read over the range; answers (and dead letters) over the range plus ``grace_ms``, since an
answer is logged after its request. Each topic's read keeps at most ``max_records`` records, and all of
them together take at most ``max_s`` seconds; a read cut short says so (``truncated``), and then counts
are partial and an answer not read leaves its request looking unanswered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from services.audit.join import JoinResult, join
from services.audit.progress import Progress
from services.audit.reader import read_range
from services.audit.records import RawRecord, read_dead_letter, read_request, read_response
from services.audit.timerange import TimeRange

DEFAULT_GRACE_MS = 120_000  # answers are looked for up to two minutes after the range's end


@dataclass(frozen=True)
class Source:
    """Where the audit log is: the request topic, the reply topics, and the dead-letter topic (optional)."""

    bootstrap_servers: str
    requests_topic: str
    responses_topics: tuple[str, ...]
    dlq_topic: str | None = None
    client_options: dict[str, Any] = field(default_factory=dict)  # SASL/TLS (services.kafka_client)


@dataclass(frozen=True)
class Limits:
    """Bounds of one audit: records kept per topic, and seconds for all the reading."""

    max_records: int = 200_000
    max_s: float = 120.0


@dataclass(frozen=True)
class Collected:
    """The joined log, and why reading stopped early (None when it did not)."""

    joined: JoinResult
    truncated: str | None
    answers_read_until_ms: int


async def collect(
    source: Source,
    time_range: TimeRange,
    *,
    limits: Limits,
    progress: Progress,
    grace_ms: int = DEFAULT_GRACE_MS,
    now_ms: int | None = None,
) -> Collected:
    """Read the requests of ``time_range`` and the answers and dead letters up to ``grace_ms`` after it."""
    started_ms = int(time.time() * 1000) if now_ms is None else now_ms
    deadline_s = time.monotonic() + limits.max_s
    answers_range = TimeRange(time_range.start_ms, time_range.end_ms + grace_ms)
    stops: list[str] = []

    async def read(topic: str, span: TimeRange) -> list[RawRecord]:
        result = await read_range(
            source.bootstrap_servers,
            topic,
            span,
            max_records=limits.max_records,
            deadline_s=deadline_s,
            progress=progress,
            client_options=source.client_options,
        )
        if result.truncated is not None:
            stops.append(result.truncated)
        return result.records

    raw_requests = await read(source.requests_topic, time_range)
    raw_responses: list[RawRecord] = []
    for topic in source.responses_topics:
        raw_responses += await read(topic, answers_range)
    raw_letters = [] if source.dlq_topic is None else await read(source.dlq_topic, answers_range)
    progress.done()
    # What was read of the answers ends at the range's end plus grace, or when the read began.
    read_until_ms = min(answers_range.end_ms, started_ms)
    joined = join(
        (read_request(r) for r in raw_requests),
        (read_response(r) for r in raw_responses),
        (read_dead_letter(r) for r in raw_letters),
        answers_read_until_ms=read_until_ms,
    )
    return Collected(joined, "; ".join(stops) or None, read_until_ms)
