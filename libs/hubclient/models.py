"""The wire contract: request and response envelopes on ``api.requests`` / ``api.responses``.

Values are JSON (orjson), one message per request or response. The JSON body is the contract; Kafka
headers only mirror a few body fields (see ``hubclient.headers``). ``schemas/`` holds the JSON Schema
generated from these models, so non-Python clients can use the hub from the schema alone.
"""

from __future__ import annotations

import time
from enum import Enum, StrEnum
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

#: Bumped on any incompatible change of the envelopes; sent in the ``apihub-schema`` header.
SCHEMA_VERSION = "1"

_UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$"


class Provider(StrEnum):
    """The brokers behind the hub."""

    KIS = "KIS"
    KIWOOM = "KIWOOM"


class Priority(StrEnum):
    """Scheduling class; ``interactive`` is served before ``normal`` before ``bulk``."""

    INTERACTIVE = "interactive"
    NORMAL = "normal"
    BULK = "bulk"


class Status(StrEnum):
    """How a request ended."""

    OK = "ok"
    UPSTREAM_ERROR = "upstream_error"
    REJECTED = "rejected"
    EXPIRED = "expired"
    INVALID = "invalid"
    UNKNOWN_OUTCOME = "unknown_outcome"


class RequestKind(StrEnum):
    """What a request asks for."""

    CALL = "call"  # a broker call: ``tr_id`` with ``params``
    WEBSOCKET_CREDENTIALS = "websocket_credentials"  # lend the provider's WebSocket credential


#: The ``tr_id`` a ``websocket_credentials`` request carries (the gateway does not read it).
WEBSOCKET_CREDENTIALS_TR_ID = "websocket_credentials"
MAX_IDEMPOTENCY_KEY = 200  # characters


#: orjson hands these to ``_plain`` instead of writing them its own way (pydantic's may differ).
_EXACT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _plain(value: Any) -> Any:
    """What orjson writes for an enum (its value) and a nested envelope (its fields); TypeError for the
    rest, which sends the whole message to pydantic's serializer."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, _Envelope):
        return value.__dict__
    raise TypeError(type(value).__name__)


def _json_integer(value: Any) -> Any:
    """JSON Schema's ``integer``: a number without a fraction (``1.0`` is one), not a string or a boolean,
    which pydantic would otherwise turn into one (``"3"`` -> 3, ``true`` -> 1)."""
    if isinstance(value, str | bytes | bool):
        raise ValueError("must be a JSON integer, not a string or a boolean")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]

#: Epoch milliseconds fit a signed 64-bit integer (Java's ``long``); past it a JSON parser may give a float.
_LONG_LIMIT = 1 << 63


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    def to_json(self) -> bytes:
        """The message value as UTF-8 JSON bytes, the same bytes as pydantic's serializer writes.

        orjson writes the fields straight from the model, in less than half of pydantic's time for a
        broker's body in ``data`` (typed ``Any``, which pydantic inspects value by value); the gateway
        writes every answer twice (its idempotency record and the message). A value orjson would write
        differently (a date, a dataclass, a subclass of a JSON type, an integer past 64 bits) goes to
        pydantic's serializer instead."""
        try:
            return orjson.dumps(self.__dict__, default=_plain, option=_EXACT)
        except TypeError:
            return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_json(cls, value: bytes | str) -> Self:
        """Parse and validate a message value; raises ``pydantic.ValidationError`` or ``ValueError``."""
        return cls.model_validate(orjson.loads(value))


class ApiRequest(_Envelope):
    """One broker call asked for by a worker."""

    # The rules across fields that JSON Schema can state (not deadline_ms >= created_at_ms).
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"kind": {"const": "websocket_credentials"}}, "required": ["kind"]},
                    "then": {
                        "properties": {
                            "tr_id": {"const": WEBSOCKET_CREDENTIALS_TR_ID},
                            "params": {"maxProperties": 0},
                        }
                    },
                }
            ]
        }
    )

    request_id: str = Field(
        pattern=_UUID_PATTERN,
        description="UUIDv7; also the correlation id. One request: sent again it is answered from its first "
        "delivery's record; another request under it is answered invalid / request_id_reused",
    )
    provider: Provider
    tr_id: str = Field(pattern=r"^[A-Za-z0-9_]{1,32}$", description="KIS tr_id or Kiwoom api-id")
    params: dict[str, Any] = Field(default_factory=dict, description="the call's parameters, by name")
    caller: str = Field(pattern=_NAME_PATTERN, description="name of the calling service")
    priority: Priority = Priority.NORMAL
    deadline_ms: JsonInt = Field(
        gt=0,
        lt=_LONG_LIMIT,
        description="epoch ms after which the answer is useless; not before created_at_ms",
    )
    created_at_ms: JsonInt = Field(
        gt=0, lt=_LONG_LIMIT, description="epoch ms when the caller created the request"
    )
    reply_topic: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="topic of the answer; may be left out when the kafka_replyTopic header names it (the "
        "body wins; a body and header that disagree are answered invalid)",
    )
    reply_partition: JsonInt = Field(
        ge=0,
        lt=1 << 31,
        description="partition of the answer; may be left out when the kafka_replyPartition header names it "
        "(the body wins; a body and header that disagree are answered invalid)",
    )
    idempotency_key: str | None = Field(
        default=None,
        max_length=MAX_IDEMPOTENCY_KEY,
        description="names one order across requests: orders (non-idempotent calls) of the same caller to "
        "the same provider with this key are sent at most once within a day, a later one answered with the "
        "first one's answer (shared_with naming it) or unknown_outcome while that one may be at the broker, "
        "an order with other params under it invalid / idempotency_key_reused; ignored for reads",
    )
    continuation: dict[str, str] | None = Field(default=None, description="paging state from a response")
    credential: str | None = Field(
        default=None, pattern=_NAME_PATTERN, description="pool member name, never a secret"
    )
    kind: RequestKind = Field(
        default=RequestKind.CALL,
        description="call (the default): a broker call. websocket_credentials: the gateway answers from "
        "its token store with the provider's WebSocket credential in data (see "
        "websocket-credentials.schema.json; KIS: the approval key, Kiwoom: the access token); tr_id is then "
        "'websocket_credentials' and params are empty",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.deadline_ms < self.created_at_ms:
            raise ValueError("deadline_ms is before created_at_ms")
        if self.kind is RequestKind.WEBSOCKET_CREDENTIALS and (
            self.tr_id != WEBSOCKET_CREDENTIALS_TR_ID or self.params
        ):
            raise ValueError(
                f"a websocket_credentials request has tr_id {WEBSOCKET_CREDENTIALS_TR_ID!r} and no params"
            )
        return self

    @property
    def limit_domain(self) -> str:
        """The rate-limit domain and partition key: ``KIS`` or ``KIS/<credential>``."""
        return self.provider.value if self.credential is None else f"{self.provider.value}/{self.credential}"

    def remaining_ms(self, now_ms: int | None = None) -> int:
        """Milliseconds left until the deadline (negative once it has passed)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return self.deadline_ms - now


class Timing(_Envelope):
    """Where the time went, in milliseconds."""

    queued_ms: float = Field(ge=0, description="from arrival at the gateway to the upstream call")
    upstream_ms: float = Field(ge=0, description="time spent in upstream calls")
    total_ms: float = Field(ge=0, description="from created_at_ms to the response")


class ApiResponse(_Envelope):
    """The one terminal answer to an ``ApiRequest``."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"status": {"not": {"const": "ok"}}}},
                    "then": {
                        "required": ["reason"],
                        "properties": {"reason": {"type": "string", "minLength": 1}},
                    },
                }
            ]
        }
    )

    request_id: str = Field(pattern=_UUID_PATTERN)
    status: Status
    reason: str | None = Field(default=None, description="machine-readable; set for every non-ok status")
    http_status: int | None = None
    provider_code: str | None = Field(default=None, description="KIS msg_cd / Kiwoom return_code")
    message: str | None = None
    data: Any = Field(default=None, description="the broker's body, untouched")
    continuation: dict[str, str] | None = Field(default=None, description="state for the next page")
    timing: Timing = Field(default_factory=lambda: Timing(queued_ms=0, upstream_ms=0, total_ms=0))
    attempts: int = Field(default=0, ge=0)
    gateway: str = Field(default="", description="id of the gateway instance that answered")
    credential: str | None = Field(
        default=None,
        pattern=_NAME_PATTERN,
        description="the pool member whose key served the call (its name, never a secret); null when no "
        "upstream call was made for this request",
    )
    shared_with: str | None = Field(
        default=None,
        pattern=_UUID_PATTERN,
        description="set when this answer shares another request's upstream call (an identical read in "
        "flight at the same moment, or a cached read of immutable data): that request's request_id, whose "
        "response on the response topic is the audit record of the one upstream call",
    )

    @model_validator(mode="after")
    def _reason_for_failures(self) -> Self:
        if self.status is not Status.OK and not self.reason:
            raise ValueError(f"a {self.status.value} response needs a reason")
        return self

    @property
    def ok(self) -> bool:
        """True when the broker call succeeded."""
        return self.status is Status.OK


class WebSocketCredentials(BaseModel):
    """The ``data`` of an ``ok`` answer to a ``websocket_credentials`` request: a secret, lent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Provider
    kind: Literal["approval_key", "access_token"] = Field(
        description="approval_key (KIS: the WebSocket approval key) or access_token (Kiwoom's REST token)"
    )
    secret: str = Field(repr=False, description="the key or token itself; never log it")
    expires_at_ms: int = Field(gt=0, description="epoch ms; ask again before then (the gateway renews early)")
