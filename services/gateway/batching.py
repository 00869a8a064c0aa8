"""Redis commands of one turn of the event loop, sent as one pipeline: one round trip, one socket write.

On this kind of host a round trip to Redis costs the gateway far more CPU in the socket write and the
wake-ups than the command itself, and under load hundreds of requests make the same kind of call at
once (look up or store an idempotency record; reserve a slot, one pacer per pool member). Each caller
still awaits the reply to its own command, so what was ordered before (a record stored before its answer
is published, a slot recorded before its send) stays ordered.

Within a pipeline, a run of consecutive ``GET``s travels as one ``MGET`` and a run of ``SET key value PX
ms`` as one script call (``EVAL``): redis-py spends more of the gateway's CPU packing and parsing each
command than Redis spends running it (an idempotency lookup and record per request were two thirds of
the batches' commands). Each caller still gets its own command's reply, in the same order. The merged
commands name several keys, so on Redis Cluster a run would have to be split by hash slot (see
docs/SCALING.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

Command = tuple[str | bytes | int, ...]
_Queued = tuple[Command, "asyncio.Future[Any]"]

# Stores a run of SET key value PX ms: KEYS are the keys, ARGV value and ms for each in turn.
_SET_PX = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'PX', ARGV[2 * i]) end
return #KEYS
"""


def _kind(command: Command) -> str | None:
    """``GET`` or ``SET`` for the commands a run merges, None for the rest (sent as they are)."""
    if command[0] == "GET" and len(command) == 2:
        return "GET"
    if command[0] == "SET" and len(command) == 5 and command[3] == "PX":
        return "SET"
    return None


def _merged(run: list[_Queued]) -> str | None:
    """The kind of a run sent as one merged command (``GET`` or ``SET``), None for a command alone."""
    return _kind(run[0][0]) if len(run) > 1 else None


def _runs(batch: list[_Queued]) -> list[list[_Queued]]:
    """The batch cut into runs of consecutive mergeable commands of one kind (other commands alone)."""
    runs: list[list[_Queued]] = []
    last: str | None = None
    for queued in batch:
        kind = _kind(queued[0])
        if kind is None or kind != last:
            runs.append([])
        runs[-1].append(queued)
        last = kind
    return runs


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
        self._queue: list[_Queued] = []
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

    async def _send(self, batch: list[_Queued]) -> None:
        runs = _runs(batch)
        try:
            pipe = self._redis.pipeline(transaction=False)
            for run in runs:
                pipe.execute_command(*self._command(run))
            replies = await pipe.execute(raise_on_error=False)
            for run, reply in zip(runs, replies, strict=True):
                self._settle(run, reply)
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

    @staticmethod
    def _command(run: list[_Queued]) -> Command:
        """The one command a run sends."""
        merged = _merged(run)
        if merged is None:
            return run[0][0]
        if merged == "GET":
            return ("MGET", *(command[1] for command, _ in run))
        keys = [command[1] for command, _ in run]
        args = [arg for command, _ in run for arg in (command[2], command[4])]
        # EVAL, not EVALSHA: a Redis that lost its scripts (a restart) would refuse the run, and running it
        # again after the rest of the pipeline would break the order of the turn's commands.
        return ("EVAL", _SET_PX, len(keys), *keys, *args)

    @staticmethod
    def _settle(run: list[_Queued], reply: Any) -> None:
        """Give each command of a run its own reply: an MGET's by position, a stored run's ``True`` (as
        redis-py answers a SET), an error to each."""
        merged = _merged(run)
        for i, (_, future) in enumerate(run):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            elif merged is None:
                future.set_result(reply)
            else:
                future.set_result(reply[i] if merged == "GET" else True)
