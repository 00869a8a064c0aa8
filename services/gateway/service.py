"""One request's way through the gateway: admit, queue, pace, authenticate, call, classify, answer.

``Gateway.handle`` returns exactly one terminal ``ApiResponse`` for every request; it never raises for
anything a request, Redis or a broker can do. Admission answers at once what cannot be served (unknown
tr_id, past deadline, deadline out of reach at the current pace, full backlog, a redelivery already
answered). Everything else waits in its limit domain's scheduler; the domain's pacing loop takes the
best request each time the limiter grants a slot and makes the call in a task of its own, so a slow
broker answer never delays the next slot.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from hubclient.catalog import TrSpec, lookup
from hubclient.errors import UnknownTrId
from hubclient.models import ApiRequest, ApiResponse, Provider, Status, Timing
from services.gateway.breaker import CircuitBreaker
from services.gateway.dispatcher import Dispatcher, DispatchError, UpstreamNoAnswer
from services.gateway.idempotency import IdempotencyStore
from services.gateway.limiter import DomainLimiter
from services.gateway.metrics import LIMITER_REJECTIONS, QUEUE_DEPTH, QUEUE_WAIT, RETRIES, UPSTREAM_CALLS
from services.gateway.providers.base import Classified, Outcome, ProviderAdapter
from services.gateway.scheduler import BacklogFull, Queued, Scheduler
from services.gateway.tokens import TokenManager, TokenUnavailable
from services.logs import log_event

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 4  # upstream calls per request, retries included
REPLY_MARGIN_S = 0.05  # publishing the answer and the caller receiving it
LATENCY_EWMA_WEIGHT = 0.1
RETRY_BASE_S = 0.05


@dataclass(eq=False)
class _Job:
    """A request's progress while it is queued or being called."""

    request: ApiRequest
    spec: TrSpec
    received_s: float
    future: asyncio.Future[ApiResponse]
    attempts: int = 0
    upstream_s: float = 0.0
    queued_s: float | None = None
    token_replaced: bool = False
    classified: Classified | None = None
    abandoned: bool = False  # withdrawn by the caller (revoke, shutdown): never call upstream for it


@dataclass(eq=False)
class _Domain:
    """One limit domain: its queue, its limiter and the loop that paces it."""

    name: str
    provider: Provider
    limiter: DomainLimiter
    scheduler: Scheduler[Queued]
    has_work: asyncio.Event = field(default_factory=asyncio.Event)
    call_s: float = 0.05  # moving average of one upstream call, for deadline estimates

    def service_s(self) -> float:
        """Seconds from a slot to the caller holding the answer: the call plus the way back."""
        return self.call_s + REPLY_MARGIN_S

    loop: asyncio.Task[None] | None = None


class Gateway:
    """Serves requests for every provider; ``stop`` ends the pacing loops."""

    def __init__(
        self,
        *,
        instance_id: str,
        adapters: dict[Provider, ProviderAdapter],
        limiters: dict[Provider, DomainLimiter],
        dispatcher: Dispatcher,
        tokens: TokenManager,
        idempotency: IdempotencyStore | None,
        call_timeout_s: dict[Provider, float],
        mock: dict[Provider, bool],
        max_backlog: int = 10_000,
    ) -> None:
        self._instance_id = instance_id
        self._adapters = adapters
        self._dispatcher = dispatcher
        self._tokens = tokens
        self._idempotency = idempotency
        self._call_timeout_s = call_timeout_s
        self._mock = mock
        self._domains = {
            p: _Domain(str(p.value), p, limiter, Scheduler(max_backlog=max_backlog))
            for p, limiter in limiters.items()
        }
        self._breakers = {p: CircuitBreaker() for p in adapters}
        self._calls: set[asyncio.Task[None]] = set()
        self._calling: set[str] = set()  # request ids inside an upstream call right now
        self._jobs: dict[str, _Job] = {}  # live jobs by request id, so a duplicate delivery joins its twin

    async def stop(self) -> None:
        """Stop the pacing loops and calls; queued requests are left for redelivery."""
        tasks = [d.loop for d in self._domains.values() if d.loop is not None] + list(self._calls)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for domain in self._domains.values():
            domain.loop = None

    def is_calling(self, request_id: str) -> bool:
        """True while the request is inside an upstream call (it must be drained, not abandoned)."""
        return request_id in self._calling

    def answer(
        self,
        request: ApiRequest,
        status: Status,
        *,
        reason: str | None = None,
        message: str | None = None,
        job: _Job | None = None,
    ) -> ApiResponse:
        """A terminal response stamped with this instance and its timing."""
        classified = job.classified if job else None
        total_ms = max(0.0, time.time() * 1000 - request.created_at_ms)
        return ApiResponse(
            request_id=request.request_id,
            status=status,
            reason=reason,
            http_status=classified.http_status if classified else None,
            provider_code=classified.provider_code if classified else None,
            message=message if message is not None else (classified.message if classified else None),
            data=classified.data if classified else None,
            continuation=classified.continuation if classified and status is Status.OK else None,
            timing=Timing(
                queued_ms=round((job.queued_s or 0.0) * 1000, 3) if job else 0.0,
                upstream_ms=round(job.upstream_s * 1000, 3) if job else 0.0,
                total_ms=round(total_ms, 3),
            ),
            attempts=job.attempts if job else 0,
            gateway=self._instance_id,
        )

    # --- admission --------------------------------------------------------------------------------

    async def handle(self, request: ApiRequest) -> ApiResponse:
        """Serve one validated request and return its terminal response."""
        received = time.monotonic()
        try:
            spec = lookup(request.provider, request.tr_id)
        except UnknownTrId as exc:
            return self.answer(request, Status.INVALID, reason="unknown_tr_id", message=str(exc))
        if self._mock[request.provider] and not spec.mock_supported:
            return self.answer(
                request,
                Status.INVALID,
                reason="not_supported_on_mock",
                message=f"{spec.tr_id} exists only on the real server",
            )
        if request.credential is not None:
            return self.answer(
                request,
                Status.INVALID,
                reason="unknown_credential",
                message=f"no credential {request.credential!r} is configured",
            )
        if request.remaining_ms() <= 0:
            return self.answer(request, Status.EXPIRED, reason="deadline_passed")
        domain = self._domains[request.provider]
        # Under overload most reads are refused here, before the Redis lookup, which keeps that cheap. A
        # non-idempotent call must first learn whether an earlier delivery reached the broker.
        refusal = self._admit(domain, request) if spec.idempotent else None
        if refusal is not None:
            return refusal
        earlier = await self._earlier_delivery(request, spec)
        if earlier is not None:
            return earlier
        twin = self._jobs.get(request.request_id)
        if twin is not None:  # delivered again while the first delivery is still being served
            return await asyncio.shield(twin.future)
        refusal = self._admit(domain, request)  # again, right before the push: others queued meanwhile
        if refusal is not None:
            return refusal
        job = _Job(request, spec, received, asyncio.get_running_loop().create_future())
        domain.scheduler.remove(request.request_id)  # a stale entry of an abandoned earlier delivery
        try:
            domain.scheduler.push(Queued(request, payload=job))
        except BacklogFull as exc:
            self._rejected(domain, request, "backlog_full", 0.0)
            return self.answer(request, Status.REJECTED, reason="backlog_full", message=str(exc))
        QUEUE_DEPTH.labels(domain.name, request.priority.value).set(domain.scheduler.depth(request.priority))
        self._ensure_loop(domain)
        domain.has_work.set()
        self._jobs[request.request_id] = job
        try:
            response = await job.future
        finally:
            self._jobs.pop(request.request_id, None)
            if not job.future.done():  # cancelled while queued (revoke, shutdown): withdraw it
                job.abandoned = True
                domain.scheduler.remove(request.request_id)
        await self._remember(response)
        return response

    async def _earlier_delivery(self, request: ApiRequest, spec: TrSpec) -> ApiResponse | None:
        """The answer owed to a redelivered request, or None when it must be served."""
        if self._idempotency is None:
            return None
        try:
            record = await self._idempotency.lookup(request.request_id)
        except (RedisError, OSError) as exc:
            if spec.idempotent:
                return None  # a repeated read is harmless
            return self.answer(request, Status.REJECTED, reason="idempotency_unavailable", message=str(exc))
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

    def _admit(self, domain: _Domain, request: ApiRequest) -> ApiResponse | None:
        """Refuse at once a request that cannot be served before its deadline at the current pace."""
        slots = domain.scheduler.estimated_wait_slots(
            request.priority, request.deadline_ms, caller=request.caller
        )
        wait_s = domain.limiter.local_wait_s() + slots * domain.limiter.interval_s + domain.service_s()
        if wait_s * 1000 < request.remaining_ms():
            return None
        self._rejected(domain, request, "deadline_unreachable", wait_s)
        return self.answer(
            request,
            Status.REJECTED,
            reason="deadline_unreachable",
            message=f"estimated wait {wait_s * 1000:.0f} ms exceeds the deadline",
        )

    def _rejected(self, domain: _Domain, request: ApiRequest, reason: str, wait_s: float) -> None:
        LIMITER_REJECTIONS.labels(domain.provider.value, reason).inc()
        log_event(
            logger,
            "ratelimit.rejected",
            logging.WARNING,
            provider=domain.provider.value,
            domain=domain.name,
            reason=reason,
            queue_depth=len(domain.scheduler),
            estimated_wait_ms=round(wait_s * 1000),
            deadline_ms=request.deadline_ms,
            caller=request.caller,
            priority=request.priority.value,
            request_id=request.request_id,
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

    # --- pacing loop ------------------------------------------------------------------------------

    def _ensure_loop(self, domain: _Domain) -> None:
        if domain.loop is None or domain.loop.done():
            domain.loop = asyncio.create_task(self._pace(domain), name=f"pace-{domain.name}")

    def _expire(self, domain: _Domain) -> None:
        """Answer, before their deadline, the queued requests whose answer could no longer arrive in time."""
        horizon_ms = int((time.time() + domain.service_s()) * 1000)
        for item in domain.scheduler.drop_expired(horizon_ms):
            job: _Job = item.payload  # type: ignore[assignment]
            passed = job.request.remaining_ms() <= 0
            reason = "deadline_passed" if passed else "deadline_too_close"
            self._finish(job, self.answer(job.request, Status.EXPIRED, reason=reason, job=job))

    async def _pace(self, domain: _Domain) -> None:
        """Grant one slot at a time to the best queued request of the domain."""
        while True:
            self._expire(domain)
            if not domain.scheduler:
                domain.has_work.clear()
                await domain.has_work.wait()
                continue
            wait_s = await domain.limiter.reserve()
            if wait_s:
                await asyncio.sleep(wait_s)
            self._expire(domain)  # the best request is chosen when the slot starts, not before
            item = domain.scheduler.pop()
            if item is None:
                continue
            job: _Job = item.payload  # type: ignore[assignment]
            QUEUE_DEPTH.labels(domain.name, job.request.priority.value).set(
                domain.scheduler.depth(job.request.priority)
            )
            task = asyncio.create_task(self._call(domain, job))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    def _requeue(self, domain: _Domain, job: _Job, reason: str) -> None:
        RETRIES.labels(domain.provider.value, reason).inc()
        if job.abandoned:
            return
        try:
            domain.scheduler.push(Queued(job.request, payload=job))
        except BacklogFull:
            self._finish(job, self.answer(job.request, Status.UPSTREAM_ERROR, reason=reason, job=job))
            return
        domain.has_work.set()

    @staticmethod
    def _finish(job: _Job, response: ApiResponse) -> None:
        if not job.future.done():
            job.future.set_result(response)

    async def _clear_inflight(self, job: _Job) -> None:
        """The broker did not execute the call: a redelivery may send it again."""
        if job.spec.idempotent or self._idempotency is None:
            return
        try:
            await self._idempotency.clear_inflight(job.request.request_id)
        except (RedisError, OSError) as exc:
            log_event(
                logger,
                "idempotency.clear_failed",
                logging.WARNING,
                request_id=job.request.request_id,
                error=str(exc),
            )

    # --- one upstream call ------------------------------------------------------------------------

    async def _call(self, domain: _Domain, job: _Job) -> None:
        self._calling.add(job.request.request_id)
        try:
            await self._attempt(domain, job)
        except Exception as exc:  # a bug must still end in exactly one answer
            logger.exception(
                "gateway.internal_error", extra={"fields": {"request_id": job.request.request_id}}
            )
            self._finish(
                job,
                self.answer(
                    job.request, Status.REJECTED, reason="internal_error", message=type(exc).__name__, job=job
                ),
            )
        finally:
            self._calling.discard(job.request.request_id)

    async def _attempt(self, domain: _Domain, job: _Job) -> None:
        request, spec, provider = job.request, job.spec, domain.provider
        if job.abandoned:
            return
        if job.queued_s is None:
            job.queued_s = time.monotonic() - job.received_s
            QUEUE_WAIT.labels(request.priority.value).observe(job.queued_s)
        remaining_s = request.remaining_ms() / 1000
        if remaining_s <= 0:
            return self._finish(job, self.answer(request, Status.EXPIRED, reason="deadline_passed", job=job))
        breaker = self._breakers[provider]
        if not breaker.allow():
            return self._finish(
                job,
                self.answer(
                    request,
                    Status.REJECTED,
                    reason="circuit_open",
                    job=job,
                    message=f"{provider.value} is failing; next probe in {breaker.retry_after_s():.1f}s",
                ),
            )
        try:
            token = await self._tokens.get(provider)
        except TokenUnavailable as exc:
            return self._finish(
                job,
                self.answer(request, Status.REJECTED, reason="token_unavailable", message=str(exc), job=job),
            )
        if not spec.idempotent and self._idempotency is not None:
            try:
                await self._idempotency.mark_inflight(request.request_id)
            except (RedisError, OSError) as exc:
                return self._finish(
                    job,
                    self.answer(
                        request, Status.REJECTED, reason="idempotency_unavailable", message=str(exc), job=job
                    ),
                )
        if job.abandoned:
            return
        upstream = self._adapters[provider].build(spec, request, token)
        ticket = await domain.limiter.before_send()  # close to the wire: the broker counts arrivals
        remaining_s = request.remaining_ms() / 1000
        if remaining_s <= 0:  # the window made it wait past the deadline: nothing was sent
            await self._clear_inflight(job)
            return self._finish(job, self.answer(request, Status.EXPIRED, reason="deadline_passed", job=job))
        timeout_s = min(remaining_s, self._call_timeout_s[provider])
        job.attempts += 1
        started = time.monotonic()
        try:
            answer = await self._dispatcher.send(
                provider,
                upstream,
                timeout_s,
                on_sent=lambda: domain.limiter.sent(ticket),
            )
        except DispatchError as exc:
            job.upstream_s += time.monotonic() - started
            if not (
                isinstance(exc, UpstreamNoAnswer)
                and exc.timed_out
                and timeout_s < self._call_timeout_s[provider]
            ):
                breaker.record_failure()  # a timeout cut short by the caller's deadline is not the broker's
            UPSTREAM_CALLS.labels(provider.value, spec.tr_id, "no_answer").inc()
            if exc.sent and not spec.idempotent:
                return self._finish(
                    job,
                    self.answer(
                        request, Status.UNKNOWN_OUTCOME, reason="no_answer", message=str(exc), job=job
                    ),
                )
            if not exc.sent:
                await self._clear_inflight(job)
            if job.attempts >= MAX_ATTEMPTS:
                return self._finish(
                    job,
                    self.answer(
                        request, Status.UPSTREAM_ERROR, reason="unreachable", message=str(exc), job=job
                    ),
                )
            await _backoff(job.attempts)
            return self._requeue(domain, job, "no_answer")
        elapsed_s = time.monotonic() - started
        job.upstream_s += elapsed_s
        domain.call_s += LATENCY_EWMA_WEIGHT * (elapsed_s - domain.call_s)
        job.classified = classified = self._adapters[provider].classify(spec, request, answer)
        outcome = classified.outcome
        UPSTREAM_CALLS.labels(provider.value, spec.tr_id, outcome.value).inc()
        if outcome is Outcome.TRANSIENT:
            breaker.record_failure()
        else:
            breaker.record_success()
        if outcome is Outcome.OK:
            domain.limiter.succeeded()
            return self._finish(job, self.answer(request, Status.OK, job=job))
        if outcome is Outcome.TOKEN_REJECTED and not job.token_replaced:
            job.token_replaced = True
            await self._tokens.invalidate(provider, token)
            return self._requeue(domain, job, "token_rejected")
        if outcome is Outcome.THROTTLED and job.attempts < MAX_ATTEMPTS:
            domain.limiter.throttled()
            await self._clear_inflight(job)
            return self._requeue(domain, job, "throttled")  # refused before execution: orders may go again
        if outcome is Outcome.TRANSIENT and spec.idempotent and job.attempts < MAX_ATTEMPTS:
            await _backoff(job.attempts)
            return self._requeue(domain, job, "transient")
        if outcome is Outcome.UNKNOWN_OUTCOME or (outcome is Outcome.TRANSIENT and not spec.idempotent):
            return self._finish(
                job, self.answer(request, Status.UNKNOWN_OUTCOME, reason=outcome.value, job=job)
            )
        return self._finish(job, self.answer(request, Status.UPSTREAM_ERROR, reason=outcome.value, job=job))


async def _backoff(attempt: int) -> None:
    """Full jitter: sleep a random time up to ``RETRY_BASE_S * 2**attempt`` seconds."""
    await asyncio.sleep(random.uniform(0, RETRY_BASE_S * 2**attempt))  # noqa: S311 - jitter, not security
