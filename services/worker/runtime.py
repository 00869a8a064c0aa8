"""The task loop every worker runs: consume a task topic, handle one task at a time, commit exactly once.

``TaskLoop`` reads its task topic in its own consumer group (``read_committed``, no auto commit). For each
record it asks the ``Handler`` to parse and handle it, then commits the task's output records and its
offset in one transaction of a transactional producer whose id (``{group}.{instance_id}``) is stable
across restarts: a worker killed with SIGKILL leaves an open transaction that its restarted self aborts by
fencing, so readers never see half a task and the task is done again from its start. Records a handler
``checkpoint``s stay committed (a history job resumes after its last finished symbol-day).

A record that is not a task goes to the dead-letter topic with reason ``malformed``; a task the hub keeps
failing (``TaskFailed``, or a hub error a handler let through) goes there with its reason and last error;
a bug in a handler (any other exception) is logged and dead-lettered as ``internal_error``. In every case
the offset moves on with the dead letter, in the same transaction: nothing is lost, nothing blocks the
partition. Kafka errors while committing end the process (a supervisor restarts it; the task is redone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from hubclient import HubError
from services.kafka_client import GROUP_METADATA_MAX_AGE_MS, client_kwargs
from services.logs import log_event
from services.settings import WorkerSettings
from services.worker.errors import WorkerError
from services.worker.metrics import OUTPUTS, TASK_SECONDS, TASKS
from services.worker.outputs import Commit, Outputs, Record
from services.worker.task import Task

logger = logging.getLogger(__name__)

POLL_MS = 500


class Handler(Protocol):
    """What a worker provides to the loop."""

    name: str
    task_topic: str

    async def start(self) -> None:
        """Load what the handler keeps between tasks (called before the first task)."""
        ...

    async def stop(self) -> None:
        """Release it."""
        ...

    def parse(self, value: bytes | None) -> Task:
        """The task in a record's value; raises ``MalformedTask``."""
        ...

    async def handle(self, task: Task, out: Outputs) -> None:
        """Do the task, adding its output records to ``out``; raises ``WorkerError`` to give it up."""
        ...


#: Bytes a dead letter's ``task`` text may take as JSON, escapes included (a task of control characters
#: takes six bytes a character): with the rest of the letter it stays far below Kafka's 1 MiB a record.
TASK_TEXT_BYTES = 100_000
#: Characters of a record key kept as a dead letter's key.
KEY_CHARS = 1_000


def dead_letter(worker: str, record: ConsumerRecord[Any, Any], reason: str, error: str) -> dict[str, Any]:
    """The dead-letter value of a task record: where it came from, why it failed, the task itself (its
    text cut to ``TASK_TEXT_BYTES`` as JSON; the record stays at its source)."""
    raw = (record.value or b"")[:TASK_TEXT_BYTES]
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return {
        "worker": worker,
        "reason": reason,
        "error": _json_cut(error, 4_000),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "task": _json_cut(text, TASK_TEXT_BYTES),
        "failed_at_ms": int(time.time() * 1000),
    }


def _json_cut(text: str, limit: int) -> str:
    """``text``, cut until it takes at most ``limit`` bytes as a JSON string."""
    while len(orjson.dumps(text)) > limit:
        text = text[: len(text) * 3 // 4]
    return text


class TaskLoop:
    """Consumes ``handler.task_topic`` and commits each task's outputs with its offset."""

    def __init__(self, handler: Handler, settings: WorkerSettings) -> None:
        self._handler = handler
        self._settings = settings
        self.group_id = settings.group_id or handler.name
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.ready = False

    async def start(self) -> None:
        """Connect the transactional producer (fencing a killed predecessor) and join the group."""
        kafka = self._settings.kafka
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            transactional_id=f"{self.group_id}.{self._settings.instance_id}",
            transaction_timeout_ms=self._settings.transaction_timeout_ms,
            client_id=f"{self._handler.name}-out",
            **client_kwargs(kafka),
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            self._handler.task_topic,
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            session_timeout_ms=kafka.session_timeout_ms,
            metadata_max_age_ms=GROUP_METADATA_MAX_AGE_MS,
            client_id=f"{self._handler.name}-tasks",
            **client_kwargs(kafka),
        )
        await self._consumer.start()
        self.ready = True
        log_event(
            logger,
            "worker.started",
            worker=self._handler.name,
            topic=self._handler.task_topic,
            group=self.group_id,
        )

    async def stop(self) -> None:
        """Leave the group and close the producer."""
        self.ready = False
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def run(self, stop: asyncio.Event) -> None:
        """Handle tasks until ``stop`` is set; a task in progress then is abandoned (and redone later)."""
        if self._consumer is None:
            raise RuntimeError("start the TaskLoop before running it")
        while not stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=POLL_MS, max_records=1)
            for records in batch.values():
                for record in records:
                    current = asyncio.create_task(
                        process(self._handler, record, self.commit, dlq_topic=self._settings.topics.dlq)
                    )
                    stopping = asyncio.create_task(stop.wait())
                    try:
                        await self._poll_while(current, stopping)
                    except BaseException:
                        current.cancel()
                        raise
                    finally:
                        stopping.cancel()
                    if not current.done():
                        current.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await current
                        return
                    current.result()  # a commit that failed ends the loop

    async def _poll_while(self, current: asyncio.Task[str], stopping: asyncio.Task[bool]) -> None:
        """Wait until ``current`` (the task) or ``stopping`` is done, polling the paused consumer meanwhile.

        aiokafka leaves the group when ``getmany`` is not called for ``max_poll_interval_ms`` (5 minutes),
        and a task runs until its deadline (600 s by default, a history job as long as it asks): the
        partition would then go to another instance, which starts the same task again while this one
        still runs it, and this one rejoins with a rebalance of its own. The polls return no record: the
        assigned partitions are paused first, and a partition given during a poll is sought back to the
        record it returned, to be read after the task."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the TaskLoop is not started")
        try:
            while not (current.done() or stopping.done()):
                consumer.pause(*consumer.assignment())
                for tp, records in (await consumer.getmany(timeout_ms=0)).items():
                    consumer.seek(tp, records[0].offset)
                await asyncio.wait(
                    {current, stopping}, timeout=POLL_MS / 1000, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            consumer.resume(*consumer.assignment())

    async def commit(self, records: list[Record], offsets: Any) -> None:
        """Produce ``records`` and commit ``offsets`` (if any) in one transaction.

        Each record's delivery is awaited before the offsets join the transaction: a record the broker
        refuses ends the transaction here (aborted, the task redone) instead of being known only to the
        future ``send`` returned. Unread, those futures were also what asyncio printed after a fenced
        worker's ``error:`` line, as "Future exception was never retrieved ... ProducerFenced"."""
        if self._producer is None:
            raise RuntimeError("the TaskLoop is not started")
        async with self._producer.transaction():
            deliveries = [
                await self._producer.send(record.topic, record.value, key=record.key.encode())
                for record in records
            ]
            await asyncio.gather(*deliveries)
            if offsets:
                await self._producer.send_offsets_to_transaction(offsets, self.group_id)
        for record in records:
            OUTPUTS.labels(self._handler.name, record.topic).inc()


async def process(
    handler: Handler, record: ConsumerRecord[Any, Any], commit: Commit, *, dlq_topic: str
) -> str:
    """Handle one task record and commit it with its offset; returns the outcome (done, failed, malformed).

    Whatever happens to the task, the record's offset is committed with either the task's outputs or its
    dead letter, so the partition moves on and nothing is dropped.
    """
    name = handler.name
    started = time.monotonic()
    offsets = {TopicPartition(record.topic, record.partition): record.offset + 1}
    out = Outputs(commit)
    task_id = None
    outcome, reason, error = "done", "", ""
    try:
        task = handler.parse(record.value)
        task_id = task.task_id
        await handler.handle(task, out)
    except WorkerError as exc:
        outcome = "malformed" if exc.reason == "malformed" else "failed"
        reason, error = exc.reason, str(exc)
    except HubError as exc:
        outcome, reason, error = "failed", f"hub:{type(exc).__name__}", str(exc)
    except KafkaError:  # a checkpoint that could not commit: end the process, the task is redone
        raise
    except Exception as exc:  # a bug must not stop the partition; the dead letter keeps the task
        logger.exception("worker.internal_error", extra={"fields": {"worker": name, "task_id": task_id}})
        outcome, reason, error = "failed", "internal_error", f"{type(exc).__name__}: {exc}"
    if outcome != "done":
        out.discard()
        key = task_id or _record_key(record)
        out.add(dlq_topic, key, dead_letter(name, record, reason, error))
    await out.finish(offsets)
    TASKS.labels(name, outcome).inc()
    TASK_SECONDS.labels(name).observe(time.monotonic() - started)
    log_event(
        logger,
        f"worker.task_{outcome}",
        logging.INFO if outcome == "done" else logging.WARNING,
        worker=name,
        task_id=task_id,
        reason=reason or None,
        error=error or None,
        outputs=out.committed,
        ms=round((time.monotonic() - started) * 1000, 1),
    )
    return outcome


def _record_key(record: ConsumerRecord[Any, Any]) -> str:
    if record.key:
        return bytes(record.key)[:KEY_CHARS].decode(errors="replace")
    return f"{record.topic}:{record.partition}:{record.offset}"


__all__ = ["Handler", "TaskLoop", "dead_letter", "process"]
