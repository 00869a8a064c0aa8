"""Producing answers: responses to the request's reply partition, bad input to the dead-letter topic."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaProducer

from hubclient.headers import DLQ_REASON, DLQ_SOURCE, Headers, response_headers
from hubclient.models import ApiRequest, ApiResponse
from services.gateway.metrics import DLQ_MESSAGES
from services.logs import log_event

logger = logging.getLogger(__name__)

#: Bytes of answers batched per reply partition. Kafka's 16 KiB default holds about ten answers, and a
#: sender finding its partition's batch full waits for the batch in flight (one per partition with
#: idempotence) to be acknowledged.
BATCH_BYTES = 512 * 1024


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
        """Flush and close."""
        if self._started:
            self._started = False
            await self._producer.stop()

    async def can_reply_to(self, topic: str, partition: int) -> bool:
        """True when ``partition`` of ``topic`` exists (else aiokafka would refuse the send outright)."""
        if not self._started:
            raise RuntimeError("Publisher.start() was not called")
        partitions = await self._producer.partitions_for(topic)
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
        await self._producer.send_and_wait(
            reply_topic,
            value=response.to_json(),
            key=response.request_id.encode(),
            partition=reply_partition,
            headers=response_headers(response, request, correlation_id),
        )

    async def event(self, topic: str, key: bytes, value: bytes) -> None:
        """Produce one operational event (``events.EventForwarder``)."""
        if not self._started:
            raise RuntimeError("Publisher.start() was not called")
        await self._producer.send_and_wait(topic, value=value, key=key)

    async def dead_letter(self, value: bytes | None, headers: Headers, *, reason: str, source: str) -> None:
        """Keep an unusable message, with why and where it came from, on the dead-letter topic."""
        if not self._started:
            raise RuntimeError("Publisher.start() was not called")
        kept = [(k, v) for k, v in headers if k not in (DLQ_REASON, DLQ_SOURCE)]
        kept += [(DLQ_REASON, reason.encode()[:1000]), (DLQ_SOURCE, source.encode())]
        await self._producer.send_and_wait(self._dlq_topic, value=value, headers=kept)
        DLQ_MESSAGES.labels(reason.split(":", 1)[0]).inc()
        log_event(logger, "request.dead_lettered", logging.WARNING, reason=reason, source=source)
