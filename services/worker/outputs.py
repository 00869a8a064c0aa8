"""``Outputs``: the records one task produces, committed atomically with the task's offset.

A handler ``add``s records (topic, key, JSON value) while it works. When the task ends the runtime commits
them and the task's offset in one Kafka transaction, so a worker killed mid-task leaves nothing behind
that a ``read_committed`` reader sees, and the task is done again from its start. A long task (a history
job over many days) calls ``checkpoint()`` after each finished piece: what was added so far is committed
in its own transaction, and the task's own records tell it, after a restart, which pieces are done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import TopicPartition

from services.worker.errors import TaskFailed


@dataclass(frozen=True, slots=True)
class Record:
    """One output record: ``key`` is the idempotent key readers deduplicate by."""

    topic: str
    key: str
    value: bytes


#: Commits records (and, at the end of a task, its offsets) in one transaction.
Commit = Callable[[list[Record], Mapping[TopicPartition, int] | None], Awaitable[None]]


#: Bytes an output record's value may take: Kafka takes about 1 MiB a record (the producer's
#: ``max_request_size`` and the broker's ``message.max.bytes``), key and framing included.
MAX_VALUE_BYTES = 1_000_000


def encode(value: Mapping[str, Any]) -> bytes:
    """A record value as JSON (orjson: datetimes as ISO 8601)."""
    return orjson.dumps(value)


class Outputs:
    """The pending output records of one task."""

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        self._pending: list[Record] = []
        self.committed = 0

    @property
    def pending(self) -> list[Record]:
        """Records added and not yet committed."""
        return list(self._pending)

    def add(self, topic: str, key: str, value: Mapping[str, Any]) -> None:
        """Add one record; nothing is visible to readers before a commit. A value over
        ``MAX_VALUE_BYTES`` fails the task (``output_too_large``) here, where it is dead-lettered: Kafka
        would refuse it at the commit, which ends the process and leaves the task to fail again forever."""
        raw = encode(value)
        if len(raw) > MAX_VALUE_BYTES:
            raise TaskFailed(
                f"an output record for {topic} takes {len(raw):,} bytes, over {MAX_VALUE_BYTES:,}",
                reason="output_too_large",
            )
        self._pending.append(Record(topic, key, raw))

    def discard(self) -> None:
        """Forget what was added since the last commit (a failed task keeps only its checkpoints)."""
        self._pending.clear()

    async def checkpoint(self) -> None:
        """Commit the records added so far, without the task's offset."""
        await self._flush(None)

    async def _flush(self, offsets: Mapping[TopicPartition, int] | None) -> None:
        if not self._pending and offsets is None:
            return
        records, self._pending = self._pending, []
        await self._commit(records, offsets)
        self.committed += len(records)

    async def finish(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the rest together with the task's offsets (the runtime calls this)."""
        await self._flush(offsets)
