"""What a provider adapter does: build the upstream HTTP request, classify the answer, page.

Classification looks at the body as well as the status: KIS reports throttling and expired tokens as
HTTP 500 with a normal envelope, and Kiwoom puts the real code in brackets inside ``return_msg``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Protocol

from hubclient.catalog import TrSpec
from hubclient.models import ApiRequest, Provider

KST = timezone(timedelta(hours=9), "KST")


class Outcome(StrEnum):
    """What an upstream answer means for the gateway."""

    OK = "ok"
    THROTTLED = "throttled"  # the broker's rate limit: slow down and requeue
    TOKEN_REJECTED = "token_rejected"  # noqa: S105 - replace the token once and try again
    BUSINESS_ERROR = "business_error"  # a definite answer: pass it to the caller
    TRANSIENT = "transient"  # 5xx or garbage: retry idempotent calls
    UNKNOWN_OUTCOME = "unknown_outcome"  # an order may have happened: never resend


@dataclass(frozen=True)
class UpstreamRequest:
    """One HTTP call to a broker; ``headers`` may hold secrets and are never logged."""

    method: str
    url: str
    headers: dict[str, str]
    query: dict[str, str] | None = None
    json_body: dict[str, Any] | None = None


@dataclass(frozen=True)
class UpstreamAnswer:
    """The raw HTTP answer; ``body`` is the parsed JSON or None when it was not JSON."""

    status: int
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Classified:
    """An answer sorted into an ``Outcome`` with the fields of the hub's response."""

    outcome: Outcome
    http_status: int
    provider_code: str | None = None
    message: str | None = None
    data: Any = None
    continuation: dict[str, str] | None = field(default=None)
    class_limit: bool = False  # a throttle answer about the call's class limit (ledger, orders)


@dataclass(frozen=True)
class TokenGrant:
    """An access token and its absolute expiry."""

    access_token: str
    expires_at_s: float  # epoch seconds, from the broker's absolute expiry field


class ProviderAdapter(Protocol):
    """Everything provider-specific about calling a broker."""

    provider: Provider

    def token_request(self) -> UpstreamRequest: ...

    def parse_token(self, answer: UpstreamAnswer) -> TokenGrant: ...

    def build(self, spec: TrSpec, request: ApiRequest, access_token: str) -> UpstreamRequest: ...

    def classify(self, spec: TrSpec, request: ApiRequest, answer: UpstreamAnswer) -> Classified: ...


def kst_to_epoch_s(text: str, fmt: str) -> float:
    """Parse a KST wall-clock timestamp into epoch seconds."""
    return datetime.strptime(text, fmt).replace(tzinfo=KST).timestamp()


def stringify(params: dict[str, Any]) -> dict[str, str]:
    """Brokers want every parameter as a string; None becomes empty."""
    return {k: "" if v is None else str(v) for k, v in params.items()}
