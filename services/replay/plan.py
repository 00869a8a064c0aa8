"""Which recorded requests a replay sends, and the request each becomes: pure rules, table-tested.

Skipped, with the reason shown: a body that cannot be read (``unreadable``), a lent WebSocket credential
(``websocket_credentials``: a secret, nothing to compare), a request that was itself a replay
(``already_a_replay``), a tr_id the catalog no longer has (``unknown_tr_id``), a non-idempotent call
(``non_idempotent``: an order) unless its request id is named, and whatever is past the request limit
(``over_limit``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from hubclient.catalog import lookup
from hubclient.errors import UnknownTrId
from hubclient.ids import new_request_id
from hubclient.models import ApiRequest, Priority, RequestKind
from services.audit.join import Exchange

REPLAY_CALLER_PREFIX = "replay/"
_CALLER_MAX = 64  # ApiRequest.caller's pattern


class Skip(StrEnum):
    """Why a recorded request is not sent."""

    UNREADABLE = "unreadable"
    CREDENTIALS = "websocket_credentials"
    A_REPLAY = "already_a_replay"
    UNKNOWN_TR_ID = "unknown_tr_id"
    NON_IDEMPOTENT = "non_idempotent"
    OVER_LIMIT = "over_limit"


class Send(StrEnum):
    """Why a recorded request is sent."""

    IDEMPOTENT = "idempotent"
    NAMED = "named"  # named with --include-order: the way an order (or a replay) is sent again


@dataclass(frozen=True)
class Decision:
    """One recorded request's fate: sent (``Send``) or skipped (``Skip``), and why."""

    exchange: Exchange
    reason: Send | Skip

    @property
    def send(self) -> bool:
        """True when the request is sent again."""
        return isinstance(self.reason, Send)


def decide(exchange: Exchange, named: Collection[str]) -> Decision:
    """The rule for one recorded request; ``named`` are the request ids given with ``--include-order``."""
    recorded = exchange.request.request
    if recorded is None:
        return Decision(exchange, Skip.UNREADABLE)
    if recorded.kind is RequestKind.WEBSOCKET_CREDENTIALS:
        return Decision(exchange, Skip.CREDENTIALS)
    try:
        spec = lookup(recorded.provider, recorded.tr_id)
    except UnknownTrId:
        return Decision(exchange, Skip.UNKNOWN_TR_ID)
    if recorded.request_id in named:
        return Decision(exchange, Send.NAMED)
    if recorded.caller.startswith(REPLAY_CALLER_PREFIX):
        return Decision(exchange, Skip.A_REPLAY)
    return Decision(exchange, Send.IDEMPOTENT if spec.idempotent else Skip.NON_IDEMPOTENT)


@dataclass(frozen=True)
class Plan:
    """Every recorded request's decision, in log order, and the named ids found nowhere in the range."""

    decisions: list[Decision]
    unknown_names: list[str]

    @property
    def sends(self) -> list[Decision]:
        """The decisions to send."""
        return [d for d in self.decisions if d.send]


def make_plan(exchanges: Sequence[Exchange], named: Collection[str], *, max_requests: int) -> Plan:
    """Decide every exchange; at most ``max_requests`` are sent, the rest are ``over_limit``."""
    decisions = []
    sending = 0
    for exchange in exchanges:
        decision = decide(exchange, named)
        if decision.send:
            sending += 1
            if sending > max_requests:
                decision = Decision(exchange, Skip.OVER_LIMIT)
        decisions.append(decision)
    present = {e.request.request_id for e in exchanges}
    return Plan(decisions, sorted(set(named) - present))


def replay_caller(caller: str) -> str:
    """The caller a replayed request carries: ``replay/<original>``, cut to the 64 characters allowed."""
    return f"{REPLAY_CALLER_PREFIX}{caller}"[:_CALLER_MAX]


def replay_request(
    recorded: ApiRequest,
    *,
    now_ms: int,
    timeout_s: float,
    reply_topic: str,
    reply_partition: int,
    keep_credential: bool,
    new_id: Callable[[int], str] = new_request_id,
) -> ApiRequest:
    """``recorded`` as sent again: a new id, a ``replay/`` caller, ``bulk``, a deadline ``timeout_s`` from
    ``now_ms``, this sender's reply address, no idempotency key (a replay is a new call), the recorded
    parameters and continuation, and the credential only when ``keep_credential`` (a sandbox has one)."""
    return ApiRequest(
        request_id=new_id(now_ms),
        provider=recorded.provider,
        tr_id=recorded.tr_id,
        params=recorded.params,
        caller=replay_caller(recorded.caller),
        priority=Priority.BULK,
        deadline_ms=now_ms + max(1, int(timeout_s * 1000)),
        created_at_ms=now_ms,
        reply_topic=reply_topic,
        reply_partition=reply_partition,
        idempotency_key=None,
        continuation=recorded.continuation,
        credential=recorded.credential if keep_credential else None,
    )
