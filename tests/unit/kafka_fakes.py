"""An in-memory Kafka for unit tests: partitioned logs, a consumer and a producer with aiokafka's methods.

Only what the services call is there, with aiokafka's semantics where they matter to the code under test:
records get increasing offsets per partition, a consumer reads from its position in the partitions it was
given and not paused, ``getmany`` waits (up to ``timeout_ms``) when there is nothing, commits are kept per
group, a producer's transaction makes its records visible only when it commits. The real behaviour against
a broker is pinned by the integration suite; these let the logic around the clients run without one.
Errors are scripted: ``fail_next(...)`` on a client raises the given exception from the next matching call.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import OffsetAndTimestamp

Headers = Sequence[tuple[str, bytes]]
_MAX_WAIT_S = 0.02  # an empty poll waits at most this long, whatever timeout_ms says


class FakeCluster:
    """Topics of partitioned logs, and the offsets each consumer group committed."""

    def __init__(self, topics: dict[str, int] | None = None) -> None:
        self.logs: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        self.committed: dict[str, dict[TopicPartition, int]] = {}
        self.configs: dict[str, dict[str, str]] = {}  # topic -> its configuration
        self.replication: dict[str, int] = {}  # topic -> replicas of each partition (1 unless created so)
        self.brokers = 1
        self.refusals: dict[str, tuple[int, str]] = {}  # topic -> (code, message) Kafka refuses it with
        self.changed = asyncio.Event()
        for name, partitions in (topics or {}).items():
            self.create(name, partitions)

    def create(self, topic: str, partitions: int = 1) -> None:
        """A topic with ``partitions`` empty partitions."""
        for p in range(partitions):
            self.logs.setdefault(TopicPartition(topic, p), [])

    def partitions_for(self, topic: str) -> set[int] | None:
        """The partition numbers of ``topic``, None when it does not exist."""
        found = {tp.partition for tp in self.logs if tp.topic == topic}
        return found or None

    def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers = (),
        timestamp_ms: int | None = None,
    ) -> ConsumerRecord[bytes, bytes]:
        """Append one record (partition by key hash when not given; timestamp: now) and return it."""
        partitions = sorted(self.partitions_for(topic) or ())
        if not partitions:
            raise KeyError(f"no topic {topic!r}")
        if partition is None:
            partition = partitions[zlib.crc32(key) % len(partitions)] if key else partitions[0]
        tp = TopicPartition(topic, partition)
        log = self.logs[tp]
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            topic=topic,
            partition=partition,
            offset=len(log),
            timestamp=int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value or b""),
            headers=tuple(headers),
        )
        log.append(record)
        self.changed.set()
        return record

    def records(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of ``topic``, partition by partition."""
        return [r for tp in sorted(self.logs) if tp.topic == topic for r in self.logs[tp]]


class _Scripted:
    """Exceptions to raise from the next calls of a named method."""

    def __init__(self) -> None:
        self._failures: dict[str, list[BaseException]] = {}

    def fail_next(self, method: str, error: BaseException, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` raise ``error``."""
        self._failures.setdefault(method, []).extend([error] * times)

    def _check(self, method: str) -> None:
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)


class FakeConsumer(_Scripted):
    """``AIOKafkaConsumer`` on a ``FakeCluster``: subscribe (with a listener) or assign, then poll."""

    def __init__(self, cluster: FakeCluster, *topics: str, **config: Any) -> None:
        super().__init__()
        self.cluster = cluster
        self.config = config
        self.group_id: str | None = config.get("group_id")
        self.subscribed: list[str] = list(topics)
        self.listener: Any = None
        self.started = False
        self.stopped = False
        self._assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []

    async def start(self) -> None:
        self._check("start")
        self.started = True
        if self.subscribed and self.group_id is None:
            self.assign([tp for tp in self.cluster.logs if tp.topic in self.subscribed])

    async def stop(self) -> None:
        self.stopped = True

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.subscribed = list(topics)
        self.listener = listener

    async def rebalance(self, partitions: Iterable[TopicPartition]) -> None:
        """What the group coordinator does: revoke the old assignment, then give the new one."""
        if self.listener is not None and self._assigned:
            await self.listener.on_partitions_revoked(sorted(self._assigned))
        self.assign(list(partitions))
        if self.listener is not None:
            await self.listener.on_partitions_assigned(sorted(self._assigned))

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._assigned = set(partitions)
        self._paused &= self._assigned
        committed = self.cluster.committed.get(self.group_id or "", {})
        reset = self.config.get("auto_offset_reset", "latest")
        for tp in partitions:
            if tp not in self._positions:
                end = len(self.cluster.logs[tp])
                self._positions[tp] = committed.get(tp, 0 if reset == "earliest" else end)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._positions[tp] = 0

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._positions[tp] = len(self.cluster.logs[tp])

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset

    async def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """The first offset whose timestamp is at or after the given one, per partition (None: none)."""
        found: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp, at_ms in timestamps.items():
            hits = [r for r in self.cluster.logs[tp] if r.timestamp >= at_ms]
            found[tp] = OffsetAndTimestamp(hits[0].offset, hits[0].timestamp) if hits else None
        return found

    async def position(self, tp: TopicPartition) -> int:
        self._check("position")
        return self._positions[tp]

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self._check("end_offsets")
        await asyncio.sleep(0)  # a request to the broker: the caller yields, as with aiokafka
        return {tp: len(self.cluster.logs[tp]) for tp in partitions}

    def highwater(self, tp: TopicPartition) -> int | None:
        return len(self.cluster.logs[tp]) if tp in self._assigned else None

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self._check("commit")
        self.commits.append(dict(offsets))
        self.cluster.committed.setdefault(self.group_id or "", {}).update(offsets)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        self._check("getmany")
        await asyncio.sleep(0)
        deadline = time.monotonic() + min(timeout_ms / 1000, _MAX_WAIT_S)
        while True:
            batch = self._take(partitions, max_records)
            if batch or time.monotonic() >= deadline:
                return batch
            self.cluster.changed.clear()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self.cluster.changed.wait()
            except TimeoutError:
                pass

    def _take(
        self, partitions: Sequence[TopicPartition], max_records: int | None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        left = max_records if max_records is not None else 1 << 30
        for tp in sorted(partitions or self._assigned):
            if tp not in self._assigned or tp in self._paused or left <= 0:
                continue
            log, at = self.cluster.logs[tp], self._positions[tp]
            records = log[at : at + left]
            if records:
                batch[tp] = records
                self._positions[tp] = at + len(records)
                left -= len(records)
        return batch


class FakeProducer(_Scripted):
    """``AIOKafkaProducer`` on a ``FakeCluster``; ``transaction()`` publishes its records on success only."""

    def __init__(self, cluster: FakeCluster, **config: Any) -> None:
        super().__init__()
        self.cluster = cluster
        self.config = config
        self.started = False
        self.stopped = False
        self._pending: list[tuple[str, dict[str, Any]]] | None = None
        self.transactions: list[str] = []  # "committed" or "aborted", in order
        self.offsets_sent: list[tuple[dict[TopicPartition, int], str]] = []

    async def start(self) -> None:
        self._check("start")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int] | None:
        self._check("partitions_for")
        return self.cluster.partitions_for(topic)

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[Any]:
        self._check("send")
        assert not (value is None and key is None), "Need at least one: key or value"  # as aiokafka's
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers or ()))
        if size > self.config.get("max_request_size", 1_048_576):
            raise MessageSizeTooLargeError(f"The message is {size} bytes when serialized")
        fields: dict[str, Any] = {"key": key, "partition": partition, "headers": tuple(headers or ())}
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._pending is not None:
            self._pending.append((topic, {"value": value, **fields}))
            done.set_result(None)
        else:
            done.set_result(self.cluster.append(topic, value, **fields))
        return done

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Any:
        return await (await self.send(topic, value, key=key, partition=partition, headers=headers))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._pending = []
        try:
            yield
        except BaseException:
            self._pending = None
            self.transactions.append("aborted")
            raise
        pending, self._pending = self._pending, None
        for topic, fields in pending:
            self.cluster.append(topic, fields.pop("value"), **fields)
        self.transactions.append("committed")

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, Any], group_id: str) -> None:
        self._check("send_offsets_to_transaction")
        positions = {tp: getattr(o, "offset", o) for tp, o in offsets.items()}
        self.offsets_sent.append((positions, group_id))
        self.cluster.committed.setdefault(group_id, {}).update(positions)


def factory(
    cluster: FakeCluster, kind: type[FakeConsumer] | type[FakeProducer] | type[FakeAdmin], made: list[Any]
) -> Callable[..., Any]:
    """A stand-in for the aiokafka class: builds ``kind`` on ``cluster`` and keeps each one in ``made``."""

    def build(*args: Any, **config: Any) -> Any:
        client = kind(cluster, *args, **config)
        made.append(client)
        return client

    return build


class FakeAdmin(_Scripted):
    """``AIOKafkaAdminClient`` on a ``FakeCluster``: list, describe, create topics and read their configs."""

    def __init__(self, cluster: FakeCluster, **config: Any) -> None:
        super().__init__()
        self.cluster = cluster
        self.config = config
        self.closed = False

    async def start(self) -> None:
        self._check("start")

    async def close(self) -> None:
        self.closed = True

    async def list_topics(self) -> list[str]:
        return sorted({tp.topic for tp in self.cluster.logs})

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        described = []
        for name in topics:
            partitions = sorted(self.cluster.partitions_for(name) or ())
            described.append(
                {
                    "topic": name,
                    "error_code": 0 if partitions else 3,  # UNKNOWN_TOPIC_OR_PARTITION
                    "partitions": [
                        {"partition": p, "replicas": list(range(self.cluster.replication.get(name, 1)))}
                        for p in partitions
                    ],
                }
            )
        return described

    async def create_topics(self, new_topics: list[Any]) -> Any:
        """Creates the topics; one of ``cluster.refusals`` is refused in the answer, as Kafka refuses one
        topic of a request (not by raising)."""
        self._check("create_topics")
        errors: list[tuple[str, int, str | None]] = []
        for topic in new_topics:
            if topic.name in self.cluster.refusals:
                errors.append((topic.name, *self.cluster.refusals[topic.name]))
                continue
            self.cluster.create(topic.name, topic.num_partitions)
            self.cluster.configs[topic.name] = dict(topic.topic_configs or {})
            self.cluster.replication[topic.name] = topic.replication_factor
            errors.append((topic.name, 0, None))
        return SimpleNamespace(topic_errors=errors)

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n} for n in range(self.cluster.brokers)]}

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        rows = [
            (0, None, 2, r.name, [(k, v) for k, v in self.cluster.configs.get(r.name, {}).items()])
            for r in resources
        ]
        return [SimpleNamespace(resources=rows)]
