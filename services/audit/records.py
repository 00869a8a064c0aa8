"""Kafka records of the audit topics, read as recorded requests, responses and dead letters.

The body is the contract (docs/CONTRACT.md; §3 "Wire contract" of ``../shared/DESIGN.md``, outside the
repository): the request id, provider, tr_id and caller come from it. A body that cannot be read still
yields a record, with ``problem`` set and whatever the headers tell (``kafka_correlationId``,
``apihub-caller``), so nothing in the log is silently left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from hubclient.headers import CALLER, CORRELATION_ID, DLQ_REASON, DLQ_SOURCE, header_value, with_reply_headers
from hubclient.models import ApiRequest, ApiResponse
from services.settings import validation_message

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class RawRecord:
    """One Kafka record as read: where it is, its log timestamp (epoch ms) and its bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None
    headers: Headers = ()
    key: bytes | None = None

    @property
    def position(self) -> str:
        """``topic:partition:offset``, as the gateway's ``apihub-dlq-source`` header writes it."""
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class RecordedRequest:
    """A record of the request topic: the request, or what could be read of an unreadable one."""

    raw: RawRecord
    request: ApiRequest | None
    body: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def at_ms(self) -> int:
        """When it was logged (the record's timestamp, epoch ms)."""
        return self.raw.timestamp_ms

    @property
    def request_id(self) -> str | None:
        """The body's request id, else the ``kafka_correlationId`` header as text."""
        if self.request is not None:
            return self.request.request_id
        return _text(self.body.get("request_id")) or _header_text(self.raw.headers, CORRELATION_ID)

    @property
    def correlation_id(self) -> str | None:
        """The ``kafka_correlationId`` header as text (a Spring client's id may differ from the body's)."""
        return _header_text(self.raw.headers, CORRELATION_ID)

    @property
    def correlation_bytes(self) -> bytes | None:
        """The ``kafka_correlationId`` header's bytes as sent (None without one): every answer echoes them,
        also one written under an id the gateway derived because it could not read one."""
        return header_value(self.raw.headers, CORRELATION_ID) or None

    @property
    def provider(self) -> str:
        """``KIS``/``KIWOOM`` (``?`` when unreadable)."""
        return self.request.provider.value if self.request else _text(self.body.get("provider")) or "?"

    @property
    def tr_id(self) -> str:
        """The catalog key asked for (``?`` when unreadable)."""
        return self.request.tr_id if self.request else _text(self.body.get("tr_id")) or "?"

    @property
    def caller(self) -> str:
        """The calling service (the body's, else the ``apihub-caller`` header, else ``?``)."""
        if self.request is not None:
            return self.request.caller
        return _text(self.body.get("caller")) or _header_text(self.raw.headers, CALLER) or "?"

    @property
    def kind(self) -> str | None:
        """``call`` or ``websocket_credentials`` (None when unreadable)."""
        return self.request.kind.value if self.request else _text(self.body.get("kind"))


@dataclass(frozen=True)
class RecordedResponse:
    """A record of a response topic."""

    raw: RawRecord
    response: ApiResponse | None
    problem: str | None = None

    @property
    def at_ms(self) -> int:
        """When it was logged (epoch ms)."""
        return self.raw.timestamp_ms

    @property
    def request_id(self) -> str | None:
        """The request it answers: the body's id, else the ``kafka_correlationId`` header as text."""
        if self.response is not None:
            return self.response.request_id
        return _header_text(self.raw.headers, CORRELATION_ID)

    @property
    def correlation_bytes(self) -> bytes | None:
        """The ``kafka_correlationId`` header's bytes (None without one): the request's, echoed."""
        return header_value(self.raw.headers, CORRELATION_ID) or None

    @property
    def status(self) -> str:
        """The response's status (``unreadable`` when its body is not a response)."""
        return self.response.status.value if self.response is not None else "unreadable"


@dataclass(frozen=True)
class DeadLetter:
    """A record of ``api.requests.dlq``: why a request could not be served, and where it was."""

    raw: RawRecord
    reason: str
    source: str | None  # topic:partition:offset of the request record


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _header_text(headers: Headers, name: str) -> str | None:
    raw = header_value(headers, name)
    return raw.decode("utf-8", "replace") if raw else None


def _body(value: bytes | None) -> tuple[dict[str, Any], str | None]:
    if value is None:
        return {}, "empty value"
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return {}, f"unparseable: {exc}"
    if not isinstance(body, dict):
        return {}, "unparseable: not a JSON object"
    return body, None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "body"
    return f"schema: {where}: {validation_message(error)}"


def read_request(raw: RawRecord) -> RecordedRequest:
    """A request record as recorded (its reply address from the headers where the body names none, as the
    gateway reads it); never raises."""
    body, problem = _body(raw.value)
    if problem is not None:
        return RecordedRequest(raw, None, body, problem)
    try:  # read as the gateway read it: a reply address left to the headers is the request's
        return RecordedRequest(raw, ApiRequest.model_validate(with_reply_headers(body, raw.headers)), body)
    except ValidationError as exc:
        return RecordedRequest(raw, None, body, _first_error(exc))


def read_response(raw: RawRecord) -> RecordedResponse:
    """A response record as recorded; never raises."""
    body, problem = _body(raw.value)
    if problem is not None:
        return RecordedResponse(raw, None, problem)
    try:
        return RecordedResponse(raw, ApiResponse.model_validate(body))
    except ValidationError as exc:
        return RecordedResponse(raw, None, _first_error(exc))


def read_dead_letter(raw: RawRecord) -> DeadLetter:
    """A dead-letter record: its reason and source headers (``?`` when absent)."""
    return DeadLetter(
        raw,
        reason=_header_text(raw.headers, DLQ_REASON) or "?",
        source=_header_text(raw.headers, DLQ_SOURCE),
    )
