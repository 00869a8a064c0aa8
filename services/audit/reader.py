"""Reading one topic over a time range with a consumer of its own (no group, nothing committed; the
workers' ``open_reader``, which holds every partition of the topic).

Each partition is positioned with ``offsets_for_times`` at the range's start (less ``SKEW_MS``: record
timestamps are the producers' clocks and not strictly ordered within a partition) and read up to the end
offset taken when the read began, or until its records are ``SKEW_MS`` past the range's end. Only records
whose timestamp is in the range are kept. The read stops early, and says why, past ``max_records`` kept
records or ``deadline_s`` (monotonic seconds), so an audit of a large log cannot run away.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from services.audit import AuditError
from services.audit.progress import Progress
from services.audit.records import RawRecord
from services.audit.timerange import TimeRange
from services.worker.reader import open_reader

SKEW_MS = 5_000
FETCH_TIMEOUT_MS = 200
FETCH_MAX_RECORDS = 2_000
TOPIC_WAIT_S = 5.0  # a topic still unknown after this is reported missing


@dataclass(frozen=True)
class Read:
    """What a read returned: the kept records and, when it stopped early, why."""

    records: list[RawRecord]
    truncated: str | None = None


async def read_range(
    bootstrap_servers: str,
    topic: str,
    time_range: TimeRange,
    *,
    max_records: int,
    deadline_s: float,
    progress: Progress,
    client_id: str = "apihub-audit",
    client_options: dict[str, Any] | None = None,
) -> Read:
    """The records of ``topic`` logged in ``time_range`` (all partitions), read without a consumer group."""
    try:
        consumer = await open_reader(
            bootstrap_servers,
            [topic],
            client_id=client_id,
            wait_s=TOPIC_WAIT_S,
            client_options=client_options,
        )
    except RuntimeError as exc:  # the one way open_reader reports a topic that does not exist
        raise AuditError(f"{exc}") from exc
    try:
        partitions = sorted(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        found = await consumer.offsets_for_times(
            {tp: max(0, time_range.start_ms - SKEW_MS) for tp in partitions}
        )
        starts: dict[TopicPartition, int] = {}
        for tp in partitions:
            hit = found.get(tp)
            starts[tp] = ends[tp] if hit is None else min(hit.offset, ends[tp])
            consumer.seek(tp, starts[tp])
        return await _read(consumer, topic, time_range, starts, ends, max_records, deadline_s, progress)
    finally:
        await consumer.stop()


async def _read(
    consumer: AIOKafkaConsumer,
    topic: str,
    time_range: TimeRange,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    max_records: int,
    deadline_s: float,
    progress: Progress,
) -> Read:
    active = {tp for tp in starts if starts[tp] < ends[tp]}
    total = sum(ends[tp] - starts[tp] for tp in active)
    done: dict[TopicPartition, int] = dict.fromkeys(active, 0)
    kept: list[RawRecord] = []
    stop_after_ms = time_range.end_ms + SKEW_MS
    while active:
        if time.monotonic() > deadline_s:
            return Read(kept, f"time limit reached while reading {topic}")
        batches = await consumer.getmany(*active, timeout_ms=FETCH_TIMEOUT_MS, max_records=FETCH_MAX_RECORDS)
        for tp, batch in batches.items():
            for record in batch:
                if record.offset >= ends[tp] or record.timestamp > stop_after_ms:
                    active.discard(tp)
                    break
                if record.timestamp in time_range:
                    kept.append(_raw(record))
                    if len(kept) >= max_records:
                        return Read(kept, f"record limit ({max_records:,}) reached while reading {topic}")
        for tp in list(active):
            position = await consumer.position(tp)
            done[tp] = position - starts[tp]
            if position >= ends[tp]:
                active.discard(tp)
        if total:
            read = sum(done.values())
            progress.report(f"audit: {topic} {read:,} of {total:,} records ({100 * read // total}%)")
    return Read(kept)


def _raw(record: ConsumerRecord[bytes, bytes]) -> RawRecord:
    return RawRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        value=record.value,
        headers=tuple((str(k), bytes(v)) for k, v in (record.headers or ())),
        key=record.key,
    )
