"""Reading a request record: the body is the contract, headers only help when the body is unusable.

A record that cannot be parsed or validated is dead-lettered with the reason, and still answered
``invalid`` when a reply address (and a usable request id) can be read from the body or the headers.
Replies go only to allowed topics, so a crafted request cannot make the gateway write elsewhere.
A record larger than ``max_request_bytes`` is not parsed at all (reason ``too_large``); its reply address
then comes from the headers only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from hubclient.headers import CORRELATION_ID, REPLY_PARTITION, REPLY_TOPIC, decode_partition, header_value
from hubclient.models import ApiRequest

MAX_REQUEST_BYTES = 65_536  # the default of ``GatewaySettings.max_request_bytes``
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class ReplyAddress:
    """Where an answer goes."""

    request_id: str
    topic: str
    partition: int


@dataclass(frozen=True)
class Intake:
    """A record read: either a request, or a reason and perhaps a reply address."""

    request: ApiRequest | None
    reason: str | None = None
    reply: ReplyAddress | None = None


def read_record(
    record: ConsumerRecord[bytes, bytes],
    allowed_reply_topics: frozenset[str],
    *,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> Intake:
    """Parse and validate one record from the request topic (at most ``max_request_bytes`` bytes)."""
    headers = list(record.headers or ())
    body: Any = None
    if record.value is not None and len(record.value) > max_request_bytes:
        reason = f"too_large: {len(record.value)} bytes exceed the limit of {max_request_bytes}"
        reply = _reply_address({}, headers)
        allowed = reply is not None and reply.topic in allowed_reply_topics
        return Intake(None, reason, reply if allowed else None)
    try:
        body = orjson.loads(record.value) if record.value is not None else None
    except orjson.JSONDecodeError as exc:
        reason = f"unparseable: {exc}"
    else:
        if not isinstance(body, dict):
            reason = "unparseable: the value is not a JSON object"
        else:
            try:
                request = ApiRequest.model_validate(body)
            except ValidationError as exc:
                reason = "schema: " + "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
                )
            else:
                if request.reply_topic not in allowed_reply_topics:
                    return Intake(None, f"reply_topic_not_allowed: {request.reply_topic}")
                return Intake(request)
    reply = _reply_address(body if isinstance(body, dict) else {}, headers)
    if reply is not None and reply.topic not in allowed_reply_topics:
        reply = None
    return Intake(None, reason, reply)


def _reply_address(body: dict[str, Any], headers: list[tuple[str, bytes]]) -> ReplyAddress | None:
    request_id = body.get("request_id")
    topic = body.get("reply_topic")
    partition = body.get("reply_partition")
    if not (isinstance(request_id, str) and _UUID.match(request_id)):
        raw = header_value(headers, CORRELATION_ID)
        request_id = raw.decode("utf-8", "replace") if raw else None
    if not isinstance(topic, str):
        raw = header_value(headers, REPLY_TOPIC)
        topic = raw.decode("utf-8", "replace") if raw else None
    if not (isinstance(partition, int) and partition >= 0):
        raw = header_value(headers, REPLY_PARTITION)
        try:
            partition = decode_partition(raw) if raw else None
        except ValueError:
            partition = None
    if (
        request_id is None
        or not _UUID.match(request_id)
        or topic is None
        or partition is None
        or partition < 0
    ):
        return None
    return ReplyAddress(request_id, topic, partition)
