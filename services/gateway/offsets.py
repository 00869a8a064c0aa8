"""Out-of-order completion, in-order commits: the committable position of each partition.

Requests finish in any order, but Kafka keeps one position per partition. The tracker commits only
the contiguous completed prefix, so a crash can redeliver finished work (answered from the idempotency
record) but never skips unfinished work. Offsets may have gaps (compaction, transaction markers); since
records arrive in offset order, the prefix is taken over the offsets actually seen.
"""

from __future__ import annotations

from collections import OrderedDict

from aiokafka import TopicPartition


class OffsetTracker:
    """Started and completed offsets per partition, in fetch order."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, OrderedDict[int, bool]] = {}  # offset -> completed
        self._position: dict[TopicPartition, int] = {}  # next offset to read after the done prefix
        self._committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        """Record that ``offset`` was taken for processing (call in fetch order)."""
        open_offsets = self._open.setdefault(tp, OrderedDict())
        if offset in open_offsets:
            return
        if open_offsets and offset < next(reversed(open_offsets)):
            # Out of order (a re-fetch after a rebalance): keep the prefix computation sound.
            open_offsets[offset] = False
            self._open[tp] = OrderedDict(sorted(open_offsets.items()))
            return
        open_offsets[offset] = False

    def completed(self, tp: TopicPartition, offset: int) -> None:
        """Record that ``offset`` got its terminal response."""
        open_offsets = self._open.get(tp)
        if open_offsets is None or offset not in open_offsets:
            return  # the partition was revoked and forgotten meanwhile
        open_offsets[offset] = True
        while open_offsets:
            first, done = next(iter(open_offsets.items()))
            if not done:
                break
            open_offsets.popitem(last=False)
            self._position[tp] = first + 1

    def position(self, tp: TopicPartition) -> int | None:
        """The committable position of ``tp`` (next offset after the completed prefix), if known."""
        return self._position.get(tp)

    def in_flight(self, tp: TopicPartition) -> int:
        """Offsets of ``tp`` taken and not yet part of the committable prefix."""
        return len(self._open.get(tp, ()))

    def total_in_flight(self) -> int:
        """Offsets taken and not yet committable, over all partitions."""
        return sum(len(o) for o in self._open.values())

    def commits_due(self, tps: list[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Positions to commit that moved since the last ``committed`` call (all partitions by default)."""
        return {
            tp: pos
            for tp, pos in self._position.items()
            if (tps is None or tp in tps) and self._committed.get(tp) != pos
        }

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Record a successful commit."""
        self._committed.update(offsets)

    def forget(self, tps: list[TopicPartition]) -> None:
        """Drop the state of revoked partitions."""
        for tp in tps:
            self._open.pop(tp, None)
            self._position.pop(tp, None)
            self._committed.pop(tp, None)
