"""Simulated KIS Open API servers (real and mock) under ``/kis/real`` and ``/kis/mock``.

OAuth: ``POST /oauth2/tokenP`` (24 h token, absolute ``access_token_token_expired``; one issuance per
60 s per appkey, else HTTP 403 ``EGW00133``; a re-issue within 6 h returns the same token and expiry),
``POST /oauth2/revokeP``, ``POST /oauth2/Approval`` (body field ``secretkey``; ``appsecret`` accepted too).
``POST /uapi/hashkey`` returns ``{"BODY", "HASH"}``; a ``hashkey`` header on an order must match it.

Every ``/uapi/...`` TR call passes, in order: the referee (arrival counted), faults, the per-second limit
(``EGW00201``), the appkey/appsecret headers (``EGW00102``-``EGW00105`` as HTTP 403, ``EGW02004`` HTTP 500
for a key of the other environment), the bearer token (``EGW00121`` unknown/revoked/invalidated,
``EGW00123`` expired; HTTP ``kis_token_error_status``), ``custtype`` (P/B when sent), then the tr_id
(``OPSQ0002`` unknown, ``MCA00124`` real-only TR on mock). GET query names are case-insensitive; POST
body keys must be upper case. The dedicated simulations live in kis_quotes.py and kis_trading.py and are
tried first; every other ``hubclient.catalog`` entry is resolved by endpoints.py (mock ids, endpoints the
mock server refuses) and answered by generic_kis.py. A path outside both is HTTP 404 ``EGW00300``.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from services.sandbox import generic_kis
from services.sandbox import kis_envelope as kenv
from services.sandbox.endpoints import Resolution, kis_index, resolve_kis
from services.sandbox.kis_envelope import KisCall, TrSpec
from services.sandbox.kis_quotes import QUOTE_TRS
from services.sandbox.kis_trading import TRADING_TRS
from services.sandbox.referee import Arrival, Environment
from services.sandbox.state import STATE, SandboxState
from services.sandbox.tokens import CredentialCheck, TokenStatus
from services.sandbox.wire import Reply, gate, read_json

ENV_PATTERN = "{env:real|mock}"
TRS: dict[str, dict[str, TrSpec]] = {**QUOTE_TRS, **TRADING_TRS}
_CREDENTIAL_CODES = {
    CredentialCheck.MISSING_KEY: "EGW00102",
    CredentialCheck.BAD_KEY: "EGW00103",
    CredentialCheck.MISSING_SECRET: "EGW00104",
    CredentialCheck.BAD_SECRET: "EGW00105",
}


class _Answers:
    """KIS throttle and 5xx answers, in the TR envelope or the OAuth one."""

    def __init__(self, state: SandboxState, oauth: bool = False) -> None:
        self._state = state
        self._oauth = oauth

    def throttled(self, tr_id: str) -> Reply:
        status = self._state.settings.kis_throttle_status
        if self._oauth:
            return kenv.oauth_error("EGW00201", status)
        return kenv.error(status, "EGW00201", tr_id)

    def class_throttled(self, tr_id: str, limit_class: str, rate_per_s: int) -> Reply:
        del limit_class, rate_per_s  # KIS's one class limit is the ledger's
        return kenv.ledger_throttled(self._state.settings.kis_throttle_status, tr_id)

    def server_error(self, status: int) -> Reply:
        if self._oauth:
            return kenv.oauth_error("EGW00002", status)
        return kenv.error(status, "EGW00002")


def _env(request: web.Request) -> tuple[SandboxState, Environment]:
    state = request.app[STATE]
    return state, state.environments[f"kis/{request.match_info['env']}"]


def _wrong_env_code(env: Environment) -> str:
    return "EGW02004" if env.name == "real" else "EGW02004/mock"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _credential_error(
    check: CredentialCheck, env: Environment, oauth: bool, tr_id: str | None
) -> Reply | None:
    if check is CredentialCheck.OK:
        return None
    if check is CredentialCheck.OTHER_ENVIRONMENT:
        code = _wrong_env_code(env)
        return kenv.oauth_error(code) if oauth else kenv.error(500, code, tr_id)
    code = _CREDENTIAL_CODES[check]
    return kenv.oauth_error(code) if oauth else kenv.error(403, code, tr_id)


# -- OAuth ------------------------------------------------------------------------------------------
async def token(request: web.Request) -> web.Response:
    """POST /oauth2/tokenP: issue or re-issue an access token."""
    state, env = _env(request)
    body = await read_json(request)
    appkey = _text((body or {}).get("appkey"))

    async def handle(arrival: Arrival) -> Reply:
        if body is None:
            return kenv.oauth_error("EGW00101")
        grant = body.get("grant_type")
        if not grant:
            return kenv.oauth_error("EGW00115")
        if grant != "client_credentials":
            return kenv.oauth_error("EGW00116")
        secret = _text(body.get("appsecret")) or ""
        failed = _credential_error(state.kis_credentials.check(env.name, appkey, secret), env, True, None)
        if failed is not None or appkey is None:
            return failed or kenv.oauth_error("EGW00102")
        issued = state.kis_tokens.issue(env.name, appkey)
        if issued.record is None:
            state.referee.token_refused(env.env_id, arrival.appkey)
            return kenv.oauth_error("EGW00133")
        state.kis_credentials.bind(env.name, appkey, secret)
        state.referee.token_issued(env.env_id, arrival.appkey, issued.new)
        record = issued.record
        remaining_s = int((record.expires_at - state.clock.now()).total_seconds())
        return Reply(
            200,
            {
                "access_token": record.token,
                "access_token_token_expired": record.expires_at.strftime("%Y-%m-%d %H:%M:%S"),
                "token_type": "Bearer",
                "expires_in": remaining_s,
            },
        )

    return await gate(request, state, env.env_id, appkey, "tokenP", _Answers(state, True), handle, False)


async def revoke(request: web.Request) -> web.Response:
    """POST /oauth2/revokeP: revoke a token."""
    state, env = _env(request)
    body = await read_json(request)
    appkey = _text((body or {}).get("appkey"))

    async def handle(arrival: Arrival) -> Reply:
        if body is None:
            return kenv.oauth_error("EGW00101")
        secret = _text(body.get("appsecret")) or ""
        failed = _credential_error(state.kis_credentials.check(env.name, appkey, secret), env, True, None)
        if failed is not None:
            return failed
        if not state.kis_tokens.revoke(env.name, _text(body.get("token")) or "", appkey):
            return kenv.oauth_error("EGW00121")
        return Reply(200, {"code": 200, "message": "접근토큰 폐기에 성공하였습니다"})

    return await gate(request, state, env.env_id, appkey, "revokeP", _Answers(state, True), handle, False)


async def approval(request: web.Request) -> web.Response:
    """POST /oauth2/Approval: a WebSocket approval key."""
    state, env = _env(request)
    body = await read_json(request)
    appkey = _text((body or {}).get("appkey"))

    async def handle(arrival: Arrival) -> Reply:
        if body is None:
            return kenv.oauth_error("EGW00101")
        if body.get("grant_type") != "client_credentials":
            return kenv.oauth_error("EGW00115" if not body.get("grant_type") else "EGW00116")
        secret = _text(body.get("secretkey")) or _text(body.get("appsecret")) or ""
        failed = _credential_error(state.kis_credentials.check(env.name, appkey, secret), env, True, None)
        if failed is not None:
            return failed
        return Reply(200, {"approval_key": str(uuid.uuid4())})

    return await gate(request, state, env.env_id, appkey, "Approval", _Answers(state, True), handle, False)


async def hashkey(request: web.Request) -> web.Response:
    """POST /uapi/hashkey: hash an order body (no token needed)."""
    state, env = _env(request)
    body = await read_json(request)
    appkey = request.headers.get("appkey")

    async def handle(arrival: Arrival) -> Reply:
        check = state.kis_credentials.check(env.name, appkey, request.headers.get("appsecret", ""))
        failed = _credential_error(check, env, False, None)
        if failed is not None:
            return failed
        if body is None:
            return kenv.error(500, "EGW00101")
        return Reply(200, {"BODY": body, "HASH": kenv.hash_of(body)})

    return await gate(request, state, env.env_id, appkey, "hashkey", _Answers(state), handle)


# -- TR calls ---------------------------------------------------------------------------------------
def _authenticate(state: SandboxState, env: Environment, request: web.Request, tr_id: str) -> Reply | None:
    headers = request.headers
    appkey = headers.get("appkey")
    check = state.kis_credentials.check(env.name, appkey, headers.get("appsecret", ""))
    failed = _credential_error(check, env, False, tr_id)
    if failed is not None:
        return failed
    token_status = state.settings.kis_token_error_status
    authorization = headers.get("authorization", "")
    scheme, _, bearer = authorization.partition(" ")
    if authorization and scheme.lower() != "bearer":
        return kenv.error(token_status, "EGW00205", tr_id)
    status, _record = state.kis_tokens.check(env.name, bearer.strip(), appkey)
    if status is TokenStatus.EXPIRED:
        return kenv.error(token_status, "EGW00123", tr_id)
    if status is TokenStatus.OTHER_ENVIRONMENT:
        return kenv.error(500, _wrong_env_code(env), tr_id)
    if status is not TokenStatus.OK:
        return kenv.error(token_status, "EGW00121", tr_id)
    custtype = headers.get("custtype")
    if custtype is not None and custtype not in ("P", "B"):
        return kenv.error(500, "EGW00208", tr_id)
    return None


async def uapi(request: web.Request) -> web.Response:
    """Any /uapi/... TR call: authenticate, then route by path and tr_id header."""
    state, env = _env(request)
    path = "/uapi/" + request.match_info["tail"]
    tr_id = request.headers.get("tr_id", "")
    appkey = request.headers.get("appkey")
    body = await read_json(request) if request.method == "POST" else None

    def call() -> KisCall:
        return KisCall(
            state=state,
            env=env,
            tr_id=tr_id,
            appkey=appkey or "",
            query={key.upper(): value for key, value in request.query.items()},
            body=body,
            headers=request.headers,
            now=state.clock.now(),
        )

    async def handle(arrival: Arrival) -> Reply:
        routes, catalog = TRS.get(path, {}), kis_index().get(path)
        if not routes and catalog is None:
            return kenv.error(404, "EGW00300", tr_id or None)
        failed = _authenticate(state, env, request, tr_id)
        if failed is not None:
            return failed
        spec = routes.get(tr_id)
        if spec is not None:  # a dedicated simulation
            if env.name not in spec.envs:
                return kenv.error(500, spec.unsupported, tr_id)
            if request.method != spec.method:
                return kenv.error(405, "EGW00101", tr_id)
            return spec.handler(call())
        found = resolve_kis(catalog, tr_id, env.name) if catalog else Resolution(None, "OPSQ0002")
        if found.spec is None:
            return kenv.error(500, found.code, tr_id or None)
        if request.method != found.spec.method:
            return kenv.error(405, "EGW00101", tr_id)
        return generic_kis.serve(call(), found.spec)

    return await gate(request, state, env.env_id, appkey, tr_id or path, _Answers(state), handle)


def add_routes(app: web.Application) -> None:
    """Register both KIS environments on ``app``."""
    prefix = f"/kis/{ENV_PATTERN}"
    app.router.add_post(f"{prefix}/oauth2/tokenP", token)
    app.router.add_post(f"{prefix}/oauth2/revokeP", revoke)
    app.router.add_post(f"{prefix}/oauth2/Approval", approval)
    app.router.add_post(f"{prefix}/uapi/hashkey", hashkey)
    app.router.add_route("*", prefix + "/uapi/{tail:.+}", uapi)
