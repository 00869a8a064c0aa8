"""The sandbox's Kiwoom order checks and OAuth refusals give Kiwoom's detail codes (the in-process sandbox);
a refused order never reaches the order book."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.sandbox_kit import KIWOOM_KEY, KIWOOM_SECRET, Sandbox

ORDER = {"dmst_stex_tp": "KRX", "stk_cd": "005930", "ord_qty": "3", "ord_uv": "62000", "trde_tp": "0"}


def detail(body: dict[str, Any]) -> str:
    """The ``[code:text]`` of a Kiwoom answer, e.g. ``[1517:...(ord_qty)]``."""
    message: str = body["return_msg"]
    return message[message.index("[") :]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"stk_cd": ""}, "[1511:"),
        ({"ord_qty": 3}, "[1517:"),
        ({"dmst_stex_tp": "NYSE"}, "(dmst_stex_tp)]"),
        ({"stk_cd": "999999"}, "[1902:"),
        ({"ord_qty": "0"}, "(ord_qty)]"),
        ({"trde_tp": "99"}, "(trde_tp)]"),
        ({"ord_uv": "12.5"}, "(ord_uv)]"),
        ({"ord_uv": "0"}, "[1511:"),
    ],
)
async def test_a_bad_order_is_refused_and_not_booked(
    sandbox: Sandbox, changes: dict[str, object], expected: str
) -> None:
    """Each malformed field of a cash order is named in the refusal; the order book stays empty."""
    token = await sandbox.kiwoom_token()
    resp = await sandbox.kiwoom_post("ordr", "kt10000", {**ORDER, **changes}, token)
    body = await resp.json()
    assert body["return_code"] != 0 and expected in detail(body), body
    assert sandbox.state.orders == []


async def test_a_market_order_needs_no_price(sandbox: Sandbox) -> None:
    """Trade type 3 (market) without a price is booked; a suffixed code (_NX) names the same symbol."""
    token = await sandbox.kiwoom_token()
    market = {**ORDER, "trde_tp": "3", "ord_uv": "", "stk_cd": "005930_NX"}
    body = await (await sandbox.kiwoom_post("ordr", "kt10001", market, token)).json()
    assert body["return_code"] == 0, body
    assert [(o.side, o.quantity) for o in sandbox.state.orders] == [("sell", 3)]


async def oauth(sandbox: Sandbox, path: str, body: object, api_id: str | None = None) -> dict[str, Any]:
    """POST a Kiwoom ``/oauth2/...`` call; the JSON answer."""
    headers = {"api-id": api_id} if api_id else {}
    if isinstance(body, str):
        resp = await sandbox.client.post(f"/kiwoom/real/oauth2/{path}", data=body, headers=headers)
    else:
        resp = await sandbox.client.post(f"/kiwoom/real/oauth2/{path}", json=body, headers=headers)
    answer: dict[str, Any] = await resp.json()
    return answer


CREDENTIALS = {"appkey": KIWOOM_KEY, "secretkey": KIWOOM_SECRET}


@pytest.mark.parametrize(
    ("path", "body", "api_id", "code"),
    [
        ("token", {**CREDENTIALS, "grant_type": "client_credentials"}, "au10002", "[1504:"),
        ("token", "not json", None, "[8011:"),
        ("token", {**CREDENTIALS, "grant_type": "password"}, None, "[8012:"),
        ("token", {"grant_type": "client_credentials", "appkey": KIWOOM_KEY}, None, "[8020:"),
        ("revoke", {**CREDENTIALS, "token": "t"}, "au10001", "[1504:"),
        ("revoke", {"appkey": KIWOOM_KEY}, None, "[8020:"),
        ("revoke", {**CREDENTIALS, "token": "never-issued"}, None, "[8005:"),
    ],
)
async def test_oauth_refusals(
    sandbox: Sandbox, path: str, body: object, api_id: str | None, code: str
) -> None:
    """A wrong api-id header, a bad body, grant type or credentials, or an unknown token: refused."""
    answer = await oauth(sandbox, path, body, api_id)
    assert answer["return_code"] != 0 and detail(answer).startswith(code), answer
    assert "token" not in answer


async def test_tr_calls_need_this_environments_token_and_a_body(sandbox: Sandbox) -> None:
    """Another environment's token is [8031] (its key on the other domain [8030]); a missing token [8005];
    no JSON body or a continuation without its key is [1517]."""
    params = {"stk_cd": "005930"}
    mock = await sandbox.kiwoom_token(env="mock", key="kw-app-9", secret="kw-secret-9")
    other = await (await sandbox.kiwoom_post("stkinfo", "ka10001", params, mock)).json()
    assert detail(other).startswith("[8031:")
    none = await (await sandbox.kiwoom_post("stkinfo", "ka10001", params, "nothing")).json()
    assert detail(none).startswith("[8005:")
    token = await sandbox.kiwoom_token()
    crossed = await (await sandbox.kiwoom_token_response(env="mock")).json()  # the real key, on mock
    assert detail(crossed).startswith("[8030:")
    headers = {"authorization": f"Bearer {token}", "api-id": "ka10001", "content-type": "application/json"}
    raw = await sandbox.client.post("/kiwoom/real/api/dostk/stkinfo", data="{{", headers=headers)
    refused = detail(await raw.json())
    assert refused.startswith("[1517:") and refused.endswith("(body)]")
    cont = await sandbox.kiwoom_post("stkinfo", "ka10001", params, token, headers={"cont-yn": "Y"})
    assert "(next-key)]" in detail(await cont.json())
