"""KIS trading TRs: cash orders (non-idempotent) and the paged account balance.

``POST /uapi/domestic-stock/v1/trading/order-cash``: ``TTTC0012U`` buy / ``TTTC0011U`` sell on real
(old ``TTTC0802U``/``TTTC0801U`` too), ``VTTC...`` on mock; a real id on mock answers "모의투자 TR 이
아닙니다.". Requires the ``custtype`` header, upper-case body keys and every number as a string; an
optional ``hashkey`` header must match ``/uapi/hashkey``. Accepted orders go to the ledger
(``GET /_sandbox/orders``); with the order-timeout fault an accepted order is answered, after
``order_timeout_delay_ms``, with HTTP 500 ``EGW00301`` (outcome unknown to the client, yet it executed).

``GET /uapi/domestic-stock/v1/trading/inquire-balance``: ``TTTC8434R`` real / ``VTTC8434R`` mock. Every
account holds ``kis_balance_holdings`` seeded positions valued at the last completed close. Pages of 50
(real) / 20 (mock) rows: response header ``tr_cont`` F (first page, more follow), M (middle), D (single
page), E (last of several); the next page is requested with header ``tr_cont: N`` and the body's
``ctx_area_fk100``/``ctx_area_nk100`` (100-character, space-padded) sent back as ``CTX_AREA_FK100``/
``CTX_AREA_NK100``.
"""

from __future__ import annotations

import random
from typing import Any

from services.sandbox.bars import round_tick
from services.sandbox.kis_envelope import KisCall, TrSpec, error, hash_of, input_error, num, ok, rate
from services.sandbox.state import Order
from services.sandbox.symbols import SYMBOLS
from services.sandbox.wire import Reply

TRADING = "/uapi/domestic-stock/v1/trading"
CTX_WIDTH = 100
_ORDER_SIDES = {"0011U": "sell", "0801U": "sell", "0012U": "buy", "0802U": "buy"}
_ORDER_FIELDS = ("CANO", "ACNT_PRDT_CD", "PDNO", "ORD_DVSN", "ORD_QTY", "ORD_UNPR")
_BALANCE_FIELDS = (
    "CANO",
    "ACNT_PRDT_CD",
    "AFHR_FLPR_YN",
    "INQR_DVSN",
    "UNPR_DVSN",
    "FUND_STTL_ICLD_YN",
    "FNCG_AMT_AUTO_RDPT_YN",
    "PRCS_DVSN",
    "CTX_AREA_FK100",
    "CTX_AREA_NK100",
)


def _digits(value: str, length: int | None = None) -> bool:
    return value.isdigit() and (length is None or len(value) == length)


def order_cash(call: KisCall) -> Reply:
    """TTTC0012U/TTTC0011U (VTTC... on mock): place a cash order."""
    if call.headers.get("custtype") is None:
        return error(500, "EGW00208", call.tr_id)
    body = call.body
    if body is None:
        return error(500, "EGW00101", call.tr_id)
    for name in _ORDER_FIELDS:
        if not isinstance(body.get(name), str):
            return input_error(call.tr_id, name)
    if not _digits(body["CANO"], 8):
        return input_error(call.tr_id, "CANO")
    if not _digits(body["ACNT_PRDT_CD"], 2):
        return input_error(call.tr_id, "ACNT_PRDT_CD")
    if body["PDNO"] not in SYMBOLS:
        return input_error(call.tr_id, "PDNO")
    if not _digits(body["ORD_DVSN"], 2):
        return input_error(call.tr_id, "ORD_DVSN")
    if not _digits(body["ORD_QTY"]) or int(body["ORD_QTY"]) <= 0:
        return input_error(call.tr_id, "ORD_QTY")
    market_order = body["ORD_DVSN"] == "01"
    if not _digits(body["ORD_UNPR"]) or (int(body["ORD_UNPR"]) == 0) != market_order:
        return input_error(call.tr_id, "ORD_UNPR")
    sent_hash = call.headers.get("hashkey")
    if sent_hash is not None and sent_hash != hash_of(body):
        return error(500, "EGW00131", call.tr_id)
    state, env_id = call.state, call.env.env_id
    order_no = f"{state.next_order_no(env_id):010d}"
    timed_out = state.faults.order_times_out(env_id)
    state.record_order(
        Order(
            env_id=env_id,
            appkey=call.appkey,
            order_no=order_no,
            tr_id=call.tr_id,
            symbol=body["PDNO"],
            side=_ORDER_SIDES[call.tr_id[-5:]],
            quantity=int(body["ORD_QTY"]),
            price=int(body["ORD_UNPR"]),
            accepted_at=call.now,
            timed_out=timed_out,
        )
    )
    if timed_out:
        reply = error(500, "EGW00301", call.tr_id)
        reply.delay_s = state.faults.settings.order_timeout_delay_ms / 1000.0
        return reply
    output = {"KRX_FWDG_ORD_ORGNO": "91252", "ODNO": order_no, "ORD_TMD": call.now.strftime("%H%M%S")}
    return ok(call.tr_id, msg_cd="APBK0013", output=output)


def _holdings(call: KisCall, cano: str, product: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    state = call.state
    market = state.market
    rng = random.Random(f"{state.settings.market_seed}:{cano}:{product}:holdings")
    codes = sorted(SYMBOLS)
    chosen = rng.sample(codes, min(state.settings.kis_balance_holdings, len(codes)))
    day = market.previous_trading_day(call.now.date())
    rows: list[dict[str, Any]] = []
    total_buy = total_eval = 0
    for code in sorted(chosen):
        qty = rng.randint(1, 500)
        price = market.prev_close(code, call.now.date()) if day else 0
        avg = round_tick(price * rng.uniform(0.8, 1.2)) if price else 0
        buy_amt, eval_amt = avg * qty, price * qty
        total_buy += buy_amt
        total_eval += eval_amt
        profit = eval_amt - buy_amt
        rows.append(
            {
                "pdno": code,
                "prdt_name": SYMBOLS[code].name_ko,
                "trad_dvsn_name": "현금",
                "bfdy_buy_qty": "0",
                "bfdy_sll_qty": "0",
                "thdt_buyqty": "0",
                "thdt_sll_qty": "0",
                "hldg_qty": num(qty),
                "ord_psbl_qty": num(qty),
                "pchs_avg_pric": f"{avg:.4f}",
                "pchs_amt": num(buy_amt),
                "prpr": num(price),
                "evlu_amt": num(eval_amt),
                "evlu_pfls_amt": num(profit),
                "evlu_pfls_rt": rate(profit / buy_amt * 100 if buy_amt else 0),
                "evlu_erng_rt": "0.00000000",
                "loan_dt": "",
                "loan_amt": "0",
                "stln_slng_chgs": "0",
                "expd_dt": "",
                "fltt_rt": "0.00000000",
                "bfdy_cprs_icdc": "0",
                "item_mgna_rt_name": "20%",
                "grta_rt_name": "",
                "sbst_pric": "0",
                "stck_loan_unpr": "0.0000",
            }
        )
    cash = rng.randint(1_000, 50_000) * 1_000
    summary = {
        "dnca_tot_amt": num(cash),
        "nxdy_excc_amt": num(cash),
        "prvs_rcdl_excc_amt": num(cash),
        "cma_evlu_amt": "0",
        "bfdy_buy_amt": "0",
        "thdt_buy_amt": "0",
        "nxdy_auto_rdpt_amt": "0",
        "bfdy_sll_amt": "0",
        "thdt_sll_amt": "0",
        "d2_auto_rdpt_amt": "0",
        "bfdy_tlex_amt": "0",
        "thdt_tlex_amt": "0",
        "tot_loan_amt": "0",
        "scts_evlu_amt": num(total_eval),
        "tot_evlu_amt": num(cash + total_eval),
        "nass_amt": num(cash + total_eval),
        "fncg_gld_auto_rdpt_yn": "N",
        "pchs_amt_smtl_amt": num(total_buy),
        "evlu_amt_smtl_amt": num(total_eval),
        "evlu_pfls_smtl_amt": num(total_eval - total_buy),
        "tot_stln_slng_chgs": "0",
        "bfdy_tot_asst_evlu_amt": num(cash + total_eval),
        "asst_icdc_amt": "0",
        "asst_icdc_erng_rt": "0.00000000",
    }
    return rows, summary


def inquire_balance(call: KisCall) -> Reply:
    """TTTC8434R/VTTC8434R: holdings page plus the account summary."""
    for name in _BALANCE_FIELDS:
        if call.param(name) is None:
            return input_error(call.tr_id, name)
    cano, product = call.query["CANO"], call.query["ACNT_PRDT_CD"]
    if not _digits(cano, 8):
        return input_error(call.tr_id, "CANO")
    if not _digits(product, 2):
        return input_error(call.tr_id, "ACNT_PRDT_CD")
    offset = 0
    if call.headers.get("tr_cont", "").strip() == "N":
        parts = call.query["CTX_AREA_NK100"].strip().split("^")
        if len(parts) != 4 or parts[:2] != [cano, product] or not _digits(parts[2]):
            return input_error(call.tr_id, "CTX_AREA_NK100")
        offset = int(parts[2])
    size = (
        call.state.settings.kis_balance_rows_real
        if call.env.name == "real"
        else (call.state.settings.kis_balance_rows_mock)
    )
    rows, summary = _holdings(call, cano, product)
    page = rows[offset : offset + size]
    more = offset + size < len(rows)
    tr_cont = ("F" if offset == 0 else "M") if more else ("D" if offset == 0 else "E")
    fk100 = f"{cano}^{product}^N^N^01^01^N^".ljust(CTX_WIDTH)
    nk100 = f"{cano}^{product}^{offset + size:05d}^".ljust(CTX_WIDTH) if more else " " * CTX_WIDTH
    return ok(
        call.tr_id,
        msg_cd="KIOK0510" if more else "KIOK0460",
        tr_cont=tr_cont,
        ctx_area_fk100=fk100,
        ctx_area_nk100=nk100,
        output1=page,
        output2=[summary],
    )


def _specs(handler: Any, method: str, ids: dict[str, str]) -> dict[str, TrSpec]:
    out: dict[str, TrSpec] = {}
    for tr_id, env in ids.items():
        unsupported = "OPSQ0002/mock" if env == "real" else "OPSQ0002"
        out[tr_id] = TrSpec(method, handler, frozenset({env}), unsupported)
    return out


TRADING_TRS: dict[str, dict[str, TrSpec]] = {
    f"{TRADING}/order-cash": _specs(
        order_cash,
        "POST",
        {
            "TTTC0012U": "real",
            "TTTC0011U": "real",
            "TTTC0802U": "real",
            "TTTC0801U": "real",
            "VTTC0012U": "mock",
            "VTTC0011U": "mock",
            "VTTC0802U": "mock",
            "VTTC0801U": "mock",
        },
    ),
    f"{TRADING}/inquire-balance": _specs(inquire_balance, "GET", {"TTTC8434R": "real", "VTTC8434R": "mock"}),
}
