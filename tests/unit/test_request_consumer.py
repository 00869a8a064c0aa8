"""``RequestConsumer`` on an in-memory Kafka: prefix commits, read-ahead pauses, revokes and stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError

from services.gateway import consumer as consumer_module
from services.gateway.consumer import RequestConsumer
from services.gateway.metrics import CONSUMER_LAG
from services.settings import KafkaSettings
from tests.unit.kafka_fakes import FakeCluster, FakeConsumer, factory

TOPIC = "api.requests"
TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class Handler:
    """Holds each record until the test releases it (or fails it)."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._gates: dict[tuple[int, int], asyncio.Future[None]] = {}

    def gate(self, record: ConsumerRecord[bytes, bytes]) -> asyncio.Future[None]:
        key = (record.partition, record.offset)
        if key not in self._gates:
            self._gates[key] = asyncio.get_running_loop().create_future()
        return self._gates[key]

    async def __call__(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.seen.append(record.offset)
        await self.gate(record)

    def finish(self, partition: int, offset: int, error: Exception | None = None) -> None:
        """Let one record's handling end (with ``error`` raised from the handler)."""
        key = (partition, offset)
        future = self._gates.setdefault(key, asyncio.get_running_loop().create_future())
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` holds."""
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.005)


class Running:
    """A started consumer with its run task, its fake client and the handler."""

    def __init__(self, rc: RequestConsumer, client: FakeConsumer, handler: Handler, cluster: FakeCluster):
        self.rc, self.client, self.handler, self.cluster = rc, client, handler, cluster

    def put(self, count: int, partition: int = 0) -> None:
        for _ in range(count):
            self.cluster.append(TOPIC, b"{}", partition=partition)

    def committed(self, tp: TopicPartition = TP0) -> int | None:
        return self.cluster.committed.get("apihub-gateway", {}).get(tp)


@pytest.fixture
async def make(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    """Start ``RequestConsumer``s on a two-partition fake topic; stops them at the end."""
    running: list[tuple[RequestConsumer, asyncio.Task[None]]] = []

    async def start(
        *, readahead: int = 100, max_inflight: int = 1000, abandonable: Any = None, drain_timeout_s: float = 5
    ) -> Running:
        cluster = FakeCluster({TOPIC: 2})
        made: list[FakeConsumer] = []
        monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", factory(cluster, FakeConsumer, made))
        handler = Handler()
        extra = {} if abandonable is None else {"abandonable": abandonable}
        rc = RequestConsumer(
            KafkaSettings(),
            handler,
            instance_id="gw-1",
            readahead=readahead,
            max_inflight=max_inflight,
            drain_timeout_s=drain_timeout_s,
            **extra,
        )
        await rc.start()
        [client] = made
        assert client.subscribed == [TOPIC] and client.config["enable_auto_commit"] is False
        assert client.config["group_instance_id"] == "gw-1"
        await client.rebalance([TP0, TP1])
        running.append((rc, asyncio.create_task(rc.run())))
        return Running(rc, client, handler, cluster)

    yield start
    for rc, task in running:
        if not task.done():
            await asyncio.wait_for(rc.stop(), 10)
        await asyncio.wait_for(task, 10)


async def test_run_before_start_is_a_clear_error() -> None:
    """Polling an unstarted consumer says so."""
    with pytest.raises(RuntimeError, match="start"):
        await RequestConsumer(KafkaSettings(), Handler(), instance_id="x").run()


async def test_only_the_completed_prefix_is_committed(make: Callable[..., Any]) -> None:
    """Records finishing out of order are committed up to the first unfinished one, then past it."""
    run = await make()
    assert run.rc.joined and run.rc.assignment == frozenset({TP0, TP1})
    run.put(3)
    await until(lambda: len(run.handler.seen) == 3)
    run.handler.finish(0, 1)
    run.handler.finish(0, 2)
    await asyncio.sleep(0.1)
    assert run.committed() is None  # offset 0 is still open
    run.handler.finish(0, 0)
    await until(lambda: run.committed() == 3)


async def test_a_failed_publish_leaves_its_offset_uncommitted(make: Callable[..., Any]) -> None:
    """A record whose answer could not be published (the handler gives up on Kafka only when stopping)
    stops the committed position before it."""
    run = await make()
    run.put(2)
    await until(lambda: len(run.handler.seen) == 2)
    run.handler.finish(0, 0)
    run.handler.finish(0, 1, KafkaConnectionError("publish failed"))
    await until(lambda: run.committed() == 1)
    await asyncio.sleep(0.1)
    assert run.committed() == 1


async def test_a_bug_in_the_handler_does_not_hold_the_partition_back(
    make: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Any other error would recur when the record is served again, and an open offset would hold back
    every later commit: it is logged and the partition moves on."""
    run = await make()
    run.put(3)
    await until(lambda: len(run.handler.seen) == 3)
    run.handler.finish(0, 0)
    run.handler.finish(0, 1, AssertionError("Need at least one: key or value"))
    run.handler.finish(0, 2)
    await until(lambda: run.committed() == 3)
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == ["consumer.handler_bug"]


async def test_readahead_pauses_a_partition_until_work_completes(make: Callable[..., Any]) -> None:
    """A partition with ``readahead`` open records is paused; completing them resumes it."""
    run = await make(readahead=2)
    run.put(2)
    await until(lambda: TP0 in run.client.paused())
    run.put(3)
    await asyncio.sleep(0.05)
    assert len(run.handler.seen) == 2  # the poll loop kept running but read no further
    assert TP1 not in run.client.paused()
    run.handler.finish(0, 0)
    run.handler.finish(0, 1)
    await until(lambda: len(run.handler.seen) == 5)  # resumed: the rest came in one fetch
    for offset in (2, 3, 4):
        run.handler.finish(0, offset)
    await until(lambda: run.committed() == 5)


async def test_max_inflight_pauses_every_partition(make: Callable[..., Any]) -> None:
    """At ``max_inflight`` open records in all, every assigned partition is paused."""
    run = await make(max_inflight=2)
    run.put(1, partition=0)
    run.put(1, partition=1)
    await until(lambda: run.client.paused() == {TP0, TP1})
    run.handler.finish(1, 0)
    await until(lambda: run.client.paused() == set())
    run.handler.finish(0, 0)


async def test_lag_is_reported_from_the_committable_position(make: Callable[..., Any]) -> None:
    """Consumer lag per partition is the high watermark less the completed prefix."""
    run = await make()
    run.put(4)
    await until(lambda: len(run.handler.seen) == 4)
    run.handler.finish(0, 0)
    await until(lambda: run.committed() == 1)
    await asyncio.sleep(0.05)
    assert CONSUMER_LAG.labels("0")._value.get() == 3
    for offset in (1, 2, 3):
        run.handler.finish(0, offset)


async def test_lag_sums_a_partition_over_the_request_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a caller's own request topic partition 0 of both topics is owned here, and its series is
    their sum: each topic's lag used to overwrite the other's, so the series (and the lag alerts, which
    sum it) showed whichever topic came last."""
    bound = "api.requests.trader"
    cluster = FakeCluster({TOPIC: 1, bound: 1})
    made: list[FakeConsumer] = []
    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", factory(cluster, FakeConsumer, made))
    open_offsets = {TOPIC: {1, 2, 3}, bound: {1, 2}}  # left unanswered: lag 3 and 2
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handler(record: ConsumerRecord[bytes, bytes]) -> None:
        if record.offset in open_offsets[record.topic]:
            await never

    rc = RequestConsumer(KafkaSettings(caller_topics={bound: "trader"}), handler, instance_id="gw-1")
    await rc.start()
    [client] = made
    await client.rebalance([TopicPartition(TOPIC, 0), TopicPartition(bound, 0)])
    task = asyncio.create_task(rc.run())
    for topic, count in ((TOPIC, 4), (bound, 3)):
        for _ in range(count):
            cluster.append(topic, b"{}", partition=0)
    try:
        await until(lambda: len(cluster.committed.get("apihub-gateway", {})) == 2)
        await asyncio.sleep(0.15)  # a report after both commits
        assert CONSUMER_LAG.labels("0")._value.get() == 5
    finally:
        never.cancel()
        await asyncio.wait_for(rc.stop(), 10)
        await asyncio.wait_for(task, 10)


async def test_fetch_and_commit_failures_are_survived(make: Callable[..., Any]) -> None:
    """A failed fetch is retried; a failed commit is logged and the offsets committed on a later turn."""
    run = await make()
    run.client.fail_next("getmany", KafkaConnectionError("broker gone"))
    run.client.fail_next("commit", CommitFailedError("rebalancing"))
    run.put(1)
    await until(lambda: len(run.handler.seen) == 1, timeout_s=5)
    run.handler.finish(0, 0)
    await until(lambda: run.committed() == 1)
    assert len(run.client.commits) == 1  # the failed attempt left no commit


async def test_revoke_drains_calls_and_leaves_queued_requests_to_the_next_owner(
    make: Callable[..., Any],
) -> None:
    """On revoke, records still queued are cancelled uncommitted; one in an upstream call is drained."""
    run = await make(abandonable=lambda record: record.offset == 1)
    run.put(2)
    await until(lambda: len(run.handler.seen) == 2)
    asyncio.get_running_loop().call_later(0.1, run.handler.finish, 0, 0)
    await run.client.rebalance([TP1])
    assert run.rc.assignment == frozenset({TP1})
    assert run.committed() == 1  # offset 0 drained and committed, offset 1 left for the next owner
    run.put(1)  # a record of a partition no longer ours is not started
    await asyncio.sleep(0.05)
    assert run.handler.seen == [0, 1]


async def test_revoke_drain_is_bounded(make: Callable[..., Any]) -> None:
    """A call that does not end within the drain timeout is cancelled and not committed."""
    run = await make(drain_timeout_s=0.1)
    run.put(1)
    await until(lambda: len(run.handler.seen) == 1)
    await asyncio.wait_for(run.client.rebalance([]), 5)
    assert run.committed() is None


async def test_stop_drains_commits_and_closes(make: Callable[..., Any]) -> None:
    """Stop lets in-flight work end, commits it and closes the client."""
    run = await make()
    run.put(2, partition=1)
    await until(lambda: len(run.handler.seen) == 2)
    asyncio.get_running_loop().call_later(0.05, run.handler.finish, 1, 0)
    asyncio.get_running_loop().call_later(0.05, run.handler.finish, 1, 1)
    await asyncio.wait_for(run.rc.stop(), 10)
    assert run.committed(TP1) == 2
    assert run.client.stopped
    await run.rc.stop()  # a second stop is harmless
