"""Terminal responses: every answer the gateway gives is built here, stamped with instance and timing."""

from __future__ import annotations

from hubclient.catalog import lookup
from hubclient.models import ApiRequest, ApiResponse, Status, Timing
from services.gateway.clock import Clock
from services.gateway.errors import GatewayError, Invalid, Refused
from services.gateway.flights import Flight
from services.gateway.idempotency import Record, keyed
from services.gateway.policy import given_up
from services.gateway.sharing import readdressed


class Responder:
    """Builds ``ApiResponse``s for one gateway instance."""

    def __init__(self, instance_id: str, clock: Clock) -> None:
        self.instance_id = instance_id
        self._clock = clock

    def answer(
        self,
        request: ApiRequest,
        status: Status,
        *,
        reason: str | None = None,
        message: str | None = None,
        flight: Flight | None = None,
    ) -> ApiResponse:
        """A terminal response; a flight contributes its last broker answer, timings and attempts."""
        classified = flight.classified if flight else None
        total_ms = max(0.0, self._clock.time() * 1000 - request.created_at_ms)
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
                queued_ms=round((flight.queued_s or 0.0) * 1000, 3) if flight else 0.0,
                upstream_ms=round(flight.upstream_s * 1000, 3) if flight else 0.0,
                total_ms=round(total_ms, 3),
            ),
            attempts=flight.attempts if flight else 0,
            gateway=self.instance_id,
            credential=flight.member if flight and flight.attempts else None,
        )

    def error(self, request: ApiRequest, error: GatewayError, flight: Flight | None = None) -> ApiResponse:
        """The response a gateway error stands for; a refusal of a retry is ``gave_up`` instead."""
        if flight is not None and flight.retry_reason is not None and isinstance(error, Refused):
            return self.gave_up(flight, error)
        return self.answer(request, error.status, reason=error.reason, message=error.message, flight=flight)

    def redelivered_in_flight(self, request: ApiRequest) -> ApiResponse:
        """The answer of an order another delivery of which (or another order with its idempotency_key)
        was or is being sent: ``unknown_outcome``."""
        return self.answer(
            request,
            Status.UNKNOWN_OUTCOME,
            reason="redelivered_in_flight",
            message="an earlier delivery (or an order with the same idempotency_key) may have reached the "
            "broker; reconcile, do not resend",
        )

    def reused(self, request: ApiRequest) -> ApiResponse:
        """The answer to another request under a ``request_id`` (or an order's ``idempotency_key``) already
        used: ``invalid``, with nothing of the first one's answer."""
        by_key = keyed(request, lookup(request.provider, request.tr_id))  # admission found the tr_id
        name = "idempotency_key" if by_key else "request_id"
        why = (
            f"this {name} names an earlier request with another caller, call, credential or params; give "
            f"every request its own {name}"
        )
        return self.error(request, Invalid("idempotency_key_reused" if by_key else "request_id_reused", why))

    def owed(self, request: ApiRequest, record: Record) -> ApiResponse:
        """What a request sharing an earlier one's record is answered: that one's answer (re-addressed
        when it was another request, an order with the same idempotency_key), else ``unknown_outcome``;
        ``reused`` when the record is another request's."""
        if not record.fits(request):
            return self.reused(request)
        earlier = record.response
        if earlier is None:
            return self.redelivered_in_flight(request)
        if earlier.request_id == request.request_id:
            return earlier
        return readdressed(request, earlier, now_ms=self._clock.time() * 1000)

    def gave_up(self, flight: Flight, refusal: GatewayError) -> ApiResponse:
        """A call already tried upstream whose retry was refused (circuit open, backlog full, no token):
        ``upstream_error`` with the failed attempt's reason, not ``rejected``, which says nothing reached
        the broker."""
        assert flight.retry_reason is not None
        why = f"retry refused: {refusal.reason}" + (f" ({refusal.message})" if refusal.message else "")
        return self.answer(
            flight.request,
            Status.UPSTREAM_ERROR,
            reason=given_up(flight.retry_reason),
            message=why,
            flight=flight,
        )

    @staticmethod
    def too_large(response: ApiResponse, request: ApiRequest | None, why: str) -> ApiResponse:
        """The answer sent when Kafka will not carry ``response`` (``why``): the same, without the broker's
        body, reason ``answer_too_large``. An order (a call that is not idempotent) that reached the broker
        ends ``unknown_outcome``: its caller cannot see what the broker said, so reconciles rather than
        sending it again (an answer it shares with an earlier order of the same idempotency_key, which
        reached the broker for it, as well); any other call ``upstream_error``."""
        order = (
            request is not None
            and (response.attempts > 0 or response.shared_with is not None)
            and not lookup(request.provider, request.tr_id).idempotent
        )
        return response.model_copy(
            update={
                "status": Status.UNKNOWN_OUTCOME if order else Status.UPSTREAM_ERROR,
                "reason": "answer_too_large",
                "message": f"{why} (the broker's answer was {response.status.value}); its body is left out",
                "data": None,
                "continuation": None,
            }
        )
