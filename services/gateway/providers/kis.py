"""KIS Open API adapter: headers, query vs body, the envelope, tr_cont and time-cursor paging."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hubclient.catalog import Paging, TrSpec
from hubclient.models import ApiRequest, Provider
from services.gateway.errors import TokenIssueError
from services.gateway.providers.base import (
    Classified,
    Outcome,
    TokenGrant,
    UpstreamAnswer,
    UpstreamRequest,
    kst_to_epoch_s,
    stringify,
)
from services.settings import KisSettings

THROTTLED_CODES = frozenset({"EGW00201"})  # the appkey's own limit
LEDGER_THROTTLED_CODES = frozenset({"EGW00215"})  # the ledger's: slows the ledger class only
TOKEN_CODES = frozenset({"EGW00123", "EGW00121"})
TOKEN_RATE_CODE = "EGW00133"  # noqa: S105 - a code, not a secret
#: Codes that mean an order's fate is unknown (the broker timed out internally).
UNKNOWN_ORDER_CODES = frozenset({"EGW00301", "EGW00302"})
#: Gateway-side server faults (HTTP 5xx in the normal envelope): no definite answer was given.
SERVER_ERROR_CODES = frozenset({"EGW00001", "EGW00002"})
#: The WebSocket approval key's answer carries no expiry; KIS's clients (and its portal, as they quote it)
#: take it to live 24 h. The gateway renews it ten minutes before, like a token.
APPROVAL_KEY_LIFETIME_S = 86_400.0
_ROWS_PER_PAGE = {"FHKST03010200": 30, "FHKST03010230": 120, "FHKST03010100": 100}
_MARKET_OPEN = "090000"


class KisAdapter:
    """Builds and reads KIS calls."""

    provider = Provider.KIS

    def __init__(self, settings: KisSettings) -> None:
        self._settings = settings
        self._base = settings.base_url.rstrip("/")

    def _secrets(self) -> tuple[str, str]:
        if self._settings.appkey is None or self._settings.appsecret is None:
            raise TokenIssueError("KIS credentials are not configured (APIHUB_KIS__APPKEY/APPSECRET)")
        return self._settings.appkey.get_secret_value(), self._settings.appsecret.get_secret_value()

    def token_request(self) -> UpstreamRequest:
        """``POST /oauth2/tokenP`` with the client-credentials body."""
        appkey, appsecret = self._secrets()
        return UpstreamRequest(
            "POST",
            f"{self._base}/oauth2/tokenP",
            {"content-type": "application/json; charset=utf-8"},
            json_body={"grant_type": "client_credentials", "appkey": appkey, "appsecret": appsecret},
        )

    def parse_token(self, answer: UpstreamAnswer) -> TokenGrant:
        """Read the token and its absolute KST expiry (``expires_in`` lies after a re-issue)."""
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 200 and body.get("access_token"):
            expired = str(body.get("access_token_token_expired", ""))
            return TokenGrant(str(body["access_token"]), kst_to_epoch_s(expired, "%Y-%m-%d %H:%M:%S"))
        code = str(body.get("error_code") or body.get("msg_cd") or "")
        text = str(body.get("error_description") or body.get("msg1") or f"HTTP {answer.status}").strip()
        raise TokenIssueError(
            f"KIS token refused: {code} {text}", refused_by_rate=code == TOKEN_RATE_CODE, code=code or None
        )

    def approval_request(self) -> UpstreamRequest:
        """``POST /oauth2/Approval``: the WebSocket approval key (the secret goes as ``secretkey`` there)."""
        appkey, appsecret = self._secrets()
        return UpstreamRequest(
            "POST",
            f"{self._base}/oauth2/Approval",
            {"content-type": "application/json; charset=utf-8"},
            json_body={"grant_type": "client_credentials", "appkey": appkey, "secretkey": appsecret},
        )

    def parse_approval(self, answer: UpstreamAnswer, now_s: float) -> TokenGrant:
        """Read the approval key; its answer has no expiry, so it is taken to live a day from ``now_s``."""
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 200 and body.get("approval_key"):
            return TokenGrant(str(body["approval_key"]), now_s + APPROVAL_KEY_LIFETIME_S)
        code = str(body.get("error_code") or body.get("msg_cd") or "")
        text = str(body.get("error_description") or body.get("msg1") or f"HTTP {answer.status}").strip()
        raise TokenIssueError(f"KIS approval key refused: {code} {text}", code=code or None)

    def build(self, spec: TrSpec, request: ApiRequest, access_token: str) -> UpstreamRequest:
        """The HTTP call for ``request``, continuing from its ``continuation`` when it has one."""
        appkey, appsecret = self._secrets()
        params: dict[str, Any] = dict(request.params)
        cont = dict(request.continuation or {})
        tr_cont = cont.pop("tr_cont", "")
        params.update(cont)
        headers = {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {access_token}",
            "appkey": appkey,
            "appsecret": appsecret,
            "tr_id": spec.upstream_tr_id(mock=self._settings.mock),
            "custtype": "P",
            "tr_cont": tr_cont,
        }
        url = f"{self._base}{spec.path}"
        if spec.params_in == "query":
            return UpstreamRequest(spec.method, url, headers, query=stringify(params))
        return UpstreamRequest(
            spec.method, url, headers, json_body={k.upper(): v for k, v in stringify(params).items()}
        )

    def classify(self, spec: TrSpec, request: ApiRequest, answer: UpstreamAnswer) -> Classified:
        """Sort the answer by its envelope first and its status second."""
        body = answer.body
        if not isinstance(body, dict) or "rt_cd" not in body:
            if answer.status >= 500 or body is None:
                return Classified(
                    Outcome.TRANSIENT, answer.status, message=f"HTTP {answer.status} without envelope"
                )
            return Classified(
                Outcome.BUSINESS_ERROR, answer.status, message=f"HTTP {answer.status}", data=body
            )
        code = str(body.get("msg_cd") or "") or None
        message = str(body.get("msg1") or "").strip() or None
        if str(body.get("rt_cd")) == "0":
            return Classified(
                Outcome.OK, answer.status, code, message, body, self._next_page(spec, request, answer)
            )
        if code in LEDGER_THROTTLED_CODES:
            return Classified(Outcome.THROTTLED, answer.status, code, message, body, class_limit=True)
        if code in THROTTLED_CODES:
            outcome = Outcome.THROTTLED
        elif code in TOKEN_CODES:
            outcome = Outcome.TOKEN_REJECTED
        elif code in UNKNOWN_ORDER_CODES and not spec.idempotent:
            outcome = Outcome.UNKNOWN_OUTCOME
        elif code in SERVER_ERROR_CODES:
            outcome = Outcome.TRANSIENT if spec.idempotent else Outcome.UNKNOWN_OUTCOME
        else:
            outcome = Outcome.BUSINESS_ERROR
        return Classified(outcome, answer.status, code, message, body)

    def _next_page(self, spec: TrSpec, request: ApiRequest, answer: UpstreamAnswer) -> dict[str, str] | None:
        body: dict[str, Any] = answer.body
        if spec.paging is Paging.KIS_TR_CONT:
            if answer.headers.get("tr_cont", "") not in ("F", "M"):
                return None
            cursor = {"tr_cont": "N"}
            for key in spec.paging_keys or _DEFAULT_CONTEXT_KEYS:
                cursor[key] = str(
                    body.get(key.lower(), body.get(key, ""))
                )  # the body names them in lower case
            return cursor
        if spec.paging is Paging.KIS_TIME_CURSOR:
            return _time_cursor(spec.tr_id, request, body)
        return None


#: The context keys of a tr_cont call whose row names none (the common 100-wide pair).
_DEFAULT_CONTEXT_KEYS = ("CTX_AREA_FK100", "CTX_AREA_NK100")


def _time_cursor(tr_id: str, request: ApiRequest, body: dict[str, Any]) -> dict[str, str] | None:
    rows = [r for r in body.get("output2") or [] if r]
    if len(rows) < _ROWS_PER_PAGE.get(tr_id, 1):
        return None  # a short page is the last one
    oldest = rows[-1]
    if tr_id == "FHKST03010100":
        first_day = str(request.params.get("FID_INPUT_DATE_1", ""))
        oldest_day = str(oldest.get("stck_bsop_date", ""))
        if not oldest_day or oldest_day <= first_day:
            return None
        previous = datetime.strptime(oldest_day, "%Y%m%d") - timedelta(days=1)
        return {"FID_INPUT_DATE_2": previous.strftime("%Y%m%d")}
    hour = str(oldest.get("stck_cntg_hour", ""))
    if not hour or hour <= _MARKET_OPEN:
        return None
    previous = datetime.strptime(hour, "%H%M%S") - timedelta(minutes=1)
    cursor = {"FID_INPUT_HOUR_1": previous.strftime("%H%M%S")}
    oldest_day = str(oldest.get("stck_bsop_date", ""))
    if tr_id == "FHKST03010230" and oldest_day:
        cursor["FID_INPUT_DATE_1"] = oldest_day  # with past days included, a page can end on an earlier day
    return cursor
