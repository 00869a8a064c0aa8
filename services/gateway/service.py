"""One request's way through the gateway: admit, pace, authenticate, call, classify, answer.

``Gateway.handle`` always returns exactly one terminal ``ApiResponse``; it never raises for anything a
request or a broker can do.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from hubclient.catalog import TrSpec, lookup
from hubclient.errors import UnknownTrId
from hubclient.models import ApiRequest, ApiResponse, Provider, Status, Timing
from services.gateway.dispatcher import Dispatcher, DispatchError
from services.gateway.limiter import Pacer
from services.gateway.metrics import LIMITER_REJECTIONS, QUEUE_WAIT, RETRIES, UPSTREAM_CALLS
from services.gateway.providers.base import Classified, Outcome, ProviderAdapter
from services.gateway.tokens import TokenManager, TokenUnavailable
from services.logs import log_event

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 4  # upstream calls per request, retries included
RETRY_BASE_S = 0.05


@dataclass
class _Attempts:
    count: int = 0
    upstream_s: float = 0.0
    token_replaced: bool = False


class Gateway:
    """Serves requests; owns nothing with a lifecycle (the caller starts dispatcher and Redis)."""

    def __init__(
        self,
        *,
        instance_id: str,
        adapters: dict[Provider, ProviderAdapter],
        pacers: dict[Provider, Pacer],
        dispatcher: Dispatcher,
        tokens: TokenManager,
        call_timeout_s: dict[Provider, float],
        mock: dict[Provider, bool],
    ) -> None:
        self._instance_id = instance_id
        self._adapters = adapters
        self._pacers = pacers
        self._dispatcher = dispatcher
        self._tokens = tokens
        self._call_timeout_s = call_timeout_s
        self._mock = mock

    def answer(
        self,
        request_id: str,
        status: Status,
        *,
        reason: str | None = None,
        created_at_ms: int | None = None,
        received_s: float | None = None,
        attempts: _Attempts | None = None,
        classified: Classified | None = None,
        message: str | None = None,
        queued_s: float = 0.0,
    ) -> ApiResponse:
        """Build a terminal response stamped with this instance and its timing."""
        now_ms = time.time() * 1000
        total_ms = max(0.0, now_ms - created_at_ms) if created_at_ms else 0.0
        att = attempts or _Attempts()
        return ApiResponse(
            request_id=request_id,
            status=status,
            reason=reason,
            http_status=classified.http_status if classified else None,
            provider_code=classified.provider_code if classified else None,
            message=message if message is not None else (classified.message if classified else None),
            data=classified.data if classified else None,
            continuation=classified.continuation if classified else None,
            timing=Timing(
                queued_ms=round(queued_s * 1000, 3),
                upstream_ms=round(att.upstream_s * 1000, 3),
                total_ms=round(total_ms, 3),
            ),
            attempts=att.count,
            gateway=self._instance_id,
        )

    async def handle(self, request: ApiRequest) -> ApiResponse:
        """Serve one validated request and return its terminal response."""
        received = time.monotonic()
        try:
            spec = lookup(request.provider, request.tr_id)
        except UnknownTrId as exc:
            return self.answer(
                request.request_id,
                Status.INVALID,
                reason="unknown_tr_id",
                message=str(exc),
                created_at_ms=request.created_at_ms,
            )
        if self._mock[request.provider] and not spec.mock_supported:
            return self.answer(
                request.request_id,
                Status.INVALID,
                reason="not_supported_on_mock",
                message=f"{spec.tr_id} exists only on the real server",
                created_at_ms=request.created_at_ms,
            )
        if request.remaining_ms() <= 0:
            return self.answer(
                request.request_id,
                Status.EXPIRED,
                reason="deadline_passed",
                created_at_ms=request.created_at_ms,
            )
        return await self._serve(spec, request, received)

    async def _serve(self, spec: TrSpec, request: ApiRequest, received: float) -> ApiResponse:
        provider = request.provider
        pacer = self._pacers[provider]
        attempts = _Attempts()
        queued_s = 0.0
        classified: Classified | None = None
        while True:
            deadline_mono = time.monotonic() + request.remaining_ms() / 1000
            start = pacer.reserve(deadline_mono)
            if start is None:
                LIMITER_REJECTIONS.labels(provider.value, "deadline_unreachable").inc()
                log_event(
                    logger,
                    "ratelimit.rejected",
                    logging.WARNING,
                    provider=provider.value,
                    reason="deadline_unreachable",
                    estimated_wait_ms=round(pacer.wait_s() * 1000),
                    deadline_ms=request.deadline_ms,
                    caller=request.caller,
                    request_id=request.request_id,
                )
                status = Status.REJECTED if attempts.count == 0 else Status.EXPIRED
                return self.answer(
                    request.request_id,
                    status,
                    reason="deadline_unreachable",
                    created_at_ms=request.created_at_ms,
                    attempts=attempts,
                    queued_s=queued_s,
                    classified=classified,
                )
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            if attempts.count == 0:
                queued_s = time.monotonic() - received
                QUEUE_WAIT.labels(request.priority.value).observe(queued_s)
            try:
                token = await self._tokens.get(provider)
            except TokenUnavailable as exc:
                return self.answer(
                    request.request_id,
                    Status.REJECTED,
                    reason="token_unavailable",
                    message=str(exc),
                    created_at_ms=request.created_at_ms,
                    attempts=attempts,
                    queued_s=queued_s,
                )
            remaining_s = request.remaining_ms() / 1000
            if remaining_s <= 0:
                return self.answer(
                    request.request_id,
                    Status.EXPIRED,
                    reason="deadline_passed",
                    created_at_ms=request.created_at_ms,
                    attempts=attempts,
                    queued_s=queued_s,
                )
            upstream = self._adapters[provider].build(spec, request, token)
            attempts.count += 1
            t0 = time.monotonic()
            try:
                answer = await self._dispatcher.send(
                    provider, upstream, min(remaining_s, self._call_timeout_s[provider])
                )
            except DispatchError as exc:
                attempts.upstream_s += time.monotonic() - t0
                UPSTREAM_CALLS.labels(provider.value, spec.tr_id, "no_answer").inc()
                if exc.sent and not spec.idempotent:
                    return self.answer(
                        request.request_id,
                        Status.UNKNOWN_OUTCOME,
                        reason="no_answer",
                        message=str(exc),
                        created_at_ms=request.created_at_ms,
                        attempts=attempts,
                        queued_s=queued_s,
                    )
                if attempts.count >= MAX_ATTEMPTS:
                    return self.answer(
                        request.request_id,
                        Status.UPSTREAM_ERROR,
                        reason="unreachable",
                        message=str(exc),
                        created_at_ms=request.created_at_ms,
                        attempts=attempts,
                        queued_s=queued_s,
                    )
                await self._backoff(provider, "no_answer", attempts.count)
                continue
            attempts.upstream_s += time.monotonic() - t0
            classified = self._adapters[provider].classify(spec, request, answer)
            UPSTREAM_CALLS.labels(provider.value, spec.tr_id, classified.outcome.value).inc()
            outcome = classified.outcome
            if outcome is Outcome.OK:
                return self.answer(
                    request.request_id,
                    Status.OK,
                    classified=classified,
                    attempts=attempts,
                    created_at_ms=request.created_at_ms,
                    queued_s=queued_s,
                )
            if outcome is Outcome.TOKEN_REJECTED and not attempts.token_replaced:
                attempts.token_replaced = True
                await self._tokens.invalidate(provider, token)
                RETRIES.labels(provider.value, "token_rejected").inc()
                continue
            if outcome is Outcome.THROTTLED and attempts.count < MAX_ATTEMPTS:
                pacer.slow_down()
                RETRIES.labels(provider.value, "throttled").inc()
                continue  # a throttled call was not executed, so even orders may go again
            if outcome is Outcome.TRANSIENT and spec.idempotent and attempts.count < MAX_ATTEMPTS:
                await self._backoff(provider, "transient", attempts.count)
                continue
            if outcome is Outcome.UNKNOWN_OUTCOME or (outcome is Outcome.TRANSIENT and not spec.idempotent):
                return self.answer(
                    request.request_id,
                    Status.UNKNOWN_OUTCOME,
                    reason=outcome.value,
                    classified=classified,
                    attempts=attempts,
                    created_at_ms=request.created_at_ms,
                    queued_s=queued_s,
                )
            return self.answer(
                request.request_id,
                Status.UPSTREAM_ERROR,
                reason=outcome.value,
                classified=classified,
                attempts=attempts,
                created_at_ms=request.created_at_ms,
                queued_s=queued_s,
            )

    @staticmethod
    async def _backoff(provider: Provider, reason: str, attempt: int) -> None:
        RETRIES.labels(provider.value, reason).inc()
        await asyncio.sleep(random.uniform(0, RETRY_BASE_S * 2**attempt))  # noqa: S311 - jitter
