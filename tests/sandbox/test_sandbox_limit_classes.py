"""Limit classes at the sandbox: a per-appkey ledger limit (EGW00215) and a Kiwoom order limit (1700),
inside the key's limit, counted by the referee per class whether limited or not."""

from __future__ import annotations

import asyncio

from aiohttp import ClientResponse

from services.sandbox.clock import SimClock
from services.sandbox.referee import Environment, Referee, appkey_label
from tests.sandbox.sandbox_kit import KIWOOM_KEY, SESSION_NOW, TRADING, Sandbox, SandboxFactory, kis_key
from tests.sandbox.test_sandbox_kis_trading import BALANCE

KIWOOM_ORDER = {"dmst_stex_tp": "KRX", "stk_cd": "005930", "ord_qty": "1", "ord_uv": "", "trde_tp": "3"}
KIWOOM_DAILY = {"stk_cd": "005930", "base_dt": "20261127", "upd_stkpc_tp": "1"}


async def codes(responses: list[ClientResponse]) -> list[tuple[int, str]]:
    """(HTTP status, msg_cd or detail code) of each answer, in order."""
    out = []
    for resp in responses:
        body = await resp.json()
        if "msg_cd" in body:
            out.append((resp.status, body["msg_cd"]))
        else:
            out.append((resp.status, str(body["return_code"])))
    return out


async def balances(sandbox: Sandbox, token: str, n: int, env: str = "real") -> list[ClientResponse]:
    tr_id = "TTTC8434R" if env == "real" else "VTTC8434R"
    key = kis_key() if env == "real" else "M" * 36
    path = f"{TRADING}/inquire-balance"
    return list(
        await asyncio.gather(*(sandbox.kis_get(path, tr_id, BALANCE, token, env, key) for _ in range(n)))
    )


async def test_ledger_limit_answers_egw00215_while_quotes_go_on(make_sandbox: SandboxFactory) -> None:
    """With a ledger limit of 3, five balance calls in one instant give three answers and two HTTP 500
    EGW00215 in the normal envelope; quotes in the same instant are served (the key has room)."""
    sandbox = await make_sandbox(kis_ledger_rate_per_s=3)
    token = await sandbox.kis_token()
    results = await codes(await balances(sandbox, token, 5))
    assert sorted(results) == [(200, "KIOK0510")] * 3 + [(500, "EGW00215")] * 2
    refused = await (await balances(sandbox, token, 1))[0].json()
    assert refused == {
        "rt_cd": "1",
        "msg_cd": "EGW00215",
        "msg1": "원장에서 허용 가능한 초당 거래건수를 초과하였습니다.",
    }
    assert (await sandbox.kis_price(token)).status == 200
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert stats["classes"]["ledger"] == {"rate_per_s": 3, "requests": 6, "max_in_window": 6, "over_limit": 3}
    assert stats["classes"]["query"]["requests"] == 1 and stats["over_limit"] == 0
    await sandbox.set_clock(advance_s=1.0)  # the window has moved on
    assert await codes(await balances(sandbox, token, 1)) == [(200, "KIOK0510")]


async def test_the_key_limit_is_judged_before_the_ledger(make_sandbox: SandboxFactory) -> None:
    """A balance call over the key's own limit is answered EGW00201, not EGW00215."""
    sandbox = await make_sandbox(kis_real_rate_per_s=2, kis_ledger_rate_per_s=5)
    token = await sandbox.kis_token()
    results = await codes(await balances(sandbox, token, 3))
    assert sorted(results) == [(200, "KIOK0510")] * 2 + [(500, "EGW00201")]
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert (stats["over_limit"], stats["classes"]["ledger"]["over_limit"]) == (1, 0)


async def test_mock_ids_count_in_their_class(make_sandbox: SandboxFactory) -> None:
    """The mock server's VTTC8434R is a ledger call too."""
    sandbox = await make_sandbox(kis_mock_rate_per_s=20, kis_ledger_rate_per_s=2)
    token = await sandbox.kis_token("mock", key="M" * 36)
    results = await codes(await balances(sandbox, token, 3, env="mock"))
    assert sorted(results) == [(200, "KIOK0510")] * 2 + [(500, "EGW00215")]
    stats = await sandbox.env_stats("kis/mock", "M" * 36)
    assert stats["classes"]["ledger"]["over_limit"] == 1


async def test_kiwoom_order_limit_answers_1700_naming_the_quota(make_sandbox: SandboxFactory) -> None:
    """With an order limit of 1, a second order in the same second is 1700 (return_code 5, HTTP 429)
    naming 유량=1 and the api-id; a read in that second is served."""
    sandbox = await make_sandbox(kiwoom_order_rate_per_s=1)
    token = await sandbox.kiwoom_token()
    first = await sandbox.kiwoom_post("ordr", "kt10000", KIWOOM_ORDER, token)
    second = await sandbox.kiwoom_post("ordr", "kt10001", KIWOOM_ORDER, token)
    assert first.status == 200 and (await first.json())["return_code"] == 0
    assert second.status == 429
    assert await second.json() == {
        "return_code": 5,
        "return_msg": "허용된 요청 개수를 초과하였습니다"
        "[1700:허용된 요청 개수를 초과하였습니다. 유량=1, API ID=kt10001]",
    }
    read = await sandbox.kiwoom_post("chart", "ka10081", KIWOOM_DAILY, token)
    assert (await read.json())["return_code"] == 0
    stats = await sandbox.env_stats("kiwoom/real", KIWOOM_KEY)
    assert stats["classes"]["order"] == {"rate_per_s": 1, "requests": 2, "max_in_window": 2, "over_limit": 1}
    assert stats["classes"]["query"]["requests"] == 1


async def test_classes_are_counted_but_not_limited_by_default(sandbox: Sandbox) -> None:
    """Without class rates nothing is refused by class, and the referee still reports each class's peak."""
    token = await sandbox.kis_token()
    results = await codes(await balances(sandbox, token, 12))
    assert results == [(200, "KIOK0510")] * 12
    env = await sandbox.env_stats("kis/real")
    assert env["classes"]["ledger"] == {"rate_per_s": 0, "requests": 12, "max_in_window": 12, "over_limit": 0}


def test_referee_counts_a_class_window_per_appkey() -> None:
    """Each appkey has its own class window; unknown ids and token calls are in no class."""
    clock = SimClock(SESSION_NOW, 0.0)
    referee = Referee(clock, [Environment("KIWOOM", "real", 10, (("order", 2),))])
    verdicts = [referee.arrive("kiwoom/real", key, "kt10000").over_class for key in ("a", "a", "b", "a")]
    assert verdicts == [None, None, None, "order"]
    assert referee.arrive("kiwoom/real", "a", "ka10081").over_class is None
    assert referee.arrive("kiwoom/real", "a", "au10001", in_window=False).over_class is None
    assert referee.arrive("kiwoom/real", "a", "(none)").over_class is None
    snapshot = referee.snapshot()["environments"]["kiwoom/real"]
    assert snapshot["appkeys"][appkey_label("a")]["classes"]["order"]["over_limit"] == 1
    assert snapshot["classes"]["order"]["requests"] == 4
    assert set(snapshot["appkeys"][appkey_label("a")]["classes"]) == {"order", "query"}
