"""One record per request while the gateway serves it: queued, in an upstream call, or answered.

A ``Flight`` is created when a request is admitted and carries everything about its progress: where it
came from in the log, its attempts, timings, the last classified answer and the future its terminal
response resolves. ``Flights`` is the one registry of them, by request id (a redelivery of a request
still in flight joins it) and by log position (the consumer asks whether a record may be left to the
next owner: only while its request waits in its queue).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum

from hubclient.catalog import TrSpec
from hubclient.models import ApiRequest, ApiResponse
from services.gateway.providers.base import Classified

Position = tuple[str, int, int]  # (topic, partition, offset) of the request record


class Stage(StrEnum):
    """Where a flight is."""

    QUEUED = "queued"
    CALLING = "calling"
    DONE = "done"


@dataclass(eq=False)
class Flight:
    """A request's progress while it is being served."""

    request: ApiRequest
    spec: TrSpec
    domain: str
    received_s: float  # monotonic
    future: asyncio.Future[ApiResponse]
    position: Position | None = None
    member: str | None = None  # the pool member serving it (its name; a reroute changes it)
    stage: Stage = Stage.QUEUED
    attempts: int = 0
    upstream_s: float = 0.0
    queued_s: float | None = None  # from arrival to the first upstream attempt
    estimated_start_s: float | None = None  # when admission expected its first slot (monotonic)
    estimated_wait_s: float = 0.0  # how far away that was when it was admitted
    token_replaced: bool = False
    classified: Classified | None = None
    retry_reason: str | None = None  # why its last attempt is being tried again (a policy reason)
    withdrawn: bool = False  # its caller let go (revoke, shutdown): never call upstream for it
    marked: bool = False  # an order whose in-flight mark in the idempotency records is its own
    answered_elsewhere: bool = False  # another delivery's record answered it: nothing of it to store
    # a read queued before its idempotency lookup ended: True once it may be sent, False when an earlier
    # delivery's answer stands (its call waits for this; None: nothing to wait for)
    checked: asyncio.Future[bool] | None = None

    def finish(self, response: ApiResponse) -> None:
        """Resolve the flight with its terminal response (the first one wins)."""
        self.stage = Stage.DONE
        if not self.future.done():
            self.future.set_result(response)


@dataclass
class Flights:
    """Every flight of this gateway, by request id and by log position."""

    _by_id: dict[str, Flight] = field(default_factory=dict)
    _by_position: dict[Position, Flight] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, request_id: str) -> Flight | None:
        """The live flight of a request, if any."""
        return self._by_id.get(request_id)

    def add(self, flight: Flight) -> None:
        """Register a new flight."""
        self._by_id[flight.request.request_id] = flight
        if flight.position is not None:
            self._by_position[flight.position] = flight

    def remove(self, flight: Flight) -> None:
        """Forget a finished or withdrawn flight."""
        if self._by_id.get(flight.request.request_id) is flight:
            del self._by_id[flight.request.request_id]
        if flight.position is not None and self._by_position.get(flight.position) is flight:
            del self._by_position[flight.position]

    def busy_at(self, position: Position) -> bool:
        """True once the request read at ``position`` has left its queue: it is being called or answered."""
        flight = self._by_position.get(position)
        return flight is not None and flight.stage is not Stage.QUEUED
