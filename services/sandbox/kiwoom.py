"""Simulated Kiwoom REST API servers (real and mock) under ``/kiwoom/real`` and ``/kiwoom/mock``.

OAuth: ``POST /oauth2/token`` (au10001; body ``grant_type``, ``appkey``, ``secretkey``) answers
``{"expires_dt": "%Y%m%d%H%M%S" in KST wall time, "token_type": "bearer", "token", "return_code": 0,
"return_msg"}``; ``POST /oauth2/revoke`` (au10002). An ``api-id`` header is optional on these (the
official client sends none). Kiwoom publishes no issuance limit; the sandbox applies
``token_issue_interval_s`` to Kiwoom too and refuses early attempts like a throttled call (``5`` +
``[1700:... API ID=au10001]``), and mints a new token on each issuance unless ``kiwoom_token_reuse_s``.

Every TR is ``POST /api/{dostk|us}/{group}`` routed by the ``api-id`` header over the catalog
(endpoints.py): a missing one answers ``1501``, an unknown one ``1505``, one of another group ``1504``, a
planned overseas one ``1505`` saying it is not live. Order of checks: referee (arrival, attributed to
the appkey that owns the bearer token), faults, per-second limit (``5`` + ``[1700:...]``, HTTP 429), api-id,
token (``3`` + ``[8005:...]``; a token of the sibling server ``[8031:...]``), body, then the TR.
Charts live in kiwoom_charts.py; orders ``kt10000`` (buy) / ``kt10001`` (sell) are here: with the
order-timeout fault an accepted order is recorded and its connection is cut after the delay. Every other
catalog api-id is answered by generic_kiwoom.py.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.sandbox import generic_kiwoom
from services.sandbox import kiwoom_envelope as kw
from services.sandbox.endpoints import kiwoom_groups, kiwoom_index, resolve_kiwoom
from services.sandbox.kiwoom_charts import CHART_APIS
from services.sandbox.kiwoom_envelope import CONTENT_TYPE, Handler, KiwoomCall
from services.sandbox.referee import Arrival, Environment
from services.sandbox.state import STATE, Order, SandboxState
from services.sandbox.tokens import CredentialCheck, TokenStatus
from services.sandbox.wire import Reply, gate, read_json

ENV_PATTERN = "{env:real|mock}"
EXCHANGES = ("KRX", "NXT", "SOR")
TRADE_TYPES = (
    "0",
    "3",
    "5",
    "6",
    "7",
    "10",
    "13",
    "16",
    "20",
    "23",
    "26",
    "28",
    "29",
    "30",
    "31",
    "61",
    "62",
    "81",
)


def _text(body: dict[str, Any] | None, name: str) -> str | None:
    value = (body or {}).get(name)
    return value if isinstance(value, str) else None


def order(call: KiwoomCall) -> Reply:
    """kt10000/kt10001: a cash buy or sell order."""
    body = call.body
    for name in ("dmst_stex_tp", "stk_cd", "ord_qty", "trde_tp"):
        if not body.get(name):
            return kw.error(1511, call.api_id, extra=name)
    for name in ("dmst_stex_tp", "stk_cd", "ord_qty", "ord_uv", "trde_tp", "cond_uv"):
        if name in body and not isinstance(body[name], str):
            return kw.error(1517, call.api_id, extra=name)
    if body["dmst_stex_tp"] not in EXCHANGES:
        return kw.error(1517, call.api_id, extra="dmst_stex_tp")
    code = str(body["stk_cd"]).removesuffix("_NX").removesuffix("_AL")
    if call.state.market.symbol(code) is None:
        return kw.error(1902, call.api_id)
    quantity, price = str(body["ord_qty"]), str(body.get("ord_uv") or "0")
    if not quantity.isdigit() or int(quantity) <= 0:
        return kw.error(1517, call.api_id, extra="ord_qty")
    if body["trde_tp"] not in TRADE_TYPES or not price.isdigit():
        return kw.error(
            1517, call.api_id, extra="trde_tp" if body["trde_tp"] not in TRADE_TYPES else "ord_uv"
        )
    if body["trde_tp"] == "0" and int(price) == 0:
        return kw.error(1511, call.api_id, extra="ord_uv")
    state, env_id = call.state, call.env.env_id
    order_no = f"{state.next_order_no(env_id):07d}"
    timed_out = state.faults.order_times_out(env_id)
    state.record_order(
        Order(
            env_id=env_id,
            appkey=call.appkey,
            order_no=order_no,
            tr_id=call.api_id,
            symbol=code,
            side="buy" if call.api_id == "kt10000" else "sell",
            quantity=int(quantity),
            price=int(price),
            accepted_at=call.now,
            timed_out=timed_out,
        )
    )
    if timed_out:
        delay_s = state.faults.settings.order_timeout_delay_ms / 1000.0
        return Reply(504, {}, "timeout", drop=True, delay_s=delay_s)
    return kw.ok(call.api_id, {"ord_no": order_no, "dmst_stex_tp": body["dmst_stex_tp"]})


# api-id -> dedicated simulation; every other catalog api-id is answered by generic_kiwoom
DEDICATED: dict[str, Handler] = {**CHART_APIS, "kt10000": order, "kt10001": order}


class _Answers:
    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def throttled(self, tr_id: str) -> Reply:
        return kw.error(1700, tr_id, self._state.settings.kiwoom_throttle_status)

    def class_throttled(self, tr_id: str, limit_class: str, rate_per_s: int) -> Reply:
        del limit_class
        return kw.class_throttled(tr_id, self._state.settings.kiwoom_throttle_status, rate_per_s)

    def server_error(self, status: int) -> Reply:
        return kw.error(1999, status=status)


def _env(request: web.Request) -> tuple[SandboxState, Environment]:
    state = request.app[STATE]
    return state, state.environments[f"kiwoom/{request.match_info['env']}"]


def _oauth_api_id(request: web.Request, expected: str) -> Reply | None:
    sent = request.headers.get("api-id")
    if sent is not None and sent != expected:
        return kw.error(1504, sent)
    return None


def _credentials(state: SandboxState, env: Environment, body: dict[str, Any]) -> Reply | None:
    appkey, secret = _text(body, "appkey"), _text(body, "secretkey")
    if not appkey or not secret:
        return kw.error(8020)
    check = state.kiwoom_credentials.check(env.name, appkey, secret)
    if check is CredentialCheck.OTHER_ENVIRONMENT:
        return kw.error(8030)
    if check is not CredentialCheck.OK:
        return kw.error(8001)
    return None


async def token(request: web.Request) -> web.Response:
    """POST /oauth2/token (au10001): issue a token."""
    state, env = _env(request)
    body = await read_json(request)
    appkey = _text(body, "appkey")

    async def handle(arrival: Arrival) -> Reply:
        failed = _oauth_api_id(request, "au10001")
        if failed is not None:
            return failed
        if body is None or not body.get("grant_type"):
            return kw.error(8011)
        if body["grant_type"] != "client_credentials":
            return kw.error(8012)
        failed = _credentials(state, env, body)
        if failed is not None or appkey is None:
            return failed or kw.error(8020)
        issued = state.kiwoom_tokens.issue(env.name, appkey)
        if issued.record is None:
            state.referee.token_refused(env.env_id, arrival.appkey)
            return kw.error(1700, "au10001", state.settings.kiwoom_throttle_status)
        state.kiwoom_credentials.bind(env.name, appkey, _text(body, "secretkey") or "")
        state.referee.token_issued(env.env_id, arrival.appkey, issued.new)
        record = issued.record
        return Reply(
            200,
            {
                "expires_dt": record.expires_at.strftime("%Y%m%d%H%M%S"),
                "token_type": "bearer",
                "token": record.token,
                "return_code": 0,
                "return_msg": kw.OK_MESSAGE,
            },
        )

    return await gate(
        request, state, env.env_id, appkey, "au10001", _Answers(state), handle, False, CONTENT_TYPE
    )


async def revoke(request: web.Request) -> web.Response:
    """POST /oauth2/revoke (au10002): revoke a token."""
    state, env = _env(request)
    body = await read_json(request)
    appkey = _text(body, "appkey")

    async def handle(arrival: Arrival) -> Reply:
        failed = _oauth_api_id(request, "au10002")
        if failed is not None:
            return failed
        failed = _credentials(state, env, body or {})
        if failed is not None:
            return failed
        if not state.kiwoom_tokens.revoke(env.name, _text(body, "token") or "", appkey):
            return kw.error(8005)
        return Reply(200, {"return_code": 0, "return_msg": kw.OK_MESSAGE})

    return await gate(
        request, state, env.env_id, appkey, "au10002", _Answers(state), handle, False, CONTENT_TYPE
    )


async def dostk(request: web.Request) -> web.Response:
    """POST /api/{dostk,us}/{group}: route by api-id, authenticate, serve."""
    state, env = _env(request)
    group = request.match_info["group"]  # dostk/chart, us/ordr, ...
    api_id = request.headers.get("api-id", "")
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    bearer = bearer.strip() if scheme.lower() == "bearer" else ""
    owner = state.kiwoom_tokens.owner(bearer)
    appkey = owner.appkey if owner is not None and owner.env == env.name else None
    body = await read_json(request)

    async def handle(arrival: Arrival) -> Reply:
        found = resolve_kiwoom(kiwoom_index(), group, api_id)
        if found.spec is None:
            return kw.error(int(found.code), api_id, extra=found.detail)
        spec = found.spec
        status, record = state.kiwoom_tokens.check(env.name, bearer)
        if status is TokenStatus.OTHER_ENVIRONMENT:
            return kw.error(8031, api_id)
        if status is not TokenStatus.OK or record is None:
            return kw.error(8005, api_id)
        if body is None:
            return kw.error(1517, api_id, extra="body")
        if request.headers.get("cont-yn", "") == "Y" and not request.headers.get("next-key"):
            return kw.error(1517, api_id, extra="next-key")
        call = KiwoomCall(
            state=state,
            env=env,
            api_id=api_id,
            appkey=record.appkey,
            body=body,
            headers=request.headers,
            now=state.clock.now(),
        )
        handler = DEDICATED.get(api_id)
        return handler(call) if handler is not None else generic_kiwoom.serve(call, spec)

    return await gate(
        request, state, env.env_id, appkey, api_id or "(none)", _Answers(state), handle, True, CONTENT_TYPE
    )


def add_routes(app: web.Application) -> None:
    """Register both Kiwoom environments on ``app``."""
    prefix = f"/kiwoom/{ENV_PATTERN}"
    app.router.add_post(f"{prefix}/oauth2/token", token)
    app.router.add_post(f"{prefix}/oauth2/revoke", revoke)
    groups = "|".join(sorted(kiwoom_groups()))
    app.router.add_post(prefix + "/api/{group:" + groups + "}", dostk)
