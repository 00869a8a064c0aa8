"""The sandbox's KIS OAuth and TR gate refuse bad calls with KIS's codes (the in-process sandbox)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.sandbox_kit import QUOTES, Sandbox, kis_key, kis_secret

PRICE = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}


async def oauth(sandbox: Sandbox, path: str, body: object) -> tuple[int, dict[str, Any]]:
    """POST a KIS ``/oauth2/...`` call (raw text when ``body`` is a string)."""
    if isinstance(body, str):
        resp = await sandbox.client.post(f"/kis/real/oauth2/{path}", data=body)
    else:
        resp = await sandbox.client.post(f"/kis/real/oauth2/{path}", json=body)
    return resp.status, await resp.json()


CREDENTIALS = {"appkey": kis_key(), "appsecret": kis_secret()}


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("tokenP", "not json", "EGW00101"),
        ("tokenP", {**CREDENTIALS}, "EGW00115"),
        ("tokenP", {**CREDENTIALS, "grant_type": "password"}, "EGW00116"),
        ("tokenP", {"grant_type": "client_credentials", "appsecret": kis_secret()}, "EGW00102"),
        ("tokenP", {"grant_type": "client_credentials", "appkey": "short"}, "EGW00103"),
        ("tokenP", {"grant_type": "client_credentials", "appkey": kis_key()}, "EGW00104"),
        ("revokeP", "not json", "EGW00101"),
        ("revokeP", {"appkey": kis_key(), "appsecret": "x", "token": "t"}, "EGW00105"),
        ("revokeP", {**CREDENTIALS, "token": "never-issued"}, "EGW00121"),
        ("Approval", "not json", "EGW00101"),
        ("Approval", {"appkey": kis_key(), "secretkey": kis_secret()}, "EGW00115"),
        ("Approval", {"grant_type": "x", "appkey": kis_key(), "secretkey": kis_secret()}, "EGW00116"),
        ("Approval", {"grant_type": "client_credentials", "appkey": kis_key()}, "EGW00104"),
    ],
)
async def test_oauth_refusals(sandbox: Sandbox, path: str, body: object, code: str) -> None:
    """Each malformed OAuth call is a 403 with KIS's ``error_code`` and nothing issued."""
    status, answer = await oauth(sandbox, path, body)
    assert (status, answer["error_code"]) == (403, code), answer
    assert "access_token" not in answer and "approval_key" not in answer


async def test_hashkey_needs_credentials_and_a_body(sandbox: Sandbox) -> None:
    """``/uapi/hashkey`` without a valid key is refused; with one but no JSON body it is EGW00101."""
    resp = await sandbox.client.post("/kis/real/uapi/hashkey", json={"a": 1}, headers={"appkey": "bad"})
    assert (resp.status, (await resp.json())["msg_cd"]) == (403, "EGW00103")
    headers = {"appkey": kis_key(), "appsecret": kis_secret()}
    resp = await sandbox.client.post("/kis/real/uapi/hashkey", data="{{", headers=headers)
    assert (resp.status, (await resp.json())["msg_cd"]) == (500, "EGW00101")


async def test_tr_gate_refusals(sandbox: Sandbox) -> None:
    """A non-Bearer scheme, another environment's token, a bad custtype, an unknown path or tr_id and the
    wrong method are each refused with KIS's code before any data."""
    token = await sandbox.kis_token()
    path = f"{QUOTES}/inquire-price"

    async def get(headers: dict[str, str], *, env: str = "real", route: str = path) -> tuple[int, str]:
        resp = await sandbox.client.get(f"/kis/{env}{route}", params=PRICE, headers=headers)
        return resp.status, (await resp.json())["msg_cd"]

    good = sandbox.kis_headers("FHKST01010100", token)
    assert await get(good) == (200, "MCA00000")
    assert (await get({**good, "authorization": f"Basic {token}"}))[1] == "EGW00205"
    assert await get({**good, "custtype": "X"}) == (500, "EGW00208")
    assert await get(good, route="/uapi/no/such/path") == (404, "EGW00300")
    assert await get({**good, "tr_id": "ZZZZ0000"}) == (500, "OPSQ0002")
    resp = await sandbox.client.post(f"/kis/real{path}", json=PRICE, headers=good)
    assert (resp.status, (await resp.json())["msg_cd"]) == (405, "EGW00101")
    mock_token = await sandbox.kis_token(env="mock", key=kis_key(2), secret=kis_secret(2))
    # the mock key on the real domain, and the mock token with a real key: both EGW02004
    assert await get(sandbox.kis_headers("FHKST01010100", mock_token, kis_key(2))) == (500, "EGW02004")
    assert await get(sandbox.kis_headers("FHKST01010100", mock_token)) == (500, "EGW02004")
