"""Known broker token behaviours, table by table: expired and invalid tokens (KIS EGW00123 as HTTP 500,
Kiwoom 8005 in return_msg brackets with return_code 3) replace the token once; Kiwoom's expires_dt is KST;
KIS's token endpoint answers errors as error_code / error_description."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hubclient.catalog import lookup
from hubclient.models import Provider, Status
from services.gateway.clock import ManualClock
from services.gateway.errors import TokenIssueError
from services.gateway.providers.base import Outcome, UpstreamAnswer
from services.gateway.providers.kis import KisAdapter
from services.gateway.providers.kiwoom import KiwoomAdapter
from services.gateway.testing import Rig, build_gateway, kis_envelope, kiwoom_envelope
from services.settings import KisSettings, KiwoomSettings
from tests.unit.test_gateway_core import serve
from tests.unit.test_limit_classes import call

KIS, KIWOOM = KisAdapter(KisSettings()), KiwoomAdapter(KiwoomSettings())
KIWOOM_8005: dict[str, Any] = {
    "return_code": 3,
    "return_msg": "인증에 실패했습니다[8005:Token이 유효하지 않습니다]",
}


@pytest.mark.parametrize(
    ("adapter", "tr_id", "answer", "outcome"),
    [
        (KIS, "FHKST01010100", kis_envelope("EGW00123", rt_cd="1", status=500), Outcome.TOKEN_REJECTED),
        (KIS, "FHKST01010100", kis_envelope("EGW00123", rt_cd="1", status=200), Outcome.TOKEN_REJECTED),
        (KIS, "TTTC0012U", kis_envelope("EGW00121", rt_cd="1", status=500), Outcome.TOKEN_REJECTED),
        (KIS, "FHKST01010100", kis_envelope("EGW00201", rt_cd="1", status=500), Outcome.THROTTLED),
        (KIWOOM, "ka10081", UpstreamAnswer(200, {}, KIWOOM_8005), Outcome.TOKEN_REJECTED),
        (KIWOOM, "kt10000", UpstreamAnswer(200, {}, KIWOOM_8005), Outcome.TOKEN_REJECTED),
        (
            KIWOOM,
            "ka10081",
            UpstreamAnswer(200, {}, {"return_code": 8005, "return_msg": ""}),
            Outcome.TOKEN_REJECTED,
        ),
        (KIWOOM, "ka10081", UpstreamAnswer(401, {}, None), Outcome.TOKEN_REJECTED),
        (
            KIWOOM,
            "ka10081",
            UpstreamAnswer(
                200, {}, {"return_code": 3, "return_msg": "인증에 실패했습니다[8001:App Key 검증 실패]"}
            ),
            Outcome.BUSINESS_ERROR,
        ),
    ],
)
def test_token_rejections_are_read_from_the_body(
    adapter: KisAdapter | KiwoomAdapter, tr_id: str, answer: UpstreamAnswer, outcome: Outcome
) -> None:
    """Expired or invalid tokens are recognised by the body's code, whatever the HTTP status; a wrong key
    (8001) is not a token problem a new token would fix."""
    request = call(ManualClock(), adapter.provider, tr_id)
    assert adapter.classify(lookup(adapter.provider, tr_id), request, answer).outcome is outcome


@pytest.mark.parametrize(
    ("expires_dt", "utc"),
    [
        ("20261128090000", datetime(2026, 11, 28, 0, 0, 0, tzinfo=UTC)),
        ("20270101000000", datetime(2026, 12, 31, 15, 0, 0, tzinfo=UTC)),
        ("20261130083713", datetime(2026, 11, 29, 23, 37, 13, tzinfo=UTC)),
    ],
)
def test_kiwoom_expires_dt_is_kst(expires_dt: str, utc: datetime) -> None:
    """Kiwoom's expires_dt is Korean wall time (UTC+9), never UTC or the host's zone."""
    body = {"return_code": 0, "token": "t", "token_type": "bearer", "expires_dt": expires_dt}
    grant = KIWOOM.parse_token(UpstreamAnswer(200, {}, body))
    assert grant.expires_at_s == utc.timestamp()


@pytest.mark.parametrize(
    ("status", "body", "code", "by_rate", "text"),
    [
        (
            403,
            {
                "error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
                "error_code": "EGW00133",
            },
            "EGW00133",
            True,
            "1분당 1회",
        ),
        (
            403,
            {"error_description": "유효하지 않은 AppKey입니다.", "error_code": "EGW00103"},
            "EGW00103",
            False,
            "AppKey",
        ),
        (
            500,
            {"rt_cd": "1", "msg_cd": "EGW00002", "msg1": "서버 에러가 발생했습니다."},
            "EGW00002",
            False,
            "서버",
        ),
        (502, "<html>bad gateway</html>", None, False, "HTTP 502"),
    ],
)
def test_kis_token_errors_are_read_from_their_own_envelope(
    status: int, body: object, code: str | None, by_rate: bool, text: str
) -> None:
    """The token endpoint's error_code/error_description (or, failing that, msg_cd/msg1) name the refusal;
    EGW00133 is the one-per-minute rule."""
    with pytest.raises(TokenIssueError) as caught:
        KIS.parse_token(UpstreamAnswer(status, {}, body))
    assert (caught.value.code, caught.value.refused_by_rate) == (code, by_rate)
    assert text in str(caught.value)


def kiwoom_rig() -> Rig:
    return build_gateway(kiwoom=KiwoomSettings())


@pytest.mark.parametrize(
    ("provider", "tr_id", "rejection"),
    [
        (Provider.KIS, "FHKST01010100", kis_envelope("EGW00123", rt_cd="1", status=500)),
        (Provider.KIWOOM, "ka10081", UpstreamAnswer(200, {}, KIWOOM_8005)),
        (Provider.KIWOOM, "ka10081", kiwoom_envelope(3, KIWOOM_8005["return_msg"])),
    ],
)
async def test_a_rejected_token_is_replaced_once_and_the_call_succeeds(
    provider: Provider, tr_id: str, rejection: UpstreamAnswer
) -> None:
    """After EGW00123 (HTTP 500) or 8005 the token is dropped, a new one issued, and the call made again
    with it; a second rejection in a row ends the request upstream_error/token_rejected."""
    rig = kiwoom_rig()
    broker = rig.broker if provider is Provider.KIS else rig.kiwoom
    first = await serve(rig, [call(rig.clock, provider, tr_id)])
    assert first[0].response.ok and broker.tokens_issued == 1
    await rig.clock.advance(62)  # past the issuance permit of the first token
    broker.then(rejection)
    (replaced,) = await serve(rig, [call(rig.clock, provider, tr_id)])
    assert replaced.response.ok and replaced.response.attempts == 2 and broker.tokens_issued == 2
    last = [s.request.headers["authorization"] for s in rig.dispatcher.sent if "oauth2" not in s.request.url]
    assert last[-2] != last[-1]  # the retry carried the new token
    await rig.clock.advance(62)
    broker.then(rejection).then(rejection)
    (given_up,) = await serve(rig, [call(rig.clock, provider, tr_id)])
    assert (given_up.response.status, given_up.response.reason) == (Status.UPSTREAM_ERROR, "token_rejected")
    assert broker.tokens_issued == 3
