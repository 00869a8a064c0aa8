"""KIS OAuth rules and the authentication errors of TR calls."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.sandbox.clock import KST
from tests.sandbox.sandbox_kit import (
    QUOTES,
    SESSION_NOW,
    TRADING,
    Sandbox,
    SandboxFactory,
    kis_key,
    kis_secret,
)


async def test_token_response_shape(sandbox: Sandbox) -> None:
    """tokenP answers a Bearer token, expires_in 86400 and an absolute KST expiry 24 h ahead."""
    resp = await sandbox.kis_token_response()
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"access_token", "access_token_token_expired", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86400
    assert body["access_token"].startswith("eyJ") and body["access_token"].count(".") == 2
    expiry = datetime.strptime(body["access_token_token_expired"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST)
    assert expiry == SESSION_NOW + timedelta(days=1)


async def test_second_issuance_within_60s_refused(sandbox: Sandbox) -> None:
    """A second tokenP within 60 s gets HTTP 403 EGW00133 in the error_code/error_description envelope."""
    await sandbox.kis_token()
    await sandbox.set_clock(advance_s=59)
    resp = await sandbox.kis_token_response()
    assert resp.status == 403
    assert await resp.json() == {
        "error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
        "error_code": "EGW00133",
    }
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert stats["tokens_issued"] == 1 and stats["token_refusals"] == 1


async def test_reissue_after_60s_returns_same_token(sandbox: Sandbox) -> None:
    """After 60 s but within 6 h tokenP returns the same token and the same absolute expiry."""
    first = await (await sandbox.kis_token_response()).json()
    await sandbox.set_clock(advance_s=61)
    second = await (await sandbox.kis_token_response()).json()
    assert second["access_token"] == first["access_token"]
    assert second["access_token_token_expired"] == first["access_token_token_expired"]
    assert second["expires_in"] == 86400 - 61  # remaining lifetime, which is why expires_in misleads
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert (stats["tokens_issued"], stats["tokens_new"]) == (2, 1)


async def test_refused_attempt_does_not_restart_interval(sandbox: Sandbox) -> None:
    """A refused attempt at +30 s does not push the next allowed issuance past +60 s."""
    await sandbox.kis_token()
    await sandbox.set_clock(advance_s=30)
    assert (await sandbox.kis_token_response()).status == 403
    await sandbox.set_clock(advance_s=30)
    assert (await sandbox.kis_token_response()).status == 200


async def test_new_token_after_six_hours(sandbox: Sandbox) -> None:
    """Past the 6 h reuse window tokenP mints a new token; the old one stays valid until its own expiry."""
    old = await sandbox.kis_token()
    await sandbox.set_clock(advance_s=6 * 3600 + 1)
    new = await sandbox.kis_token()
    assert new != old
    assert (await sandbox.kis_price(old)).status == 200
    assert (await sandbox.kis_price(new)).status == 200


async def test_expired_token_is_http_500_egw00123(sandbox: Sandbox) -> None:
    """A token past access_token_token_expired gets HTTP 500 EGW00123 in the normal envelope."""
    token = await sandbox.kis_token()
    await sandbox.set_clock(advance_s=24 * 3600)
    resp = await sandbox.kis_price(token)
    assert resp.status == 500
    assert await resp.json() == {"rt_cd": "1", "msg_cd": "EGW00123", "msg1": "기간이 만료된 token 입니다."}
    assert resp.headers["tr_id"] == "FHKST01010100"


async def test_invalid_token_egw00121(sandbox: Sandbox) -> None:
    """A garbage, missing or foreign-key bearer token gets HTTP 500 EGW00121."""
    token = await sandbox.kis_token()
    garbage = await sandbox.kis_price("not-a-token")
    assert garbage.status == 500
    assert await garbage.json() == {"rt_cd": "1", "msg_cd": "EGW00121", "msg1": "유효하지 않은 token 입니다."}
    other_key, other_secret = kis_key(9), kis_secret(9)
    await sandbox.kis_token(key=other_key, secret=other_secret)
    params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
    foreign = await sandbox.kis_get(
        f"{QUOTES}/inquire-price",
        "FHKST01010100",
        params,
        token,
        key=other_key,
        extra_headers={"appsecret": other_secret},
    )
    assert (await foreign.json())["msg_cd"] == "EGW00121"


async def test_token_error_status_setting(make_sandbox: SandboxFactory) -> None:
    """kis_token_error_status switches the HTTP status of token errors (body unchanged)."""
    sandbox = await make_sandbox(kis_token_error_status=401)
    await sandbox.kis_token()
    resp = await sandbox.kis_price("garbage")
    assert resp.status == 401 and (await resp.json())["msg_cd"] == "EGW00121"


async def test_malformed_appkey_and_secret(sandbox: Sandbox) -> None:
    """A 35-character appkey gets 403 EGW00103; a 179-character secret 403 EGW00105; both envelopes."""
    resp = await sandbox.kis_token_response(key="P" * 35)
    assert resp.status == 403
    assert await resp.json() == {"error_description": "유효하지 않은 AppKey입니다.", "error_code": "EGW00103"}
    resp = await sandbox.kis_token_response(secret="s" * 179)
    assert resp.status == 403 and (await resp.json())["error_code"] == "EGW00105"
    token = await sandbox.kis_token()
    data = await sandbox.kis_price(token, key="P" * 35)
    assert data.status == 403
    body = await data.json()
    assert (body["rt_cd"], body["msg_cd"]) == ("1", "EGW00103")


async def test_grant_type_checked(sandbox: Sandbox) -> None:
    """tokenP without grant_type is EGW00115, with another grant type EGW00116."""
    missing = await sandbox.client.post(
        "/kis/real/oauth2/tokenP", json={"appkey": kis_key(), "appsecret": kis_secret()}
    )
    assert missing.status == 403 and (await missing.json())["error_code"] == "EGW00115"
    body = {"grant_type": "password", "appkey": kis_key(), "appsecret": kis_secret()}
    wrong = await sandbox.client.post("/kis/real/oauth2/tokenP", json=body)
    assert (await wrong.json())["error_code"] == "EGW00116"


async def test_mock_key_on_real_is_egw02004(sandbox: Sandbox) -> None:
    """A key that got its token on mock is refused on real with EGW02004 (TR: HTTP 500; tokenP: 403)."""
    mock_token = await sandbox.kis_token("mock")
    resp = await sandbox.kis_price(mock_token, env="real")
    assert resp.status == 500
    assert await resp.json() == {
        "rt_cd": "1",
        "msg_cd": "EGW02004",
        "msg1": "실전투자 도메인은 모의투자 앱키로 호출하실 수 없습니다.",
    }
    token_resp = await sandbox.kis_token_response("real")
    assert token_resp.status == 403 and (await token_resp.json())["error_code"] == "EGW02004"
    assert (await sandbox.kis_price(mock_token, env="mock")).status == 200


async def test_allow_lists(make_sandbox: SandboxFactory) -> None:
    """With allow-lists only listed keys work; a key listed for mock is EGW02004 on real, others EGW00103."""
    real_key, mock_key = kis_key(1), kis_key(2)
    sandbox = await make_sandbox(kis_real_appkeys=[real_key], kis_mock_appkeys=[mock_key])
    assert (await sandbox.kis_token_response("real", real_key)).status == 200
    stranger = await sandbox.kis_token_response("real", kis_key(3))
    assert (await stranger.json())["error_code"] == "EGW00103"
    wrong_env = await sandbox.kis_token_response("real", mock_key)
    assert (await wrong_env.json())["error_code"] == "EGW02004"
    assert (await sandbox.kis_token_response("mock", mock_key)).status == 200


async def test_secret_is_bound_to_the_key(sandbox: Sandbox) -> None:
    """Once a key obtained a token with one secret, a different well-formed secret is EGW00105."""
    token = await sandbox.kis_token()
    params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
    resp = await sandbox.kis_get(
        f"{QUOTES}/inquire-price", "FHKST01010100", params, token, extra_headers={"appsecret": kis_secret(2)}
    )
    assert resp.status == 403 and (await resp.json())["msg_cd"] == "EGW00105"


async def test_revoke(sandbox: Sandbox) -> None:
    """revokeP kills the token (then EGW00121); revoking a bad token is 403 EGW00121."""
    token = await sandbox.kis_token()
    body = {"appkey": kis_key(), "appsecret": kis_secret(), "token": token}
    resp = await sandbox.client.post("/kis/real/oauth2/revokeP", json=body)
    assert resp.status == 200
    assert await resp.json() == {"code": 200, "message": "접근토큰 폐기에 성공하였습니다"}
    assert (await (await sandbox.kis_price(token)).json())["msg_cd"] == "EGW00121"
    again = await sandbox.client.post("/kis/real/oauth2/revokeP", json=body)
    assert again.status == 403 and (await again.json())["error_code"] == "EGW00121"


async def test_approval_key(sandbox: Sandbox) -> None:
    """/oauth2/Approval takes secretkey (not appsecret) and returns an approval_key."""
    body = {"grant_type": "client_credentials", "appkey": kis_key(), "secretkey": kis_secret()}
    resp = await sandbox.client.post("/kis/real/oauth2/Approval", json=body)
    assert resp.status == 200
    key = (await resp.json())["approval_key"]
    assert isinstance(key, str) and len(key) == 36


async def test_hashkey_and_order_hash_check(sandbox: Sandbox) -> None:
    """/uapi/hashkey returns BODY and HASH; an order whose hashkey header differs is EGW00131."""
    order = {
        "CANO": "81055689",
        "ACNT_PRDT_CD": "01",
        "PDNO": "005930",
        "ORD_DVSN": "00",
        "ORD_QTY": "1",
        "ORD_UNPR": "62000",
    }
    headers = {"appkey": kis_key(), "appsecret": kis_secret(), "content-type": "application/json"}
    resp = await sandbox.client.post("/kis/real/uapi/hashkey", json=order, headers=headers)
    assert resp.status == 200
    data = await resp.json()
    assert data["BODY"] == order and len(data["HASH"]) == 64
    token = await sandbox.kis_token()
    good = {**sandbox.kis_headers("TTTC0012U", token), "hashkey": data["HASH"]}
    ok = await sandbox.client.post(f"/kis/real{TRADING}/order-cash", json=order, headers=good)
    assert ok.status == 200 and (await ok.json())["rt_cd"] == "0"
    bad = {**good, "hashkey": "0" * 64}
    resp = await sandbox.client.post(f"/kis/real{TRADING}/order-cash", json=order, headers=bad)
    assert resp.status == 500 and (await resp.json())["msg_cd"] == "EGW00131"
