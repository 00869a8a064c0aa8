"""Provider adapters: request building and classification by body as well as status."""

from __future__ import annotations

from datetime import UTC

import pytest

from hubclient.catalog import TrSpec, entries, lookup
from hubclient.models import ApiRequest, Provider
from services.gateway.errors import TokenIssueError
from services.gateway.providers.base import KST, Outcome, UpstreamAnswer
from services.gateway.providers.kis import KisAdapter
from services.gateway.providers.kiwoom import KiwoomAdapter, detailed_code
from services.settings import KisSettings, KiwoomSettings
from tests.unit.test_contract import make_request

KEY, SECRET = "k" * 36, "s" * 180


def kis(environment: str = "real") -> KisAdapter:
    return KisAdapter(
        KisSettings(base_url="http://x/kis/real/", appkey=KEY, appsecret=SECRET, environment=environment)
    )


def kiwoom() -> KiwoomAdapter:
    return KiwoomAdapter(KiwoomSettings(base_url="http://x/kw", appkey=KEY, secretkey=SECRET))


def kis_request(tr_id: str, **overrides: object) -> ApiRequest:
    return make_request(tr_id=tr_id, **overrides)


def test_kis_query_call() -> None:
    """A KIS quotation is a GET with string query params, bearer token, appkey headers and the tr_id."""
    up = kis().build(
        lookup("KIS", "FHKST01010100"), kis_request("FHKST01010100", params={"FID_INPUT_ISCD": 5930}), "TOKEN"
    )
    assert (up.method, up.url) == ("GET", "http://x/kis/real/uapi/domestic-stock/v1/quotations/inquire-price")
    assert up.query == {"FID_INPUT_ISCD": "5930"} and up.json_body is None
    assert up.headers["authorization"] == "Bearer TOKEN" and up.headers["tr_id"] == "FHKST01010100"


def test_kis_order_on_mock_uses_mock_tr_id_and_upper_body() -> None:
    """Orders are POSTs with upper-case string bodies, and the mock server gets the V… tr_id."""
    up = kis("mock").build(
        lookup("KIS", "TTTC0012U"), kis_request("TTTC0012U", params={"pdno": "005930", "ORD_QTY": 1}), "T"
    )
    assert up.method == "POST" and up.json_body == {"PDNO": "005930", "ORD_QTY": "1"}
    assert up.headers["tr_id"] == "VTTC0012U"


@pytest.mark.parametrize(
    ("status", "body", "outcome", "code"),
    [
        (200, {"rt_cd": "0", "msg_cd": "MCA00000", "msg1": "정상처리 되었습니다   "}, Outcome.OK, "MCA00000"),
        (
            500,
            {"rt_cd": "1", "msg_cd": "EGW00201", "msg1": "초당 거래건수를 초과하였습니다."},
            Outcome.THROTTLED,
            "EGW00201",
        ),
        (200, {"rt_cd": "1", "msg_cd": "EGW00201", "msg1": "x"}, Outcome.THROTTLED, "EGW00201"),
        (
            500,
            {"rt_cd": "1", "msg_cd": "EGW00123", "msg1": "기간이 만료된 token 입니다."},
            Outcome.TOKEN_REJECTED,
            "EGW00123",
        ),
        (500, {"rt_cd": "1", "msg_cd": "EGW00121", "msg1": "x"}, Outcome.TOKEN_REJECTED, "EGW00121"),
        (500, {"rt_cd": "1", "msg_cd": "EGW02004", "msg1": "x"}, Outcome.BUSINESS_ERROR, "EGW02004"),
        (502, None, Outcome.TRANSIENT, None),
        (404, {"error": "nope"}, Outcome.BUSINESS_ERROR, None),
    ],
)
def test_kis_classification(status: int, body: object, outcome: Outcome, code: str | None) -> None:
    """KIS answers are sorted by envelope first: throttling and expiry arrive as HTTP 500."""
    spec = lookup("KIS", "FHKST01010100")
    result = kis().classify(spec, kis_request(spec.tr_id), UpstreamAnswer(status, {}, body))
    assert (result.outcome, result.provider_code) == (outcome, code)


def test_kis_message_is_stripped() -> None:
    """The space padding of msg1 is removed."""
    spec = lookup("KIS", "FHKST01010100")
    body = {"rt_cd": "0", "msg_cd": "MCA00000", "msg1": "정상처리 되었습니다      "}
    assert (
        kis().classify(spec, kis_request(spec.tr_id), UpstreamAnswer(200, {}, body)).message
        == "정상처리 되었습니다"
    )


def test_kis_order_timeout_code_is_unknown_outcome() -> None:
    """An order answered with an internal-timeout code has an unknown outcome; a read does not."""
    body = {"rt_cd": "1", "msg_cd": "EGW00301", "msg1": "x"}
    order = kis().classify(
        lookup("KIS", "TTTC0012U"), kis_request("TTTC0012U"), UpstreamAnswer(500, {}, body)
    )
    read = kis().classify(
        lookup("KIS", "FHKST01010100"), kis_request("FHKST01010100"), UpstreamAnswer(500, {}, body)
    )
    assert order.outcome is Outcome.UNKNOWN_OUTCOME and read.outcome is Outcome.BUSINESS_ERROR


def test_kis_tr_cont_paging() -> None:
    """Balance pages continue with tr_cont N and the ctx keys while the header says F or M."""
    spec = lookup("KIS", "TTTC8434R")
    body = {"rt_cd": "0", "ctx_area_fk100": "FK ", "ctx_area_nk100": "NK "}
    more = kis().classify(spec, kis_request(spec.tr_id), UpstreamAnswer(200, {"tr_cont": "M"}, body))
    last = kis().classify(spec, kis_request(spec.tr_id), UpstreamAnswer(200, {"tr_cont": "D"}, body))
    assert more.continuation == {"tr_cont": "N", "CTX_AREA_FK100": "FK ", "CTX_AREA_NK100": "NK "}
    assert last.continuation is None
    follow = kis().build(spec, kis_request(spec.tr_id, continuation=more.continuation), "T")
    assert (
        follow.headers["tr_cont"] == "N"
        and follow.query is not None
        and follow.query["CTX_AREA_NK100"] == "NK "
    )


@pytest.mark.parametrize(
    "spec",
    [
        s
        for s in entries(Provider.KIS)
        if s.paging_keys and s.paging_keys != ("CTX_AREA_FK100", "CTX_AREA_NK100")
    ],
    ids=lambda s: s.key,
)
def test_kis_tr_cont_paging_carries_the_endpoints_own_context_keys(spec: TrSpec) -> None:
    """An endpoint whose context keys are 200, 50 or otherwise named continues with those keys, read from
    the body's lower-case fields, and the next request sends them."""
    body = {"rt_cd": "0", **{key.lower(): f"{key}-value" for key in spec.paging_keys}}
    more = kis().classify(spec, kis_request(spec.key), UpstreamAnswer(200, {"tr_cont": "F"}, body))
    assert more.continuation == {"tr_cont": "N", **{key: f"{key}-value" for key in spec.paging_keys}}
    follow = kis().build(spec, kis_request(spec.key, continuation=more.continuation), "T")
    if follow.query is not None:  # GET: as named; POST: the body's names are upper case
        assert all(follow.query[key] == f"{key}-value" for key in spec.paging_keys)
    else:
        assert follow.json_body is not None
        assert all(follow.json_body[key.upper()] == f"{key}-value" for key in spec.paging_keys)


def test_kis_time_cursor() -> None:
    """Minute bars continue one minute before the oldest bar until a short page or the open."""
    spec = lookup("KIS", "FHKST03010200")
    rows = [{"stck_cntg_hour": f"{15 - i // 60:02d}{59 - i % 60:02d}00"} for i in range(30)]
    full = kis().classify(
        spec, kis_request(spec.tr_id), UpstreamAnswer(200, {}, {"rt_cd": "0", "output2": rows})
    )
    assert full.continuation == {"FID_INPUT_HOUR_1": "152900"}
    short = kis().classify(
        spec, kis_request(spec.tr_id), UpstreamAnswer(200, {}, {"rt_cd": "0", "output2": rows[:5]})
    )
    assert short.continuation is None


def test_kis_token_parsing() -> None:
    """The absolute KST expiry is used, and EGW00133 is recognised as the issuance limit."""
    grant = kis().parse_token(
        UpstreamAnswer(
            200,
            {},
            {"access_token": "abc", "expires_in": 4000, "access_token_token_expired": "2026-11-28 09:00:00"},
        )
    )
    from datetime import datetime

    assert grant.expires_at_s == datetime(2026, 11, 28, 9, 0, tzinfo=KST).timestamp()
    with pytest.raises(TokenIssueError) as info:
        kis().parse_token(
            UpstreamAnswer(403, {}, {"error_code": "EGW00133", "error_description": "1분당 1회"})
        )
    assert info.value.refused_by_rate


@pytest.mark.parametrize(
    ("status", "body", "outcome", "code"),
    [
        (200, {"return_code": 0, "return_msg": "정상적으로 처리되었습니다"}, Outcome.OK, "0"),
        (
            429,
            {
                "return_code": 5,
                "return_msg": "허용된 요청 개수를 초과하였습니다[1700:허용된 요청 개수를 초과하였습니다. "
                "API ID=ka10080]",
            },
            Outcome.THROTTLED,
            "1700",
        ),
        (
            200,
            {
                "return_code": 5,
                "return_msg": "허용된 요청 개수를 초과하였습니다[1700:유량=5, API ID=ka10080]",
            },
            Outcome.THROTTLED,
            "1700",
        ),
        (
            200,
            {"return_code": 5, "return_msg": "허용된 요청 개수를 초과하였습니다[1634]"},
            Outcome.BUSINESS_ERROR,
            "5",
        ),
        (
            200,
            {"return_code": 3, "return_msg": "인증에 실패했습니다[8005:Token이 유효하지 않습니다]"},
            Outcome.TOKEN_REJECTED,
            "8005",
        ),
        (
            200,
            {"return_code": 1505, "return_msg": "해당 API ID는 존재하지 않습니다"},
            Outcome.BUSINESS_ERROR,
            "1505",
        ),
        (429, None, Outcome.THROTTLED, None),
        (503, None, Outcome.TRANSIENT, None),
    ],
)
def test_kiwoom_classification(status: int, body: object, outcome: Outcome, code: str | None) -> None:
    """Kiwoom answers are sorted by the bracketed code; a 1634 batch limit is not a throttle."""
    spec = lookup("KIWOOM", "ka10080")
    result = kiwoom().classify(
        spec, make_request(provider=Provider.KIWOOM, tr_id="ka10080"), UpstreamAnswer(status, {}, body)
    )
    assert (result.outcome, result.provider_code) == (outcome, code)


def test_kiwoom_paging_and_build() -> None:
    """cont-yn: Y and next-key come back as continuation and are sent as headers on the next call."""
    spec = lookup("KIWOOM", "ka10080")
    request = make_request(provider=Provider.KIWOOM, tr_id="ka10080", params={"stk_cd": "005930"})
    answer = UpstreamAnswer(200, {"cont-yn": "Y", "next-key": "abc"}, {"return_code": 0, "return_msg": ""})
    cont = kiwoom().classify(spec, request, answer).continuation
    assert cont == {"cont-yn": "Y", "next-key": "abc"}
    up = kiwoom().build(spec, request.model_copy(update={"continuation": cont}), "T")
    assert (up.method, up.url) == ("POST", "http://x/kw/api/dostk/chart")
    assert up.headers["api-id"] == "ka10080" and up.headers["next-key"] == "abc"
    assert up.json_body == {"stk_cd": "005930"}


def test_kiwoom_token_expiry_is_kst() -> None:
    """expires_dt is KST wall time, not UTC."""
    grant = kiwoom().parse_token(
        UpstreamAnswer(
            200, {}, {"return_code": 0, "token": "t", "token_type": "bearer", "expires_dt": "20261128090000"}
        )
    )
    from datetime import datetime

    assert grant.expires_at_s == datetime(2026, 11, 28, 0, 0, tzinfo=UTC).timestamp()
    assert detailed_code({"return_code": 0, "return_msg": "ok"}) is None
