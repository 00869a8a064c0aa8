"""Reading a request record: the body is the contract, Spring's headers fill what the body leaves out.

A request may leave ``reply_topic`` / ``reply_partition`` out of its body and name them in the
``kafka_replyTopic`` / ``kafka_replyPartition`` headers instead (Spring Kafka's ``ReplyingKafkaTemplate``
does); the body wins when it names them, and a body and headers that disagree are refused as
``reply_address_conflict`` (dead-lettered, answered ``invalid`` at the body's address, or at the
headers' when the body's topic is no topic name). The raw
``kafka_correlationId`` bytes, whatever they are, are kept so every answer carries them back unchanged.

A record that cannot be parsed or validated is dead-lettered with the reason, and still answered
``invalid`` when a reply address (and a usable request id) can be read from the body or the headers.
Replies go only to allowed topics, so a crafted request cannot make the gateway write elsewhere.
A record larger than ``max_request_bytes`` is not parsed at all (reason ``too_large``); its reply address
then comes from the headers only. See ``docs/CONTRACT.md``.

A record on a caller's own request topic (``caller_topics``: topic -> caller) is that caller's: a body
without ``caller`` gets it from the topic, a body naming another caller is refused as ``caller_mismatch``
(dead-lettered, answered ``invalid``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from hubclient.headers import (
    CORRELATION_ID,
    MAX_PARTITION,
    header_value,
    reply_address_headers,
    with_reply_headers,
)
from hubclient.models import ApiRequest
from services.settings import TOPIC_NAME, validation_message

MAX_REQUEST_BYTES = 65_536  # the default of ``GatewaySettings.max_request_bytes``
#: A ``kafka_correlationId`` longer than this is not echoed (the answer carries the request id there): an
#: answer echoing a header of up to a megabyte could not be published at all. Spring's is 16 bytes.
MAX_CORRELATION_BYTES = 1024
#: The schema's request_id pattern, matched whole: Python's ``$`` also matches before a final line break,
#: which the schema's (ECMA-262) ``$`` and the model's pattern do not, so ``match`` let ``"<uuid>\n"`` through
#: to an answer the model then refused to build.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class ReplyAddress:
    """Where an answer goes."""

    request_id: str
    topic: str
    partition: int


@dataclass(frozen=True)
class Intake:
    """A record read: either a request, or a reason and perhaps a reply address.

    ``correlation_id`` is the request's ``kafka_correlationId`` header as sent (None without one): the
    answer echoes these exact bytes.
    """

    request: ApiRequest | None
    reason: str | None = None
    reply: ReplyAddress | None = None
    correlation_id: bytes | None = None


@dataclass(frozen=True)
class _HeaderReply:
    """The reply address named by the headers, each part None when absent or unreadable."""

    topic: str | None
    partition: int | None


def read_record(
    record: ConsumerRecord[bytes, bytes],
    allowed_reply_topics: frozenset[str],
    *,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    caller_topics: Mapping[str, str] | None = None,
) -> Intake:
    """Parse and validate one record from a request topic (at most ``max_request_bytes`` bytes); on a
    topic of ``caller_topics`` (topic -> caller) the request is that caller's."""
    bound = caller_topics.get(record.topic) if caller_topics else None
    headers = list(record.headers or ())
    correlation = header_value(headers, CORRELATION_ID)
    if correlation is not None and len(correlation) > MAX_CORRELATION_BYTES:
        correlation = None
    named = _header_reply(headers)
    body: Any = None
    if record.value is not None and len(record.value) > max_request_bytes:
        reason = f"too_large: {len(record.value)} bytes exceed the limit of {max_request_bytes}"
        reply = _reply_address({}, named, correlation, record)
        allowed = reply is not None and reply.topic in allowed_reply_topics
        return Intake(None, reason, reply if allowed else None, correlation)
    try:
        body = orjson.loads(record.value) if record.value is not None else None
    except orjson.JSONDecodeError as exc:
        reason = f"unparseable: {exc}"
    else:
        if not isinstance(body, dict):
            reason = "unparseable: the value is not a JSON object"
        elif (conflict := _conflict(body, named)) is not None:
            reason = f"reply_address_conflict: {conflict}"
        elif (mismatch := _caller_mismatch(body, bound, record.topic)) is not None:
            reason = f"caller_mismatch: {mismatch}"
        else:
            try:
                request = ApiRequest.model_validate(_with_caller(with_reply_headers(body, headers), bound))
            except ValidationError as exc:
                reason = "schema: " + "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {validation_message(e)}"
                    for e in exc.errors()[:5]
                )
            else:
                if request.reply_topic not in allowed_reply_topics:
                    return Intake(None, f"reply_topic_not_allowed: {request.reply_topic}", None, correlation)
                return Intake(request, correlation_id=correlation)
    reply = _reply_address(body if isinstance(body, dict) else {}, named, correlation, record)
    if reply is not None and reply.topic not in allowed_reply_topics:
        reply = None
    return Intake(None, reason, reply, correlation)


def _header_reply(headers: list[tuple[str, bytes]]) -> _HeaderReply:
    return _HeaderReply(*reply_address_headers(headers))


def _conflict(body: dict[str, Any], named: _HeaderReply) -> str | None:
    """Why the body's and the headers' reply addresses disagree, or None when they do not."""
    topic, partition = body.get("reply_topic"), _json_int(body.get("reply_partition"))
    if isinstance(topic, str) and named.topic is not None and topic != named.topic:
        return (
            f"the body's reply_topic {topic[:80]!r} differs from the kafka_replyTopic header "
            f"{named.topic[:80]!r}"
        )
    if partition is not None and named.partition is not None and partition != named.partition:
        return (
            f"the body's reply_partition {partition} differs from the kafka_replyPartition header "
            f"{named.partition}"
        )
    return None


def _caller_mismatch(body: dict[str, Any], bound: str | None, topic: str) -> str | None:
    """Why the body's caller cannot be the one the topic is bound to, or None when it can."""
    caller = body.get("caller")
    if bound is None or caller is None or caller == bound:
        return None
    claimed = caller if isinstance(caller, str) else repr(caller)
    return f"{topic} carries the requests of caller {bound!r} only, the body names {claimed[:80]!r}"


def _with_caller(body: dict[str, Any], bound: str | None) -> dict[str, Any]:
    """The body with the topic's caller when it names none."""
    if bound is None or "caller" in body:
        return body
    return {**body, "caller": bound}


def _json_int(value: object) -> int | None:
    """``value`` as JSON Schema's ``integer`` reads it (``2`` and ``2.0`` alike, as the model does; not
    ``true``), or None when it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def _fallback_request_id(record: ConsumerRecord[bytes, bytes], correlation: bytes | None) -> str | None:
    """The request id an ``invalid`` answer uses when neither the body nor the correlation header holds
    one: derived from the record's place (stable across redeliveries), and only when the correlation
    header lets the client match the answer anyway."""
    if not correlation:
        return None
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{record.topic}:{record.partition}:{record.offset}"))


def _reply_address(
    body: dict[str, Any],
    named: _HeaderReply,
    correlation: bytes | None,
    record: ConsumerRecord[bytes, bytes],
) -> ReplyAddress | None:
    request_id = body.get("request_id")
    topic = body.get("reply_topic")
    partition = _json_int(body.get("reply_partition"))
    if not (isinstance(request_id, str) and _UUID.fullmatch(request_id)):
        text = correlation.decode("utf-8", "replace") if correlation else None
        request_id = (
            text if text is not None and _UUID.fullmatch(text) else _fallback_request_id(record, correlation)
        )
    if not (isinstance(topic, str) and TOPIC_NAME.fullmatch(topic)):
        topic = named.topic
    if not (partition is not None and 0 <= partition <= MAX_PARTITION):
        partition = named.partition
    if request_id is None or topic is None or partition is None:
        return None
    return ReplyAddress(request_id, topic, partition)
