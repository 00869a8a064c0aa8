"""One upstream attempt: mark an order in flight, send in the slot, classify, and act on the decision.

The attempt runs in its own task once the pacing loop gave its request a slot. Nothing here decides
policy: ``policy.decide`` says whether to answer, requeue, replace the token or slow down, and this
module performs it. Every outcome ends in ``Flight.finish`` or a requeue, never in an exception.
"""

from __future__ import annotations

import logging
import random

from redis.exceptions import RedisError

from hubclient.models import Provider, Status
from services.gateway.classes import PacedSlot
from services.gateway.clock import Clock
from services.gateway.dispatcher import Dispatcher
from services.gateway.errors import DispatchError, Expired, GatewayError, Refused, UpstreamNoAnswer
from services.gateway.flights import Flight, Stage
from services.gateway.idempotency import Records, fingerprint, record_name, record_ttl_ms
from services.gateway.metrics import RETRIES, UPSTREAM_CALLS, UPSTREAM_INFLIGHT, child
from services.gateway.pacing import DomainPacer
from services.gateway.policy import Action, Decision, Result, backoff_s, decide
from services.gateway.providers.base import ProviderAdapter, UpstreamAnswer
from services.gateway.responses import Responder
from services.gateway.tokens import TokenManager
from services.logs import log_event

logger = logging.getLogger(__name__)


class Caller:
    """Makes the upstream attempts of every domain."""

    def __init__(
        self,
        *,
        adapters: dict[str, ProviderAdapter],  # by limit domain: each credential builds its own calls
        dispatcher: Dispatcher,
        tokens: TokenManager,
        idempotency: Records | None,
        responder: Responder,
        clock: Clock,
        call_timeout_s: dict[Provider, float],
    ) -> None:
        self._adapters = adapters
        self._dispatcher = dispatcher
        self._tokens = tokens
        self._idempotency = idempotency
        self._responder = responder
        self._clock = clock
        self._call_timeout_s = call_timeout_s

    async def attempt(self, pacer: DomainPacer, flight: Flight, slot: PacedSlot, token: str) -> None:
        """Make one attempt for ``flight`` in ``slot``; ends in an answer or a requeue."""
        calls = flight.attempts
        try:
            await self._attempt(pacer, flight, slot, token)
        except GatewayError as exc:
            flight.finish(self._responder.error(flight.request, exc, flight))
        except Exception as exc:  # a bug must still end in exactly one answer
            logger.exception(
                "gateway.internal_error", extra={"fields": {"request_id": flight.request.request_id}}
            )
            flight.finish(
                self._responder.error(flight.request, Refused("internal_error", type(exc).__name__), flight)
            )
        finally:
            if flight.attempts == calls:  # nothing was sent: a half-open breaker's probe is still to go
                pacer.breaker.unused()

    async def _attempt(self, pacer: DomainPacer, flight: Flight, slot: PacedSlot, token: str) -> None:
        request, spec, provider = flight.request, flight.spec, pacer.provider
        if flight.checked is not None:
            waited = not flight.checked.done()
            if not await flight.checked:
                return  # a redelivered read, answered from its record (or its lookup failed): nothing is sent
            if waited and not pacer.limiter.usable(slot):
                pacer.requeue(flight)  # its slot went by during the lookup: a later one, never a late send
                return
            flight.stage = Stage.CALLING  # till now its record could still be left to the next owner
        if flight.withdrawn:
            return
        if not spec.idempotent and self._idempotency is not None and not flight.marked:
            try:
                ttl_ms = record_ttl_ms(request, spec, int(self._clock.time() * 1000))
                earlier = await self._idempotency.mark_inflight(
                    record_name(request, spec), ttl_ms, fingerprint(request)
                )
            except (RedisError, OSError) as exc:
                raise Refused("idempotency_unavailable", str(exc)) from exc
            if earlier is not None:  # another delivery or keyed order marked or answered it after our lookup
                owed = self._responder.owed(request, earlier)
                log_event(logger, "request.replayed", request_id=request.request_id, status=owed.status.value)
                flight.answered_elsewhere = True
                flight.finish(owed)
                return
            flight.marked = True
        upstream = self._adapters[pacer.domain].build(spec, request, token)
        left_s = request.deadline_ms / 1000 - self._clock.time()
        remaining_s = left_s - pacer.reply_budget_s()  # the answer must still reach the caller
        if flight.withdrawn or remaining_s <= 0:  # nothing is sent
            await self._clear_inflight(flight)
            if flight.withdrawn:
                return
            raise Expired("deadline_passed" if left_s <= 0 else "deadline_too_close")
        provider_timeout_s = self._call_timeout_s[provider]
        timeout_s = min(remaining_s, provider_timeout_s)
        flight.attempts += 1
        started = self._clock.monotonic()
        error: DispatchError | None = None
        answer: UpstreamAnswer | None = None
        child(UPSTREAM_INFLIGHT, provider.value).inc()
        try:
            answer = await self._dispatcher.send(
                provider, upstream, timeout_s, on_sent=lambda: pacer.limiter.sent(slot)
            )
        except DispatchError as exc:
            error = exc
        finally:
            child(UPSTREAM_INFLIGHT, provider.value).dec()
            flight.upstream_s += self._clock.monotonic() - started
        if answer is not None:
            pacer.observe_call(self._clock.monotonic() - started)
            flight.classified = self._adapters[pacer.domain].classify(spec, request, answer)
            result = Result(flight.classified.outcome.value)
        else:
            result = _dispatch_result(error, cut_by_deadline=timeout_s < provider_timeout_s)
        child(UPSTREAM_CALLS, provider.value, spec.tr_id, result.value).inc()
        decision = decide(
            result,
            idempotent=spec.idempotent,
            attempts=flight.attempts,
            token_replaced=flight.token_replaced,
            http_status=answer.status if answer is not None else None,
        )
        await self._perform(pacer, flight, decision, token, str(error) if error else None)

    async def _perform(
        self, pacer: DomainPacer, flight: Flight, decision: Decision, token: str, message: str | None
    ) -> None:
        now = self._clock.monotonic()
        effects = decision.effects
        if effects.breaker_failure:
            pacer.breaker.record_failure(now)
        if effects.breaker_success:
            pacer.breaker.record_success()
        if effects.slow_down:
            classified = flight.classified
            pacer.limiter.throttled(class_limit=classified is not None and classified.class_limit)
        elif decision.status is Status.OK:
            pacer.limiter.succeeded()
        if effects.replace_token:
            flight.token_replaced = True
            await self._tokens.invalidate(pacer.domain, token)
        if effects.clear_inflight:
            await self._clear_inflight(flight)
        if decision.action is Action.FINISH:
            assert decision.status is not None
            response = self._responder.answer(
                flight.request, decision.status, reason=decision.reason, message=message, flight=flight
            )
            flight.finish(response)
            return
        child(RETRIES, pacer.provider.value, decision.reason or "-").inc()
        flight.retry_reason = decision.reason
        if effects.backoff:
            await self._clock.sleep(backoff_s(flight.attempts, random.random()))  # noqa: S311 - jitter
        try:
            pacer.requeue(flight)
        except GatewayError as exc:  # the backlog filled meanwhile
            flight.finish(self._responder.gave_up(flight, exc))

    async def _clear_inflight(self, flight: Flight) -> None:
        """The broker did not execute the call: a redelivery may send it again."""
        if flight.spec.idempotent or self._idempotency is None:
            return
        try:
            request = flight.request
            await self._idempotency.clear_inflight(record_name(request, flight.spec), fingerprint(request))
            flight.marked = False
        except (RedisError, OSError) as exc:
            log_event(
                logger,
                "idempotency.clear_failed",
                logging.WARNING,
                request_id=flight.request.request_id,
                error=str(exc),
            )


def _dispatch_result(error: DispatchError | None, *, cut_by_deadline: bool) -> Result:
    if error is None or not error.sent:
        return Result.UNREACHABLE
    if isinstance(error, UpstreamNoAnswer) and error.timed_out and cut_by_deadline:
        return Result.DEADLINE_CUT
    return Result.NO_ANSWER
