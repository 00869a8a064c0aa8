"""WebSocket credentials: the one token authority lends the WebSocket collectors what they need.

A ``websocket_credentials`` request (``HubClient.websocket_credentials``) is answered from the gateway's
token store, so no collector issues a credential of its own (which, for a token, would replace the
gateway's): KIS's WebSocket approval key (``POST /oauth2/Approval``) and Kiwoom's access token, the very
token the gateway's own calls use. The approval key is issued by the token rules (``tokens``): one
issuer at a time across instances, the shared copy in Redis (``<prefix>approval:KIS:<fingerprint>``),
one issuance a minute, a slot of the key's limiter, renewed ten minutes before it expires. Its answer has
no expiry field; it is taken to live a day (``providers.kis.APPROVAL_KEY_LIFETIME_S``).

The answer carries the secret and its expiry in ``data`` (``hubclient.models.WebSocketCredentials``). It
is never logged and never kept in an idempotency record (a redelivery is simply answered again); it goes
only to the reply partition the request named, which is on an audit topic: see docs/GATEWAY.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Literal

from hubclient.models import ApiRequest, ApiResponse, Provider, Status, WebSocketCredentials
from services.gateway.clock import Clock
from services.gateway.errors import Expired, GatewayError
from services.gateway.pool import Pool
from services.gateway.providers.base import TokenGrant, UpstreamAnswer, UpstreamRequest
from services.gateway.providers.kis import KisAdapter
from services.gateway.responses import Responder
from services.gateway.tokens import TokenManager

CredentialKind = Literal["approval_key", "access_token"]


class ApprovalIssuer:
    """KIS's WebSocket approval key as a ``TokenIssuer``: its call, and its answer read on the clock."""

    def __init__(self, adapter: KisAdapter, clock: Clock) -> None:
        self._adapter = adapter
        self._clock = clock

    def token_request(self) -> UpstreamRequest:
        """``POST /oauth2/Approval``."""
        return self._adapter.approval_request()

    def parse_token(self, answer: UpstreamAnswer) -> TokenGrant:
        """The approval key, taken to live a day from now."""
        return self._adapter.parse_approval(answer, self._clock.time())


class CredentialLender:
    """Answers ``websocket_credentials`` requests from the token managers."""

    def __init__(
        self,
        *,
        tokens: TokenManager,
        approvals: TokenManager,
        responder: Responder,
        clock: Clock,
        reply_budget_s: Callable[[], float],
        pools: Mapping[Provider, Pool],
    ) -> None:
        self._sources: dict[Provider, tuple[TokenManager, CredentialKind]] = {
            Provider.KIS: (approvals, "approval_key"),
            Provider.KIWOOM: (tokens, "access_token"),
        }
        self._responder = responder
        self._clock = clock
        self._reply_budget_s = reply_budget_s
        self._pools = pools
        self._background: set[asyncio.Future[TokenGrant]] = set()

    async def lend(self, request: ApiRequest) -> ApiResponse:
        """The terminal answer: ``ok`` with the credential in ``data``, or the error it came to."""
        try:
            grant, kind = await self._grant(request)
        except GatewayError as exc:
            return self._responder.error(request, exc)
        credentials = WebSocketCredentials(
            provider=request.provider,
            kind=kind,
            secret=grant.access_token,
            expires_at_ms=int(grant.expires_at_s * 1000),
        )
        answer = self._responder.answer(request, Status.OK)
        return answer.model_copy(update={"data": credentials.model_dump(mode="json")})

    async def _grant(self, request: ApiRequest) -> tuple[TokenGrant, CredentialKind]:
        pool = self._pools[request.provider]
        # the named member's, else the pool's first (the provider's own key when it has one)
        member = pool.named(request.credential) if request.credential is not None else pool.members[0]
        now_s = self._clock.time()
        if request.deadline_ms <= now_s * 1000:
            raise Expired("deadline_passed")
        left_s = request.deadline_ms / 1000 - now_s - self._reply_budget_s()
        if left_s <= 0:
            raise Expired("deadline_too_close")
        manager, kind = self._sources[request.provider]
        grant = asyncio.ensure_future(manager.grant(member.domain))
        timer = asyncio.ensure_future(self._clock.sleep(left_s))
        try:
            await asyncio.wait({grant, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not grant.done():  # an issuance under way finishes for the next asker
                self._background.add(grant)
                grant.add_done_callback(self._settled)
        if not grant.done():
            raise Expired("deadline_too_close", "no credential could be had before the deadline")
        return grant.result(), kind

    def _settled(self, grant: asyncio.Future[TokenGrant]) -> None:
        self._background.discard(grant)
        if not grant.cancelled():
            grant.exception()  # retrieved: its error was (or will be) answered to whoever asks next
