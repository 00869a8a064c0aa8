"""``TaskLoop`` on an in-memory Kafka: tasks consumed in a group, outputs and offsets in one transaction."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced

from services.settings import WorkerSettings
from services.worker import runtime as runtime_module
from services.worker.outputs import Record
from services.worker.runtime import TaskLoop
from tests.unit.kafka_fakes import FakeCluster, FakeConsumer, FakeProducer, Headers, factory
from tests.unit.test_worker_runtime import EchoHandler

TASKS, OUT, DLQ = "echo.tasks", "echo.out", "workers.dlq"


class Rig:
    """The cluster and the clients a loop built."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.consumers: list[FakeConsumer] = []
        self.producers: list[FakeProducer] = []


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Rig:
    """An in-memory Kafka with the echo worker's topics, wired into the runtime."""
    made = Rig(FakeCluster({TASKS: 1, OUT: 1, DLQ: 1}))
    monkeypatch.setattr(
        runtime_module, "AIOKafkaConsumer", factory(made.cluster, FakeConsumer, made.consumers)
    )
    monkeypatch.setattr(
        runtime_module, "AIOKafkaProducer", factory(made.cluster, FakeProducer, made.producers)
    )
    monkeypatch.setattr(runtime_module, "POLL_MS", 20)
    return made


def task(task_id: str, word: str = "hi") -> bytes:
    """An echo task value."""
    return orjson.dumps({"task_id": task_id, "word": word})


async def until(check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds."""
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.005)


async def started(rig: Rig, handler: EchoHandler) -> TaskLoop:
    """A started loop in group ``echo-unit`` with its consumer given the task partition."""
    settings = WorkerSettings(group_id="echo-unit", instance_id="i1")
    loop = TaskLoop(handler, settings)
    await loop.start()
    assert loop.ready and loop.group_id == "echo-unit"
    [consumer] = rig.consumers
    [producer] = rig.producers
    assert producer.config["transactional_id"] == "echo-unit.i1"
    assert consumer.config["isolation_level"] == "read_committed"
    consumer.assign([TopicPartition(TASKS, 0)])
    return loop


async def test_tasks_are_done_in_order_and_committed_with_their_offsets(rig: Rig) -> None:
    """Each task's outputs and offset go in transactions; a bad record is dead-lettered and passed."""
    loop = await started(rig, EchoHandler())
    rig.cluster.append(TASKS, task("t1", "a"))
    rig.cluster.append(TASKS, b"not a task", key=b"junk")
    rig.cluster.append(TASKS, task("t2", "b"))
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    await until(lambda: rig.cluster.committed.get("echo-unit", {}).get(TopicPartition(TASKS, 0)) == 3)
    stop.set()
    await asyncio.wait_for(running, 5)
    await loop.stop()
    assert not loop.ready and rig.consumers[0].stopped and rig.producers[0].stopped
    words = [orjson.loads(r.value or b"")["word"] for r in rig.cluster.records(OUT)]
    assert words == ["a", "a", "b", "b"]  # the checkpoint and the finish of each task
    [letter] = rig.cluster.records(DLQ)
    assert letter.key == b"junk" and orjson.loads(letter.value or b"")["reason"] == "malformed"
    assert set(rig.producers[0].transactions) == {"committed"}


async def test_a_task_in_progress_when_stopping_is_abandoned_uncommitted(rig: Rig) -> None:
    """Stop during a task: the task is cancelled, its offset stays for the next owner."""
    gate, entered = asyncio.Event(), asyncio.Event()

    class Slow(EchoHandler):
        async def handle(self, task: object, out: object) -> None:
            entered.set()
            await gate.wait()

    loop = await started(rig, Slow())
    rig.cluster.append(TASKS, task("slow"))
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    await asyncio.wait_for(entered.wait(), 10)  # the task is in progress
    stop.set()
    await asyncio.wait_for(running, 5)
    await loop.stop()
    assert TopicPartition(TASKS, 0) not in rig.cluster.committed.get("echo-unit", {})
    assert rig.cluster.records(OUT) == []


class FencedProducer(FakeProducer):
    """A producer fenced while its transaction is open: as aiokafka's sender does then, every record sent
    has its future failed with ``ProducerFenced`` (soon, not at once), and the transaction fails with it."""

    def __init__(self, cluster: FakeCluster, **config: Any) -> None:
        super().__init__(cluster, **config)
        self.deliveries: list[asyncio.Future[Any]] = []

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(delivery.set_exception, ProducerFenced())
        self.deliveries.append(delivery)
        return delivery

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        try:
            yield
        except BaseException:
            self.transactions.append("aborted")
            raise
        raise ProducerFenced()


async def test_a_fenced_commit_leaves_no_delivery_error_unread(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fenced, the commit raises ``ProducerFenced`` (the worker's ``error:`` line) and every record's
    failed delivery has been read: asyncio used to print one "Future exception was never retrieved" per
    record after that line, as the futures ``send`` returned were never awaited."""
    made: list[FencedProducer] = []
    monkeypatch.setattr(runtime_module, "AIOKafkaProducer", factory(rig.cluster, FencedProducer, made))
    unread: list[str] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unread.append(context["message"]))
    loop = TaskLoop(EchoHandler(), WorkerSettings(group_id="echo-unit", instance_id="i1"))
    await loop.start()
    records = [Record(OUT, "k1", b"1"), Record(OUT, "k2", b"2")]
    with pytest.raises(ProducerFenced):
        await loop.commit(records, {TopicPartition(TASKS, 0): 1})
    await loop.stop()
    [producer] = made
    await asyncio.sleep(0)  # every delivery has failed by now
    assert len(producer.deliveries) == 2
    producer.deliveries.clear()
    gc.collect()  # an unread future's exception is reported as it is collected
    assert unread == []
    assert producer.transactions == ["aborted"]  # a refused delivery ends the transaction before its commit


async def test_run_and_commit_before_start_are_clear_errors() -> None:
    """The loop says it was not started instead of failing on ``None``."""
    loop = TaskLoop(EchoHandler(), WorkerSettings())
    with pytest.raises(RuntimeError, match="start"):
        await loop.run(asyncio.Event())
    with pytest.raises(RuntimeError, match="not started"):
        await loop.commit([], None)
    await loop.stop()
    assert loop.group_id == "echo"


async def test_a_long_task_keeps_the_consumer_polling_without_reading_ahead(rig: Rig) -> None:
    """While a task runs the consumer is still polled (aiokafka leaves the group after
    ``max_poll_interval_ms``, 5 minutes, without a ``getmany``: another instance would then start the same
    task again), with its partitions paused so that no later task is read before this one is committed;
    the next task follows it, once."""
    gate, entered = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    class Slow(EchoHandler):
        async def handle(self, task: object, out: Any) -> None:
            handled.append(getattr(task, "task_id", ""))
            entered.set()
            await gate.wait()
            await super().handle(task, out)  # type: ignore[arg-type]

    loop = await started(rig, Slow())
    [consumer] = rig.consumers
    polls: list[float] = []
    poll = consumer.getmany

    async def counted(*partitions: TopicPartition, **options: Any) -> Any:
        polls.append(asyncio.get_running_loop().time())
        return await poll(*partitions, **options)

    consumer.getmany = counted  # type: ignore[method-assign]
    rig.cluster.append(TASKS, task("long"))
    rig.cluster.append(TASKS, task("next"))
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    await asyncio.wait_for(entered.wait(), 5)
    during = len(polls)
    await asyncio.sleep(0.2)  # ten poll intervals of the rig
    assert len(polls) - during >= 5, "the consumer was not polled while the task ran"
    assert handled == ["long"] and consumer.paused() == {TopicPartition(TASKS, 0)}
    gate.set()
    await until(lambda: rig.cluster.committed.get("echo-unit", {}).get(TopicPartition(TASKS, 0)) == 2)
    stop.set()
    await asyncio.wait_for(running, 5)
    await loop.stop()
    assert handled == ["long", "next"] and consumer.paused() == set()
    assert [r.key for r in rig.cluster.records(OUT)] == [b"long|1", b"long|2", b"next|1", b"next|2"]
