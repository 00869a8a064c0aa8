"""``HubClient``: the only way a worker calls a broker.

async with HubClient.connect(bootstrap, caller="history-collector") as hub:
    price = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
    response = await hub.execute("KIS", "FHKST01010100", price, timeout=5)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from prometheus_client import Counter
from pydantic import ValidationError

from hubclient.catalog import lookup, refusal
from hubclient.errors import (
    HubBackpressure,
    HubNotStarted,
    HubTimeout,
    InvalidRequest,
    MalformedPayload,
    RequestExpired,
    RequestRejected,
    UnknownOutcome,
    UpstreamError,
)
from hubclient.ids import new_request_id
from hubclient.models import (
    WEBSOCKET_CREDENTIALS_TR_ID,
    ApiRequest,
    ApiResponse,
    Priority,
    Provider,
    RequestKind,
    Status,
    WebSocketCredentials,
)
from hubclient.transport import KafkaTransport, Transport

logger = logging.getLogger(__name__)

UNMATCHED_REPLIES = Counter(
    "apihub_client_unmatched_replies",
    "Replies with no waiting request: late (after the caller's timeout), foreign or unreadable",
    ["kind"],
)

_RECENT_TIMEOUTS = 4096  # request ids remembered to tell a late reply from a foreign one


def _refused_fields(exc: ValidationError) -> str:
    """What the request model refused, one ``field: why`` per field on one line, without the values given
    (pydantic's own text spans lines, quotes each value and links its documentation)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'request'}: "
        f"{str(error['msg']).removeprefix('Value error, ')}"
        for error in exc.errors(include_input=False, include_url=False, include_context=False)
    )


class HubClient:
    """Sends requests through the hub and waits for their one terminal response."""

    def __init__(
        self,
        transport: Transport,
        *,
        caller: str,
        default_timeout_s: float = 10.0,
        max_pending: int = 1000,
    ) -> None:
        self._transport = transport
        self._caller = caller
        self._default_timeout_s = default_timeout_s
        self._max_pending = max_pending
        self._pending: dict[str, asyncio.Future[ApiResponse]] = {}
        self._timed_out: OrderedDict[str, None] = OrderedDict()
        self._started = False
        self.late_replies = 0
        self.foreign_replies = 0

    @classmethod
    def connect(
        cls,
        bootstrap_servers: str,
        *,
        caller: str,
        request_topic: str = "api.requests",
        reply_topic: str = "api.responses",
        reply_partition: int | None = None,
        default_timeout_s: float = 10.0,
        max_pending: int = 1000,
        client_options: Mapping[str, Any] | None = None,
    ) -> HubClient:
        """A client over Kafka; start it with ``async with`` or ``await start()``.

        ``client_options`` go to aiokafka as they are: the connection's security (``security_protocol``,
        ``sasl_mechanism``, ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_context``).
        """
        transport = KafkaTransport(
            bootstrap_servers,
            request_topic=request_topic,
            reply_topic=reply_topic,
            reply_partition=reply_partition,
            client_id=caller,
            client_options=client_options,
        )
        return cls(transport, caller=caller, default_timeout_s=default_timeout_s, max_pending=max_pending)

    async def start(self) -> None:
        """Connect the transport; requests may be sent once this returns."""
        await self._transport.start(self._on_reply)
        self._started = True

    async def stop(self) -> None:
        """Fail every pending request and close the transport."""
        self._started = False
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HubNotStarted("the client was stopped"))
        self._pending.clear()
        await self._transport.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def pending(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    async def execute(
        self,
        provider: Provider | str,
        tr_id: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        priority: Priority | str = Priority.NORMAL,
        idempotency_key: str | None = None,
        continuation: dict[str, str] | None = None,
        credential: str | None = None,
    ) -> ApiResponse:
        """Call a broker through the hub; returns the ``ok`` response or raises a ``HubError``.

        ``timeout`` is in seconds (default: the client's ``default_timeout_s``) and becomes the
        request's deadline, so the gateway does not spend the broker's budget on an abandoned call; it
        bounds the whole call, publishing the request included (``HubTimeout`` when it runs out).
        ``idempotency_key`` names an order across attempts: retry an order only under the first attempt's
        key, and the hub sends it at most once (docs/CONTRACT.md, "Retrying safely").
        """
        response = await self.submit(
            provider,
            tr_id,
            params,
            timeout=timeout,
            priority=priority,
            idempotency_key=idempotency_key,
            continuation=continuation,
            credential=credential,
        )
        raise_for_status(response)
        return response

    async def submit(
        self,
        provider: Provider | str,
        tr_id: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        priority: Priority | str = Priority.NORMAL,
        idempotency_key: str | None = None,
        continuation: dict[str, str] | None = None,
        credential: str | None = None,
    ) -> ApiResponse:
        """Like ``execute`` but returns any terminal response instead of raising on non-ok statuses.

        Raises ``UnknownTrId`` for an id the catalog lacks and ``InvalidRequest`` for a planned endpoint or a
        call without a parameter the broker requires (naming it), before anything is sent.
        """
        self._check_ready()
        spec = lookup(provider, tr_id)
        problem = refusal(spec, params, continuation)
        if problem is not None:
            raise InvalidRequest(f"invalid: {problem.reason} {problem.message}")
        timeout_s = self._timeout_s(timeout)
        now_ms = int(time.time() * 1000)
        try:
            request = ApiRequest(
                request_id=new_request_id(now_ms),
                provider=spec.provider,
                tr_id=spec.key,
                params=params or {},
                caller=self._caller,
                priority=Priority(priority),
                deadline_ms=now_ms + int(timeout_s * 1000),
                created_at_ms=now_ms,
                reply_topic=self._transport.reply_topic,
                reply_partition=self._transport.reply_partition,
                idempotency_key=idempotency_key,
                continuation=continuation,
                credential=credential,
            )
        except ValidationError as exc:
            raise InvalidRequest(f"invalid request: {_refused_fields(exc)}") from exc
        except ValueError as exc:
            raise InvalidRequest(f"invalid request: {exc}") from exc
        return await self._round_trip(request, timeout_s)

    async def websocket_credentials(
        self, provider: Provider | str, *, timeout: float | None = None
    ) -> WebSocketCredentials:
        """The credential a WebSocket collector of ``provider`` needs, lent by the gateway's token store
        (KIS: the approval key; Kiwoom: the access token) with its expiry; ask again before it expires.

        The one token authority: a collector never issues its own and so never invalidates the gateway's.
        ``timeout`` in seconds as for ``execute``; raises a ``HubError`` (``RequestRejected`` with reason
        ``token_unavailable`` while none can be had). The secret is in the answer only: do not log it.
        """
        self._check_ready()
        timeout_s = self._timeout_s(timeout)
        now_ms = int(time.time() * 1000)
        request = ApiRequest(
            request_id=new_request_id(now_ms),
            provider=Provider(provider),
            tr_id=WEBSOCKET_CREDENTIALS_TR_ID,
            caller=self._caller,
            priority=Priority.INTERACTIVE,
            deadline_ms=now_ms + int(timeout_s * 1000),
            created_at_ms=now_ms,
            reply_topic=self._transport.reply_topic,
            reply_partition=self._transport.reply_partition,
            kind=RequestKind.WEBSOCKET_CREDENTIALS,
        )
        response = await self._round_trip(request, timeout_s)
        raise_for_status(response)
        try:
            return WebSocketCredentials.model_validate(response.data)
        except ValidationError as exc:
            raise MalformedPayload(WEBSOCKET_CREDENTIALS_TR_ID, "data", f"is no credential: {exc}") from exc

    def _check_ready(self) -> None:
        if not self._started:
            raise HubNotStarted("start the HubClient (async with / await start()) before sending")
        if len(self._pending) >= self._max_pending:
            raise HubBackpressure(f"{len(self._pending)} requests already pending (max {self._max_pending})")

    def _timeout_s(self, timeout: float | None) -> float:
        timeout_s = self._default_timeout_s if timeout is None else timeout
        if timeout_s <= 0:
            raise InvalidRequest("timeout must be positive")
        return timeout_s

    async def _round_trip(self, request: ApiRequest, timeout_s: float) -> ApiResponse:
        """Send ``request`` and wait for its one terminal response, all within ``timeout_s`` seconds.

        The send counts in the timeout (a slow acknowledgement from Kafka must not stretch the wait past
        the request's deadline); a request whose send was cut short may still reach the hub, and its
        answer then counts as late.
        """
        future: asyncio.Future[ApiResponse] = asyncio.get_running_loop().create_future()
        self._pending[request.request_id] = future
        sent = False
        try:
            async with asyncio.timeout(timeout_s):
                await self._transport.send(request)
                sent = True
                return await future
        except TimeoutError as exc:
            if future.done() and not future.cancelled():  # answered before the send was acknowledged
                return future.result()
            self._remember_timeout(request.request_id)
            what = "no response to" if sent else "could not publish"
            raise HubTimeout(f"{what} {request.tr_id} {request.request_id} within {timeout_s:.3f}s") from exc
        finally:
            self._pending.pop(request.request_id, None)

    def _remember_timeout(self, request_id: str) -> None:
        self._timed_out[request_id] = None
        while len(self._timed_out) > _RECENT_TIMEOUTS:
            self._timed_out.popitem(last=False)

    def _on_reply(self, value: bytes) -> None:
        try:
            response = ApiResponse.from_json(value)
        except (ValidationError, ValueError):
            UNMATCHED_REPLIES.labels("unreadable").inc()
            logger.debug("hubclient.unreadable_reply bytes=%d", len(value))
            return
        future = self._pending.get(response.request_id)
        if future is not None and not future.done():
            future.set_result(response)
        elif response.request_id in self._timed_out:
            self.late_replies += 1
            UNMATCHED_REPLIES.labels("late").inc()
        else:
            self.foreign_replies += 1
            UNMATCHED_REPLIES.labels("foreign").inc()


def raise_for_status(response: ApiResponse) -> None:
    """Raise the ``HubError`` that matches a non-ok response; return quietly for ``ok``."""
    status, reason, message = response.status, response.reason or "", response.message or ""
    if status is Status.OK:
        return
    if status is Status.REJECTED:
        raise RequestRejected(reason, message, response=response)
    if status is Status.EXPIRED:
        raise RequestExpired(f"expired: {reason}", response=response)
    if status is Status.INVALID:
        raise InvalidRequest(f"invalid: {reason} {message}".strip(), response=response)
    if status is Status.UNKNOWN_OUTCOME:
        raise UnknownOutcome(f"unknown outcome: {reason} {message}".strip(), response=response)
    raise UpstreamError(
        f"{reason} {response.provider_code or ''} {message}".strip(),
        provider_code=response.provider_code,
        http_status=response.http_status,
        reason=reason,
        response=response,
    )
