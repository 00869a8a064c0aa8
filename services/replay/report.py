"""What a replay shows: one line per recorded request (sent or skipped and why), the differences under
each request that differs, and a count; or one JSON object per recorded request. Values are redacted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.audit.output import WIDTH, wrap_items
from services.audit.redact import redact, safe_params
from services.audit.timerange import format_kst, iso_kst
from services.catalog_cli import fit
from services.replay.compare import MAX_DIFFERENCES, MISSING, NOT_RECORDED, Difference
from services.replay.plan import Decision
from services.replay.sender import Sent

SAME, DIFFERENT, NO_ANSWER, NOT_SENT, SKIPPED, WOULD_SEND = (
    "same",
    "different",
    "no answer",
    "not sent",
    "skipped",
    "would send",
)
_INDENT = " " * 11


@dataclass(frozen=True)
class Outcome:
    """A recorded request's replay: its decision, what came of sending it, and the differences."""

    decision: Decision
    sent: Sent | None = None
    differences: list[Difference] = field(default_factory=list)
    dry_run: bool = False

    @property
    def verdict(self) -> str:
        """same, different, no answer, not sent (time limit), skipped or would send."""
        if not self.decision.send:
            return SKIPPED
        if self.dry_run:
            return WOULD_SEND
        if self.sent is None:
            return NOT_SENT
        if self.sent.response is None:
            return NO_ANSWER
        return DIFFERENT if self.differences else SAME


def _value(value: Any) -> str:
    if value in (MISSING, NOT_RECORDED):
        return str(value)
    return orjson.dumps(redact(value)).decode()


def difference_line(difference: Difference) -> str:
    """``path: recorded → replayed``, cut to the table's width."""
    text = f"{_INDENT}{difference.path}: {_value(difference.recorded)} → {_value(difference.replayed)}"
    return fit(text, WIDTH - 1).rstrip()


def outcome_lines(outcome: Outcome) -> list[str]:
    """The line of one recorded request and the lines under it."""
    exchange = outcome.decision.exchange
    request = exchange.request
    recorded_status = exchange.outcome
    if outcome.verdict in (SAME, DIFFERENT) and outcome.sent is not None and outcome.sent.response:
        replayed = outcome.sent.response.status.value
        status = recorded_status if replayed == recorded_status else f"{recorded_status} → {replayed}"
    elif outcome.verdict == SKIPPED:
        status = str(outcome.decision.reason)
    else:
        status = recorded_status
    cells = [
        fit(outcome.verdict, 10),
        format_kst(request.at_ms)[11:],
        fit(request.provider, 6),
        fit(request.tr_id, 13),
    ]
    head = " ".join(cells)
    caller_w = max(8, WIDTH - 1 - len(head) - 2 - len(status))
    lines = [f"{head} {fit(request.caller, caller_w)} {status}"]
    if outcome.verdict == SKIPPED:
        hint = "  (--include-order to send it)" if outcome.decision.reason == "non_idempotent" else ""
        lines.append(f"{_INDENT}{request.request_id or request.raw.position}{hint}")
    elif outcome.verdict == WOULD_SEND and request.request is not None:
        params = safe_params(request.request.params, request.tr_id, request.kind)
        lines.append(fit(f"{_INDENT}{orjson.dumps(params).decode()}", WIDTH - 1).rstrip())
    elif outcome.sent is not None and outcome.sent.problem is not None:
        lines.append(f"{_INDENT}{outcome.sent.problem}")
    shown = outcome.differences[:MAX_DIFFERENCES]
    lines += [difference_line(d) for d in shown]
    if len(outcome.differences) > len(shown):
        lines.append(f"{_INDENT}... {len(outcome.differences) - len(shown)} more differences")
    return [line.rstrip() for line in lines]


def count_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """The counts: sent and skipped by reason, then what the sent ones came to."""
    skipped = Counter(str(o.decision.reason) for o in outcomes if not o.decision.send)
    verdicts = Counter(o.verdict for o in outcomes if o.decision.send)
    sending = sum(verdicts.values())
    skip_text = ", ".join(f"{reason} {n:,}" for reason, n in sorted(skipped.items()))
    lines = [
        f"recorded {len(outcomes):,}: send {sending:,}, skip {sum(skipped.values()):,}"
        + (f" ({skip_text})" if skipped else "")
    ]
    order = (WOULD_SEND, SAME, DIFFERENT, NO_ANSWER, NOT_SENT)
    results = [f"{verdicts[v]:,} {v}" for v in order if verdicts[v]]
    lines += wrap_items("result  ", results or ["nothing sent"])
    return lines


def outcome_row(outcome: Outcome) -> dict[str, Any]:
    """One recorded request's replay as a JSON object (redacted)."""
    exchange = outcome.decision.exchange
    request = exchange.request
    sent = outcome.sent
    row = {
        "request_id": request.request_id,
        "requested_at": iso_kst(request.at_ms),
        "provider": request.provider,
        "tr_id": request.tr_id,
        "caller": request.caller,
        "decision": "send" if outcome.decision.send else "skip",
        "reason": str(outcome.decision.reason),
        "verdict": outcome.verdict,
        "recorded_status": exchange.outcome,
        "replay_request_id": sent.request.request_id if sent is not None else None,
        "replayed_status": sent.response.status.value if sent is not None and sent.response else None,
        "problem": sent.problem if sent is not None else None,
        "differences": [
            {"path": d.path, "recorded": d.recorded, "replayed": d.replayed} for d in outcome.differences
        ],
        "params": safe_params(
            request.request.params if request.request else None, request.tr_id, request.kind
        ),
    }
    clean: dict[str, Any] = redact(row)
    return clean
