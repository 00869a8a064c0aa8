"""KIS orders and the paged balance (tr_cont F/M/D/E with CTX_AREA_FK100/NK100)."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse

from tests.sandbox.sandbox_kit import TRADING, Sandbox, SandboxFactory, kis_key

ORDER = {
    "CANO": "81055689",
    "ACNT_PRDT_CD": "01",
    "PDNO": "005930",
    "ORD_DVSN": "00",
    "ORD_QTY": "10",
    "ORD_UNPR": "62000",
    "EXCG_ID_DVSN_CD": "KRX",
    "SLL_TYPE": "",
    "CNDT_PRIC": "",
}
BALANCE = {
    "CANO": "81055689",
    "ACNT_PRDT_CD": "01",
    "AFHR_FLPR_YN": "N",
    "OFL_YN": "",
    "INQR_DVSN": "02",
    "UNPR_DVSN": "01",
    "FUND_STTL_ICLD_YN": "N",
    "FNCG_AMT_AUTO_RDPT_YN": "N",
    "PRCS_DVSN": "00",
    "CTX_AREA_FK100": "",
    "CTX_AREA_NK100": "",
}


async def _order(
    sandbox: Sandbox, tr_id: str, body: dict[str, Any], env: str = "real", key: str | None = None
) -> ClientResponse:
    token = await sandbox.kis_token(env, key=key)
    headers = sandbox.kis_headers(tr_id, token, key)
    return await sandbox.client.post(f"/kis/{env}{TRADING}/order-cash", json=body, headers=headers)


async def test_order_accepted(sandbox: Sandbox) -> None:
    """TTTC0012U on real answers APBK0013 with ODNO/ORD_TMD; the ledger and the referee record it."""
    resp = await _order(sandbox, "TTTC0012U", ORDER)
    assert resp.status == 200
    body = await resp.json()
    assert (body["rt_cd"], body["msg_cd"]) == ("0", "APBK0013")
    assert body["output"]["ODNO"] == "0000000001" and body["output"]["ORD_TMD"] == "103000"
    assert body["output"]["KRX_FWDG_ORD_ORGNO"]
    orders = (await (await sandbox.client.get("/_sandbox/orders")).json())["orders"]
    assert [(o["side"], o["quantity"], o["price"], o["timed_out"]) for o in orders] == [
        ("buy", 10, 62000, False)
    ]
    assert (await sandbox.env_stats("kis/real", kis_key()))["orders_accepted"] == 1


async def test_order_tr_ids_per_environment(sandbox: Sandbox) -> None:
    """VTTC0011U works on mock; a real id on mock is "모의투자 TR 이 아닙니다."; a V id on real is unknown."""
    mock_key = "M" * 36
    token = await sandbox.kis_token("mock", key=mock_key)
    path = f"/kis/mock{TRADING}/order-cash"
    ok = await sandbox.client.post(
        path, json=ORDER, headers=sandbox.kis_headers("VTTC0011U", token, mock_key)
    )
    assert ok.status == 200 and (await ok.json())["msg_cd"] == "APBK0013"
    real_on_mock = await sandbox.client.post(
        path, json=ORDER, headers=sandbox.kis_headers("TTTC0011U", token, mock_key)
    )
    assert real_on_mock.status == 500
    assert (await real_on_mock.json())["msg1"] == "모의투자 TR 이 아닙니다."
    mock_on_real = await _order(sandbox, "VTTC0012U", ORDER)
    assert mock_on_real.status == 500 and (await mock_on_real.json())["msg_cd"] == "OPSQ0002"
    assert [o.side for o in sandbox.state.orders] == ["sell"]


async def test_order_numbers_must_be_strings(sandbox: Sandbox) -> None:
    """ORD_QTY sent as a JSON number is an input error (rt_cd "2", OPSQ2001) and no order is placed."""
    resp = await _order(sandbox, "TTTC0012U", {**ORDER, "ORD_QTY": 10})
    body = await resp.json()
    assert (body["rt_cd"], body["msg_cd"]) == ("2", "OPSQ2001") and "ORD_QTY" in body["msg1"]
    assert sandbox.state.orders == []


async def test_order_keys_must_be_upper_case(sandbox: Sandbox) -> None:
    """Lower-case body keys are not found (KIS requires upper-case POST keys)."""
    resp = await _order(sandbox, "TTTC0012U", {k.lower(): v for k, v in ORDER.items()})
    assert (await resp.json())["msg_cd"] == "OPSQ2001"


async def test_order_requires_custtype(sandbox: Sandbox) -> None:
    """An order without the custtype header is EGW00208."""
    token = await sandbox.kis_token()
    headers = sandbox.kis_headers("TTTC0012U", token)
    del headers["custtype"]
    resp = await sandbox.client.post(f"/kis/real{TRADING}/order-cash", json=ORDER, headers=headers)
    assert resp.status == 500 and (await resp.json())["msg_cd"] == "EGW00208"


async def test_order_method_is_post(sandbox: Sandbox) -> None:
    """GET on the order path is refused with EGW00101 and places nothing."""
    token = await sandbox.kis_token()
    resp = await sandbox.kis_get(f"{TRADING}/order-cash", "TTTC0012U", {}, token)
    assert resp.status == 405 and (await resp.json())["msg_cd"] == "EGW00101"


async def _balance_pages(
    sandbox: Sandbox, env: str, tr_id: str, key: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    token = await sandbox.kis_token(env, key=key)
    params, tr_cont, pages = dict(BALANCE), "", []
    while True:
        resp = await sandbox.kis_get(
            f"{TRADING}/inquire-balance", tr_id, params, token, env, key, extra_headers={"tr_cont": tr_cont}
        )
        assert resp.status == 200
        body = await resp.json()
        pages.append((resp.headers["tr_cont"], body))
        if resp.headers["tr_cont"] not in ("F", "M"):
            return pages
        params = {
            **params,
            "CTX_AREA_FK100": body["ctx_area_fk100"],
            "CTX_AREA_NK100": body["ctx_area_nk100"],
        }
        tr_cont = "N"
        await sandbox.set_clock(advance_s=1)


async def test_balance_pages_real(sandbox: Sandbox) -> None:
    """Real balance: 57 holdings come as 50 (tr_cont F) + 7 (E), with 100-character ctx keys."""
    pages = await _balance_pages(sandbox, "real", "TTTC8434R")
    assert [(cont, len(body["output1"])) for cont, body in pages] == [("F", 50), ("E", 7)]
    first = pages[0][1]
    assert len(first["ctx_area_fk100"]) == 100 and len(first["ctx_area_nk100"]) == 100
    assert first["ctx_area_fk100"].startswith("81055689^01^")
    codes = [row["pdno"] for _, body in pages for row in body["output1"]]
    assert len(codes) == len(set(codes)) == 57
    summary = first["output2"]
    assert isinstance(summary, list) and len(summary) == 1 and "tot_evlu_amt" in summary[0]
    assert pages[-1][1]["ctx_area_nk100"].strip() == ""


async def test_balance_pages_mock(sandbox: Sandbox) -> None:
    """Mock balance pages by 20: F, M, E."""
    pages = await _balance_pages(sandbox, "mock", "VTTC8434R", "M" * 36)
    assert [(cont, len(body["output1"])) for cont, body in pages] == [("F", 20), ("M", 20), ("E", 17)]


async def test_balance_single_page(make_sandbox: SandboxFactory) -> None:
    """A balance that fits one page answers tr_cont D."""
    sandbox = await make_sandbox(kis_balance_holdings=10)
    pages = await _balance_pages(sandbox, "real", "TTTC8434R")
    assert [(cont, len(body["output1"])) for cont, body in pages] == [("D", 10)]


async def test_balance_missing_field_and_bad_cursor(sandbox: Sandbox) -> None:
    """A missing INQR_DVSN and a next-page call with a foreign CTX_AREA_NK100 are both OPSQ2001."""
    token = await sandbox.kis_token()
    params = {k: v for k, v in BALANCE.items() if k != "INQR_DVSN"}
    resp = await sandbox.kis_get(f"{TRADING}/inquire-balance", "TTTC8434R", params, token)
    assert (await resp.json())["msg_cd"] == "OPSQ2001"
    params = {**BALANCE, "CTX_AREA_NK100": "garbage"}
    resp = await sandbox.kis_get(
        f"{TRADING}/inquire-balance", "TTTC8434R", params, token, extra_headers={"tr_cont": "N"}
    )
    assert "CTX_AREA_NK100" in (await resp.json())["msg1"]
