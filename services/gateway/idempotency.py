"""Idempotency records: a redelivered request is answered from Redis, not executed again.

Per ``request_id`` one key: ``inflight`` is written right before the first upstream call, the terminal
response replaces it once known. A redelivery (after a crash or a rebalance) that finds a response
republishes it; one that finds only ``inflight`` may run again when the call is idempotent, and is
answered ``unknown_outcome`` when it is not (an order may have reached the broker: reconcile, never
resend).

``IdempotencyStore`` sends the lookups and writes that requests make in the same turn of the event loop
as one pipeline (one round trip, one socket write): under load hundreds of requests look up and store
their records at once, and a round trip each was a tenth of the gateway's CPU. Each caller still awaits
its own command's reply, so a response is stored before its answer is published, as before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hubclient.models import ApiResponse

INFLIGHT = b"inflight"
INFLIGHT_TTL_MS = 24 * 3600 * 1000
RESPONSE_TTL_MS = 7 * 24 * 3600 * 1000  # as long as a redelivery from the request topic is plausible

# Deletes the key only while it still says inflight: a stored response is never removed.
_CLEAR_INFLIGHT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Record:
    """What a previous delivery of the same request left behind."""

    response: ApiResponse | None  # the stored answer, or None while the call was in flight


class Records(Protocol):
    """Where idempotency records live (``IdempotencyStore`` in Redis, ``MemoryRecords`` in tests)."""

    async def lookup(self, request_id: str) -> Record | None: ...

    async def mark_inflight(self, request_id: str) -> None: ...

    async def clear_inflight(self, request_id: str) -> None: ...

    async def store(self, response: ApiResponse) -> None: ...


class MemoryRecords:
    """The records in a dict (no expiry): for unit tests."""

    def __init__(self) -> None:
        self.records: dict[str, ApiResponse | None] = {}

    async def lookup(self, request_id: str) -> Record | None:
        """The record of an earlier delivery, or None."""
        if request_id not in self.records:
            return None
        return Record(self.records[request_id])

    async def mark_inflight(self, request_id: str) -> None:
        """Note an upstream call (kept if a response is already stored)."""
        self.records.setdefault(request_id, None)

    async def clear_inflight(self, request_id: str) -> None:
        """Drop an ``inflight`` mark."""
        if request_id in self.records and self.records[request_id] is None:
            del self.records[request_id]

    async def store(self, response: ApiResponse) -> None:
        """Keep the terminal response."""
        self.records[response.request_id] = response


class IdempotencyStore:
    """Reads and writes the records under ``<prefix>idem:<request_id>``, batched per turn of the loop."""

    def __init__(self, redis: Redis, *, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}idem:"
        self._clear = redis.register_script(_CLEAR_INFLIGHT)
        self._batches = CommandBatcher(redis)

    async def lookup(self, request_id: str) -> Record | None:
        """The record of an earlier delivery, or None for a request seen for the first time."""
        raw = await self._batches.run(("GET", self._prefix + request_id))
        if raw is None:
            return None
        if raw == INFLIGHT:
            return Record(None)
        return Record(ApiResponse.from_json(raw))

    async def mark_inflight(self, request_id: str) -> None:
        """Note that an upstream call is about to be made (kept if a response is already stored)."""
        await self._batches.run(("SET", self._prefix + request_id, INFLIGHT, "PX", INFLIGHT_TTL_MS, "NX"))

    async def clear_inflight(self, request_id: str) -> None:
        """Drop an ``inflight`` mark after the broker refused the call unexecuted (throttle, never sent)."""
        await self._clear(keys=[self._prefix + request_id], args=[INFLIGHT])

    async def store(self, response: ApiResponse) -> None:
        """Keep the terminal response for redeliveries."""
        key = self._prefix + response.request_id
        await self._batches.run(("SET", key, response.to_json(), "PX", RESPONSE_TTL_MS))


Command = tuple[str | bytes | int, ...]


class CommandBatcher:
    """Sends the commands queued during one turn of the event loop as one pipeline.

    At most ``max_in_flight`` pipelines are out at a time; commands queued meanwhile wait for the next,
    which gathers them all (up to ``max_batch``). A failed pipeline fails each of its commands with a
    ``RedisError`` of its own, caused by the pipeline's error.
    """

    def __init__(self, redis: Redis, *, max_in_flight: int = 2, max_batch: int = 512) -> None:
        self._redis = redis
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, command: Command) -> Any:
        """Queue ``command`` for the next pipeline and return its reply (raises ``RedisError``)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._queue and not self._scheduled and len(self._sending) < self._max_in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send_queued)

    def _send_queued(self) -> None:
        self._scheduled = False
        batch = [(c, f) for c, f in self._queue[: self._max_batch] if not f.done()]  # skip cancelled
        del self._queue[: self._max_batch]
        if not batch:
            self._schedule()
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._schedule()

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for command, _ in batch:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # connection, timeout: every command of the batch failed
            for _, future in batch:
                if not future.done():
                    error = RedisError(f"{type(exc).__name__}: {exc}")
                    error.__cause__ = exc
                    future.set_exception(error)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
