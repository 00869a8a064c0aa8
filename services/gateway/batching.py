"""Redis commands of one turn of the event loop, sent as one pipeline: one round trip, one socket write.

On this kind of host a round trip to Redis costs the gateway far more CPU in the socket write and the
wake-ups than the command itself, and under load hundreds of requests make the same kind of call at
once (look up or store an idempotency record; reserve a slot, one pacer per pool member). Each caller
still awaits the reply to its own command, so what was ordered before (a record stored before its answer
is published, a slot recorded before its send) stays ordered.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

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
        self._starting: asyncio.Task[None] | None = None  # started, not yet taken its commands
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, command: Command) -> Any:
        """Queue ``command`` for the next pipeline and return its reply (raises ``RedisError``)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        """Start the task of the next pipeline. It takes its commands when it first runs, in the loop's next
        turn, so it gathers the whole turn's (a callback that started a task there would cost one turn more
        per round trip, and the pacers wait for one round trip per slot)."""
        if self._queue and self._starting is None and len(self._sending) < self._max_in_flight:
            task = asyncio.get_running_loop().create_task(self._send_queued())
            self._starting = task
            self._sending.add(task)
            task.add_done_callback(self._sent)

    async def _send_queued(self) -> None:
        self._starting = None
        batch = [(c, f) for c, f in self._queue[: self._max_batch] if not f.done()]  # skip cancelled
        del self._queue[: self._max_batch]
        if batch:
            await self._send(batch)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if task is self._starting:  # cancelled before it ran (shutdown): its commands go with it
            self._starting = None
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
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
