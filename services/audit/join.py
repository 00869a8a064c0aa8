"""Requests joined with their answers by correlation id, and the filters an audit applies.

A response names its request in its body (``request_id``); a request is found by its body's id and, for
a body that could not be read (answered ``invalid`` by the gateway under the ``kafka_correlationId``
header's id), by that header. When that header is no request id (a Spring client's binary correlation
id), the gateway answers an unreadable or too large request under an id it derives from the record's
place and echoes the header: such a request, found by no id, is joined with the answers that carry its
``kafka_correlationId`` bytes. A dead letter names its request record by position (``apihub-dlq-source``).
A request without an answer is ``unanswered`` once its deadline has passed within what was read, and
``pending`` while the answer could still come.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hubclient.models import Status
from services.audit.records import DeadLetter, RecordedRequest, RecordedResponse

UNANSWERED = "unanswered"
PENDING = "pending"
#: Every outcome, in the order the status mix lists them.
OUTCOMES: tuple[str, ...] = (*(s.value for s in Status), UNANSWERED, PENDING)


@dataclass(frozen=True)
class Exchange:
    """One recorded request, its first answer (if any) and its dead letter (if any)."""

    request: RecordedRequest
    response: RecordedResponse | None
    dead_letter: DeadLetter | None
    outcome: str  # a Status value, "unanswered" or "pending"
    extra_answers: int = 0  # answers after the first (at-least-once publishing may repeat one)

    @property
    def latency_ms(self) -> int | None:
        """From the request's record to its answer's, in the log's time (ms); None when unanswered."""
        if self.response is None:
            return None
        return max(0, self.response.at_ms - self.request.at_ms)

    @property
    def upstream_ms(self) -> float | None:
        """The gateway's time in upstream calls (``timing.upstream_ms``); None without a readable answer."""
        if self.response is None or self.response.response is None:
            return None
        return self.response.response.timing.upstream_ms


@dataclass(frozen=True)
class JoinResult:
    """The exchanges in request order, and the answers that matched no request read."""

    exchanges: list[Exchange]
    unmatched_answers: int  # answers to requests outside the range (or on a topic not read)


def missing_outcome(request: RecordedRequest, answers_read_until_ms: int) -> str:
    """``unanswered`` when the request's deadline passed before ``answers_read_until_ms`` (epoch ms), the end
    of the answers read; ``pending`` while its answer could still come. A request without a readable
    deadline counts as unanswered."""
    if request.request is None:
        return UNANSWERED
    return PENDING if request.request.deadline_ms >= answers_read_until_ms else UNANSWERED


def join(
    requests: Iterable[RecordedRequest],
    responses: Iterable[RecordedResponse],
    dead_letters: Iterable[DeadLetter] = (),
    *,
    answers_read_until_ms: int,
) -> JoinResult:
    """Join by correlation id: each request with its earliest answer and its dead letter, in log-time
    order (ties by position)."""
    ordered = sorted(requests, key=lambda r: (r.at_ms, r.raw.topic, r.raw.partition, r.raw.offset))
    # An answer under an id a request read carries is that request's, whatever header it echoes.
    claimed = {key for r in ordered for key in (r.request_id, r.correlation_id) if key is not None}
    by_id: dict[str, list[RecordedResponse]] = {}
    by_correlation: dict[bytes, list[RecordedResponse]] = {}
    for response in sorted(responses, key=lambda r: (r.at_ms, r.raw.partition, r.raw.offset)):
        if response.request_id is not None:
            by_id.setdefault(response.request_id, []).append(response)
        if response.correlation_bytes is not None and response.request_id not in claimed:
            by_correlation.setdefault(response.correlation_bytes, []).append(response)
    letters = {d.source: d for d in dead_letters if d.source is not None}
    joined: set[str] = set()  # positions of the answers joined with a request
    exchanges = []
    for request in ordered:
        answers = _answers(request, by_id, by_correlation)
        joined.update(answer.raw.position for answer in answers)
        first = answers[0] if answers else None
        if first is None:
            outcome = missing_outcome(request, answers_read_until_ms)
        else:
            outcome = first.status if first.response is not None else Status.INVALID.value
        letter = letters.get(request.raw.position)
        exchanges.append(Exchange(request, first, letter, outcome, max(0, len(answers) - 1)))
    unmatched = sum(1 for answers in by_id.values() for a in answers if a.raw.position not in joined)
    return JoinResult(exchanges, unmatched)


def _answers(
    request: RecordedRequest,
    by_id: dict[str, list[RecordedResponse]],
    by_correlation: dict[bytes, list[RecordedResponse]],
) -> list[RecordedResponse]:
    """The answers to ``request``, earliest first: those under its body's id or its header's id, else
    (an answer under an id the gateway derived) those echoing its ``kafka_correlationId`` bytes."""
    for key in (request.request_id, request.correlation_id):
        if key is not None and key in by_id:
            return by_id[key]
    correlation = request.correlation_bytes
    return by_correlation.get(correlation, []) if correlation is not None else []


def _any_match(value: str, patterns: Sequence[str]) -> bool:
    folded = value.casefold()
    return any(fnmatch.fnmatchcase(folded, p.casefold()) for p in patterns)


@dataclass(frozen=True)
class Filters:
    """What an audit keeps; an empty field keeps everything. ``tr_ids`` and ``callers`` take shell
    patterns (``FHKST03*``, ``replay/*``), compared case-insensitively."""

    providers: tuple[str, ...] = ()
    tr_ids: tuple[str, ...] = ()
    callers: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.outcomes) - set(OUTCOMES))
        if unknown:
            raise ValueError(f"unknown status {unknown}; use {', '.join(OUTCOMES)}")

    def keeps(self, exchange: Exchange) -> bool:
        """True when ``exchange`` passes every filter."""
        request = exchange.request
        return (
            (not self.providers or request.provider.upper() in {p.upper() for p in self.providers})
            and (not self.tr_ids or _any_match(request.tr_id, self.tr_ids))
            and (not self.callers or _any_match(request.caller, self.callers))
            and (not self.outcomes or exchange.outcome in self.outcomes)
        )

    def apply(self, exchanges: Iterable[Exchange]) -> list[Exchange]:
        """The exchanges this filter keeps, in their order."""
        return [e for e in exchanges if self.keeps(e)]
