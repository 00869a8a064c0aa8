"""The retry decision, row by row: a pure function of the outcome, the call's kind and the attempts."""

from __future__ import annotations

import pytest

from hubclient.models import Status
from services.gateway.policy import MAX_ATTEMPTS, Action, Result, backoff_s, decide

R, FIN, REQ = Result, Action.FINISH, Action.REQUEUE
S = Status

# (result, idempotent, attempts, token_replaced) -> (action, status, reason, effects that must be set)
TABLE = [
    ((R.OK, True, 1, False), (FIN, S.OK, None, {"breaker_success"})),
    ((R.OK, False, 1, False), (FIN, S.OK, None, {"breaker_success"})),
    (
        (R.TOKEN_REJECTED, True, 1, False),
        (REQ, None, "token_rejected", {"replace_token", "clear_inflight", "breaker_success"}),
    ),
    (
        (R.TOKEN_REJECTED, False, 1, False),
        (REQ, None, "token_rejected", {"replace_token", "clear_inflight", "breaker_success"}),
    ),
    (
        (R.TOKEN_REJECTED, True, 2, True),
        (FIN, S.UPSTREAM_ERROR, "token_rejected", {"clear_inflight", "breaker_success"}),
    ),
    (
        (R.THROTTLED, True, 1, False),
        (REQ, None, "throttled", {"slow_down", "clear_inflight", "breaker_success"}),
    ),
    (
        (R.THROTTLED, False, 1, False),
        (REQ, None, "throttled", {"slow_down", "clear_inflight", "breaker_success"}),
    ),
    (
        (R.THROTTLED, True, MAX_ATTEMPTS, False),
        (FIN, S.UPSTREAM_ERROR, "throttled", {"slow_down", "clear_inflight"}),
    ),
    ((R.TRANSIENT, True, 1, False), (REQ, None, "transient", {"backoff", "breaker_failure"})),
    ((R.TRANSIENT, True, MAX_ATTEMPTS, False), (FIN, S.UPSTREAM_ERROR, "transient", {"breaker_failure"})),
    ((R.TRANSIENT, False, 1, False), (FIN, S.UNKNOWN_OUTCOME, "transient", {"breaker_failure"})),
    ((R.UNKNOWN_OUTCOME, False, 1, False), (FIN, S.UNKNOWN_OUTCOME, "unknown_outcome", {"breaker_success"})),
    ((R.BUSINESS_ERROR, True, 1, False), (FIN, S.UPSTREAM_ERROR, "business_error", {"breaker_success"})),
    (
        (R.UNREACHABLE, False, 1, False),
        (REQ, None, "unreachable", {"backoff", "clear_inflight", "breaker_failure"}),
    ),
    (
        (R.UNREACHABLE, True, MAX_ATTEMPTS, False),
        (FIN, S.UPSTREAM_ERROR, "unreachable", {"clear_inflight", "breaker_failure"}),
    ),
    ((R.NO_ANSWER, True, 1, False), (REQ, None, "no_answer", {"backoff", "breaker_failure"})),
    ((R.NO_ANSWER, True, MAX_ATTEMPTS, False), (FIN, S.UPSTREAM_ERROR, "unreachable", {"breaker_failure"})),
    ((R.NO_ANSWER, False, 1, False), (FIN, S.UNKNOWN_OUTCOME, "no_answer", {"breaker_failure"})),
    ((R.DEADLINE_CUT, True, 1, False), (FIN, S.EXPIRED, "deadline_passed", set())),
    ((R.DEADLINE_CUT, False, 1, False), (FIN, S.UNKNOWN_OUTCOME, "no_answer", set())),
]
EFFECTS = ("backoff", "replace_token", "slow_down", "clear_inflight", "breaker_failure", "breaker_success")


@pytest.mark.parametrize(
    ("given", "expected"), TABLE, ids=[f"{g[0].value}-{g[1]}-{g[2]}-{g[3]}" for g, _ in TABLE]
)
def test_decision_table(
    given: tuple[Result, bool, int, bool], expected: tuple[Action, Status | None, str | None, set[str]]
) -> None:
    """Each row of the policy table: the action, the answer and exactly the listed side effects."""
    result, idempotent, attempts, replaced = given
    decision = decide(result, idempotent=idempotent, attempts=attempts, token_replaced=replaced)
    action, status, reason, effects = expected
    assert (decision.action, decision.status, decision.reason) == (action, status, reason)
    assert {name for name in EFFECTS if getattr(decision.effects, name)} == effects


def test_every_result_is_decided() -> None:
    """No outcome falls through: every result gives a decision for both kinds of call."""
    for result in Result:
        for idempotent in (True, False):
            assert decide(result, idempotent=idempotent, attempts=1, token_replaced=False).action in Action


def test_backoff_is_bounded_full_jitter() -> None:
    """The backoff grows with the attempt and scales with the random draw."""
    assert backoff_s(1, 0.0) == 0.0
    assert backoff_s(1, 1.0) == pytest.approx(0.1)
    assert backoff_s(3, 0.5) == pytest.approx(0.2)
