"""Errors raised by the hub client.

HubError                      root; ``retriable`` says whether the same call may be tried again
├── HubNotStarted             the client was used before ``start()`` / ``async with``
├── HubTimeout                no terminal response before the caller's timeout (retriable)
├── HubBackpressure           too many requests pending in this client (retriable)
├── HubUnavailable            Kafka did not take the request; retriable when its error passes
├── InvalidRequest            the request cannot be sent or was answered ``invalid``
│   └── UnknownTrId           the tr_id is not in the catalog
├── RequestRejected(reason)   the gateway refused it (``rejected``); retriable when it clears by itself
├── RequestExpired            the deadline passed before the call could be made (retriable)
├── UpstreamError(code)       the broker answered with an error; retriable when throttled, transient,
│                             unreachable, or its retry was refused for a retriable rejection
├── UnknownOutcome            a non-idempotent call may or may not have happened; never resent
├── PagingLimit(limit)        ``paginate`` hit its page count or total time with pages still left
└── MalformedPayload(field)   a broker row cannot be normalized (also a ``ValueError``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubclient.models import ApiResponse

#: Rejection reasons that clear up by themselves: load falls, the broker recovers, its next token may be
#: issued (about a minute), Redis answers again (an order refused then was never sent).
RETRIABLE_REJECTIONS = frozenset(
    {"backlog_full", "deadline_unreachable", "circuit_open", "token_unavailable", "idempotency_unavailable"}
)

#: ``upstream_error`` reasons that may clear by themselves: the broker throttled, failed (5xx, an unreadable
#: answer) or could not be reached (no connection, or no answer) through every attempt the gateway made. An
#: unreachable broker is as passing as a failing one (the circuit it opens is ``circuit_open``, retriable),
#: and the call is safe to send again: an order that may have reached the broker is ``unknown_outcome``.
RETRIABLE_UPSTREAM = frozenset({"throttled", "transient", "unreachable"})
#: How an ``upstream_error``'s ``message`` starts when the gateway's retry of the call was refused.
RETRY_REFUSED = "retry refused: "


class HubError(Exception):
    """Root of every error this library raises."""

    retriable: bool = False

    def __init__(self, message: str, *, response: ApiResponse | None = None) -> None:
        super().__init__(message)
        self.response = response


class HubNotStarted(HubError):
    """The client was used before it was started or after it was stopped."""


class HubTimeout(HubError):
    """No terminal response arrived before the caller's timeout."""

    retriable = True


class HubBackpressure(HubError):
    """The client already has its maximum number of requests pending."""

    retriable = True


class HubUnavailable(HubError):
    """Kafka did not take the request (its error is the cause); ``retriable`` when that error passes by
    itself (a leader moving, a broker restarting, a timeout) rather than one that stays (no permission,
    a record too large)."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class InvalidRequest(HubError):
    """The request is malformed; sending it again will not help."""


class UnknownTrId(InvalidRequest):
    """The tr_id is not in the catalog for that provider."""


class RequestRejected(HubError):
    """The gateway refused the request; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str = "", *, response: ApiResponse | None = None) -> None:
        super().__init__(f"rejected: {reason} {message}".strip(), response=response)
        self.reason = reason
        self.retriable = reason in RETRIABLE_REJECTIONS


class RequestExpired(HubError):
    """The request's deadline passed before the gateway could call the broker (so a new one is safe)."""

    retriable = True


class UpstreamError(HubError):
    """The broker answered with an error code."""

    def __init__(
        self,
        message: str,
        *,
        provider_code: str | None,
        http_status: int | None,
        reason: str | None = None,
        response: ApiResponse | None = None,
    ) -> None:
        super().__init__(message, response=response)
        self.provider_code = provider_code
        self.http_status = http_status
        self.reason = reason
        self.retriable = reason in RETRIABLE_UPSTREAM or _retry_refused(response) in RETRIABLE_REJECTIONS


def _retry_refused(response: ApiResponse | None) -> str | None:
    """The rejection that stopped the gateway's retry (a ``message`` ``retry refused: <reason> ...``): a
    token rejected and none to be had yet (``token_unavailable``) clears by itself as that rejection does."""
    message = (response.message or "") if response is not None else ""
    if not message.startswith(RETRY_REFUSED):
        return None
    return message[len(RETRY_REFUSED) :].split(" ", 1)[0]


class UnknownOutcome(HubError):
    """A non-idempotent call may have reached the broker; reconcile instead of resending."""


class PagingLimit(HubError):
    """``paginate`` stopped at a bound while the broker still offered a next page.

    ``limit`` is ``"max_pages"`` or ``"max_s"``; ``pages`` were delivered in ``elapsed_s`` seconds;
    ``continuation`` (the last page's, or None when no page arrived) resumes where it stopped.
    """

    def __init__(
        self,
        limit: str,
        *,
        pages: int,
        elapsed_s: float,
        continuation: dict[str, str] | None,
        response: ApiResponse | None = None,
    ) -> None:
        super().__init__(
            f"paging stopped by {limit} after {pages} page(s) in {elapsed_s:.3f}s with more pages left",
            response=response,
        )
        self.limit = limit
        self.pages = pages
        self.elapsed_s = elapsed_s
        self.continuation = continuation


class MalformedPayload(HubError, ValueError):
    """A row of a broker body cannot be read; ``field`` names the culprit, ``row`` its index (or None)."""

    def __init__(self, tr_id: str, field: str, problem: str, *, row: int | None = None) -> None:
        where = f"{tr_id} row {row}" if row is not None else tr_id
        super().__init__(f"{where}: field {field!r} {problem}")
        self.tr_id = tr_id
        self.field = field
        self.row = row
