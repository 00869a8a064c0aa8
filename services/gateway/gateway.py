"""One request's way through the gateway: admit, queue, pace, call, answer.

``Gateway.handle`` returns exactly one terminal ``ApiResponse`` for every request; it never raises for
anything a request, Redis or a broker can do. A ``websocket_credentials`` request is answered from the
token store (``websocket``). Admission (``admission``) answers at once what cannot be served; a
redelivery is answered from its idempotency record or joins its twin still in flight; everything else
becomes a ``Flight`` in the pacer of its credential and limit class (``pool`` picks the credential,
``pacing``, ``classes``), whose loop gives each recorded slot to the best queued request and hands it
to the ``Caller`` (``call``) for the upstream attempt. An identical read already in flight, or an
immutable one answered lately, is answered from that call (``sharing``). A read whose credential cannot
get a token moves to another member of the pool. The parts are built here from settings and the seams:
a ``Dispatcher``, a ``SlotStore``, ``TokenStore``s (tokens, approval keys), idempotency ``Records`` and a
``Clock``, so the whole path runs in memory in unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from redis.exceptions import RedisError

from hubclient.catalog import TrSpec, entries, lookup
from hubclient.models import ApiRequest, ApiResponse, Provider, RequestKind, Status
from services.gateway.admission import (
    MAX_PARAM_KEYS,
    MAX_PARAM_VALUE_CHARS,
    check_deadline,
    check_environment,
    check_request,
    log_rejection,
)
from services.gateway.breaker import CircuitBreaker
from services.gateway.call import Caller
from services.gateway.classes import ClassLimiter, class_domain, class_rates, pacer_name
from services.gateway.clock import Clock, SystemClock
from services.gateway.cpu_wait import RunQueueWait
from services.gateway.dispatcher import Dispatcher
from services.gateway.errors import BacklogFull, Expired, GatewayError, Refused, TokenUnavailable
from services.gateway.flights import Flight, Flights, Position
from services.gateway.idempotency import Records, fingerprint, keyed, record_name, record_ttl_ms
from services.gateway.jitter import JitterBudget
from services.gateway.limiter import DomainLimiter
from services.gateway.pacing import DomainPacer, ReplyPath
from services.gateway.permissions import Permissions, check_lending, check_permitted
from services.gateway.pool import Member, Pool, account_bound, pools
from services.gateway.providers import make_adapter
from services.gateway.providers.base import ProviderAdapter
from services.gateway.providers.kis import KisAdapter
from services.gateway.quota import GroupQuota
from services.gateway.responses import Responder
from services.gateway.scheduler import Queued, Scheduler
from services.gateway.sharing import CACHE_BYTES, SharedReads, read_key, shareable, shared_copy
from services.gateway.slots import SlotStore, shared_name
from services.gateway.token_store import TokenStore
from services.gateway.tokens import TokenManager
from services.gateway.websocket import ApprovalIssuer, CredentialLender
from services.logs import Sampled, log_event
from services.settings import ProviderSettings

logger = logging.getLogger(__name__)


class Gateway:
    """Serves requests for every configured provider; ``stop`` ends the pacing loops."""

    def __init__(
        self,
        *,
        instance_id: str,
        providers: Mapping[Provider, ProviderSettings],
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
        adapter_for: Callable[[ProviderSettings], ProviderAdapter] = make_adapter,
        shared_cache_entries: int = 1000,
        shared_cache_bytes: int = CACHE_BYTES,
        run_queue: RunQueueWait | None = None,
        provider_pools: Mapping[Provider, Pool] | None = None,
        quota: GroupQuota | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.responder = Responder(instance_id, self.clock)
        self.flights = Flights()
        self._providers = dict(providers)
        self._permissions = permissions  # None: every caller may make every call
        self._param_limits = (max_param_keys, max_param_value_chars)
        self._idempotency = idempotency
        self._reply = ReplyPath(self.clock)
        # A record Redis would not keep: a read's (harmless, and one per answer while Redis is away) is
        # logged once a second; an order's (its redelivery can only be ``unknown_outcome``) every time.
        self._read_store_failed = Sampled(logger, "idempotency.store_failed", clock=self.clock.monotonic)
        self._order_store_failed = Sampled(
            logger, "idempotency.store_failed", every_s=0.0, clock=self.clock.monotonic
        )
        # built by the caller when it needs the members too (their appkeys for the token stores)
        self.pools = dict(provider_pools) if provider_pools is not None else pools(providers, self.clock)
        self.members = {m.domain: m for pool in self.pools.values() for m in pool.members}
        self.sharing = SharedReads(
            self.clock, cache_entries=shared_cache_entries, cache_bytes=shared_cache_bytes
        )
        adapters = {d: adapter_for(m.settings) for d, m in self.members.items()}
        keys = {  # each member's schedule is shared by its appkey, whatever another instance calls it
            d: shared_name(d, m.settings.appkey.get_secret_value() if m.settings.appkey else None)
            for d, m in self.members.items()
        }
        self.limiters = {  # each key's overall limit; token calls take these slots too
            d: DomainLimiter(
                d,
                m.settings.rate_per_s,
                jitter=JitterBudget(m.settings.arrival_jitter_s, self.clock, run_queue=run_queue),
                clock=self.clock,
                shared=slots,
                shared_name=keys[d],
                quota=quota,
            )
            for d, m in self.members.items()
        }
        self.class_limiters = {  # the classes with a limit of their own, inside their key's
            (d, c): DomainLimiter(
                class_domain(d, c),
                rate,
                jitter=JitterBudget(m.settings.arrival_jitter_s, self.clock, run_queue=run_queue),
                clock=self.clock,
                shared=slots,
                shared_name=class_domain(keys[d], c),
                quota=quota,
            )
            for d, m in self.members.items()
            for c, rate in class_rates(m.settings).items()
        }
        token_timeout_s = {d: m.settings.timeout_s for d, m in self.members.items()}
        self.tokens = TokenManager(
            dict(adapters),
            dispatcher,
            token_store,
            clock=self.clock,
            limiters=self.limiters,
            call_timeout_s=token_timeout_s,
        )
        self.approvals = TokenManager(  # KIS's WebSocket approval key, issued by the same rules
            {d: ApprovalIssuer(a, self.clock) for d, a in adapters.items() if isinstance(a, KisAdapter)},
            dispatcher,
            approval_store,
            clock=self.clock,
            limiters=self.limiters,
            call_timeout_s=token_timeout_s,
            credential="approval_key",
        )
        self.lender = CredentialLender(
            tokens=self.tokens,
            approvals=self.approvals,
            responder=self.responder,
            clock=self.clock,
            reply_budget_s=self._reply.budget_s,
            pools=self.pools,
        )
        caller = Caller(
            adapters=adapters,
            dispatcher=dispatcher,
            tokens=self.tokens,
            idempotency=idempotency,
            responder=self.responder,
            clock=self.clock,
            call_timeout_s={p: s.timeout_s for p, s in providers.items()},
        )
        breakers = {p: CircuitBreaker() for p in providers}  # the broker's health, shared by its keys
        self.pacers = {
            (d, c): DomainPacer(
                pacer_name(d, c),
                m.provider,
                domain=d,
                limiter=ClassLimiter(c, self.limiters[d], self.class_limiters.get((d, c)), clock=self.clock),
                scheduler=Scheduler[Queued](max_backlog=max_backlog),
                breaker=breakers[m.provider],
                clock=self.clock,
                reply=self._reply,
                token=self.tokens.get,
                token_cached=self.tokens.cached_valid,
                attempt=caller.attempt,
                finish=self._finish,
                movable=self._movable,
            )
            for d, m in self.members.items()
            for c in sorted({e.limit_class for e in entries(m.provider)})
        }
        self._pacer_named = {pacer.name: pacer for pacer in self.pacers.values()}

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
        """A pacer ends ``flight`` with ``error``; a read whose credential has no token moves instead."""
        if isinstance(error, TokenUnavailable):
            self.pools[flight.request.provider].mark_sick(self._pacer_named[flight.domain].domain)
            if self._reroute(flight):
                return
        flight.finish(self.responder.error(flight.request, error, flight))

    def _movable(self, flight: Flight) -> bool:
        """True when ``flight`` is an unnamed read another healthy member of its pool could serve."""
        request, pool = flight.request, self.pools[flight.request.provider]
        current = self._pacer_named[flight.domain].domain
        return request.credential is None and not account_bound(flight.spec) and pool.can_reroute(current)

    def _reroute(self, flight: Flight) -> bool:
        """Queue an unnamed read at another member of its pool; False when there is none to take it."""
        request, spec = flight.request, flight.spec
        pool = self.pools[request.provider]
        current = self._pacer_named[flight.domain].domain
        if not self._movable(flight):
            return False
        member = pool.soonest(lambda m: self._slot_in_s(m, spec, request), besides=current)
        pacer = self.pacers[member.domain, spec.limit_class]
        try:
            pacer.submit(flight, pacer.slot_wait_s(request))
        except BacklogFull:
            return False
        flight.domain, flight.member = pacer.name, member.name
        log_event(
            logger, "pool.rerouted", request_id=request.request_id, source=current, target=member.domain
        )
        return True

    def _slot_in_s(self, member: Member, spec: TrSpec, request: ApiRequest) -> float:
        """When ``member`` would give ``request`` its slot if queued now (the queue ahead included).

        The pool compares members by this alone. The rest of admission's estimate would mislead the
        choice: the call time is the broker's, not the key's, yet each pacer averages only its own calls,
        so a member whose average rose once under load would be passed over and never measured again
        (a run with limits off sent 12 of 20 members a tenth of the reads, which left the busy pacers
        reserving one slot per Redis round trip). Admission still checks the chosen member's whole
        estimate against the deadline."""
        return self.pacers[member.domain, spec.limit_class].slot_wait_s(request)

    async def handle(self, request: ApiRequest, position: Position | None = None) -> ApiResponse:
        """Serve one validated request and return its terminal response."""
        received_s = self.clock.monotonic()
        if request.provider not in self._providers:
            return self.answer(request, Status.INVALID, reason="unknown_provider")
        if request.kind is RequestKind.WEBSOCKET_CREDENTIALS:
            try:
                check_lending(self._permissions, request)
            except GatewayError as exc:
                return self.responder.error(request, exc)
            return await self.lender.lend(request)  # from the token store: no slot, no idempotency record
        try:
            spec = check_request(
                request,
                now_ms=self._now_ms(),
                max_param_keys=self._param_limits[0],
                max_param_value_chars=self._param_limits[1],
            )
            check_permitted(self._permissions, request, spec)  # before any upstream call or Redis lookup
            estimates: dict[str, float] = {}  # the pool's, by member: admission's first check reuses one

            def slot_in_s(member: Member) -> float:
                estimates[member.domain] = self._slot_in_s(member, spec, request)
                return estimates[member.domain]

            member = self.pools[request.provider].route(request, spec, slot_in_s)
            check_environment(spec, mock=member.settings.mock)
        except Expired as exc:  # delivered after its deadline
            return await self._expired(request, exc)
        except GatewayError as exc:
            return self.responder.error(request, exc)
        routed_wait_s = estimates.get(member.domain)  # good for this turn of the loop only
        if not spec.idempotent or self.flights.get(request.request_id) is not None:
            return await self._serve(request, spec, member, received_s, position)  # a twin may be waited for
        key = read_key(request, spec, member.settings.environment)
        if self.sharing.leader(key) is not None:
            routed_wait_s = None  # an identical read's call is waited for first
        shared = await self._shared(request, key)
        if shared is not None:
            return shared
        leading = self.sharing.lead(key)  # identical reads from now on wait for this one's answer
        response: ApiResponse | None = None
        try:
            response = await self._serve(request, spec, member, received_s, position, routed_wait_s)
            return response
        finally:
            self.sharing.settle(key, leading, response if response and shareable(response) else None, request)
            if response is not None:
                self.sharing.remember(key, request, response)

    async def _shared(self, request: ApiRequest, key: bytes) -> ApiResponse | None:
        """The answer of an identical read (cached, or in flight: waited for within the deadline)."""
        cached = self.sharing.cached(key)
        if cached is not None:
            return shared_copy(request, cached, now_ms=self.clock.time() * 1000, kind="cache")
        settled = self.sharing.settled(key, request)
        if settled is not None:
            return shared_copy(request, settled, now_ms=self.clock.time() * 1000, kind="settled")
        while (leader := self.sharing.leader(key)) is not None:
            left_s = request.deadline_ms / 1000 - self.clock.time() - self._reply.budget_s()
            timer: asyncio.Future[Any] = asyncio.ensure_future(self.clock.sleep(max(left_s, 0.0)))
            waiting: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(leader))
            try:
                await asyncio.wait({timer, waiting}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
                waiting.cancel()
            if not leader.done():
                return self.answer(
                    request, Status.EXPIRED, reason="deadline_too_close", message="the shared call was late"
                )
            if not leader.cancelled():
                return shared_copy(request, leader.result(), now_ms=self.clock.time() * 1000, kind="inflight")
            # the leader ended without an upstream answer: serve this one (or follow the next leader)
        return None

    async def _serve(
        self,
        request: ApiRequest,
        spec: TrSpec,
        member: Member,
        received_s: float,
        position: Position | None,
        routed_wait_s: float | None = None,
    ) -> ApiResponse:
        """Queue the request at its member's pacer and wait for its answer (``routed_wait_s``: the pool's
        estimate of its slot, when made in the same turn of the event loop; else it is estimated again)."""
        try:
            pacer = self.pacers[member.domain, spec.limit_class]
            twin = await self._join_twin(request)
            if twin is not None:
                return twin
            loop = asyncio.get_running_loop()
            checked: asyncio.Future[bool] | None = None
            if spec.idempotent:
                # Under overload most reads are refused here, before the Redis lookup, which keeps that cheap.
                # A read is queued at once and looked up meanwhile: its slot's reservation and the lookup
                # share one wait, and its call waits for the lookup (``Flight.checked``).
                slot_wait_s = self._admit(pacer, request, routed_wait_s)
                checked = loop.create_future() if self._idempotency is not None else None
            else:
                # An order must first learn whether an earlier delivery reached the broker.
                earlier = await self._earlier_delivery(request, spec)
                if earlier is not None:
                    return earlier
                twin = await self._join_twin(request)  # a copy that came with this one may be queued by now
                if twin is not None:
                    return twin
                slot_wait_s = self._admit(pacer, request)  # after the lookup, right before the push
            flight = Flight(
                request,
                spec,
                pacer.name,
                received_s,
                loop.create_future(),
                position,
                member=member.name,
                checked=checked,
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
            if flight.checked is not None and (earlier := await self._look_up_queued(flight)) is not None:
                self._pacer_named[flight.domain].withdraw(flight)  # answered already: never sent again
                return earlier
            # Unshielded: the caller letting go cancels the future at once, which withdraw would do anyway.
            response = await flight.future
            if not flight.answered_elsewhere:
                await self._remember(flight, response)  # still registered: a duplicate joins, a revoke waits
        except BaseException:  # the caller let go (revoke, shutdown), or a bug: never send it after this
            self._pacer_named[flight.domain].withdraw(flight)  # its pacer now (a reroute moves it)
            raise
        finally:
            self.flights.remove(flight)
        return response

    async def _look_up_queued(self, flight: Flight) -> ApiResponse | None:
        """The idempotency lookup of a read already queued: its answer when an earlier delivery has one.
        ``flight.checked`` then says whether the read may be sent, so its call (which waits for it) is
        never made for a redelivery, nor after a lookup that failed with a bug."""
        assert flight.checked is not None
        may_send = False
        try:
            earlier = await self._earlier_delivery(flight.request, flight.spec)
            may_send = earlier is None
            return earlier
        finally:
            if not flight.checked.done():  # cancelled with the call task waiting for it (a stop)
                flight.checked.set_result(may_send)

    async def _join_twin(self, request: ApiRequest) -> ApiResponse | None:
        """The answer of the same request's delivery still being served here, if there is one."""
        while (twin := self.flights.get(request.request_id)) is not None:
            if fingerprint(twin.request) != fingerprint(request):
                return self.responder.reused(request)  # another request under its request_id
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

    def _admit(self, pacer: DomainPacer, request: ApiRequest, slot_wait_s: float | None = None) -> float:
        """Seconds until the request's slot (``slot_wait_s`` when just estimated); raises ``Refused`` when
        its answer would come too late."""
        if slot_wait_s is None:
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
            record = await self._idempotency.lookup(record_name(request, spec))
        except (RedisError, OSError) as exc:
            if spec.idempotent:
                return None  # a repeated read is harmless
            raise Refused("idempotency_unavailable", str(exc)) from exc
        if record is None:
            return None
        if not record.fits(request):
            return self.responder.reused(request)
        if record.response is None and spec.idempotent:
            return None  # a read whose earlier delivery is still in flight may run again
        owed = self.responder.owed(request, record)
        if record.response is not None:
            log_event(logger, "request.replayed", request_id=request.request_id, status=owed.status.value)
        return owed

    async def _expired(self, request: ApiRequest, error: Expired) -> ApiResponse:
        """A delivery after its deadline is answered ``expired``, unless it is an order an earlier delivery
        may have sent (a redelivery after a crash and a long outage): then its record says what became of
        it, its answer or ``unknown_outcome``, where ``expired`` would tell the audit log it never left."""
        spec = lookup(request.provider, request.tr_id)  # check_request found it before the deadline check
        earlier = None
        if not spec.idempotent:
            with contextlib.suppress(GatewayError):  # not permitted, or Redis away: nothing known of it
                check_permitted(self._permissions, request, spec)  # no record for a caller who may not order
                earlier = await self._earlier_delivery(request, spec)
        return earlier or self.responder.error(request, error)

    async def _remember(self, flight: Flight, response: ApiResponse) -> None:
        """Store the answer's idempotency record before it is published; its time counts in the reply path
        (a slow Redis must not make answers late). A keyed order's answer is stored only while the order
        may have reached the broker (its mark stands): one refused unexecuted leaves its key free to retry."""
        request, spec = flight.request, flight.spec
        if self._idempotency is None or (keyed(request, spec) and not flight.marked):
            return
        started_s = self.clock.monotonic()
        try:
            ttl_ms = record_ttl_ms(request, spec, self._now_ms())
            await self._idempotency.store(record_name(request, spec), response, ttl_ms, fingerprint(request))
        except (RedisError, OSError) as exc:
            failed = self._read_store_failed if spec.idempotent else self._order_store_failed
            failed.log(request_id=response.request_id, error=str(exc))
        finally:
            self._reply.observe_store(self.clock.monotonic() - started_s)
