"""Producing answers: responses to the request's reply partition, bad input to the dead-letter topic.

A record Kafka will not take for its size (over the producer's ``max_request_size`` or the topic's
``max.message.bytes``) is not retried, as it would never land: a dead letter is kept without its value and
the original headers (``apihub-dlq-value-omitted`` gives the record's size; the request stays at its
source), and an answer raises ``AnswerTooLarge`` for the caller to answer with a smaller one instead.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from hubclient.headers import DLQ_OMITTED, DLQ_REASON, DLQ_SOURCE, Headers, response_headers
from hubclient.models import ApiRequest, ApiResponse
from services.gateway.metrics import DLQ_MESSAGES
from services.logs import log_event

logger = logging.getLogger(__name__)

#: Bytes of answers batched per reply partition. Kafka's 16 KiB default holds about ten answers, and a
#: sender finding its partition's batch full waits for the batch in flight (one per partition with
#: idempotence) to be acknowledged.
BATCH_BYTES = 512 * 1024
#: The longest ``apihub-dlq-reason`` kept, in bytes (a schema error may quote a long field name).
REASON_BYTES = 1000
#: What Kafka says of a record too large for the producer (before sending) or for the topic (the broker).
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)
#: What aiokafka says of a topic whose partitions it cannot learn (after its request timeout, or at once).
NO_SUCH_TOPIC = (UnknownTopicOrPartitionError, TopicAuthorizationFailedError)


def _utf8_prefix(text: str, limit: int) -> bytes:
    """``text`` as UTF-8, cut to at most ``limit`` bytes between characters: a header cut inside one is no
    longer UTF-8 text, which the contract's ``reason: detail`` is."""
    return text.encode()[:limit].decode("utf-8", "ignore").encode()


class AnswerTooLarge(Exception):
    """An answer Kafka refused for its size; ``size`` is its value's bytes."""

    def __init__(self, topic: str, size: int) -> None:
        super().__init__(f"an answer of {size} bytes is larger than {topic} accepts")
        self.topic = topic
        self.size = size


class Publisher:
    """Wraps the gateway's idempotent producer; every send waits for the broker's acknowledgement."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        dlq_topic: str,
        client_id: str,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self._dlq_topic = dlq_topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=0,  # latency first: batches still form while a send is in flight
            max_batch_size=BATCH_BYTES,
            **(client_options or {}),
        )
        self._started = False

    async def start(self) -> None:
        """Connect the producer."""
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        """Flush and close (a producer never started too: it warns as "Unclosed" when collected)."""
        self._started = False
        await self._producer.stop()  # a second stop does nothing

    async def can_reply_to(self, topic: str, partition: int) -> bool:
        """True when ``partition`` of ``topic`` exists (else aiokafka would refuse the send outright).

        A topic Kafka will not describe (missing, or not readable by the gateway) has no partition to
        answer on either: its error must not escape, as the consumer takes a ``KafkaError`` from a handler
        for a publish cut by a stop and leaves the record's offset open."""
        if not self._started:
            raise RuntimeError("Publisher.start() was not called")
        try:
            partitions = await self._producer.partitions_for(topic)
        except NO_SUCH_TOPIC:
            return False
        return partition in (partitions or ())

    async def respond(
        self,
        response: ApiResponse,
        *,
        reply_topic: str,
        reply_partition: int | None,
        request: ApiRequest | None,
        correlation_id: bytes | None = None,
    ) -> None:
        """Produce ``response`` to the caller's reply topic and partition, keyed by request id, with the
        request's ``kafka_correlationId`` bytes (``correlation_id``, when it had one) echoed unchanged."""
        if not self._started:
            raise RuntimeError("Publisher.start() was not called")
        value = response.to_json()
        try:
            await self._producer.send_and_wait(
                reply_topic,
                value=value,
                key=response.request_id.encode(),
                partition=reply_partition,
                headers=response_headers(response, request, correlation_id),
            )
        except TOO_LARGE as exc:
            raise AnswerTooLarge(reply_topic, len(value)) from exc

    async def event(self, topic: str, key: bytes, value: bytes) -> None:
        """Produce one operational event (``events.EventForwarder``)."""
        if not self._started:
            raise RuntimeError("Publisher.start() was not called")
        await self._producer.send_and_wait(topic, value=value, key=key)

    async def dead_letter(
        self, key: bytes | None, value: bytes | None, headers: Headers, *, reason: str, source: str
    ) -> None:
        """Keep an unusable message, with why and where it came from, on the dead-letter topic.

        The record keeps its key, value and headers; without a key, a dead letter without a value (which
        Kafka cannot store) is keyed by its source.
        """
        if not self._started:
            raise RuntimeError("Publisher.start() was not called")
        own = [(DLQ_REASON, _utf8_prefix(reason, REASON_BYTES)), (DLQ_SOURCE, source.encode())]
        kept = [(k, v) for k, v in headers if k not in (DLQ_REASON, DLQ_SOURCE, DLQ_OMITTED)] + own
        keyed = key if key is not None else source.encode()
        try:
            await self._producer.send_and_wait(
                self._dlq_topic, value=value, key=keyed if value is None else key, headers=kept
            )
        except TOO_LARGE:
            size = len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers)  # a header may be null
            omitted = [*own, (DLQ_OMITTED, str(size).encode())]
            await self._producer.send_and_wait(self._dlq_topic, value=None, key=keyed, headers=omitted)
        DLQ_MESSAGES.labels(reason.split(":", 1)[0]).inc()
        log_event(logger, "request.dead_lettered", logging.WARNING, reason=reason, source=source)
