"""Every way the gateway ends a request without a broker answer, as one tree.

GatewayError                     root; ``status`` and ``reason`` go straight into the response
├── Invalid                      the request cannot be served as asked (``invalid``)
├── Expired                      its deadline passed, or is too close to answer in time (``expired``)
├── Refused                      refused for now (``rejected``); ``retriable`` when load or time clears it
│   ├── BacklogFull              the domain's queue is full
│   ├── NotPermitted             the caller has no grant for this call (``not_permitted``, ``permissions``)
│   └── TokenUnavailable         no valid access token can be had now (``retry_after_s``)
│       └── TokenIssueError      the token endpoint refused (``refused_by_rate``, ``code``)
└── DispatchError                the broker gave no HTTP answer (``upstream_error``); ``sent`` says
    ├── UpstreamUnreachable      whether it may have reached the broker: the connection failed first
    └── UpstreamNoAnswer         a timeout or a dropped connection after sending (``timed_out``)

Lower-level errors are translated at one seam each (``http1``'s ``Http1Error`` tree in ``dispatcher``,
Redis where it is called) and kept as the cause. ``Gateway.answer`` turns any of these into the terminal
response. One error comes after the answer is made: ``publisher.AnswerTooLarge`` (Kafka refused the answer
for its size), which ``app`` answers again without ``data`` (``answer_too_large``: ``upstream_error``, or
``unknown_outcome`` for an order that reached the broker).
"""

from __future__ import annotations

from hubclient.models import Status


class GatewayError(Exception):
    """Root: a request ends with ``status`` and ``reason``."""

    status: Status = Status.REJECTED
    retriable = False

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message


class Invalid(GatewayError):
    """Unknown tr_id, a call the environment does not offer, an unknown credential, ``params_too_large``
    (more keys or a longer value than the gateway's limits; a record over the byte limit is ``too_large``)."""

    status = Status.INVALID


class Expired(GatewayError):
    """``deadline_passed``, or ``deadline_too_close`` for an answer that could no longer arrive in time."""

    status = Status.EXPIRED


class Refused(GatewayError):
    """``deadline_unreachable``, ``circuit_open``, ``idempotency_unavailable``, ``internal_error``, ..."""

    status = Status.REJECTED

    def __init__(self, reason: str, message: str | None = None, *, retriable: bool = False) -> None:
        super().__init__(reason, message)
        self.retriable = retriable


class BacklogFull(Refused):
    """The domain's scheduler holds its maximum number of requests (in total or for the class)."""

    def __init__(self, message: str) -> None:
        super().__init__("backlog_full", message, retriable=True)


class NotPermitted(Refused):
    """The permissions file gives the caller no grant for this provider and tr_id; never retriable."""

    def __init__(self, message: str) -> None:
        super().__init__("not_permitted", message)


class TokenUnavailable(Refused):
    """No valid token now; ``retry_after_s`` says when trying again makes sense."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__("token_unavailable", message, retriable=True)
        self.retry_after_s = retry_after_s


class TokenIssueError(TokenUnavailable):
    """The token endpoint refused; ``refused_by_rate`` when it was the one-per-minute rule."""

    def __init__(self, message: str, *, refused_by_rate: bool = False, code: str | None = None) -> None:
        super().__init__(message, retry_after_s=61.0)
        self.refused_by_rate = refused_by_rate
        self.code = code


class DispatchError(GatewayError):
    """The broker gave no HTTP answer."""

    status = Status.UPSTREAM_ERROR
    retriable = True
    sent = False


class UpstreamUnreachable(DispatchError):
    """The request never left: safe to retry, even for orders."""

    def __init__(self, message: str) -> None:
        super().__init__("unreachable", message)


class UpstreamNoAnswer(DispatchError):
    """The request may have been processed; only idempotent calls may be retried."""

    sent = True

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__("no_answer", message)
        self.timed_out = timed_out
