"""One request's way through the gateway: admit, queue, pace, call, answer.

``Gateway.handle`` returns exactly one terminal ``ApiResponse`` for every request; it never raises for
anything a request, Redis or a broker can do. A ``websocket_credentials`` request is answered from the
token store (``websocket``). Admission (``admission``) answers at once what cannot be served; a
redelivery is answered from its idempotency record or joins its twin still in flight; everything else
becomes a ``Flight`` in the pacer of its provider and limit class (``pacing``, ``classes``), whose loop
gives each recorded slot to the best queued request and hands it to the ``Caller`` (``call``) for the
upstream attempt. The parts are built here from settings and the seams: a ``Dispatcher``, a
``SlotStore``, ``TokenStore``s (tokens, approval keys), idempotency ``Records`` and a ``Clock``, so the
whole path runs in memory in unit tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from redis.exceptions import RedisError

from hubclient.catalog import TrSpec, entries
from hubclient.models import ApiRequest, ApiResponse, Provider, RequestKind, Status
from services.gateway.admission import (
    MAX_PARAM_KEYS,
    MAX_PARAM_VALUE_CHARS,
    check_deadline,
    check_request,
    log_rejection,
)
from services.gateway.breaker import CircuitBreaker
from services.gateway.call import Caller
from services.gateway.classes import ClassLimiter, class_domain, class_rates, pacer_name
from services.gateway.clock import Clock, SystemClock
from services.gateway.dispatcher import Dispatcher
from services.gateway.errors import BacklogFull, GatewayError, Refused
from services.gateway.flights import Flight, Flights, Position
from services.gateway.idempotency import Records
from services.gateway.jitter import JitterBudget
from services.gateway.limiter import DomainLimiter
from services.gateway.pacing import DomainPacer, ReplyPath
from services.gateway.permissions import Permissions, check_permitted
from services.gateway.providers.base import ProviderAdapter
from services.gateway.providers.kis import KisAdapter
from services.gateway.responses import Responder
from services.gateway.scheduler import Queued, Scheduler
from services.gateway.slots import SlotStore
from services.gateway.token_store import TokenStore
from services.gateway.tokens import TokenManager
from services.gateway.websocket import ApprovalIssuer, CredentialLender
from services.logs import log_event
from services.settings import ProviderSettings

logger = logging.getLogger(__name__)


class Gateway:
    """Serves requests for every configured provider; ``stop`` ends the pacing loops."""

    def __init__(
        self,
        *,
        instance_id: str,
        providers: Mapping[Provider, ProviderSettings],
        adapters: Mapping[Provider, ProviderAdapter],
        dispatcher: Dispatcher,
        slots: SlotStore | None,
        token_store: TokenStore,
        approval_store: TokenStore,
        idempotency: Records | None,
        clock: Clock | None = None,
        max_backlog: int = 10_000,
        permissions: Permissions | None = None,
        max_param_keys: int = MAX_PARAM_KEYS,
        max_param_value_chars: int = MAX_PARAM_VALUE_CHARS,
    ) -> None:
        self.clock = clock or SystemClock()
        self.responder = Responder(instance_id, self.clock)
        self.flights = Flights()
        self._providers = dict(providers)
        self._permissions = permissions  # None: every caller may make every call
        self._param_limits = (max_param_keys, max_param_value_chars)
        self._idempotency = idempotency
        self._reply = ReplyPath(self.clock)
        self.limiters = {  # each key's overall limit; token calls take these slots too
            p: DomainLimiter(
                p.value,
                s.rate_per_s,
                jitter=JitterBudget(s.arrival_jitter_s, self.clock),
                clock=self.clock,
                shared=slots,
            )
            for p, s in providers.items()
        }
        self.class_limiters = {  # the classes with a limit of their own, inside their key's
            (p, c): DomainLimiter(
                class_domain(p, c),
                rate,
                jitter=JitterBudget(s.arrival_jitter_s, self.clock),
                clock=self.clock,
                shared=slots,
            )
            for p, s in providers.items()
            for c, rate in class_rates(s).items()
        }
        self.tokens = TokenManager(
            dict(adapters), dispatcher, token_store, clock=self.clock, limiters=self.limiters
        )
        kis = adapters.get(Provider.KIS)
        self.approvals = TokenManager(  # KIS's WebSocket approval key, issued by the same rules
            {Provider.KIS: ApprovalIssuer(kis, self.clock)} if isinstance(kis, KisAdapter) else {},
            dispatcher,
            approval_store,
            clock=self.clock,
            limiters=self.limiters,
            credential="approval_key",
        )
        self.lender = CredentialLender(
            tokens=self.tokens,
            approvals=self.approvals,
            responder=self.responder,
            clock=self.clock,
            reply_budget_s=self._reply.budget_s,
        )
        caller = Caller(
            adapters=dict(adapters),
            dispatcher=dispatcher,
            tokens=self.tokens,
            idempotency=idempotency,
            responder=self.responder,
            clock=self.clock,
            call_timeout_s={p: s.timeout_s for p, s in providers.items()},
        )
        breakers = {p: CircuitBreaker() for p in providers}
        self.pacers = {
            (p, c): DomainPacer(
                pacer_name(p, c),
                p,
                limiter=ClassLimiter(c, self.limiters[p], self.class_limiters.get((p, c)), clock=self.clock),
                scheduler=Scheduler[Queued](max_backlog=max_backlog),
                breaker=breakers[p],
                clock=self.clock,
                reply=self._reply,
                token=self.tokens.get,
                attempt=caller.attempt,
                finish=self._finish,
            )
            for p in providers
            for c in sorted({e.limit_class for e in entries(p)})
        }

    async def stop(self) -> None:
        """Stop the pacing loops and calls; queued requests are left for redelivery."""
        await asyncio.gather(*(pacer.stop() for pacer in self.pacers.values()))

    def is_abandonable(self, position: Position) -> bool:
        """True unless the request read at ``position`` has left its queue (a call, or an answer known)."""
        return not self.flights.busy_at(position)

    def observe_reply(self, produce_s: float) -> None:
        """One answer's produce took ``produce_s`` seconds (widens the reply budget of deadlines)."""
        self._reply.observe(produce_s)

    def answer(
        self, request: ApiRequest, status: Status, *, reason: str | None = None, message: str | None = None
    ) -> ApiResponse:
        """A terminal response stamped with this instance (for answers made outside a flight)."""
        return self.responder.answer(request, status, reason=reason, message=message)

    def _finish(self, flight: Flight, error: GatewayError) -> None:
        flight.finish(self.responder.error(flight.request, error, flight))

    async def handle(self, request: ApiRequest, position: Position | None = None) -> ApiResponse:
        """Serve one validated request and return its terminal response."""
        received_s = self.clock.monotonic()
        settings = self._providers.get(request.provider)
        if settings is None:
            return self.answer(request, Status.INVALID, reason="unknown_provider")
        if request.kind is RequestKind.WEBSOCKET_CREDENTIALS:
            return await self.lender.lend(request)  # from the token store: no slot, no idempotency record
        try:
            spec = check_request(
                request,
                mock=settings.mock,
                now_ms=self._now_ms(),
                max_param_keys=self._param_limits[0],
                max_param_value_chars=self._param_limits[1],
            )
            check_permitted(self._permissions, request, spec)  # before any upstream call or Redis lookup
            pacer = self.pacers[request.provider, spec.limit_class]
            twin = await self._join_twin(request)
            if twin is not None:
                return twin
            # Under overload most reads are refused here, before the Redis lookup, which keeps that cheap.
            # A non-idempotent call must first learn whether an earlier delivery reached the broker.
            if spec.idempotent:
                self._admit(pacer, request)
            earlier = await self._earlier_delivery(request, spec)
            if earlier is not None:
                return earlier
            slot_wait_s = self._admit(pacer, request)  # again, right before the push: others queued meanwhile
            flight = Flight(
                request, spec, pacer.name, received_s, asyncio.get_running_loop().create_future(), position
            )
            try:
                pacer.submit(flight, slot_wait_s)
            except BacklogFull:
                log_rejection(
                    request,
                    domain=pacer.name,
                    reason="backlog_full",
                    queue_depth=len(pacer.scheduler),
                    wait_s=0,
                )
                raise
        except GatewayError as exc:
            return self.responder.error(request, exc)
        self.flights.add(flight)
        try:
            response = await asyncio.shield(flight.future)
            await self._remember(response)  # still registered: a duplicate joins, a revoke waits for it
        except asyncio.CancelledError:  # the caller let go (revoke, shutdown): never send it after this
            pacer.withdraw(flight)
            raise
        finally:
            self.flights.remove(flight)
        return response

    async def _join_twin(self, request: ApiRequest) -> ApiResponse | None:
        """The answer of the same request's delivery still being served here, if there is one."""
        while (twin := self.flights.get(request.request_id)) is not None:
            try:
                return await asyncio.shield(twin.future)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not twin.future.cancelled() or (current is not None and current.cancelling()):
                    raise
                # the first delivery was withdrawn: this one is served on its own
        return None

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _admit(self, pacer: DomainPacer, request: ApiRequest) -> float:
        """Seconds until the request's slot; raises ``Refused`` when its answer would come too late."""
        slot_wait_s = pacer.slot_wait_s(request)
        wait_s = slot_wait_s + pacer.service_s() + pacer.margin_s(slot_wait_s)
        try:
            check_deadline(request, now_ms=self._now_ms(), wait_s=wait_s)
        except Refused as exc:
            log_rejection(
                request, domain=pacer.name, reason=exc.reason, queue_depth=len(pacer.scheduler), wait_s=wait_s
            )
            raise
        return slot_wait_s

    async def _earlier_delivery(self, request: ApiRequest, spec: TrSpec) -> ApiResponse | None:
        """The answer owed to a redelivered request, or None when it must be served."""
        if self._idempotency is None:
            return None
        try:
            record = await self._idempotency.lookup(request.request_id)
        except (RedisError, OSError) as exc:
            if spec.idempotent:
                return None  # a repeated read is harmless
            raise Refused("idempotency_unavailable", str(exc)) from exc
        if record is None:
            return None
        if record.response is not None:
            log_event(
                logger, "request.replayed", request_id=request.request_id, status=record.response.status.value
            )
            return record.response
        if spec.idempotent:
            return None
        return self.answer(
            request,
            Status.UNKNOWN_OUTCOME,
            reason="redelivered_in_flight",
            message="an earlier delivery may have reached the broker; reconcile, do not resend",
        )

    async def _remember(self, response: ApiResponse) -> None:
        if self._idempotency is None:
            return
        try:
            await self._idempotency.store(response)
        except (RedisError, OSError) as exc:
            log_event(
                logger,
                "idempotency.store_failed",
                logging.WARNING,
                request_id=response.request_id,
                error=str(exc),
            )
