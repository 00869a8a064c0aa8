"""The gateway's consumer of ``api.requests``: bounded read-ahead, out-of-order work, prefix commits.

Auto-commit is off and membership static (``group_instance_id``), so a restart inside the session
timeout keeps its partitions. Each record becomes a task; a partition is paused while it has
``readahead`` records open and everything is paused at ``max_inflight``, but polling never stops. The
read-ahead must cover a domain's backlog: a domain lives in one partition, so the scheduler can only put
an urgent request first once it has been read past the bulk requests ahead of it in the log. An
offset is committed only once its response is acknowledged by Kafka: while polling at most every
``COMMIT_INTERVAL_S`` (a commit per poll cost a round trip per handful of records under load; a crash
redelivers at most that much more, answered from the idempotency records), always on revoke and stop.
With caller topics (``KafkaSettings.caller_topics``) the group reads them beside the shared request topic
and prefers the range assignor: a domain's key lands in the same partition number of every request topic
(equal partition counts, ``apihub topics ensure``), and the range assignor gives partition N of every topic
to the same member, so one instance's scheduler sees all of a domain's requests, whichever topic carried
them (round robin, aiokafka's default, stays the fallback while a group changes over).
On revoke, the poll loop stops starting work of the lost partitions at once; records whose request
still waits in its queue are withdrawn and stay for the next owner, the rest (in an upstream call, or
answered and being published) are drained (bounded) and committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError

from services.gateway.metrics import ASSIGNED_PARTITIONS, CONSUMER_LAG, INFLIGHT
from services.gateway.offsets import OffsetTracker
from services.gateway.quota import GroupQuota, with_quota
from services.kafka_client import GROUP_METADATA_MAX_AGE_MS, client_kwargs
from services.logs import log_event
from services.settings import KafkaSettings

logger = logging.getLogger(__name__)

FETCH_BATCH = 500  # records per poll; the read-ahead bounds what stays open
INTAKE_CHUNK = 8  # records started per turn of the event loop
COMMIT_INTERVAL_S = 0.1
RecordHandler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]


def assignors(settings: KafkaSettings, quota: GroupQuota) -> tuple[type[AbstractPartitionAssignor], ...]:
    """The group's assignors, preferred first: range (domains aligned across topics) with caller topics;
    each tells the members their quota of the limits for a Redis outage (``quota``)."""
    stock = (
        (RangePartitionAssignor, RoundRobinPartitionAssignor)
        if settings.caller_topics
        else (RoundRobinPartitionAssignor,)
    )
    return tuple(with_quota(a, quota) for a in stock)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: RequestConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._owner.release(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._owner.assigned(list(assigned))


class RequestConsumer:
    """Feeds request records to ``handler``; start, then ``run`` until ``stop``."""

    def __init__(
        self,
        settings: KafkaSettings,
        handler: RecordHandler,
        *,
        instance_id: str,
        max_inflight: int = 25_000,
        readahead: int = 12_000,
        drain_timeout_s: float = 10.0,
        abandonable: Callable[[ConsumerRecord[bytes, bytes]], bool] = lambda record: False,
        quota: GroupQuota | None = None,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._instance_id = instance_id
        self._max_inflight = max_inflight
        self._readahead = readahead
        self._drain_timeout_s = drain_timeout_s
        self._abandonable = abandonable
        self.quota = quota or GroupQuota()
        self._tracker = OffsetTracker()
        self._tasks: dict[TopicPartition, dict[asyncio.Task[None], ConsumerRecord[bytes, bytes]]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        self.assignment: frozenset[TopicPartition] = frozenset()
        self.joined = False  # set once the group has given this instance an assignment, even an empty one

    async def start(self) -> None:
        """Join the group."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap_servers,
            group_id=self._settings.group_id,
            group_instance_id=self._instance_id,
            client_id=f"apihub-gateway-{self._instance_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            session_timeout_ms=self._settings.session_timeout_ms,
            heartbeat_interval_ms=min(1_000, self._settings.session_timeout_ms // 3),
            metadata_max_age_ms=GROUP_METADATA_MAX_AGE_MS,
            partition_assignment_strategy=assignors(self._settings, self.quota),
            **client_kwargs(self._settings),
        )
        await consumer.start()
        consumer.subscribe(list(self._settings.request_topics), listener=_Rebalance(self))
        self._consumer = consumer

    async def run(self) -> None:
        """Poll, dispatch and commit until ``stop`` is called."""
        consumer = self._require()
        self._running = asyncio.current_task()
        committed_at = time.monotonic()
        while not self._stopping.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=100, max_records=FETCH_BATCH)
            except KafkaError as exc:
                log_event(logger, "consumer.fetch_failed", logging.WARNING, error=str(exc))
                await asyncio.sleep(0.5)
                continue
            started = 0
            for tp, records in batches.items():
                for record in records:
                    if tp not in self.assignment:
                        break  # revoked (perhaps during a yield below): the next owner reads it
                    self._tracker.started(tp, record.offset)
                    task = asyncio.create_task(self._process(tp, record))
                    self._tasks.setdefault(tp, {})[task] = record
                    started += 1
                    if started % INTAKE_CHUNK == 0:
                        # Every task started here takes its first steps in the loop's next turn, all in
                        # one go; in small chunks a due pacing slot is not held up behind a whole batch.
                        await asyncio.sleep(0)
            try:
                self._apply_backpressure(consumer)
            except KafkaError as exc:  # a rebalance raced us; the next turn sees the new assignment
                log_event(logger, "consumer.backpressure_failed", logging.WARNING, error=str(exc))
            if time.monotonic() - committed_at >= COMMIT_INTERVAL_S:
                committed_at = time.monotonic()
                await self._commit()
                self._report_lag(consumer)

    async def _process(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        INFLIGHT.inc()
        try:
            await self._handler(record)
        except asyncio.CancelledError:
            raise  # shutting down: not completed, so not committed, so redelivered
        except KafkaError:
            # The handler retries a publish until it lands, and gives up only when stopping: leave the
            # offset uncommitted so the next owner serves the record again.
            logger.exception("consumer.handler_failed", extra={"fields": {"offset": record.offset}})
            return
        except Exception:
            # A bug in answering this record. It would fail the same way when served again, and an offset
            # left open would hold back every later commit of the partition (then pause it): count it
            # done. The request stays on its topic, the audit log, where `apihub audit` shows it unanswered.
            logger.exception(
                "consumer.handler_bug", extra={"fields": {"offset": record.offset, "partition": tp.partition}}
            )
        finally:
            INFLIGHT.dec()
            tasks = self._tasks.get(tp)
            if tasks is not None:
                tasks.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        self._tracker.completed(tp, record.offset)

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> None:
        full = self._tracker.total_in_flight() >= self._max_inflight
        to_pause, to_resume = [], []
        for tp in self.assignment & consumer.assignment():  # the group may have moved on already
            if full or self._tracker.in_flight(tp) >= self._readahead:
                to_pause.append(tp)
            else:
                to_resume.append(tp)
        if to_pause:
            consumer.pause(*to_pause)
        if to_resume:
            consumer.resume(*to_resume)

    def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Lag per partition number, summed over the request topics: with caller topics partition N of
        each is owned here (range assignor), and one series per number keeps the alerts' sums whole."""
        lag: dict[int, int] = {}
        for tp in self.assignment:
            highwater = consumer.highwater(tp)
            position = self._tracker.position(tp)
            if highwater is not None and position is not None:
                lag[tp.partition] = lag.get(tp.partition, 0) + max(0, highwater - position)
        for partition, value in lag.items():
            CONSUMER_LAG.labels(str(partition)).set(value)

    async def _commit(self, tps: list[TopicPartition] | None = None) -> None:
        due = self._tracker.commits_due(tps)
        if self._consumer is not None:  # only what the group still gives us can be committed
            owned = self._consumer.assignment()
            due = {tp: offset for tp, offset in due.items() if tp in owned}
        if not due or self._consumer is None:
            return
        try:
            await self._consumer.commit(due)
        except (CommitFailedError, KafkaError) as exc:
            log_event(logger, "consumer.commit_failed", logging.WARNING, error=str(exc), partitions=len(due))
            return
        self._tracker.committed(due)

    def assigned(self, tps: list[TopicPartition]) -> None:
        """Record a new assignment (called by the rebalance listener)."""
        self.assignment = frozenset(tps)
        self.joined = True
        ASSIGNED_PARTITIONS.set(len(tps))
        log_event(logger, "consumer.assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in tps))

    async def release(self, tps: list[TopicPartition]) -> None:
        """Drain in-flight work of revoked partitions (bounded), commit it and forget them."""
        self.assignment = self.assignment - set(tps)  # first: the poll loop starts nothing more for them
        owned = [(t, r) for tp in tps for t, r in self._tasks.get(tp, {}).items()]
        calling = [t for t, r in owned if not self._abandonable(r)]
        for task, record in owned:
            if self._abandonable(record):
                task.cancel()  # not started upstream: the next owner serves it
        tasks = [t for t, _ in owned]
        if calling:
            _, unfinished = await asyncio.wait(calling, timeout=self._drain_timeout_s)
            for task in unfinished:
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._commit(tps)
        self._tracker.forget(tps)
        for tp in tps:
            self._tasks.pop(tp, None)
        ASSIGNED_PARTITIONS.set(len(self.assignment))
        log_event(
            logger,
            "consumer.revoked",
            partitions=len(tps),
            drained=len(calling),
            left_for_next_owner=len(tasks) - len(calling),
        )

    async def stop(self) -> None:
        """Stop polling, drain everything (bounded), commit and leave the group."""
        self._stopping.set()
        if self._consumer is None:
            return
        if self._running is not None and self._running is not asyncio.current_task():
            await asyncio.wait([self._running], timeout=5)
        await self.release(list(self.assignment))
        consumer, self._consumer = self._consumer, None
        await consumer.stop()

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("RequestConsumer.start() was not called")
        return self._consumer
