"""One limit class's pacing loop: each slot the limiter grants goes to the best queued request.

There is one pacer per credential (``pool``) and limit class (``classes``): its queue holds that
class's requests and each of its slots is one of the class's and one of the key's. The loop makes sure
a token is at hand and the breaker lets calls through, reserves the next slot (recorded before anything
is sent), sleeps until it starts, and only then pops the request the scheduler puts first, so priorities
and deadlines are judged at the moment of the slot. The call runs in a task of its own; a slow broker
answer never delays the next slot. Where slots come far closer together than a round trip to the slot
store (limits off, a very fast key), one reservation records a run of them, one per waiting request.

While it waits the loop keeps the deadlines: a queued request whose answer could no longer reach its
caller in time (``now + call + reply path >= deadline``) is answered ``expired`` at once, before its
deadline, never after the caller gave up. The same estimates (the next slot, the slots ahead of the
request, a call, the reply path and a measured margin for the estimate's own error) decide admission.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from hubclient.models import ApiRequest, Provider
from services.gateway.admission import log_rejection
from services.gateway.breaker import CircuitBreaker
from services.gateway.classes import ClassLimiter, PacedSlot
from services.gateway.clock import Clock
from services.gateway.errors import BacklogFull, Expired, GatewayError, Refused, TokenUnavailable
from services.gateway.flights import Flight, Stage
from services.gateway.jitter import SlidingMax
from services.gateway.metrics import QUEUE_DEPTH, QUEUE_WAIT, child
from services.gateway.scheduler import Queued, Scheduler

logger = logging.getLogger(__name__)

REPLY_BASE_S = 0.03  # the caller's consumer fetching the answer, beyond our own produce
CALL_EWMA_WEIGHT = 0.1
HOLD_S = 30.0
NEAR_ESTIMATE_S = 1.0  # a slot estimated at most this far away: its lateness counts in seconds
# Slots come in runs when they are this close together (limits off, a very fast key): one round trip to
# the slot store then records up to RUN_MAX slots, as many as requests wait, instead of one per slot.
RUN_BELOW_INTERVAL_S = 0.005
RUN_MAX = 16
#: Without a token the loop asks again at least this often (seconds), answering meanwhile the queued
#: requests that cannot wait for it.
TOKEN_RECHECK_S = 1.0

T = TypeVar("T")

Attempt = Callable[["DomainPacer", Flight, PacedSlot, str], Coroutine[Any, Any, None]]
TokenSource = Callable[[str], Awaitable[str]]  # by limit domain
Finish = Callable[[Flight, GatewayError], None]


class ReplyPath:
    """How long an answer takes from the upstream call to its caller: a base plus the slowest recent
    idempotency record (stored before the answer goes out) and the slowest recent produce."""

    def __init__(self, clock: Clock) -> None:
        self._store = SlidingMax(clock, HOLD_S)
        self._produce = SlidingMax(clock, HOLD_S)

    def observe_store(self, store_s: float) -> None:
        """One answer's idempotency record stored (or given up)."""
        self._store.observe(store_s)

    def observe(self, produce_s: float) -> None:
        """One acknowledged produce of an answer."""
        self._produce.observe(produce_s)

    def budget_s(self) -> float:
        """Seconds to keep between an upstream answer and its deadline."""
        return REPLY_BASE_S + self._store.value() + self._produce.value()


class DomainPacer:
    """The queue, the limiter and the loop of one limit class of a credential (a pool member)."""

    def __init__(
        self,
        name: str,
        provider: Provider,
        *,
        domain: str | None = None,
        limiter: ClassLimiter,
        scheduler: Scheduler[Queued],
        breaker: CircuitBreaker,
        clock: Clock,
        reply: ReplyPath,
        token: TokenSource,
        attempt: Attempt,
        finish: Finish,
        token_cached: Callable[[str], bool] = lambda _domain: False,
        movable: Callable[[Flight], bool] = lambda _flight: False,
    ) -> None:
        self.name = name
        self.provider = provider
        self.domain = domain or provider.value  # the credential's limit domain: its token and adapter
        self.limiter = limiter
        self.scheduler = scheduler
        self.breaker = breaker
        self._clock = clock
        self._reply = reply
        self._token = token
        self._token_cached = token_cached  # True: ``token`` answers at once (no wait to keep deadlines in)
        self._attempt = attempt
        self._finish = finish
        self._movable = (
            movable  # True: without a token here, another member can serve it (``finish`` moves it)
        )
        self._has_work = asyncio.Event()
        self._queue_changed = asyncio.Event()  # a request was queued: the wait for a slot re-plans
        self._loop: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._ahead: deque[PacedSlot] = deque()  # slots recorded in a run, not used yet
        self.call_s = 0.05  # moving average of one upstream call
        # How much later than admission estimated a slot came: in seconds for near estimates, as a share
        # of the estimate for far ones (a far estimate errs in proportion: a wider interval moves a slot
        # 5,000 places back by 5,000 times the change, which says nothing about the next slot).
        self._late_near = SlidingMax(clock, HOLD_S)
        self._late_share = SlidingMax(clock, HOLD_S)

    # --- estimates --------------------------------------------------------------------------------

    def service_s(self) -> float:
        """Seconds from a slot to the caller holding the answer: a call plus the reply path."""
        return self.call_s + self._reply.budget_s()

    def reply_budget_s(self) -> float:
        """Seconds an answer needs to reach its caller."""
        return self._reply.budget_s()

    def slot_wait_s(self, request: ApiRequest) -> float:
        """Seconds until ``request`` would get its slot if queued now."""
        slots = self.scheduler.estimated_wait_slots(
            request.priority, request.deadline_ms, caller=request.caller
        )
        return self.limiter.next_slot_in_s() + slots * self.limiter.interval_s

    def margin_s(self, slot_wait_s: float) -> float:
        """Room for the estimate's error, for a slot estimated ``slot_wait_s`` away: the largest recent
        lateness of near estimates plus the largest recent relative lateness of far ones times the wait."""
        return self._late_near.value() + self._late_share.value() * slot_wait_s

    def observe_call(self, elapsed_s: float) -> None:
        """One upstream call's duration."""
        self.call_s += CALL_EWMA_WEIGHT * (elapsed_s - self.call_s)

    # --- the queue ----------------------------------------------------------------------------------

    def submit(self, flight: Flight, slot_wait_s: float) -> None:
        """Queue an admitted flight (raises ``BacklogFull``) and wake the loop."""
        self.scheduler.remove(flight.request.request_id)  # a stale entry of an abandoned earlier delivery
        replan = self._moves_earliest(flight)
        self.scheduler.push(Queued(flight.request, payload=flight))
        flight.stage = Stage.QUEUED
        flight.estimated_start_s = self._clock.monotonic() + slot_wait_s
        flight.estimated_wait_s = slot_wait_s
        self._queued_changed(flight)
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run(), name=f"pace-{self.name}")
        self._has_work.set()
        if replan:
            self._queue_changed.set()

    def requeue(self, flight: Flight) -> None:
        """Put a flight back for another attempt (after a throttle, a retry, a replaced token);
        ``BacklogFull`` (logged ``ratelimit.rejected``) when its queue filled meanwhile."""
        if flight.withdrawn:
            return
        replan = self._moves_earliest(flight)
        try:
            self.scheduler.push(Queued(flight.request, payload=flight))
        except BacklogFull:  # a refusal by pace, logged as admission logs its own
            log_rejection(
                flight.request,
                domain=self.name,
                reason="backlog_full",
                queue_depth=len(self.scheduler),
                wait_s=0,
            )
            raise
        flight.stage = Stage.QUEUED
        self._queued_changed(flight)
        self._has_work.set()
        if replan:
            self._queue_changed.set()

    def _moves_earliest(self, flight: Flight) -> bool:
        """True when ``flight`` would be the queue's earliest deadline: only then must a waiting loop
        re-plan (its wake-up is set by the earliest deadline); a busy queue is not woken for every push."""
        earliest_ms = self.scheduler.earliest_deadline_ms()
        return earliest_ms is None or flight.request.deadline_ms < earliest_ms

    def withdraw(self, flight: Flight) -> None:
        """Forget a flight its caller let go of: a call in progress finds it withdrawn, a twin serves
        itself."""
        flight.withdrawn = True
        flight.future.cancel()
        if self.scheduler.remove(flight.request.request_id):
            self._queued_changed(flight)

    def _queued_changed(self, flight: Flight) -> None:
        priority = flight.request.priority
        child(QUEUE_DEPTH, self.name, priority.value).set(self.scheduler.depth(priority))

    # --- the loop -----------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop the loop and the calls; queued requests stay unanswered (they are redelivered)."""
        tasks = [t for t in [self._loop, *self._calls] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None
        self._ahead.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self._serve_one_slot()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the domain: answer one request and go on
                logger.exception("gateway.internal_error", extra={"fields": {"domain": self.name}})
                self._fail_first(Refused("internal_error", "the pacing loop failed"))
                await self._clock.sleep(0.01)

    async def _serve_one_slot(self) -> None:
        """Wait for work, then give one recorded slot to the best queued request."""
        self._expire()
        if not self.scheduler:
            self._has_work.clear()
            await self._has_work.wait()
            return
        try:
            # a refresh takes a slot of its own: before ours; it may take a while (a slow broker, another
            # instance's lock): the queued requests' deadlines are kept meanwhile
            if self._token_cached(self.domain):
                await self._token(self.domain)
            else:
                await self._keeping_deadlines(self._token(self.domain))
        except TokenUnavailable as exc:  # no token yet: those who cannot wait for it get that answer
            self._refuse_until(exc)
            await self._wait_until(self._clock.monotonic() + min(exc.retry_after_s, TOKEN_RECHECK_S))
            return
        except GatewayError as exc:  # the best queued request gets that answer, no slot used
            self._fail_first(exc)
            return
        if not self.breaker.allow(self._clock.monotonic()):
            retry_s = self.breaker.retry_after_s(self._clock.monotonic())
            self._fail_first(
                Refused("circuit_open", f"{self.provider.value} is failing; next probe in {retry_s:.1f}s")
            )
            return
        slot = await self._next_slot()
        await self._wait_until(slot.start_s)
        flight = self._pop()
        if flight is None:
            self.breaker.unused()
            return  # everything expired meanwhile: the recorded slot stays unused
        try:
            token = await self._token(self.domain)  # the token now, not the one before the wait
        except GatewayError as exc:
            self.breaker.unused()
            self._finish(flight, exc)
            return
        except Exception:  # a bug: the request taken for this slot is the one answered, the loop goes on
            logger.exception("gateway.internal_error", extra={"fields": {"domain": self.name}})
            self.breaker.unused()
            self._finish(flight, Refused("internal_error", "the pacing loop failed"))
            return
        task = asyncio.create_task(self._attempt(self, flight, slot, token))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _next_slot(self) -> PacedSlot:
        """A slot recorded ahead that can still be used, else a new one (a run of them when slots come
        close together and requests wait); a slot left unused too long is wasted, never sent late."""
        while self._ahead:
            slot = self._ahead.popleft()
            if self.limiter.usable(slot):
                return slot
        count = 1
        if self.limiter.interval_s < RUN_BELOW_INTERVAL_S:
            count = min(len(self.scheduler), RUN_MAX)
        first, *rest = await self.limiter.reserve_run(count)
        self._ahead.extend(rest)
        return first

    async def _keeping_deadlines(self, work: Awaitable[T]) -> T:
        """Await ``work`` (a token, the sleep until a slot) while answering the queued requests whose deadline
        comes first (``_expire``), waking at the earliest deadline and when new work arrives (which may
        have it): nothing the loop waits for may hold an answer past its deadline."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                waiters: set[asyncio.Future[Any]] = {task}
                earliest_ms = self.scheduler.earliest_deadline_ms()
                if earliest_ms is not None:
                    due_in = earliest_ms / 1000 - self.service_s() - self._clock.time()
                    waiters.add(asyncio.ensure_future(self._clock.sleep(max(due_in, 0.001))))
                self._queue_changed.clear()
                waiters.add(asyncio.ensure_future(self._queue_changed.wait()))
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters - {task}:
                        waiter.cancel()
                self._expire()
            return task.result()
        finally:
            if not task.done():
                task.cancel()

    async def _wait_until(self, start_s: float) -> None:
        """Sleep until ``start_s``, answering meanwhile the requests whose deadline comes first."""
        while (left := start_s - self._clock.monotonic()) > 0:
            await self._keeping_deadlines(self._clock.sleep(left))

    def _pop(self) -> Flight | None:
        self._expire()
        item = self.scheduler.pop()
        if item is None:
            return None
        flight: Flight = item.payload  # type: ignore[assignment]
        self._queued_changed(flight)
        if flight.checked is None or flight.checked.done():
            flight.stage = Stage.CALLING  # else its call task sets it once the lookup lets it be sent
        now = self._clock.monotonic()
        if flight.queued_s is None:
            flight.queued_s = now - flight.received_s
            child(QUEUE_WAIT, flight.request.priority.value).observe(flight.queued_s)
            if flight.estimated_start_s is not None:
                self._observe_lateness(flight, now)
        return flight

    def _observe_lateness(self, flight: Flight, now: float) -> None:
        assert flight.estimated_start_s is not None
        late_s = max(0.0, now - flight.estimated_start_s)
        if flight.estimated_wait_s <= NEAR_ESTIMATE_S:
            self._late_near.observe(late_s)
        else:
            self._late_share.observe(late_s / flight.estimated_wait_s)

    def _refuse_until(self, error: TokenUnavailable) -> None:
        """Hand ``error`` to ``finish`` for the queued requests that another member could serve (``movable``)
        or whose answer could not arrive in time if they waited ``retry_after_s`` for the token; the others
        stay queued, in their order."""
        horizon_ms = (self._clock.time() + error.retry_after_s + self.service_s()) * 1000
        waiting: list[Flight] = []
        while (item := self.scheduler.pop()) is not None:
            flight: Flight = item.payload  # type: ignore[assignment]
            if self._movable(flight) or flight.request.deadline_ms <= horizon_ms:
                self._queued_changed(flight)
                self._finish(flight, error)
            else:
                waiting.append(flight)
        for flight in waiting:
            self.scheduler.push(Queued(flight.request, payload=flight))

    def _fail_first(self, error: GatewayError) -> None:
        item = self.scheduler.pop()
        if item is not None:
            flight: Flight = item.payload  # type: ignore[assignment]
            self._queued_changed(flight)
            self._finish(flight, error)

    def _expire(self) -> None:
        """Answer the queued requests whose answer could no longer arrive before their deadline."""
        now_ms = self._clock.time() * 1000
        horizon_ms = int(now_ms + self.service_s() * 1000)
        for item in self.scheduler.drop_expired(horizon_ms):
            flight: Flight = item.payload  # type: ignore[assignment]
            self._queued_changed(flight)
            passed = flight.request.deadline_ms <= now_ms
            self._finish(flight, Expired("deadline_passed" if passed else "deadline_too_close"))
