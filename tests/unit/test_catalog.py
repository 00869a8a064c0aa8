"""The generated catalog: drift against the tables, field mapping, lookups, checks before Kafka, the CLI."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hubclient import HubClient, InvalidRequest, UnknownTrId
from hubclient import catalog_build as build
from hubclient.catalog import (
    LimitClass,
    Paging,
    TrSpec,
    entries,
    lookup,
    missing_params,
    refusal,
    search,
)
from hubclient.ids import new_request_id
from hubclient.models import ApiRequest, Provider
from hubclient.testing import InMemoryTransport, ok
from services.catalog_cli import table, width
from services.cli import main
from services.gateway.admission import check_request
from services.gateway.errors import Invalid

PRICE = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
OVERRIDDEN_KIS = sorted(k for p, k in build.OVERRIDES if p == "KIS")
OVERRIDDEN_KIWOOM = sorted(k for p, k in build.OVERRIDES if p == "KIWOOM")


def kis_row(**cells: str) -> dict[str, str]:
    """A KIS table row: a plain domestic quote unless ``cells`` say otherwise."""
    row = {
        "tr_id": "FHKST01010100",
        "mock_tr_id": "FHKST01010100",
        "method": "GET",
        "path": "/uapi/domestic-stock/v1/quotations/inquire-price",
        "category": "domestic_stock",
        "subcategory": "기본시세",
        "function": "inquire_price",
        "name": "주식현재가 시세",
        "params": "FID_COND_MRKT_DIV_CODE;FID_INPUT_ISCD",
        "paging": "-",
        "kind": "quote",
        "mock": "yes",
        "variant": "-",
    }
    return row | cells


def kiwoom_row(**cells: str) -> dict[str, str]:
    """A Kiwoom table row: a domestic chart read unless ``cells`` say otherwise."""
    row = {
        "api_id": "ka10080",
        "name": "주식분봉차트조회요청",
        "major_category": "국내주식",
        "subcategory": "차트",
        "method": "POST",
        "path": "/api/dostk/chart",
        "required_body_fields": "stk_cd;tic_scope;upd_stkpc_tp",
        "kind": "read",
    }
    return row | cells


def tsv(rows: list[dict[str, str]]) -> str:
    """A table's text: the header line (the rows' column names) and one tab-separated line a row."""
    return "\n".join(["\t".join(rows[0]), *("\t".join(r.values()) for r in rows)]) + "\n"


# --- drift and the generated file ------------------------------------------------------------------


def test_generated_file_matches_the_tables() -> None:
    """Regenerating from ../shared/reference gives exactly the checked-in catalog.json."""
    if not all((build.DEFAULT_SOURCE / name).exists() for name in (build.KIS_TABLE, build.KIWOOM_TABLE)):
        pytest.skip(f"endpoint tables absent from {build.DEFAULT_SOURCE}: drift not checked")
    assert build.generate() == build.CATALOG_FILE.read_text(encoding="utf-8"), (
        "catalog.json is stale: run `apihub catalog generate`"
    )


def test_render_is_deterministic_and_names_its_sources() -> None:
    """The same tables give the same bytes, whatever the row order, and the header carries each sha256."""
    kis = [kis_row(tr_id=t) for t in OVERRIDDEN_KIS] + [
        kis_row(tr_id="FHKST01010300", path="/x/inquire-ccnl")
    ]
    kiwoom = [kiwoom_row(api_id=a) for a in OVERRIDDEN_KIWOOM]
    first = build.render(tsv(kis).encode(), tsv(kiwoom).encode())
    again = build.render(tsv(kis[::-1]).encode(), tsv(kiwoom[::-1]).encode())
    keys = [line.split('"key": "')[1].split('"')[0] for line in first.splitlines() if '"key"' in line]
    assert keys == sorted([*OVERRIDDEN_KIS, "FHKST01010300"]) + OVERRIDDEN_KIWOOM
    assert '"sha256": "' in first.splitlines()[1] and first.endswith("}\n")
    assert first.replace(first.splitlines()[1], "") == again.replace(again.splitlines()[1], "")


def test_counts_of_the_checked_in_catalog() -> None:
    """Every REST row is in: KIS 294, Kiwoom 182 domestic and 145 planned overseas; no auth or stream row."""
    kis, kiwoom = entries("KIS"), entries(Provider.KIWOOM)
    assert len(kis) == 294 and len(entries()) == 294 + 182 + 145
    assert sum(not e.planned for e in kiwoom) == 182 and sum(e.planned for e in kiwoom) == 145
    assert all(e.tr_id.startswith(("usa", "ust")) for e in kiwoom if e.planned)
    assert not {e.kind for e in entries()} & {"auth", "auth_write", "stream"}
    assert len({(e.provider, e.key) for e in entries()}) == len(entries())


def test_a_tr_id_with_two_paths_keeps_both() -> None:
    """HHDFO55020100 (two option endpoints) stays under its id for one path and a keyed name for the other."""
    first, second = lookup("KIS", "HHDFO55020100"), lookup("KIS", "HHDFO55020100_opt_daily_ccnl")
    assert first.path.endswith("/inquire-time-optchartprice") and second.path.endswith("/opt-daily-ccnl")
    assert second.tr_id == "HHDFO55020100" and second.upstream_tr_id(mock=False) == "HHDFO55020100"


def test_skipped_and_colliding_rows() -> None:
    """Auth and stream rows are left out; a duplicate tr_id gets ``<tr_id>_<function>``; overrides apply."""
    kis = [
        kis_row(tr_id="-", kind="auth", path="/oauth2/tokenP"),
        kis_row(tr_id="HHDFO55020100", path="/q/b", function="opt_b"),
        kis_row(tr_id="HHDFO55020100", path="/q/a", function="opt_a"),
        kis_row(tr_id="FHKST03010230", mock="undeclared", mock_tr_id="-"),
    ]
    kiwoom = [
        kiwoom_row(api_id="0B", kind="stream"),
        kiwoom_row(api_id="au10001", kind="auth_write"),
        kiwoom_row(api_id="ka10079"),
        kiwoom_row(api_id="ka10080"),
        kiwoom_row(api_id="ka10081"),
        kiwoom_row(api_id="ka10082"),
        kiwoom_row(api_id="ka10083"),
        kiwoom_row(api_id="kt10000", kind="order_write"),
        kiwoom_row(api_id="kt10001", kind="order_write"),
        kiwoom_row(api_id="usa06011"),
    ]
    # only the overrides the sample tables carry may be named, so check the error first
    with pytest.raises(ValueError, match="overrides name entries the tables lack"):
        build.build_entries(tsv(kis[:3]), tsv(kiwoom))
    more = [kis_row(tr_id=t) for t in ("FHKST03010100", "FHKST03010200")]
    got = {e["key"]: e for e in build.build_entries(tsv(kis + more), tsv(kiwoom))}
    assert "0B" not in got and "au10001" not in got and "-" not in got
    assert (got["HHDFO55020100"]["path"], got["HHDFO55020100_opt_b"]["path"]) == ("/q/a", "/q/b")
    assert got["FHKST03010230"]["mock"] == "no" and got["FHKST03010230"]["mock_tr_id"] is None
    assert (
        got["FHKST03010230"]["overridden"] == ["mock", "paging"] and got["ka10080"]["name"] == "minute-chart"
    )
    assert got["usa06011"]["planned"] and not got["ka10080"]["planned"]


# --- the field mapping, as tables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "idempotent", "limit_class"),
    [("quote", True, "query"), ("account", True, "ledger"), ("order", False, "ledger")],
)
def test_kis_kind_mapping(kind: str, idempotent: bool, limit_class: str) -> None:
    """KIS quotes count as queries, account and order calls also as ledger calls; orders are never resent."""
    entry = build.kis_entry(kis_row(kind=kind))
    assert (entry["idempotent"], entry["limit_class"]) == (idempotent, limit_class)


@pytest.mark.parametrize(
    ("kind", "idempotent", "limit_class", "paging"),
    [
        ("read", True, "query", "kiwoom_cont"),
        ("account_read", True, "query", "kiwoom_cont"),
        ("order_write", False, "order", "none"),
        ("review_required", False, "order", "none"),
    ],
)
def test_kiwoom_kind_mapping(kind: str, idempotent: bool, limit_class: str, paging: str) -> None:
    """Kiwoom reads are queries that may page; orders and unclassified rows count as orders, never resent."""
    entry = build.kiwoom_entry(kiwoom_row(kind=kind))
    assert (entry["idempotent"], entry["limit_class"], entry["paging"]) == (idempotent, limit_class, paging)


@pytest.mark.parametrize(
    ("tr_id", "mock", "mock_tr_id", "expected"),
    [
        ("TTTC8434R", "yes", "VTTC8434R", ("VTTC8434R", True)),  # published
        ("FHKST01010100", "yes", "FHKST01010100", ("FHKST01010100", True)),  # published, the same id
        ("TTTC0051U", "no", "-", (None, False)),  # the mock server refuses it
        ("CTCA0903R", "undeclared", "-", ("VTCA0903R", True)),  # samples' rule: C -> V
        ("JTCE5005R", "undeclared", "-", ("VTCE5005R", True)),  # J -> V
        ("TTTS3012R", "undeclared", "-", ("VTTS3012R", True)),  # T -> V
        ("FHKST03010230", "undeclared", "-", ("FHKST03010230", True)),  # F stays
        ("HHDFS76200200", "undeclared", "-", ("HHDFS76200200", True)),  # H stays
    ],
)
def test_kis_mock_mapping(tr_id: str, mock: str, mock_tr_id: str, expected: tuple[str | None, bool]) -> None:
    """The mock column gives the mock tr_id and whether the mock server offers the call."""
    assert build.kis_mock(tr_id, mock, mock_tr_id) == expected
    entry = build.kis_entry(kis_row(tr_id=tr_id, mock=mock, mock_tr_id=mock_tr_id))
    assert (entry["mock_tr_id"], entry["mock_supported"], entry["mock"]) == (*expected, mock)


@pytest.mark.parametrize(
    ("cell", "paging", "keys"),
    [
        ("-", "none", ()),
        ("tr_cont", "kis_tr_cont", ()),
        ("tr_cont;CTX_AREA_FK100;CTX_AREA_NK100", "kis_tr_cont", ("CTX_AREA_FK100", "CTX_AREA_NK100")),
        ("tr_cont;CTX_AREA_NK200;CTX_AREA_FK200", "kis_tr_cont", ("CTX_AREA_NK200", "CTX_AREA_FK200")),
        ("CTX_AREA_FK100;CTX_AREA_NK100", "kis_tr_cont", ("CTX_AREA_FK100", "CTX_AREA_NK100")),
    ],
)
def test_kis_paging_mapping(cell: str, paging: str, keys: tuple[str, ...]) -> None:
    """A paging column naming tr_cont or CTX_AREA keys pages by tr_cont and carries those keys."""
    assert build.kis_paging(cell) == (paging, keys)


@pytest.mark.parametrize(
    ("row", "name", "params_in", "required"),
    [
        (kis_row(), "inquire-price", "query", ("FID_COND_MRKT_DIV_CODE", "FID_INPUT_ISCD")),
        (kis_row(method="POST", function="order_cash", variant="ord_dv=buy", params="CANO"), "order-cash-buy",
         "body", ("CANO",)),
        (kis_row(params="-"), "inquire-price", "query", ()),
    ],
)  # fmt: skip
def test_kis_names_and_parameters(
    row: dict[str, str], name: str, params_in: str, required: tuple[str, ...]
) -> None:
    """Names come from the samples' function (plus the variant), GET sends a query, POST a body."""
    entry = build.kis_entry(row)
    assert (entry["name"], entry["params_in"], tuple(entry["required"])) == (name, params_in, required)


@pytest.mark.parametrize(
    ("api_id", "planned"), [("ka10080", False), ("kt00018", False), ("usa06011", True), ("ust21070", True)]
)
def test_kiwoom_planned_rows(api_id: str, planned: bool) -> None:
    """Kiwoom's overseas usa*/ust* api-ids are published as planned, the domestic ones live."""
    assert build.kiwoom_entry(kiwoom_row(api_id=api_id))["planned"] is planned
    assert lookup("KIWOOM", api_id).planned is planned


# --- the hand-written facts stay true ---------------------------------------------------------------

_K, _W = Provider.KIS, Provider.KIWOOM
_Q, _T = "/uapi/domestic-stock/v1/quotations", "/uapi/domestic-stock/v1/trading"
_NONE, _CURSOR, _TR_CONT, _CONT = Paging.NONE, Paging.KIS_TIME_CURSOR, Paging.KIS_TR_CONT, Paging.KIWOOM_CONT
HAND_WRITTEN = [
    # provider, tr_id, name, method, path, idempotent, paging, mock tr_id sent, offered on mock
    (_K, "FHKST01010100", "inquire-price", "GET", f"{_Q}/inquire-price", True, _NONE, "FHKST01010100", True),
    (_K, "FHKST01010300", "inquire-ccnl", "GET", f"{_Q}/inquire-ccnl", True, _NONE, "FHKST01010300", True),
    (_K, "FHKST01010400", "inquire-daily-price", "GET", f"{_Q}/inquire-daily-price", True, _NONE,
     "FHKST01010400", True),
    (_K, "FHKST03010100", "inquire-daily-itemchartprice", "GET", f"{_Q}/inquire-daily-itemchartprice",
     True, _CURSOR, "FHKST03010100", True),
    (_K, "FHKST03010200", "inquire-time-itemchartprice", "GET", f"{_Q}/inquire-time-itemchartprice",
     True, _CURSOR, "FHKST03010200", True),
    (_K, "FHKST03010230", "inquire-time-dailychartprice", "GET", f"{_Q}/inquire-time-dailychartprice",
     True, _CURSOR, "FHKST03010230", False),
    (_K, "TTTC0012U", "order-cash-buy", "POST", f"{_T}/order-cash", False, _NONE, "VTTC0012U", True),
    (_K, "TTTC0011U", "order-cash-sell", "POST", f"{_T}/order-cash", False, _NONE, "VTTC0011U", True),
    (_K, "TTTC8434R", "inquire-balance", "GET", f"{_T}/inquire-balance", True, _TR_CONT, "VTTC8434R", True),
    (_W, "ka10079", "tick-chart", "POST", "/api/dostk/chart", True, _CONT, "ka10079", True),
    (_W, "ka10080", "minute-chart", "POST", "/api/dostk/chart", True, _CONT, "ka10080", True),
    (_W, "ka10081", "daily-chart", "POST", "/api/dostk/chart", True, _CONT, "ka10081", True),
    (_W, "ka10082", "weekly-chart", "POST", "/api/dostk/chart", True, _CONT, "ka10082", True),
    (_W, "ka10083", "monthly-chart", "POST", "/api/dostk/chart", True, _CONT, "ka10083", True),
    (_W, "kt10000", "order-buy", "POST", "/api/dostk/ordr", False, _NONE, "kt10000", True),
    (_W, "kt10001", "order-sell", "POST", "/api/dostk/ordr", False, _NONE, "kt10001", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("provider", "tr_id", "name", "method", "path", "idempotent", "paging", "on_mock", "mock_ok"),
    HAND_WRITTEN,
)
def test_hand_written_entries_keep_their_behaviour(
    provider: Provider,
    tr_id: str,
    name: str,
    method: str,
    path: str,
    idempotent: bool,
    paging: Paging,
    on_mock: str,
    mock_ok: bool,
) -> None:
    """The 16 entries the hub served before the generated catalog answer exactly as they did."""
    spec = lookup(provider, tr_id)
    assert (spec.name, spec.method, spec.path, spec.idempotent, spec.paging) == (
        name,
        method,
        path,
        idempotent,
        paging,
    )
    assert spec.params_in == ("query" if method == "GET" else "body")
    assert spec.upstream_tr_id(mock=False) == tr_id and spec.mock_supported is mock_ok
    if mock_ok:
        assert spec.upstream_tr_id(mock=True) == on_mock


def test_new_fields_of_known_entries() -> None:
    """Balance, order and chart entries carry category, Korean name, kind, limit class and required names."""
    balance, order, chart = (
        lookup("KIS", "TTTC8434R"),
        lookup("KIS", "TTTC0012U"),
        lookup("KIWOOM", "ka10080"),
    )
    assert (balance.category, balance.subcategory, balance.name_ko) == (
        "domestic_stock",
        "주문/계좌",
        "주식잔고조회",
    )
    assert (balance.kind, balance.limit_class, balance.mock) == ("account", LimitClass.LEDGER, "yes")
    assert (
        balance.paging_keys == ("CTX_AREA_FK100", "CTX_AREA_NK100") and balance.function == "inquire_balance"
    )
    assert (order.kind, order.limit_class, order.idempotent) == ("order", LimitClass.LEDGER, False)
    assert (chart.category, chart.function, chart.required) == (
        "국내주식",
        "",
        ("stk_cd", "tic_scope", "upd_stkpc_tp"),
    )
    assert lookup("KIWOOM", "kt10000").limit_class is LimitClass.ORDER
    assert TrSpec(_K, "X1", "x", "GET", "/x", "query", True).key == "X1"  # old call sites still build specs


# --- lookup and search ---------------------------------------------------------------------------


def test_lookup_refuses_what_is_not_listed() -> None:
    """An id of the other broker, an unknown id or provider raise UnknownTrId."""
    for provider, tr_id in (("KIS", "ka10080"), ("KIWOOM", "TTTC8434R"), ("KIS", "NOPE0000"), ("NYSE", "X")):
        with pytest.raises(UnknownTrId):
            lookup(provider, tr_id)


def test_search_finds_the_balance_endpoints_of_both_brokers() -> None:
    """search('잔고') finds the balances of KIS (TTTC8434R) and Kiwoom (kt00018), and nothing unrelated."""
    found = {(e.provider, e.key) for e in search("잔고")}
    assert {(_K, "TTTC8434R"), (_K, "TTTS3012R"), (_W, "kt00018")} <= found
    assert all("잔고" in lookup(p, k).name_ko for p, k in found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tttc8434r", "TTTC8434R"),  # id, any case
        ("INQUIRE-BALANCE", "TTTC8434R"),  # path and name
        ("inquire_balance", "TTTC8434R"),  # the samples' function
        ("분봉 주식", "ka10080"),  # every word of a Korean name, any order
        ("/api/dostk/chart", "ka10080"),  # path
    ],
)
def test_search_matches_id_path_function_and_names(text: str, expected: str) -> None:
    """search is case-insensitive over id, path, function and both names, every word required."""
    assert expected in {e.key for e in search(text)}


def test_search_of_nothing_is_nothing() -> None:
    """An empty or blank text matches no entry rather than all of them."""
    assert search("") == () and search("   ") == () and search("zz-no-such-endpoint") == ()


# --- the checks before Kafka -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tr_id", "params", "continuation", "missing"),
    [
        ("FHKST01010100", PRICE, None, ()),
        ("FHKST01010100", {"FID_INPUT_ISCD": "005930"}, None, ("FID_COND_MRKT_DIV_CODE",)),
        ("FHKST01010100", {}, None, ("FID_COND_MRKT_DIV_CODE", "FID_INPUT_ISCD")),
        ("FHKST01010100", None, None, ("FID_COND_MRKT_DIV_CODE", "FID_INPUT_ISCD")),
        ("FHKST01010100", {"fid_cond_mrkt_div_code": "J", "FID_INPUT_ISCD": ""}, None, ()),  # blank counts
        ("FHKST190900C0", {}, None, None),  # a row published in lower case, upper-case keys sent
        ("FHKST03010200", {**PRICE, "FID_INPUT_HOUR_1": "1530", "FID_PW_DATA_INCU_YN": "N"}, None,
         ("FID_ETC_CLS_CODE",)),
        ("FHKST03010200", {**PRICE, "FID_PW_DATA_INCU_YN": "N", "FID_ETC_CLS_CODE": ""},
         {"FID_INPUT_HOUR_1": "1400"}, ()),  # the continuation supplies the cursor
    ],
)  # fmt: skip
def test_missing_params(
    tr_id: str,
    params: dict[str, Any] | None,
    continuation: dict[str, str] | None,
    missing: tuple[str, ...] | None,
) -> None:
    """A name is present when its key is there (blank too), in any case, in the params or the continuation."""
    spec = lookup("KIS", tr_id)
    if missing is None:  # a row published with lower-case names: upper-case keys satisfy it
        assert any(n != n.upper() for n in spec.required)
        given = {n.upper(): "" for n in spec.required}
        assert missing_params(spec, given) == ()
        return
    assert missing_params(spec, params, continuation) == missing


def test_paging_context_is_never_demanded() -> None:
    """CTX_AREA_* keys are blank on a first page and come from the continuation later: never required."""
    spec = lookup("KIS", "TTTC8434R")
    first_page = {n: "" for n in spec.required if not n.startswith("CTX_AREA_")}
    assert "CTX_AREA_FK100" in spec.required and missing_params(spec, first_page) == ()
    assert missing_params(spec, {}) == tuple(first_page)


def test_refusal_reasons() -> None:
    """A planned endpoint is refused as not live; missing parameters are named; a complete call passes."""
    planned = refusal(lookup("KIWOOM", "usa06011"), {})
    assert planned is not None and planned.reason == "endpoint_not_live" and "usa06011" in planned.message
    assert "not live yet" in planned.message
    missing = refusal(lookup("KIWOOM", "ka10080"), {"stk_cd": "005930"})
    assert missing is not None and missing.reason == "missing_params"
    assert missing.message.endswith("lacks required parameters: tic_scope, upd_stkpc_tp")
    assert refusal(lookup("KIS", "FHKST01010100"), PRICE) is None


async def test_client_refuses_before_sending() -> None:
    """execute and submit refuse a planned endpoint and a call lacking a parameter; nothing is sent."""
    transport = InMemoryTransport(lambda r: ok(r, {"rt_cd": "0"}))
    async with HubClient(transport, caller="unit") as hub:
        with pytest.raises(InvalidRequest, match=r"endpoint_not_live KIWOOM/usa06011 .*not live yet"):
            await hub.execute("KIWOOM", "usa06011", {"stk_cd": "AAPL"}, timeout=1)
        with pytest.raises(InvalidRequest, match=r"missing_params .*FID_COND_MRKT_DIV_CODE, FID_INPUT_ISCD$"):
            await hub.submit("KIS", "FHKST01010100", {}, timeout=1)
        with pytest.raises(UnknownTrId):
            await hub.submit("KIS", "NOPE0000", PRICE, timeout=1)
        assert transport.sent == []
        await hub.execute("KIS", "HHDFO55020100_opt_daily_ccnl", dict.fromkeys(lookup(
            "KIS", "HHDFO55020100_opt_daily_ccnl").required, ""), timeout=1)  # fmt: skip
    assert [r.tr_id for r in transport.sent] == ["HHDFO55020100_opt_daily_ccnl"]  # the catalog key travels


def _request(provider: str, tr_id: str, params: dict[str, Any]) -> ApiRequest:
    now_ms = int(time.time() * 1000)
    return ApiRequest(
        request_id=new_request_id(now_ms),
        provider=Provider(provider),
        tr_id=tr_id,
        params=params,
        caller="any-client",
        deadline_ms=now_ms + 5000,
        created_at_ms=now_ms,
        reply_topic="api.responses",
        reply_partition=0,
    )


@pytest.mark.parametrize(
    ("provider", "tr_id", "params", "reason"),
    [
        ("KIWOOM", "usa06011", {}, "endpoint_not_live"),
        ("KIS", "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J"}, "missing_params"),
        ("KIS", "NOPE0000", {}, "unknown_tr_id"),
    ],
)
def test_gateway_answers_invalid_with_the_same_reason(
    provider: str, tr_id: str, params: dict[str, Any], reason: str
) -> None:
    """A client that skips the check (any language, raw Kafka) gets ``invalid`` with the client's reason."""
    request = _request(provider, tr_id, params)
    with pytest.raises(Invalid) as info:
        check_request(request, now_ms=request.created_at_ms)
    assert info.value.reason == reason
    if reason != "unknown_tr_id":
        problem = refusal(lookup(provider, tr_id), params)
        assert problem is not None and info.value.message == problem.message


def test_gateway_admits_a_complete_call() -> None:
    """A listed, live endpoint with every required key passes admission and yields its spec."""
    request = _request("KIS", "FHKST01010100", PRICE)
    assert check_request(request, now_ms=request.created_at_ms).tr_id == "FHKST01010100"


# --- the command line ------------------------------------------------------------------------------


def test_cli_search_finds_balances_of_both_brokers(capsys: pytest.CaptureFixture[str]) -> None:
    """`apihub catalog search 잔고` lists KIS TTTC8434R and Kiwoom kt00018 and counts both providers."""
    assert main(["catalog", "search", "잔고"]) == 0
    out = capsys.readouterr().out
    assert "TTTC8434R" in out and "kt00018" in out and "주식잔고조회" in out
    assert out.rstrip().splitlines()[-1].startswith(f"{len(search('잔고'))} endpoints (KIS ")


def test_cli_columns_line_up_with_korean_names(capsys: pytest.CaptureFixture[str]) -> None:
    """Every row's path starts at the same terminal column although the names are Korean."""
    assert main(["catalog", "list", "--provider", "kiwoom", "--category", "차트"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "/api/" in line or "path" in line]
    starts = {width(line[: line.index("/api/" if "/api/" in line else "path")]) for line in lines}
    assert len(lines) > 10 and len(starts) == 1
    assert all(line.startswith("KIWOOM") for line in lines[1:])


def test_table_pads_by_display_width() -> None:
    """A wide (Korean) cell takes two columns a character, so the next column starts where it should."""
    lines = table([["잔고", "a", "end"], ["ab", "bb", "end"]])
    assert [width(line) for line in lines] == [13, 13] and lines[0] == "잔고  a   end"


def test_cli_list_filters_by_provider_and_category(capsys: pytest.CaptureFixture[str]) -> None:
    """list --provider/--category keep only matching entries; a category with no entry exits 1."""
    assert main(["catalog", "list", "--provider", "KIS", "--category", "etfetn"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("KIS ")]
    assert len(rows) == sum(e.category == "etfetn" for e in entries("KIS")) > 0
    assert main(["catalog", "list", "--category", "no-such-category"]) == 1


def test_cli_show(capsys: pytest.CaptureFixture[str]) -> None:
    """show prints one endpoint's facts; an unknown id exits 1 with a hint."""
    assert main(["catalog", "show", "TTTC8434R"]) == 0
    out = capsys.readouterr().out
    assert "GET /uapi/domestic-stock/v1/trading/inquire-balance" in out and "VTTC8434R" in out
    assert "ledger" in out and "CTX_AREA_FK100, CTX_AREA_NK100" in out
    assert main(["catalog", "show", "usa06011"]) == 0 and "planned" in capsys.readouterr().out
    assert main(["catalog", "show", "NOPE0000"]) == 1
    assert "not in the catalog" in capsys.readouterr().err


def test_cli_generate_reports_absent_tables(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """generate with a folder lacking the tables exits 2 naming the file instead of a traceback."""
    assert main(["catalog", "generate", "--source", str(tmp_path), "--check"]) == 2
    assert "kis-endpoints.tsv" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kis", "says"),
    [
        (b"kind\ttr_id\nrest\tFHKST01010100\n", "lack the column"),
        (b"kind\ttr_id\n\xff\xfe\tx\n", "cannot be used: 'utf-8' codec can't decode"),
    ],
    ids=["missing-column", "not-utf8"],
)
def test_cli_generate_refuses_tables_it_cannot_read(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], kis: bytes, says: str
) -> None:
    """Tables with a column missing or that are not UTF-8 text are one ``error:`` line, exit 2."""
    (tmp_path / build.KIS_TABLE).write_bytes(kis)
    (tmp_path / build.KIWOOM_TABLE).write_bytes(b"kind\n")
    assert main(["catalog", "generate", "--source", str(tmp_path), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the endpoint tables in ") and says in err and len(err.splitlines()) == 1


def test_cli_generate_refuses_a_file_as_source(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """``--source`` naming a file, not a folder, is one ``error:`` line, exit 2."""
    (tmp_path / "tables.tsv").write_text("kind\n")
    assert main(["catalog", "generate", "--source", str(tmp_path / "tables.tsv"), "--check"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --source {tmp_path / 'tables.tsv'} is not a folder (it holds the two .tsv tables)\n"
    )


def test_write_reports_whether_it_changed(tmp_path: Any) -> None:
    """write() regenerates a target once and reports no change the second time."""
    source = tmp_path / "src"
    source.mkdir()
    (source / build.KIS_TABLE).write_text(tsv([kis_row(tr_id=t) for t in OVERRIDDEN_KIS]))
    (source / build.KIWOOM_TABLE).write_text(tsv([kiwoom_row(api_id=a) for a in OVERRIDDEN_KIWOOM]))
    target = tmp_path / "catalog.json"
    assert build.write(source, target) is True and build.write(source, target) is False
    assert target.read_text(encoding="utf-8") == build.generate(source)
