"""One priority class of a scheduler: its callers in deficit round robin, each caller's requests EDF.

The caller at the head of the rotation is served up to its turn size (``quantum * weight``) requests,
then goes to the back; a caller that arrives joins at the back, one that runs dry leaves and forfeits
the rest of its turn. Within a caller the earliest deadline goes first, ties by arrival order. Entries
leave lazily: ``discard`` marks them dead and the heaps shed them when reached or half dead.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from hubclient.models import Priority

ItemT = TypeVar("ItemT")


@dataclass(eq=False, slots=True)
class Entry(Generic[ItemT]):
    item: ItemT
    request_id: str
    caller: str
    priority: Priority
    deadline_ms: int
    seq: int
    alive: bool = True


HeapRow = tuple[int, int, Entry[ItemT]]  # (deadline_ms, seq, entry): seq is unique, entries never compared


def compact(heap: list[HeapRow[ItemT]]) -> list[HeapRow[ItemT]]:
    live = [row for row in heap if row[2].alive]
    heapq.heapify(live)
    return live


class CallerQueue(Generic[ItemT]):
    """One caller's requests in one class, earliest deadline first."""

    __slots__ = ("heap", "live")

    def __init__(self) -> None:
        self.heap: list[HeapRow[ItemT]] = []
        self.live = 0

    def first(self) -> Entry[ItemT]:
        while not self.heap[0][2].alive:
            heapq.heappop(self.heap)
        return self.heap[0][2]


class ClassQueue(Generic[ItemT]):
    """One priority class: callers in round-robin order, the head caller's turn in progress."""

    def __init__(self) -> None:
        self.callers: OrderedDict[str, CallerQueue[ItemT]] = OrderedDict()  # rotation order, head first
        self.turn_left = 0  # requests the head caller may still take in its current turn
        self.depth = 0

    def push(self, entry: Entry[ItemT]) -> None:
        queue = self.callers.get(entry.caller)
        if queue is None:
            queue = self.callers[entry.caller] = CallerQueue()
        heapq.heappush(queue.heap, (entry.deadline_ms, entry.seq, entry))
        queue.live += 1
        self.depth += 1

    def pop(self, turn_size: Callable[[str], int]) -> Entry[ItemT]:
        caller, queue = next(iter(self.callers.items()))
        if self.turn_left <= 0:
            self.turn_left = turn_size(caller)
        entry = queue.first()
        heapq.heappop(queue.heap)
        self.turn_left -= 1
        self._taken(caller, queue)
        if caller in self.callers and self.turn_left == 0:
            self.callers.move_to_end(caller)
        return entry

    def discard(self, entry: Entry[ItemT]) -> None:
        queue = self.callers[entry.caller]
        self._taken(entry.caller, queue)
        if len(queue.heap) > 2 * queue.live + 32:
            queue.heap = compact(queue.heap)

    def _taken(self, caller: str, queue: CallerQueue[ItemT]) -> None:
        queue.live -= 1
        self.depth -= 1
        if queue.live == 0:
            if next(iter(self.callers)) == caller:
                self.turn_left = 0
            del self.callers[caller]
