"""How a ``HubClient`` reaches the hub: the Kafka transport, and the interface a fake implements.

The reply listener never joins a consumer group: it assigns its one reply partition by hand, so no
rebalance can move replies away from the waiting futures, and it has its position at the end of that
partition before the first request is sent (otherwise a fast reply could land before it and be lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from hubclient.errors import HubError, HubNotStarted, HubUnavailable
from hubclient.headers import request_headers
from hubclient.models import ApiRequest

logger = logging.getLogger(__name__)

ReplyHandler = Callable[[bytes], None]


class Transport(Protocol):
    """Carries requests to the gateway and hands raw reply values back."""

    @property
    def reply_topic(self) -> str: ...

    @property
    def reply_partition(self) -> int: ...

    async def start(self, on_reply: ReplyHandler) -> None: ...

    async def send(self, request: ApiRequest) -> None: ...

    async def stop(self) -> None: ...


class KafkaTransport:
    """Produces to the request topic and listens on one manually assigned reply partition."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        request_topic: str = "api.requests",
        reply_topic: str = "api.responses",
        reply_partition: int | None = None,
        client_id: str = "hubclient",
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``client_options``: more aiokafka arguments for both clients (SASL/TLS: security_protocol ...)."""
        self._bootstrap = bootstrap_servers
        self._options = dict(client_options or {})
        self._request_topic = request_topic
        self._reply_topic = reply_topic
        self._wanted_partition = reply_partition
        self._client_id = client_id
        self._partition: int | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._listener: asyncio.Task[None] | None = None

    @property
    def reply_topic(self) -> str:
        return self._reply_topic

    @property
    def reply_partition(self) -> int:
        if self._partition is None:
            raise HubNotStarted("the transport has no reply partition before start()")
        return self._partition

    async def start(self, on_reply: ReplyHandler) -> None:
        """Connect, claim the reply partition and wait until the listener has its position."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=0,  # latency first: batches still form while a send is in flight
            **self._options,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-replies",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=50,
            **self._options,
        )
        try:
            await producer.start()
            self._producer = producer
            partitions = await producer.partitions_for(self._reply_topic)
            if not partitions:
                raise HubError(f"reply topic {self._reply_topic!r} does not exist")
            if self._wanted_partition is None:
                self._partition = random.choice(sorted(partitions))  # noqa: S311 - spreading, not security
            elif self._wanted_partition in partitions:
                self._partition = self._wanted_partition
            else:
                raise HubError(f"{self._reply_topic} has no partition {self._wanted_partition}")
            await consumer.start()
            self._consumer = consumer
            tp = TopicPartition(self._reply_topic, self._partition)
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            await consumer.position(tp)
        except KafkaError as exc:
            await self._abandon(producer, consumer)
            raise HubError(f"cannot reach Kafka at {self._bootstrap}: {exc}") from exc
        except BaseException:
            await self._abandon(producer, consumer)
            raise
        self._listener = asyncio.create_task(self._listen(consumer, on_reply), name="hubclient-replies")

    async def _abandon(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> None:
        """A failed start: close both clients, started or not (an unstarted one still holds its loop)."""
        await self.stop()
        for client in (producer, consumer):
            with contextlib.suppress(Exception):
                await client.stop()

    async def _listen(self, consumer: AIOKafkaConsumer, on_reply: ReplyHandler) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200)
            except KafkaError as exc:
                logger.warning("hubclient.reply_fetch_failed error=%s", exc)
                await asyncio.sleep(0.5)
                continue
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        on_reply(record.value)

    async def send(self, request: ApiRequest) -> None:
        """Produce the request keyed by its limit domain and wait for the broker's acknowledgement."""
        if self._producer is None:
            raise HubNotStarted("the transport is not started")
        try:
            await self._producer.send_and_wait(
                self._request_topic,
                value=request.to_json(),
                key=request.limit_domain.encode(),
                headers=request_headers(request),
            )
        except KafkaError as exc:
            passing = exc.retriable or isinstance(exc, KafkaTimeoutError)  # a timeout passes too
            raise HubUnavailable(
                f"could not publish request {request.request_id}: {exc}", retriable=passing
            ) from exc

    async def stop(self) -> None:
        """Stop listening and close both clients; safe to call twice."""
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
