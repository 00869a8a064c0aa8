"""Every catalog endpoint of both brokers answered by the sandbox: envelopes, required fields, paging, mock.

The loops run over ``hubclient.catalog`` itself, so an endpoint added to the catalog is covered here.
Requests are built from each entry's ``required`` names with the values below (chosen to satisfy the
dedicated simulations too); the limits are raised so the loops are not throttled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from hubclient.catalog import TrSpec, entries
from hubclient.models import Provider
from tests.sandbox.sandbox_kit import KIWOOM_KEY, Sandbox, SandboxFactory, kis_key

UNLIMITED = {
    "kis_real_rate_per_s": 1_000_000,
    "kis_mock_rate_per_s": 1_000_000,
    "kiwoom_real_rate_per_s": 1_000_000,
    "kiwoom_mock_rate_per_s": 1_000_000,
}
SAMPLES = {
    "fid_cond_mrkt_div_code": "J",
    "fid_input_iscd": "005930",
    "fid_period_div_code": "D",
    "fid_org_adj_prc": "0",
    "fid_input_hour_1": "103000",
    "fid_pw_data_incu_yn": "Y",
    "fid_input_date_1": "20261120",
    "fid_input_date_2": "20261127",
    "cano": "81055689",
    "acnt_prdt_cd": "01",
    "pdno": "005930",
    "ord_dvsn": "01",
    "ord_qty": "1",
    "ord_unpr": "0",
    "stk_cd": "005930",
    "tic_scope": "1",
    "upd_stkpc_tp": "1",
    "base_dt": "20261127",
    "dmst_stex_tp": "KRX",
    "trde_tp": "3",
}
KIS_OK_CODES = {"MCA00000", "KIOK0510", "KIOK0460", "APBK0013"}

KIS = [e for e in entries(Provider.KIS)]
KIWOOM_LIVE = [e for e in entries(Provider.KIWOOM) if not e.planned]
KIWOOM_PLANNED = [e for e in entries(Provider.KIWOOM) if e.planned]
DEDICATED = {
    "FHKST01010100",
    "FHKST01010300",
    "FHKST01010400",
    "FHKST03010100",
    "FHKST03010200",
    "FHKST03010230",
    "TTTC0012U",
    "TTTC0011U",
    "TTTC8434R",
}

KIWOOM_DEDICATED = {"ka10079", "ka10080", "ka10081", "ka10082", "ka10083", "ka10094", "kt10000", "kt10001"}


def sample(name: str) -> str:
    """A well-formed value for a required field (empty where the samples send nothing)."""
    return SAMPLES.get(name.lower(), "")


def params_of(spec: TrSpec, drop: Iterable[str] = ()) -> dict[str, str]:
    """The request of ``spec`` built from its required names, without ``drop``."""
    skip = set(drop)
    return {
        name: sample(name) or ("0" if name.islower() else "") for name in spec.required if name not in skip
    }


@dataclass
class Tokens:
    """One token per environment of both brokers (different keys per environment)."""

    kis_real: str
    kis_mock: str
    kiwoom_real: str
    kiwoom_mock: str


@pytest.fixture
async def wide(make_sandbox: SandboxFactory) -> tuple[Sandbox, Tokens]:
    """A sandbox without effective rate limits, with a token in each of its four environments."""
    sandbox = await make_sandbox(**UNLIMITED)
    tokens = Tokens(
        await sandbox.kis_token("real"),
        await sandbox.kis_token("mock", key=kis_key(2)),
        await sandbox.kiwoom_token("real"),
        await sandbox.kiwoom_token("mock", key="kw-mock-1"),
    )
    return sandbox, tokens


async def kis_call(
    sandbox: Sandbox,
    tokens: Tokens,
    spec: TrSpec,
    params: dict[str, str],
    env: str = "real",
    tr_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Call a KIS entry (GET query or POST body); returns status, body and response headers."""
    token, key = (tokens.kis_real, kis_key()) if env == "real" else (tokens.kis_mock, kis_key(2))
    sent = {**sandbox.kis_headers(tr_id or spec.upstream_tr_id(mock=env == "mock"), token, key)}
    sent.update(headers or {})
    url = f"/kis/{env}{spec.path}"
    if spec.method == "GET":
        resp = await sandbox.client.get(url, params=params, headers=sent)
    else:
        resp = await sandbox.client.post(url, json=params, headers=sent)
    return resp.status, await resp.json(), dict(resp.headers)


async def kiwoom_call(
    sandbox: Sandbox,
    tokens: Tokens,
    spec: TrSpec,
    body: dict[str, str],
    env: str = "real",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Call a Kiwoom entry on its own path group; returns status, body and response headers."""
    token = tokens.kiwoom_real if env == "real" else tokens.kiwoom_mock
    sent = {
        "authorization": f"Bearer {token}",
        "content-type": "application/json;charset=UTF-8",
        "api-id": spec.tr_id,
        **(headers or {}),
    }
    resp = await sandbox.client.post(f"/kiwoom/{env}{spec.path}", json=body, headers=sent)
    return resp.status, await resp.json(), dict(resp.headers)


def assert_kis_success(spec: TrSpec, status: int, body: dict[str, Any]) -> None:
    """The KIS success envelope: HTTP 200, rt_cd "0", a success msg_cd, and an output part."""
    assert status == 200, (spec.key, body)
    assert body["rt_cd"] == "0" and body["msg_cd"] in KIS_OK_CODES, (spec.key, body)
    assert {"output", "output1", "output2"} & body.keys(), (spec.key, body)


async def test_every_kis_entry_answers_its_success_envelope(wide: tuple[Sandbox, Tokens]) -> None:
    """Each KIS catalog entry, called well-formed on the real server, gets rt_cd 0 and its outputs."""
    sandbox, tokens = wide
    for spec in KIS:
        status, body, _ = await kis_call(sandbox, tokens, spec, params_of(spec))
        assert_kis_success(spec, status, body)
        if spec.kind == "order":
            assert body["output"]["ODNO"].isdigit(), spec.key


async def test_every_kiwoom_entry_answers_its_success_envelope(wide: tuple[Sandbox, Tokens]) -> None:
    """Each live Kiwoom api-id, posted well-formed to its path group, gets return_code 0."""
    sandbox, tokens = wide
    for spec in KIWOOM_LIVE:
        status, body, headers = await kiwoom_call(sandbox, tokens, spec, params_of(spec))
        assert status == 200 and body["return_code"] == 0, (spec.key, body)
        assert body["return_msg"] == "정상적으로 처리되었습니다" and headers["api-id"] == spec.tr_id
        if spec.kind == "order_write":
            assert body["ord_no"].isdigit(), spec.key


def first_plain_required(spec: TrSpec) -> str | None:
    """The first required name that is not a paging context key."""
    return next((n for n in spec.required if not n.upper().startswith("CTX_AREA_")), None)


async def test_kis_missing_required_field_is_opsq2001(wide: tuple[Sandbox, Tokens]) -> None:
    """A generic KIS entry without a required field answers HTTP 200, rt_cd "2", OPSQ2001 naming it."""
    sandbox, tokens = wide
    checked = 0
    for spec in KIS:
        name = first_plain_required(spec)
        if spec.key in DEDICATED or name is None:
            continue
        status, body, _ = await kis_call(sandbox, tokens, spec, params_of(spec, drop=[name]))
        assert status == 200 and body["rt_cd"] == "2" and body["msg_cd"] == "OPSQ2001", (spec.key, body)
        assert body["msg1"].strip() == f"ERROR : INPUT_FIELD_NAME {name}", (spec.key, body)
        checked += 1
    assert checked > 250


async def test_kiwoom_missing_required_field_is_1511(wide: tuple[Sandbox, Tokens]) -> None:
    """A live Kiwoom api-id without a required body field answers return_code 2 and [1511:...] naming it."""
    sandbox, tokens = wide
    checked = 0
    for spec in KIWOOM_LIVE:
        if not spec.required:
            continue
        name = spec.required[0]
        status, body, _ = await kiwoom_call(sandbox, tokens, spec, params_of(spec, drop=[name]))
        assert status == 200 and body["return_code"] == 2, (spec.key, body)
        assert body["return_msg"].endswith(f"[1511:필수 입력 값에 값이 존재하지 않습니다({name})]"), body
        checked += 1
    assert checked > 170


async def test_kis_context_entries_page_with_tr_cont(wide: tuple[Sandbox, Tokens]) -> None:
    """Each generic KIS entry with CTX_AREA keys pages F, M, E; the keys go back with tr_cont N."""
    sandbox, tokens = wide
    settings = sandbox.state.settings
    paged = [s for s in KIS if s.paging_keys and s.key not in DEDICATED]
    assert len(paged) > 40
    for spec in paged:
        params, seen, codes = params_of(spec), 0, []
        headers: dict[str, str] = {}
        for _ in range(10):
            status, body, answer = await kis_call(sandbox, tokens, spec, params, headers=headers)
            assert status == 200 and body["rt_cd"] == "0", (spec.key, body)
            codes.append(answer["tr_cont"])
            rows = [
                v for k, v in body.items() if k.startswith("output") and isinstance(v, list) and len(v) > 1
            ]
            seen += len(rows[0]) if rows else 0
            for key in spec.paging_keys:
                assert len(body[key.lower()]) >= 30, (spec.key, key)
                params[key] = body[key.lower()]
            headers = {"tr_cont": "N"}
            if answer["tr_cont"] in ("D", "E"):
                break
        assert codes == ["F", "M", "E"], (spec.key, codes)
        assert seen == settings.generic_rows, spec.key


async def test_kis_context_of_another_request_is_refused(wide: tuple[Sandbox, Tokens]) -> None:
    """A continuation whose NK key belongs to another request answers OPSQ2001 on that key."""
    sandbox, tokens = wide
    spec = next(s for s in KIS if s.key == "CTFN6118R")
    params = params_of(spec)
    _, first, _ = await kis_call(sandbox, tokens, spec, params)
    nk = next(k for k in spec.paging_keys if "_NK" in k)
    other = {**params, "CANO": "11112222", nk: first[nk.lower()]}
    _, body, _ = await kis_call(sandbox, tokens, spec, other, headers={"tr_cont": "N"})
    assert body["rt_cd"] == "2" and body["msg1"].strip() == f"ERROR : INPUT_FIELD_NAME {nk}"


async def test_kis_tr_cont_without_context_is_one_page(wide: tuple[Sandbox, Tokens]) -> None:
    """An entry that pages by tr_cont alone has nothing to continue from: one page, tr_cont D."""
    sandbox, tokens = wide
    alone = [s for s in KIS if s.paging.value == "kis_tr_cont" and not s.paging_keys][:20]
    assert alone
    for spec in alone:
        _, body, answer = await kis_call(sandbox, tokens, spec, params_of(spec))
        assert body["rt_cd"] == "0" and answer["tr_cont"] == "D", spec.key


async def test_kiwoom_lists_page_with_cont_yn(wide: tuple[Sandbox, Tokens]) -> None:
    """Each live Kiwoom read with a list pages by cont-yn Y and next-key until cont-yn N."""
    sandbox, tokens = wide
    settings = sandbox.state.settings
    walked = 0
    for spec in KIWOOM_LIVE:
        if spec.kind == "order_write" or spec.key in KIWOOM_DEDICATED:
            continue
        headers: dict[str, str] = {}
        pages: list[str] = []
        seen = 0
        for _ in range(10):
            _, body, answer = await kiwoom_call(sandbox, tokens, spec, params_of(spec), headers=headers)
            assert body["return_code"] == 0, (spec.key, body)
            pages.append(answer["cont-yn"])
            seen += sum(len(v) for v in body.values() if isinstance(v, list))
            if answer["cont-yn"] != "Y":
                break
            headers = {"cont-yn": "Y", "next-key": answer["next-key"]}
        if len(pages) > 1:
            walked += 1
            assert pages == ["Y", "Y", "N"] and seen == settings.generic_rows, (spec.key, pages, seen)
        else:
            assert seen == 0, (spec.key, "a list that did not page")
    assert walked > 150


async def test_kiwoom_next_key_of_another_request_is_refused(wide: tuple[Sandbox, Tokens]) -> None:
    """A next-key replayed with a different body answers [1517:...(next-key)]."""
    sandbox, tokens = wide
    spec = next(s for s in KIWOOM_LIVE if s.key == "ka10030")
    _, _, answer = await kiwoom_call(sandbox, tokens, spec, params_of(spec))
    other = {**params_of(spec), "mrkt_tp": "101"}
    cont = {"cont-yn": "Y", "next-key": answer["next-key"]}
    _, body, _ = await kiwoom_call(sandbox, tokens, spec, other, headers=cont)
    assert body["return_code"] == 2 and "[1517:" in body["return_msg"] and "next-key" in body["return_msg"]


async def test_mock_server_serves_mock_tr_ids(wide: tuple[Sandbox, Tokens]) -> None:
    """Every KIS entry the mock server offers answers rt_cd 0 there when called with its mock tr_id."""
    sandbox, tokens = wide
    offered = [s for s in KIS if s.mock_supported]
    assert len(offered) > 280
    for spec in offered:
        status, body, answer = await kis_call(sandbox, tokens, spec, params_of(spec), env="mock")
        assert_kis_success(spec, status, body)
        assert answer["tr_id"] == spec.upstream_tr_id(mock=True)


async def test_mock_server_refuses_what_it_does_not_offer(wide: tuple[Sandbox, Tokens]) -> None:
    """An entry whose catalog mock is "no" answers HTTP 500 MCA00124 on the mock server, as KIS does."""
    sandbox, tokens = wide
    refused = [s for s in KIS if s.mock == "no"]
    assert len(refused) == 7
    for spec in refused:
        status, body, _ = await kis_call(sandbox, tokens, spec, params_of(spec), env="mock", tr_id=spec.tr_id)
        assert status == 500, spec.key
        assert body == {"rt_cd": "1", "msg_cd": "MCA00124", "msg1": "해당 서비스를 찾을수 없습니다."}


async def test_real_and_mock_tr_ids_stay_on_their_servers(wide: tuple[Sandbox, Tokens]) -> None:
    """A real tr_id whose mock id differs is refused on mock (모의투자 TR 이 아닙니다), a mock id on real."""
    sandbox, tokens = wide
    differing = [s for s in KIS if s.mock_tr_id and s.mock_tr_id != s.tr_id]
    assert len(differing) > 80
    for spec in differing:
        params = params_of(spec)
        status, body, _ = await kis_call(sandbox, tokens, spec, params, env="mock", tr_id=spec.tr_id)
        assert (status, body["msg_cd"], body["msg1"]) == (500, "OPSQ0002", "모의투자 TR 이 아닙니다."), (
            spec.key
        )
        status, body, _ = await kis_call(sandbox, tokens, spec, params, env="real", tr_id=spec.mock_tr_id)
        assert (status, body["msg_cd"]) == (500, "OPSQ0002"), spec.key


async def test_kiwoom_mock_serves_live_and_refuses_planned(wide: tuple[Sandbox, Tokens]) -> None:
    """Kiwoom's mock server answers every live api-id; planned overseas ids are 1505 "not live" on both."""
    sandbox, tokens = wide
    for spec in KIWOOM_LIVE:
        _, body, _ = await kiwoom_call(sandbox, tokens, spec, params_of(spec), env="mock")
        assert body["return_code"] == 0, (spec.key, body)
    assert len(KIWOOM_PLANNED) == 145
    for spec in KIWOOM_PLANNED:
        for env in ("real", "mock"):
            status, body, _ = await kiwoom_call(sandbox, tokens, spec, params_of(spec), env=env)
            assert status == 200 and body["return_code"] == 2, (spec.key, body)
            assert (
                "[1505:해당 API ID는 존재하지 않습니다(" in body["return_msg"]
                and "아직 제공되지" in body["return_msg"]
            )


async def test_unknown_paths_and_ids(wide: tuple[Sandbox, Tokens]) -> None:
    """KIS: an unknown path is 404 EGW00300, an unknown tr_id OPSQ0002; Kiwoom: 1505, 1504, 1501."""
    sandbox, tokens = wide
    headers = sandbox.kis_headers("FHKST01010100", tokens.kis_real)
    resp = await sandbox.client.get("/kis/real/uapi/domestic-stock/v1/quotations/nowhere", headers=headers)
    assert resp.status == 404 and (await resp.json())["msg_cd"] == "EGW00300"
    spec = next(s for s in KIS if s.key == "FHPST01700000")
    status, body, _ = await kis_call(sandbox, tokens, spec, params_of(spec), tr_id="FHPST99999999")
    assert (status, body["msg_cd"]) == (500, "OPSQ0002")
    acnt = next(s for s in KIWOOM_LIVE if s.key == "kt00018")
    cases = {"ka99999": 1505, "ka10001": 1504, "au10001": 1504, "": 1501}
    for api_id, code in cases.items():
        sent = {"api-id": api_id} if api_id else {}
        resp = await sandbox.client.post(
            f"/kiwoom/real{acnt.path}",
            json=params_of(acnt),
            headers={"authorization": f"Bearer {tokens.kiwoom_real}", **sent},
        )
        body = await resp.json()
        assert body["return_code"] == 2 and f"[{code}:" in body["return_msg"], (api_id, body)


async def test_same_request_same_body(wide: tuple[Sandbox, Tokens]) -> None:
    """Every read of both brokers answers the same body to the same request, and another to another."""
    sandbox, tokens = wide
    for spec in [s for s in KIS if s.kind != "order"]:
        params = params_of(spec)
        first = (await kis_call(sandbox, tokens, spec, params))[1]
        assert (await kis_call(sandbox, tokens, spec, params))[1] == first, spec.key
    for spec in [s for s in KIWOOM_LIVE if s.kind != "order_write"]:
        params = params_of(spec)
        first = (await kiwoom_call(sandbox, tokens, spec, params))[1]
        assert (await kiwoom_call(sandbox, tokens, spec, params))[1] == first, spec.key
    ranking = next(s for s in KIWOOM_LIVE if s.key == "ka10030")
    one = (await kiwoom_call(sandbox, tokens, ranking, params_of(ranking)))[1]
    other = (await kiwoom_call(sandbox, tokens, ranking, {**params_of(ranking), "mrkt_tp": "101"}))[1]
    assert one != other


async def test_generic_calls_pass_the_referee(wide: tuple[Sandbox, Tokens]) -> None:
    """Generic answers are counted on arrival like every other call, errors and refusals included."""
    sandbox, tokens = wide
    before = (await sandbox.env_stats("kiwoom/real", KIWOOM_KEY))["requests"]
    spec = next(s for s in KIWOOM_LIVE if s.key == "ka10030")
    await kiwoom_call(sandbox, tokens, spec, params_of(spec))
    await kiwoom_call(sandbox, tokens, spec, params_of(spec, drop=["mrkt_tp"]))
    assert (await sandbox.env_stats("kiwoom/real", KIWOOM_KEY))["requests"] == before + 2
    kis_before = (await sandbox.env_stats("kis/mock", kis_key(2)))["requests"]
    refused = next(s for s in KIS if s.mock == "no")
    await kis_call(sandbox, tokens, refused, params_of(refused), env="mock", tr_id=refused.tr_id)
    assert (await sandbox.env_stats("kis/mock", kis_key(2)))["requests"] == kis_before + 1


async def test_generic_orders_go_to_the_ledger(wide: tuple[Sandbox, Tokens]) -> None:
    """A generic order (a cancellation) gets a fresh order number each time and is recorded."""
    sandbox, tokens = wide
    spec = next(s for s in KIWOOM_LIVE if s.key == "kt10003")
    body = {**params_of(spec), "orig_ord_no": "0000001", "cncl_qty": "3"}
    numbers = [(await kiwoom_call(sandbox, tokens, spec, body))[1]["ord_no"] for _ in range(2)]
    assert numbers[0] != numbers[1]
    orders = [o for o in sandbox.state.orders if o.tr_id == "kt10003"]
    assert [(o.side, o.quantity, o.order_no) for o in orders] == [("cancel", 3, n) for n in numbers]


async def test_generic_kis_order_checks_custtype_and_hashkey(wide: tuple[Sandbox, Tokens]) -> None:
    """A generic KIS order without custtype is EGW00208, with a wrong hashkey EGW00131; neither is booked."""
    sandbox, tokens = wide
    spec = next(s for s in KIS if s.key == "TTTC0013U")
    token = tokens.kis_real
    headers = {k: v for k, v in sandbox.kis_headers(spec.tr_id, token).items() if k != "custtype"}
    resp = await sandbox.client.post(f"/kis/real{spec.path}", json=params_of(spec), headers=headers)
    assert resp.status == 500 and (await resp.json())["msg_cd"] == "EGW00208"
    _, body, _ = await kis_call(sandbox, tokens, spec, params_of(spec), headers={"hashkey": "0" * 64})
    assert body["msg_cd"] == "EGW00131"
    assert not [o for o in sandbox.state.orders if o.tr_id == spec.tr_id]
    _, body, _ = await kis_call(sandbox, tokens, spec, params_of(spec))
    assert body["msg_cd"] == "APBK0013"
    assert [o.side for o in sandbox.state.orders if o.tr_id == spec.tr_id] == ["modify"]
