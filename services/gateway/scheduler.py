"""The order in which one limit domain's queued requests get its upstream slots.

Three levels, each answering one question:

1. **Which class?** Strict priority, ``interactive`` > ``normal`` > ``bulk``, except that each lower class
   holds a reserved minimum share of the pops (defaults: normal 10 %, bulk 5 %) while it has work.
   The share is kept with a credit counter per lower class, in integer millionths so it is exact:
   every pop adds the class's share to its credit while the class has work (an idle class's credit is
   reset to zero, so nothing is banked while idle). A class whose credit has reached one whole slot
   is served before any higher class and pays one slot (of two such classes, the one with more credit,
   then the higher one). Otherwise the highest class with work is served, and if it is a reserved
   class it pays one slot too, never going below zero: service it gets anyway counts towards its share.
2. **Which caller?** Deficit round robin across the callers with queued work in that class: the caller
   at the head of the rotation is served up to ``quantum * weight`` requests in its turn (every request
   costs one slot, so the deficit is a count), then goes to the back. A caller that arrives joins at
   the back, one that runs dry leaves and forfeits the rest of its turn.
3. **Which request?** Earliest deadline first within the caller, ties by arrival order.

Guarantee of the reserved share (``s`` a class's share, ``k`` any number of consecutive pops during
which the class never runs empty): the class is served at least ``floor(s*k) - 1`` times, and at least
``floor(s*k)`` times when it is the only lower class with work. While a higher class has work it is
served fewer than ``s*k + 2`` times. Both follow from the credits summing to under two slots after
every pop, which holds because the shares sum to less than one.

Expired requests are not skipped by ``pop``: the gateway calls ``drop_expired`` before it pops and
answers those ``expired`` without an upstream call. Withdrawn requests leave through ``remove``; both
mark entries dead and the heaps shed them lazily (and are compacted when half dead), so ``push``,
``pop`` and ``remove`` cost O(log n) amortised.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from hubclient.models import ApiRequest, Priority
from services.gateway.errors import BacklogFull
from services.gateway.rotation import ClassQueue, Entry, HeapRow, compact

#: Highest class first.
CLASSES = (Priority.INTERACTIVE, Priority.NORMAL, Priority.BULK)
#: Reserved minimum shares of the pops for the lower classes, while they have work.
DEFAULT_RESERVED_SHARE: Mapping[Priority, float] = {Priority.NORMAL: 0.10, Priority.BULK: 0.05}

_SLOT = 1_000_000  # one slot of credit; shares are held in millionths so the accounting is exact
_RANK = {cls: rank for rank, cls in enumerate(CLASSES)}


class HasRequest(Protocol):
    """Anything the scheduler can queue: it carries the request it stands for."""

    @property
    def request(self) -> ApiRequest: ...


@dataclass(frozen=True, eq=False)
class Queued:
    """A request waiting for a slot; ``payload`` is the gateway's (e.g. the future to resolve)."""

    request: ApiRequest
    enqueued_s: float = field(default_factory=time.monotonic)  # monotonic seconds
    payload: object = None


ItemT = TypeVar("ItemT", bound=HasRequest)


class Scheduler(Generic[ItemT]):
    """Orders one limit domain's queued requests; synchronous, for use from one event loop."""

    def __init__(
        self,
        *,
        max_backlog: int = 10_000,
        max_backlog_per_class: Mapping[Priority, int] | None = None,
        reserved_share: Mapping[Priority, float] = DEFAULT_RESERVED_SHARE,
        quantum: int = 1,
        caller_weights: Mapping[str, int] | None = None,
    ) -> None:
        if max_backlog < 1:
            raise ValueError("max_backlog must be at least 1")
        if quantum < 1:
            raise ValueError("quantum must be at least 1 request")
        if Priority.INTERACTIVE in reserved_share:
            raise ValueError("interactive is served first anyway; only lower classes reserve a share")
        if any(not 0 <= share < 1 for share in reserved_share.values()):
            raise ValueError("reserved shares must each be in [0, 1)")
        weights = dict(caller_weights or {})
        if any(weight < 1 for weight in weights.values()):
            raise ValueError("caller weights must be at least 1")
        self._max_backlog = max_backlog
        self._max_per_class = dict(max_backlog_per_class or {})
        self._share = {cls: round(reserved_share.get(cls, 0.0) * _SLOT) for cls in CLASSES[1:]}
        if sum(self._share.values()) >= _SLOT:
            raise ValueError("reserved shares must sum to less than 1")
        self._credit = dict.fromkeys(self._share, 0)
        self._quantum = quantum
        self._weights = weights
        self._classes: dict[Priority, ClassQueue[ItemT]] = {cls: ClassQueue() for cls in CLASSES}
        self._by_id: dict[str, Entry[ItemT]] = {}
        self._by_deadline: list[HeapRow[ItemT]] = []  # every entry, for drop_expired; popped ones go dead
        self._seq = 0

    def __len__(self) -> int:
        """Requests queued, all classes."""
        return len(self._by_id)

    def __contains__(self, request_id: object) -> bool:
        """Whether a request with this id is queued."""
        return request_id in self._by_id

    def depth(self, priority: Priority) -> int:
        """Requests queued in one class."""
        return self._classes[priority].depth

    def callers(self, priority: Priority) -> list[str]:
        """Callers with queued work in one class, in round-robin order (next served first)."""
        return list(self._classes[priority].callers)

    def push(self, item: ItemT) -> None:
        """Queue a request; raises ``BacklogFull`` at the limit and ``ValueError`` for a queued id."""
        request = item.request
        cls = request.priority
        if len(self._by_id) >= self._max_backlog:
            raise BacklogFull(f"scheduler backlog full: {len(self._by_id)} of {self._max_backlog} queued")
        class_limit = self._max_per_class.get(cls)
        if class_limit is not None and self._classes[cls].depth >= class_limit:
            raise BacklogFull(f"{cls.value} backlog full: {self._classes[cls].depth} of {class_limit} queued")
        if request.request_id in self._by_id:
            raise ValueError(f"request {request.request_id} is already queued")
        self._seq += 1
        entry = Entry(item, request.request_id, request.caller, cls, request.deadline_ms, self._seq)
        self._classes[cls].push(entry)
        self._by_id[entry.request_id] = entry
        heapq.heappush(self._by_deadline, (entry.deadline_ms, entry.seq, entry))

    def pop(self) -> ItemT | None:
        """The request that gets the next slot, or None when nothing is queued."""
        cls = self._next_class()
        if cls is None:
            return None
        entry = self._classes[cls].pop(self._turn_size)
        self._forget(entry)
        return entry.item

    def remove(self, request_id: str) -> bool:
        """Withdraw a queued request (e.g. its partition was revoked); False if it is not queued."""
        entry = self._by_id.get(request_id)
        if entry is None:
            return False
        self._discard(entry)
        return True

    def drop_expired(self, now_ms: int) -> list[ItemT]:
        """Remove and return, earliest deadline first, every request with ``deadline_ms <= now_ms``."""
        expired: list[ItemT] = []
        while self._by_deadline and self._by_deadline[0][0] <= now_ms:
            entry = heapq.heappop(self._by_deadline)[2]
            if entry.alive:
                self._discard(entry)
                expired.append(entry.item)
        return expired

    def earliest_deadline_ms(self) -> int | None:
        """The earliest deadline among queued requests, or None when nothing is queued."""
        while self._by_deadline and not self._by_deadline[0][2].alive:
            heapq.heappop(self._by_deadline)
        return self._by_deadline[0][0] if self._by_deadline else None

    def estimated_wait_slots(
        self, priority: Priority, deadline_ms: int | None = None, *, caller: str | None = None
    ) -> int:
        """Slots served before a new request of this class would be: an upper bound, O(classes+callers).

        Assumes nothing else arrives and nothing expires meanwhile. Within the class, without ``caller``
        the whole class counts as ahead; with it, round robin bounds what other callers take while the
        caller's own earlier requests go first (none when ``deadline_ms`` is earlier than all of them).
        Higher classes count in full, lower classes only by what their reserved shares can take. A
        reserved class is also bounded by its share alone, which holds whatever arrives above it.
        """
        if not self._by_id:  # nothing ahead (the pool asks this of several members per request)
            return 0
        rank = _RANK[priority]
        in_class = self._ahead_in_class(self._classes[priority], deadline_ms, caller)
        base = in_class + sum(self._classes[cls].depth for cls in CLASSES[:rank])
        lower = [cls for cls in CLASSES[rank + 1 :] if self._classes[cls].depth > 0 and self._share[cls]]
        lower_share = sum(self._share[cls] for cls in lower)
        # Over T pops the lower classes take fewer than lower_share*T + 2 slots in all (their credits
        # start under two slots), so T < (base + 2) / (1 - lower_share); nor more than they hold.
        wait = base + sum(self._classes[cls].depth for cls in lower)
        if lower:
            wait = min(wait, ((base + 2) * _SLOT - 1) // (_SLOT - lower_share))
        own_share = self._share.get(priority, 0)
        if own_share:
            # In k pops the class gets more than share*k - 2 slots; k = ceil((in_class + 2) / share).
            wait = min(wait, ((in_class + 2) * _SLOT - 1) // own_share)
        return wait

    def _ahead_in_class(self, queue: ClassQueue[ItemT], deadline_ms: int | None, caller: str | None) -> int:
        if caller is None:
            return queue.depth
        own = queue.callers.get(caller)
        own_ahead = 0
        if own is not None and (deadline_ms is None or own.first().deadline_ms <= deadline_ms):
            own_ahead = own.live
        # The new request is served in the caller's `turns`-th turn at the latest; every other caller
        # gets at most that many turns first (the head's turn in progress counts as one).
        turns = -(-(own_ahead + 1) // self._turn_size(caller))
        others = sum(
            min(other.live, turns * self._turn_size(name))
            for name, other in queue.callers.items()
            if name != caller
        )
        return own_ahead + others

    def _turn_size(self, caller: str) -> int:
        return self._quantum * self._weights.get(caller, 1)

    def _next_class(self) -> Priority | None:
        waiting = [cls for cls in CLASSES if self._classes[cls].depth > 0]
        if not waiting:
            return None
        due: list[Priority] = []
        for cls, share in self._share.items():
            if self._classes[cls].depth == 0:
                self._credit[cls] = 0
                continue
            self._credit[cls] += share
            if self._credit[cls] >= _SLOT:
                due.append(cls)
        # A class owed a whole slot goes first (the most owed, then the higher); else strict priority.
        chosen = max(due, key=lambda cls: (self._credit[cls], -_RANK[cls])) if due else waiting[0]
        if chosen in self._credit:
            self._credit[chosen] = max(0, self._credit[chosen] - _SLOT)
        return chosen

    def _discard(self, entry: Entry[ItemT]) -> None:
        entry.alive = False
        self._classes[entry.priority].discard(entry)
        self._forget(entry)

    def _forget(self, entry: Entry[ItemT]) -> None:
        entry.alive = False
        del self._by_id[entry.request_id]
        if self._classes[entry.priority].depth == 0 and entry.priority in self._credit:
            self._credit[entry.priority] = 0  # an idle class banks nothing
        if len(self._by_deadline) > 2 * len(self._by_id) + 64:
            self._by_deadline = compact(self._by_deadline)
