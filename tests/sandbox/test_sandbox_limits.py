"""Rate limits counted on arrival in a sliding one-second window, and the referee's numbers."""

from __future__ import annotations

import asyncio

from services.sandbox.clock import SimClock
from services.sandbox.referee import Environment, Referee
from tests.sandbox.sandbox_kit import SESSION_NOW, Sandbox, SandboxFactory, kis_key, kis_secret


async def _burst(
    sandbox: Sandbox, n: int, token: str, env: str = "real", key: str | None = None
) -> list[tuple[int, str]]:
    responses = await asyncio.gather(*(sandbox.kis_price(token, env, key) for _ in range(n)))
    out = []
    for resp in responses:
        out.append((resp.status, (await resp.json())["msg_cd"]))
    return out


async def test_burst_of_25_on_kis_real(sandbox: Sandbox) -> None:
    """A burst of 25 on KIS real: 20 succeed, 5 get HTTP 500 EGW00201; referee over_limit 5, max 25."""
    token = await sandbox.kis_token()
    results = await _burst(sandbox, 25, token)
    assert sorted(results).count((200, "MCA00000")) == 20
    assert sorted(results).count((500, "EGW00201")) == 5
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert stats["over_limit"] == 5
    assert stats["max_in_window"] == 25
    assert stats["by_tr_id"]["FHKST01010100"] == 25
    assert stats["by_code"] == {"ok": 21, "EGW00201": 5}  # 20 quotes + the token
    env = await sandbox.env_stats("kis/real")
    assert (env["over_limit"], env["max_in_window"], env["max_in_window_combined"]) == (5, 25, 25)


async def test_throttle_body_is_the_kis_envelope(sandbox: Sandbox) -> None:
    """An over-limit KIS call gets rt_cd "1", msg_cd EGW00201 and the Korean message in a normal envelope."""
    token = await sandbox.kis_token()
    await _burst(sandbox, 20, token)
    resp = await sandbox.kis_price(token)
    assert resp.status == 500
    assert await resp.json() == {
        "rt_cd": "1",
        "msg_cd": "EGW00201",
        "msg1": "초당 거래건수를 초과하였습니다.",
    }


async def test_refused_calls_still_count(sandbox: Sandbox) -> None:
    """Refused arrivals stay in the window: 0.5 s later the key is still throttled, 1 s later not."""
    token = await sandbox.kis_token()
    await _burst(sandbox, 25, token)
    await sandbox.set_clock(advance_s=0.5)
    resp = await sandbox.kis_price(token)
    assert resp.status == 500 and (await resp.json())["msg_cd"] == "EGW00201"
    await sandbox.set_clock(advance_s=0.5)  # t+1.0: the first 25 leave the half-open window (t, t+1]
    resp = await sandbox.kis_price(token)
    assert resp.status == 200
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert stats["over_limit"] == 6 and stats["max_in_window"] == 26


async def test_window_slides(sandbox: Sandbox) -> None:
    """10 calls at t and 10 at t+0.6 fit; one more at t+0.9 is refused; at t+1.0 the first ten have left."""
    token = await sandbox.kis_token()
    assert all(r[0] == 200 for r in await _burst(sandbox, 10, token))
    await sandbox.set_clock(advance_s=0.6)
    assert all(r[0] == 200 for r in await _burst(sandbox, 10, token))
    await sandbox.set_clock(advance_s=0.3)
    assert (await _burst(sandbox, 1, token))[0] == (500, "EGW00201")
    await sandbox.set_clock(advance_s=0.1)
    assert [r[0] for r in await _burst(sandbox, 9, token)] == [200] * 9
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert stats["max_in_window"] == 21 and stats["over_limit"] == 1


async def test_limits_are_per_appkey_and_per_environment(sandbox: Sandbox) -> None:
    """Two appkeys each get their own 20/s; the mock server allows 2/s per key."""
    key2, secret2 = kis_key(2), kis_secret(2)
    token1 = await sandbox.kis_token()
    token2 = await sandbox.kis_token(key=key2, secret=secret2)
    first = await _burst(sandbox, 20, token1)
    second = await asyncio.gather(
        *(
            sandbox.kis_get(
                "/uapi/domestic-stock/v1/quotations/inquire-price",
                "FHKST01010100",
                {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "000660"},
                token2,
                key=key2,
                extra_headers={"appsecret": secret2},
            )
            for _ in range(20)
        )
    )
    assert all(status == 200 for status, _ in first)
    assert all(resp.status == 200 for resp in second)
    mock_key = kis_key(3)
    mock_token = await sandbox.kis_token("mock", key=mock_key, secret=kis_secret())
    mock = await _burst(sandbox, 3, mock_token, "mock", mock_key)
    assert sorted(status for status, _ in mock) == [200, 200, 500]
    assert (await sandbox.env_stats("kis/mock"))["over_limit"] == 1


async def test_token_endpoint_not_in_the_window(sandbox: Sandbox) -> None:
    """Token calls are tallied but never consume the per-second quota of TR calls."""
    token = await sandbox.kis_token()
    for _ in range(5):
        await sandbox.kis_token_response()  # refused by the issuance interval, not by the window
    results = await _burst(sandbox, 20, token)
    assert all(status == 200 for status, _ in results)
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert stats["requests"] == 26 and stats["window_requests"] == 20 and stats["max_in_window"] == 20


async def test_kiwoom_throttle(make_sandbox: SandboxFactory) -> None:
    """Kiwoom real allows 5/s: the sixth call gets HTTP 429, return_code 5 and [1700:... API ID=ka10080]."""
    sandbox = await make_sandbox()
    token = await sandbox.kiwoom_token()
    body = {"stk_cd": "005930", "tic_scope": "1", "upd_stkpc_tp": "1"}
    responses = [await sandbox.kiwoom_post("chart", "ka10080", body, token) for _ in range(6)]
    assert [r.status for r in responses] == [200] * 5 + [429]
    last = await responses[-1].json()
    assert last["return_code"] == 5
    assert (
        last["return_msg"]
        == "허용된 요청 개수를 초과하였습니다[1700:허용된 요청 개수를 초과하였습니다. API ID=ka10080]"
    )
    stats = await sandbox.env_stats("kiwoom/real", "kw-app-1")
    assert stats["over_limit"] == 1 and stats["max_in_window"] == 6 and stats["by_code"]["1700"] == 1


async def test_kiwoom_throttle_status_setting(make_sandbox: SandboxFactory) -> None:
    """kiwoom_throttle_status=200 sends the same throttle body with HTTP 200."""
    sandbox = await make_sandbox(kiwoom_throttle_status=200, kiwoom_real_rate_per_s=1)
    token = await sandbox.kiwoom_token()
    body = {"stk_cd": "005930", "base_dt": "20261127", "upd_stkpc_tp": "0"}
    await sandbox.kiwoom_post("chart", "ka10081", body, token)
    resp = await sandbox.kiwoom_post("chart", "ka10081", body, token)
    assert resp.status == 200
    assert (await resp.json())["return_code"] == 5


async def test_reset_clears_stats_tokens_and_windows(sandbox: Sandbox) -> None:
    """POST /_sandbox/reset zeroes the referee, forgets tokens and empties the windows."""
    token = await sandbox.kis_token()
    await _burst(sandbox, 25, token)
    resp = await sandbox.client.post("/_sandbox/reset")
    assert resp.status == 200
    env = await sandbox.env_stats("kis/real")
    assert env["requests"] == 0 and env["appkeys"] == {}
    stale = await sandbox.kis_price(token)
    assert stale.status == 500 and (await stale.json())["msg_cd"] == "EGW00121"
    fresh = await sandbox.kis_token()  # issuance interval forgotten too
    assert all(status == 200 for status, _ in await _burst(sandbox, 19, fresh))


def test_referee_max_in_window_is_exact() -> None:
    """The referee's max-in-window equals a brute-force count over every one-second window."""
    clock = SimClock(SESSION_NOW, rate=0.0)
    referee = Referee(clock, [Environment("KIS", "real", 3)])
    times = [0.0, 0.2, 0.4, 0.99, 1.0, 1.05, 2.5, 2.6, 3.49, 3.5]
    last = 0.0
    for t in times:
        clock.advance(t - last)
        last = t
        referee.arrive("kis/real", "k", "TR")
    brute = max(sum(1 for u in times if t - 1.0 < u <= t) for t in times)
    snap = referee.snapshot()["environments"]["kis/real"]
    assert snap["max_in_window"] == brute == 5
    assert snap["over_limit"] == sum(1 for t in times if sum(1 for u in times if t - 1.0 < u <= t) > 3)
