"""What to do after an upstream attempt: a pure function of (outcome, spec, attempts).

The call module performs the I/O the decision names; the table is tested row by row.

| outcome                     | idempotent call                 | order (non-idempotent)          |
|-----------------------------|---------------------------------|---------------------------------|
| ok                          | answer ok                       | answer ok                       |
| token_rejected (first time) | replace the token, requeue      | replace token, requeue (unexec.)|
| token_rejected (again)      | upstream_error                  | upstream_error (unexecuted)     |
| throttled                   | slow down, requeue*             | slow down, requeue* (unexecuted)|
| transient (5xx, garbage)    | back off, requeue*              | unknown_outcome                 |
| unknown_outcome             | unknown_outcome                 | unknown_outcome                 |
| business_error              | upstream_error                  | upstream_error                  |
| unreachable (never sent)    | back off, requeue*              | back off, requeue*              |
| no_answer (sent)            | back off, requeue*              | unknown_outcome                 |
| cut by the deadline (sent)  | expired                         | unknown_outcome                 |

Only an outcome that says something about the broker's health counts toward its circuit breaker
(``breaker.counts_against_health``): no answer, a connection failure, a 5xx without a usable envelope.
A ``transient`` outcome whose HTTP status is a 4xx (an error page about the request itself, say a URL
too long) is not retried and never counts; 408 and 429 are still retried, without counting.

"Unexecuted": the broker refused the order before executing it, so its in-flight mark is cleared and a
redelivery (or a retry under its ``idempotency_key``) may send it again rather than be answered
``unknown_outcome``; a token refusal is one, as a throttle is.

\\* while ``attempts < max_attempts``; after that ``upstream_error`` with the outcome as reason
(``unreachable`` for both connection failures). Requeued requests wait for a new slot like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hubclient.models import Status
from services.gateway.breaker import counts_against_health

MAX_ATTEMPTS = 4  # upstream calls per request, retries included
RETRY_BASE_S = 0.05
RETRIED_4XX = frozenset({408, 429})  # a timeout or throttling page: worth another try, not a health signal


class Result(StrEnum):
    """What one attempt came to, from the classified answer or from the dispatcher's error."""

    OK = "ok"
    THROTTLED = "throttled"
    TOKEN_REJECTED = "token_rejected"  # noqa: S105 - an outcome, not a secret
    BUSINESS_ERROR = "business_error"
    TRANSIENT = "transient"
    UNKNOWN_OUTCOME = "unknown_outcome"
    UNREACHABLE = "unreachable"
    NO_ANSWER = "no_answer"
    DEADLINE_CUT = "deadline_cut"


class Action(StrEnum):
    """The next step."""

    FINISH = "finish"
    REQUEUE = "requeue"


@dataclass(frozen=True)
class Effects:
    """Side effects of a decision, performed by the caller of ``decide``."""

    backoff: bool = False  # sleep a jittered backoff before requeueing
    replace_token: bool = False
    slow_down: bool = False
    clear_inflight: bool = False  # the broker certainly did not execute it
    breaker_failure: bool = False
    breaker_success: bool = False


NONE = Effects()
SUCCESS = Effects(breaker_success=True)
FAILURE = Effects(breaker_failure=True)
UNEXECUTED = Effects(clear_inflight=True, breaker_success=True)  # refused unexecuted by a broker that is well


@dataclass(frozen=True)
class Decision:
    """The next step: answer with ``status`` and ``reason``, or requeue (``reason`` names the retry)."""

    action: Action
    status: Status | None
    reason: str | None
    effects: Effects = NONE


def _finish(status: Status, reason: str | None, effects: Effects = NONE) -> Decision:
    return Decision(Action.FINISH, status, reason, effects)


def _requeue(reason: str, effects: Effects) -> Decision:
    return Decision(Action.REQUEUE, None, reason, effects)


def decide(
    result: Result,
    *,
    idempotent: bool,
    attempts: int,
    token_replaced: bool,
    max_attempts: int = MAX_ATTEMPTS,
    http_status: int | None = None,
) -> Decision:
    """The decision for one attempt's ``result`` (``attempts`` counts this one; ``http_status`` when the
    broker answered at all)."""
    more = attempts < max_attempts
    if result is Result.TRANSIENT and not counts_against_health(http_status):
        return _about_the_request(result, idempotent=idempotent, more=more, http_status=http_status)
    if result is Result.OK:
        return _finish(Status.OK, None, SUCCESS)
    if result is Result.TOKEN_REJECTED:  # refused at the door, unexecuted: an order may go again
        if token_replaced:
            return _finish(Status.UPSTREAM_ERROR, result.value, UNEXECUTED)
        return _requeue(result.value, Effects(replace_token=True, clear_inflight=True, breaker_success=True))
    if result is Result.THROTTLED:
        if more:
            return _requeue(result.value, Effects(slow_down=True, clear_inflight=True, breaker_success=True))
        return _finish(Status.UPSTREAM_ERROR, result.value, Effects(slow_down=True, clear_inflight=True))
    if result is Result.BUSINESS_ERROR:
        return _finish(Status.UPSTREAM_ERROR, result.value, SUCCESS)
    if result is Result.UNKNOWN_OUTCOME:
        return _finish(Status.UNKNOWN_OUTCOME, result.value, SUCCESS)
    if result is Result.DEADLINE_CUT:
        if idempotent:
            return _finish(Status.EXPIRED, "deadline_passed")
        return _finish(Status.UNKNOWN_OUTCOME, "no_answer")
    if result is Result.UNREACHABLE:
        if more:
            return _requeue(result.value, Effects(backoff=True, clear_inflight=True, breaker_failure=True))
        return _finish(
            Status.UPSTREAM_ERROR, "unreachable", Effects(clear_inflight=True, breaker_failure=True)
        )
    # TRANSIENT and NO_ANSWER: the broker may have executed it.
    if not idempotent:
        return _finish(Status.UNKNOWN_OUTCOME, result.value, FAILURE)
    if more:
        return _requeue(result.value, Effects(backoff=True, breaker_failure=True))
    return _finish(Status.UPSTREAM_ERROR, given_up(result.value), FAILURE)


def given_up(retry_reason: str) -> str:
    """The ``upstream_error`` reason of a call whose retry goes no further: the retry's reason, except that
    a read sent without an answer is ``unreachable`` (``no_answer`` is an order's ``unknown_outcome``)."""
    return Result.UNREACHABLE.value if retry_reason == Result.NO_ANSWER else retry_reason


def _about_the_request(result: Result, *, idempotent: bool, more: bool, http_status: int | None) -> Decision:
    """A 4xx without an envelope: the broker is well, the request is not (or it is too early, 408/429)."""
    if not idempotent:
        return _finish(Status.UNKNOWN_OUTCOME, result.value)
    if http_status in RETRIED_4XX and more:
        return _requeue(result.value, Effects(backoff=True))
    return _finish(Status.UPSTREAM_ERROR, result.value)


def backoff_s(attempt: int, unit: float) -> float:
    """Full jitter: ``unit`` (a uniform draw in [0, 1)) times ``RETRY_BASE_S * 2**attempt`` seconds."""
    return unit * RETRY_BASE_S * 2.0**attempt
