"""Admission: what is refused at once, before a request waits for a slot.

In order: params with more than ``max_param_keys`` keys or a value longer than ``max_param_value_chars``
characters (``invalid`` / ``params_too_large``: no broker field comes near, and such a call would only
fail upstream), a continuation whose paging header could not be written (``invalid`` /
``invalid_continuation``), an unknown tr_id, a planned endpoint, a call missing a required parameter
(``invalid``); a deadline already passed (``expired``); then, once ``pool`` chose the credential
(``unknown_credential``, ``credential_required``, ``account_mismatch``), an endpoint the mock server does
not offer, for a mock credential (``check_environment``: ``rejected`` / ``not_in_mock``, before any
upstream call); last a deadline out of reach at the current pace (``rejected`` /
``deadline_unreachable``, logged as ``ratelimit.rejected``). The estimate of the wait comes from the
domain's pacer; these checks are pure.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from hubclient.catalog import TrSpec, lookup, refusal
from hubclient.errors import UnknownTrId
from hubclient.models import ApiRequest
from services.gateway.errors import Expired, Invalid, Refused
from services.gateway.http1 import writable
from services.gateway.metrics import LIMITER_REJECTIONS
from services.logs import log_event

logger = logging.getLogger(__name__)


MAX_PARAM_KEYS = 64  # the default of ``GatewaySettings.max_param_keys``
MAX_PARAM_VALUE_CHARS = 4_096  # the default of ``GatewaySettings.max_param_value_chars``
#: Refusals by pace, each logged as ``ratelimit.rejected`` where it is made (``log_rejection``).
PACE_REFUSALS = frozenset({"deadline_unreachable", "backlog_full"})
#: Continuation fields the adapters send as HTTP headers (KIS ``tr_cont``, Kiwoom ``next-key``).
HEADER_CONTINUATION_KEYS = ("tr_cont", "next-key")


def check_params_size(
    params: dict[str, Any] | None,
    *,
    max_keys: int = MAX_PARAM_KEYS,
    max_value_chars: int = MAX_PARAM_VALUE_CHARS,
) -> None:
    """Raise ``Invalid("params_too_large")`` naming the key when params exceed either limit."""
    if not params:
        return
    if len(params) > max_keys:
        raise Invalid("params_too_large", f"params hold {len(params)} keys, more than {max_keys}")
    for key, value in params.items():
        try:
            size = len(value) if isinstance(value, str) else len(orjson.dumps(value, default=str))
        except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes (it reads deeper)
            raise Invalid("params_too_large", f"params[{str(key)[:64]!r}] cannot be sent: {exc}") from exc
        if size > max_value_chars:
            raise Invalid(
                "params_too_large",
                f"params[{str(key)[:64]!r}] holds {size} characters, more than {max_value_chars}",
            )


def check_continuation(continuation: dict[str, str] | None) -> None:
    """Raise ``Invalid("invalid_continuation")`` for a paging header value HTTP/1.1 cannot carry (a line
    break, a character beyond latin-1). The dispatcher would refuse to write it and answer it as an
    unreachable broker: retried, and counted against the broker's health, so one caller's bad pages
    opened the circuit breaker for every caller. Continuations the gateway hands out never hold one."""
    for key in HEADER_CONTINUATION_KEYS:
        if not writable((continuation or {}).get(key, "")):
            raise Invalid("invalid_continuation", f"continuation {key!r} cannot be sent as an HTTP header")


def check_request(
    request: ApiRequest,
    *,
    now_ms: int,
    max_param_keys: int = MAX_PARAM_KEYS,
    max_param_value_chars: int = MAX_PARAM_VALUE_CHARS,
) -> TrSpec:
    """The request's catalog entry; raises ``Invalid`` or ``Expired``."""
    check_params_size(request.params, max_keys=max_param_keys, max_value_chars=max_param_value_chars)
    check_continuation(request.continuation)
    try:
        spec = lookup(request.provider, request.tr_id)
    except UnknownTrId as exc:
        raise Invalid("unknown_tr_id", str(exc)) from exc
    problem = refusal(spec, request.params, request.continuation)  # the client's own check, for any client
    if problem is not None:
        raise Invalid(problem.reason, problem.message)
    if request.deadline_ms <= now_ms:
        raise Expired("deadline_passed")
    return spec


def check_environment(spec: TrSpec, *, mock: bool) -> None:
    """Raise ``Refused("not_in_mock")`` for a call the mock server does not offer, sent with a mock key."""
    if mock and not spec.mock_supported:  # refused before any upstream call, as the mock server would
        raise Refused("not_in_mock", f"{spec.provider}/{spec.key} is not offered by the mock server")


def check_deadline(request: ApiRequest, *, now_ms: int, wait_s: float) -> None:
    """Raise ``Refused("deadline_unreachable")`` when the answer would come after the deadline."""
    if now_ms + wait_s * 1000 < request.deadline_ms:
        return
    raise Refused(
        "deadline_unreachable",
        f"estimated wait {wait_s * 1000:.0f} ms exceeds the deadline",
        retriable=True,
    )


def log_rejection(request: ApiRequest, *, domain: str, reason: str, queue_depth: int, wait_s: float) -> None:
    """Count and log a refusal by pacing (``ratelimit.rejected``)."""
    LIMITER_REJECTIONS.labels(request.provider.value, reason).inc()
    log_event(
        logger,
        "ratelimit.rejected",
        logging.WARNING,
        provider=request.provider.value,
        domain=domain,
        reason=reason,
        queue_depth=queue_depth,
        estimated_wait_ms=round(wait_s * 1000),
        deadline_ms=request.deadline_ms,
        caller=request.caller,
        priority=request.priority.value,
        request_id=request.request_id,
    )
