"""Kiwoom REST API adapter: every call a POST routed by ``api-id``; codes hidden in ``return_msg``."""

from __future__ import annotations

import re

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
from services.settings import KiwoomSettings

THROTTLED_CODES = frozenset({1700})  # names the call's quota: slows the call's class
#: Codes after which the official client re-authenticates once.
TOKEN_CODES = frozenset({8003, 8005, 8006, 8009, 8031, 8103})
_BRACKET = re.compile(r"\[(\d{4}):")
_CONTENT_TYPE = "application/json;charset=UTF-8"


def detailed_code(body: dict[str, object]) -> int | None:
    """The documented four-digit code: from ``[NNNN:...]`` in ``return_msg``, else ``return_code``."""
    match = _BRACKET.search(str(body.get("return_msg", "")))
    if match:
        return int(match.group(1))
    code = body.get("return_code")
    return code if isinstance(code, int) and code >= 1000 else None


class KiwoomAdapter:
    """Builds and reads Kiwoom calls."""

    provider = Provider.KIWOOM

    def __init__(self, settings: KiwoomSettings) -> None:
        self._settings = settings
        self._base = settings.base_url.rstrip("/")

    def _secrets(self) -> tuple[str, str]:
        if self._settings.appkey is None or self._settings.secretkey is None:
            raise TokenIssueError("Kiwoom credentials are not configured (APIHUB_KIWOOM__APPKEY/SECRETKEY)")
        return self._settings.appkey.get_secret_value(), self._settings.secretkey.get_secret_value()

    def token_request(self) -> UpstreamRequest:
        """``POST /oauth2/token`` (au10001)."""
        appkey, secretkey = self._secrets()
        return UpstreamRequest(
            "POST",
            f"{self._base}/oauth2/token",
            {"content-type": _CONTENT_TYPE},
            json_body={"grant_type": "client_credentials", "appkey": appkey, "secretkey": secretkey},
        )

    def parse_token(self, answer: UpstreamAnswer) -> TokenGrant:
        """Read the token and ``expires_dt``, a KST wall-clock time."""
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 200 and body.get("return_code") == 0 and body.get("token"):
            return TokenGrant(
                str(body["token"]), kst_to_epoch_s(str(body.get("expires_dt", "")), "%Y%m%d%H%M%S")
            )
        code = detailed_code(body)
        raise TokenIssueError(
            f"Kiwoom token refused: {body.get('return_code')} {str(body.get('return_msg', '')).strip()}",
            refused_by_rate=code in THROTTLED_CODES,
            code=str(code) if code is not None else None,
        )

    def build(self, spec: TrSpec, request: ApiRequest, access_token: str) -> UpstreamRequest:
        """A POST to the path group with ``api-id`` and, when paging, ``cont-yn``/``next-key``."""
        headers = {
            "content-type": _CONTENT_TYPE,
            "api-id": spec.upstream_tr_id(mock=self._settings.mock),
            "authorization": f"Bearer {access_token}",
        }
        cont = request.continuation or {}
        if cont.get("cont-yn") == "Y" and cont.get("next-key"):
            headers["cont-yn"] = "Y"
            headers["next-key"] = cont["next-key"]
        return UpstreamRequest(
            "POST", f"{self._base}{spec.path}", headers, json_body=stringify(request.params)
        )

    def classify(self, spec: TrSpec, request: ApiRequest, answer: UpstreamAnswer) -> Classified:
        """Sort by the bracketed code; the HTTP status (429, 401, 5xx) only breaks ties."""
        body = answer.body
        if not isinstance(body, dict) or "return_code" not in body:
            if answer.status == 429:
                return Classified(Outcome.THROTTLED, answer.status, message="HTTP 429", class_limit=True)
            if answer.status == 401:
                return Classified(Outcome.TOKEN_REJECTED, answer.status, message="HTTP 401")
            if answer.status >= 500 or body is None:
                return Classified(
                    Outcome.TRANSIENT, answer.status, message=f"HTTP {answer.status} without envelope"
                )
            return Classified(
                Outcome.BUSINESS_ERROR, answer.status, message=f"HTTP {answer.status}", data=body
            )
        message = str(body.get("return_msg", "")).strip() or None
        if body.get("return_code") == 0 and answer.status < 400:
            return Classified(Outcome.OK, answer.status, "0", message, body, self._next_page(spec, answer))
        code = detailed_code(body)
        provider_code = str(code if code is not None else body.get("return_code"))
        if code in THROTTLED_CODES:
            return Classified(
                Outcome.THROTTLED, answer.status, provider_code, message, body, class_limit=True
            )
        if code in TOKEN_CODES or answer.status == 401:
            outcome = Outcome.TOKEN_REJECTED
        elif answer.status >= 500:
            outcome = Outcome.TRANSIENT if spec.idempotent else Outcome.UNKNOWN_OUTCOME
        else:
            outcome = Outcome.BUSINESS_ERROR
        return Classified(outcome, answer.status, provider_code, message, body)

    @staticmethod
    def _next_page(spec: TrSpec, answer: UpstreamAnswer) -> dict[str, str] | None:
        if spec.paging is not Paging.KIWOOM_CONT or answer.headers.get("cont-yn") != "Y":
            return None
        next_key = answer.headers.get("next-key", "")
        return {"cont-yn": "Y", "next-key": next_key} if next_key else None
