"""Kafka header mapping of the envelopes (§3 "Wire contract" of ``../shared/DESIGN.md``, outside the
repository; every header and its precedence: docs/CONTRACT.md).

Headers mirror body fields for tooling (``kcat -J``, the console consumer) and for Spring's
``ReplyingKafkaTemplate``; the body stays authoritative and a message without headers is served the same.
A request's ``kafka_correlationId`` comes back on its answer byte for byte (Spring matches replies on its
own 16 random bytes); without one the answer's header is the request id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hubclient.models import SCHEMA_VERSION, ApiRequest, ApiResponse

CORRELATION_ID = "kafka_correlationId"
REPLY_TOPIC = "kafka_replyTopic"
REPLY_PARTITION = "kafka_replyPartition"
CALLER = "apihub-caller"
DEADLINE_MS = "apihub-deadline-ms"
SCHEMA = "apihub-schema"
#: The highest partition number Kafka has (a signed 32-bit int).
MAX_PARTITION = (1 << 31) - 1
#: On ``api.requests.dlq`` only: why the message could not be served, and where it came from.
DLQ_REASON = "apihub-dlq-reason"
DLQ_SOURCE = "apihub-dlq-source"
#: On a dead letter whose value was too large for the dead-letter topic: the value's size in bytes (decimal
#: text); the value is left out and the request stays readable at its source.
DLQ_OMITTED = "apihub-dlq-value-omitted"

Headers = list[tuple[str, bytes]]


def encode_partition(partition: int) -> bytes:
    """A partition number as the 4-byte big-endian int Spring Kafka writes."""
    return partition.to_bytes(4, "big", signed=True)


def decode_partition(raw: bytes) -> int:
    """Read a reply partition header: 4-byte big-endian, or decimal digits from hand-written tools.

    Four bytes that are all digits are text (``b"1000"``): as an int they would name a partition past
    808 million, which no topic has. Anything else that is not digits raises ``ValueError``.
    """
    if len(raw) == 4 and not raw.strip().isdigit():
        return int.from_bytes(raw, "big", signed=True)
    text = raw.strip()
    if not text.isdigit():
        raise ValueError(f"not a partition number: {raw!r}")
    return int(text)


def request_headers(request: ApiRequest) -> Headers:
    """Headers to send with a request."""
    return [
        (CORRELATION_ID, request.request_id.encode()),
        (REPLY_TOPIC, request.reply_topic.encode()),
        (REPLY_PARTITION, encode_partition(request.reply_partition)),
        (CALLER, request.caller.encode()),
        (DEADLINE_MS, str(request.deadline_ms).encode()),
        (SCHEMA, SCHEMA_VERSION.encode()),
    ]


def response_headers(
    response: ApiResponse, request: ApiRequest | None, correlation_id: bytes | None = None
) -> Headers:
    """Headers to send with a response; the request's are echoed when it could be read.

    ``correlation_id`` is the request's ``kafka_correlationId`` as sent, echoed unchanged; without it the
    header is the request id.
    """
    correlation = response.request_id.encode() if correlation_id is None else correlation_id
    headers: Headers = [(CORRELATION_ID, correlation), (SCHEMA, SCHEMA_VERSION.encode())]
    if request is not None:
        headers += [
            (REPLY_TOPIC, request.reply_topic.encode()),
            (REPLY_PARTITION, encode_partition(request.reply_partition)),
            (CALLER, request.caller.encode()),
            (DEADLINE_MS, str(request.deadline_ms).encode()),
        ]
    return headers


def header_value(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    """The first value of header ``name``, or None."""
    for key, value in headers or ():
        if key == name:
            return value
    return None


def reply_address_headers(headers: Sequence[tuple[str, bytes]] | None) -> tuple[str | None, int | None]:
    """The reply topic and partition a request's ``kafka_replyTopic`` / ``kafka_replyPartition`` headers
    name; None for one that is absent or unreadable (a partition that is no number, or past Kafka's)."""
    raw_topic = header_value(headers, REPLY_TOPIC)
    raw_partition = header_value(headers, REPLY_PARTITION)
    topic = raw_topic.decode("utf-8", "replace") if raw_topic else None
    partition: int | None = None
    if raw_partition:
        try:
            partition = decode_partition(raw_partition)
        except ValueError:
            partition = None
    if partition is not None and not 0 <= partition <= MAX_PARTITION:
        partition = None
    return topic, partition


def with_reply_headers(body: dict[str, Any], headers: Sequence[tuple[str, bytes]] | None) -> dict[str, Any]:
    """A request body as the gateway reads it: the reply address its headers name filled in wherever the
    body names none (a Spring client's request leaves it to the headers; the body wins where it names one,
    docs/CONTRACT.md, "Precedence")."""
    topic, partition = reply_address_headers(headers)
    merged = dict(body)
    if "reply_topic" not in merged and topic is not None:
        merged["reply_topic"] = topic
    if "reply_partition" not in merged and partition is not None:
        merged["reply_partition"] = partition
    return merged
